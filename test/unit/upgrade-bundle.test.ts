/**
 * The bundle file end to end without a box: written with one key, verified with it, refused with
 * another, refused after a one-byte change to the manifest or the slot image, refused when cut short.
 */
import test from 'ava';
import { sha256, testManifest } from '../helpers/bundle-manifest.ts';
import { generateKeyPairSync } from 'node:crypto';
import { mkdtemp, open, readFile, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { BundleRefused, readVerifiedHead, streamSlot, verifyBundle, writeBundle } from '../../firstboot/src/upgrade/bundle.ts';
import type { BundleManifest } from '../../firstboot/src/upgrade/core/manifest.ts';

const work = await mkdtemp(path.join(os.tmpdir(), 'gk8s-bundle-'));

const signer = generateKeyPairSync('ed25519');
const other = generateKeyPairSync('ed25519');
const slotBytes = Buffer.alloc(300_000, 7);
slotBytes.write('slot image', 1000);
const slotFile = path.join(work, 'root.img.zst');
await writeFile(slotFile, slotBytes);
const sha = sha256;
const manifest: BundleManifest = testManifest({ bytes: slotBytes.length, sha256: sha(slotBytes), rawBytes: 1, rawSha256: 'c'.repeat(64) });
const bundle = path.join(work, 'update.bundle');
await writeBundle(bundle, { manifest, slotFile, signingKey: signer.privateKey, mtime: 1_700_000_000 });

test.after.always(() => rm(work, { recursive: true, force: true }));

async function altered(name: string, find: (b: Buffer) => number): Promise<string> {
  const b = await readFile(bundle);
  const at = find(b);
  b[at] = b[at]! ^ 1;
  const f = path.join(work, name);
  await writeFile(f, b);
  return f;
}

test('a bundle verifies with the key that signed it, and streams its slot image intact', async (t) => {
  const head = await verifyBundle(bundle, [other.publicKey, signer.publicKey]);
  t.is(head.manifest.version, '0.2.0');
  t.regex(head.keyId, /^[0-9a-f]{16}$/);
  t.deepEqual((await readVerifiedHead(bundle, [signer.publicKey])).manifest, manifest);
  const chunks: Buffer[] = [];
  await streamSlot(
    bundle,
    new Writable({
      write(c: Buffer, _e, cb) {
        chunks.push(c);
        cb();
      },
    }),
  );
  t.true(Buffer.concat(chunks).equals(slotBytes));
});

test('identical inputs give identical bundle bytes', async (t) => {
  const again = path.join(work, 'again.bundle');
  await writeBundle(again, { manifest, slotFile, signingKey: signer.privateKey, mtime: 1_700_000_000 });
  t.is(sha(await readFile(again)), sha(await readFile(bundle)));
});

test('refused: another key, a byte of the manifest, a byte of the slot image, a truncated file, no keys', async (t) => {
  const code = async (file: string, keys = [signer.publicKey]) => {
    const e = await t.throwsAsync(verifyBundle(file, keys), { instanceOf: BundleRefused });
    return { code: (e as BundleRefused).code, message: e?.message ?? '' };
  };
  t.is((await code(bundle, [other.publicKey])).code, 'bad-signature');
  const m = await altered('manifest.bundle', (b) => b.indexOf('"0.2.0"') + 1);
  t.is((await code(m)).code, 'bad-signature');
  const s = await altered('slot.bundle', (b) => b.indexOf('slot image'));
  const slot = await code(s);
  t.is(slot.code, 'slot-mismatch');
  t.regex(slot.message, /expected 300000 bytes with sha256 [0-9a-f]{64}, bundle has 300000 bytes with sha256 [0-9a-f]{64}/);
  const cut = path.join(work, 'cut.bundle');
  const fh = await open(cut, 'w');
  await fh.write((await readFile(bundle)).subarray(0, (await stat(bundle)).size / 2));
  await fh.close();
  t.is((await code(cut)).code, 'malformed');
  t.is((await code(bundle, [])).code, 'no-keys');
  await writeFile(path.join(work, 'junk'), 'not a tar');
  t.is((await code(path.join(work, 'junk'))).code, 'malformed');
});

/**
 * The update bundle file (format: upgrade/core/manifest.ts): writing one (the builder), and
 * reading, verifying and streaming one (the agent on a box, and `geminik8s bundle verify` offline).
 * Signing and checking are Node's ed25519 (node:crypto); nothing here is hand-rolled crypto.
 */
import { createHash, createPrivateKey, createPublicKey, type KeyObject, sign, verify } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { readdir, readFile, rename, rm, stat } from 'node:fs/promises';
import type { Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import tar, { type Extract, type Header } from 'tar-stream';

/** One entry of a bundle being read (tar-stream does not export the type by name). */
type Entry = Extract extends AsyncIterable<infer E> ? E : never;
import { formatIssue } from '../core/config-file.ts';
import {
  BUNDLE_FILES,
  BUNDLE_ORDER,
  type BundleManifest,
  ED25519_SIGNATURE_BYTES,
  MAX_MANIFEST_BYTES,
  parseBundleManifest,
  type RefusalCode,
} from './core/manifest.ts';

export type BundleErrorCode = RefusalCode | 'malformed' | 'bad-manifest' | 'bad-signature' | 'slot-mismatch' | 'no-keys';

/** A bundle this box (or `bundle verify`) will not take, and why; nothing was written. */
export class BundleRefused extends Error {
  constructor(
    readonly code: BundleErrorCode,
    message: string,
  ) {
    super(message);
    this.name = 'BundleRefused';
  }
}

/** A short, stable name for a public key: the first 16 hex digits of the sha256 of its SPKI DER. */
export function keyId(key: KeyObject): string {
  return createHash('sha256')
    .update(key.export({ type: 'spki', format: 'der' }))
    .digest('hex')
    .slice(0, 16);
}

/** Reads an ed25519 public key (SPKI PEM); the file named in any error. */
export function loadPublicKey(pem: string, file: string): KeyObject {
  let key: KeyObject;
  try {
    key = createPublicKey(pem);
  } catch (e) {
    throw new BundleRefused('no-keys', `${file}: not a PEM public key (${(e as Error).message}); make one with \`geminik8s keygen\``);
  }
  if (key.asymmetricKeyType !== 'ed25519')
    throw new BundleRefused('no-keys', `${file}: an ${key.asymmetricKeyType} key; update keys are ed25519 (\`geminik8s keygen\`)`);
  return key;
}

export function loadPrivateKey(pem: string, file: string): KeyObject {
  let key: KeyObject;
  try {
    key = createPrivateKey(pem);
  } catch (e) {
    throw new Error(`${file}: not a PEM private key (${(e as Error).message}); make one with \`geminik8s keygen\``);
  }
  if (key.asymmetricKeyType !== 'ed25519') throw new Error(`${file}: an ${key.asymmetricKeyType} key; update signing keys are ed25519 (\`geminik8s keygen\`)`);
  return key;
}

/** Fixed tar headers: the same inputs give the same bundle bytes. */
function header(name: string, size: number, mtime: number): Partial<Header> & { name: string } {
  return { name, size, mode: 0o644, uid: 0, gid: 0, uname: 'root', gname: 'root', mtime: new Date(mtime * 1000), type: 'file' };
}

/**
 * Writes `out` (atomically: a temporary name, renamed when complete): the manifest, its signature
 * with `signingKey`, and the compressed slot image the manifest describes.
 */
export async function writeBundle(out: string, o: { manifest: BundleManifest; slotFile: string; signingKey: KeyObject; mtime: number }): Promise<void> {
  const manifestBytes = Buffer.from(`${JSON.stringify(o.manifest, null, 2)}\n`);
  const signature = sign(null, manifestBytes, o.signingKey);
  const slotSize = (await stat(o.slotFile)).size;
  if (slotSize !== o.manifest.slot.bytes) throw new Error(`internal: ${o.slotFile} is ${slotSize} bytes, the manifest says ${o.manifest.slot.bytes}`);
  const tmp = `${out}.partial-${process.pid}`;
  const pack = tar.pack();
  const written = pipeline(pack, createWriteStream(tmp));
  try {
    pack.entry(header(BUNDLE_FILES.manifest, manifestBytes.length, o.mtime), manifestBytes);
    pack.entry(header(BUNDLE_FILES.signature, signature.length, o.mtime), signature);
    const entry = pack.entry(header(BUNDLE_FILES.slot, slotSize, o.mtime));
    await pipeline(createReadStream(o.slotFile), entry);
    pack.finalize();
    await written;
    await rename(tmp, out);
  } catch (e) {
    pack.destroy();
    await written.catch(() => undefined);
    await rm(tmp, { force: true });
    throw e;
  }
}

/**
 * Walks the bundle's three entries in order, refusing any other shape (names, order, types, sizes);
 * `onSlot` consumes the slot image's bytes.
 */
async function walk(file: string, onHead: (manifest: Buffer, signature: Buffer) => void, onSlot?: (entry: Entry) => Promise<void>): Promise<void> {
  // Without onSlot only the head is read: the walk ends after the signature.
  const extract = tar.extract();
  const source = createReadStream(file);
  source.on('error', (e) => extract.destroy(e));
  source.pipe(extract);
  const parts: Buffer[] = [];
  let index = 0;
  try {
    for await (const entry of extract) {
      const expected = BUNDLE_ORDER[index];
      const { name, type, size = 0 } = entry.header;
      if (expected === undefined) throw new BundleRefused('malformed', `${file}: unexpected entry ${name} after ${BUNDLE_FILES.slot}`);
      if (name !== expected || type !== 'file')
        throw new BundleRefused('malformed', `${file}: entry ${index + 1} is ${type} ${JSON.stringify(name)}, expected the file ${expected}`);
      if (expected === BUNDLE_FILES.slot) {
        if (onSlot) await onSlot(entry);
        else entry.resume();
      } else {
        const limit = expected === BUNDLE_FILES.manifest ? MAX_MANIFEST_BYTES : ED25519_SIGNATURE_BYTES;
        if (size > limit) throw new BundleRefused('malformed', `${file}: ${name} is ${size} bytes, at most ${limit} expected`);
        const chunks: Buffer[] = [];
        for await (const c of entry) chunks.push(c as Buffer);
        parts.push(Buffer.concat(chunks));
        if (expected === BUNDLE_FILES.signature) onHead(parts[0]!, parts[1]!);
      }
      index++;
      if (!onSlot && index === 2) return;
    }
  } catch (e) {
    if (e instanceof BundleRefused) throw e;
    throw new BundleRefused('malformed', `${file}: not a geminik8s bundle (${(e as Error).message})`);
  } finally {
    source.destroy();
  }
  if (index < BUNDLE_ORDER.length)
    throw new BundleRefused('malformed', `${file}: ends after ${index} of its ${BUNDLE_ORDER.length} entries (${BUNDLE_ORDER.join(', ')}); truncated?`);
}

export interface VerifiedHead {
  manifest: BundleManifest;
  /** Which of the trusted keys signed it. */
  keyId: string;
}

/** Checks the signature over the manifest bytes against `keys`, then the manifest's schema. */
export function verifyHead(file: string, manifestBytes: Buffer, signature: Buffer, keys: KeyObject[]): VerifiedHead {
  if (keys.length === 0)
    throw new BundleRefused('no-keys', 'no update keys to check the bundle against (the image was built without --signing-key or --update-key)');
  if (signature.length !== ED25519_SIGNATURE_BYTES)
    throw new BundleRefused('bad-signature', `${file}: the signature is ${signature.length} bytes, expected ${ED25519_SIGNATURE_BYTES} (ed25519)`);
  const signer = keys.find((k) => verify(null, manifestBytes, k, signature));
  if (!signer)
    throw new BundleRefused(
      'bad-signature',
      `${file}: the manifest's signature does not verify with any trusted key (${keys.map(keyId).join(', ')}): signed by another key, or the manifest was altered`,
    );
  const parsed = parseBundleManifest(manifestBytes.toString('utf8'), `${file}:${BUNDLE_FILES.manifest}`);
  if (!parsed.ok)
    throw new BundleRefused('bad-manifest', `the manifest is signed but not one this agent understands:\n${parsed.issues.map(formatIssue).join('\n')}`);
  return { manifest: parsed.value, keyId: keyId(signer) };
}

/** Reads and verifies the manifest without touching the slot image. */
export async function readVerifiedHead(file: string, keys: KeyObject[]): Promise<VerifiedHead> {
  let head: VerifiedHead | undefined;
  await walk(file, (m, s) => {
    head = verifyHead(file, m, s, keys);
  });
  if (!head) throw new BundleRefused('malformed', `${file}: no manifest`);
  return head;
}

/**
 * The manifest as the bundle states it, schema-checked but not signature-checked: for an operator's
 * machine that plans a rollout (the boxes check the signature against their own keys).
 */
export async function readManifest(file: string): Promise<BundleManifest> {
  let manifest: BundleManifest | undefined;
  await walk(file, (m) => {
    const parsed = parseBundleManifest(m.toString('utf8'), `${file}:${BUNDLE_FILES.manifest}`);
    if (!parsed.ok) throw new BundleRefused('bad-manifest', parsed.issues.map(formatIssue).join('\n'));
    manifest = parsed.value;
  });
  if (!manifest) throw new BundleRefused('malformed', `${file}: no manifest`);
  return manifest;
}

/** Progress of a pass over the slot image: bytes of the compressed entry read so far. */
export type SlotProgress = (doneBytes: number, totalBytes: number) => void;

/**
 * The whole check before anything is written: signature and schema, then the compressed slot
 * image's size and sha256 against the manifest.
 */
export async function verifyBundle(file: string, keys: KeyObject[], progress?: SlotProgress): Promise<VerifiedHead> {
  let head: VerifiedHead | undefined;
  let bytes = 0;
  const hash = createHash('sha256');
  await walk(
    file,
    (m, s) => {
      head = verifyHead(file, m, s, keys);
    },
    async (entry) => {
      const total = head!.manifest.slot.bytes;
      for await (const c of entry) {
        bytes += (c as Buffer).length;
        hash.update(c as Buffer);
        progress?.(bytes, total);
      }
    },
  );
  const slot = head!.manifest.slot;
  const sha = hash.digest('hex');
  if (bytes !== slot.bytes || sha !== slot.sha256)
    throw new BundleRefused(
      'slot-mismatch',
      `${file}: the slot image does not match its signed manifest: expected ${slot.bytes} bytes with sha256 ${slot.sha256}, bundle has ${bytes} bytes with sha256 ${sha}`,
    );
  return head!;
}

/** Streams the compressed slot image into `sink` (after {@link verifyBundle} has passed). */
export async function streamSlot(file: string, sink: Writable, progress?: SlotProgress): Promise<void> {
  let total = 0;
  let done = 0;
  await walk(
    file,
    (m) => {
      total = (JSON.parse(m.toString('utf8')) as BundleManifest).slot.bytes;
    },
    async (entry) => {
      entry.on('data', (c: unknown) => {
        done += (c as Buffer).length;
        progress?.(done, total);
      });
      await pipeline(entry, sink);
    },
  );
}

/** Every `*.pem` public key in `dir` (the image's /etc/geminik8s/update-keys). */
export async function loadKeyDir(dir: string): Promise<KeyObject[]> {
  const names = (await readdir(dir).catch(() => [] as string[])).filter((n) => n.endsWith('.pem')).sort();
  return Promise.all(names.map(async (n) => loadPublicKey(await readFile(`${dir}/${n}`, 'utf8'), `${dir}/${n}`)));
}

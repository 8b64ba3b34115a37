import test from 'ava';
import { randomBytes } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { BackupRefused, encryptingStream, newHeader, readBackup } from '../../builder/src/remote/backup-file.ts';

const site = { siteId: 'store-0042', pairSecret: 'q4Jr7m8sXvYc2Zb1Lk9PwN3eTg6HfA0dUiOy5RjWlMo=' };
/** A stand-in archive: pg_dump's magic, then 2.5 MiB (three chunks, the last one short). */
const archive = Buffer.concat([Buffer.from('PGDMP', 'latin1'), randomBytes(2.5 * 2 ** 20)]);

async function made(t: import('ava').ExecutionContext, plain = archive): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'gk8s-backup-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'site.backup');
  const header = newHeader({ siteId: site.siteId, source: { host: '192.0.2.11', name: 'node-a', term: 3 } });
  // Fed in odd-sized pieces, as SSH delivers them.
  const pieces = Array.from({ length: Math.ceil(plain.length / 77_777) }, (_, i) => plain.subarray(i * 77_777, (i + 1) * 77_777));
  await pipeline(Readable.from(pieces), encryptingStream(header, site.pairSecret), createWriteStream(file));
  return file;
}

async function read(file: string, s = site): Promise<Buffer> {
  const parts: Buffer[] = [];
  await readBackup(file, s, (c) => void parts.push(c));
  return Buffer.concat(parts);
}

test('a backup reads back to exactly the archive that went in; the file holds no plaintext', async (t) => {
  const file = await made(t);
  t.true((await read(file)).equals(archive));
  const bytes = await readFile(file);
  t.is(bytes.indexOf(archive.subarray(5, 64)), -1, 'the archive is not in the file in the clear');
  t.false(bytes.includes(Buffer.from(site.pairSecret)), 'nor the secret');
  const { header, archiveBytes } = await readBackup(file, site, () => undefined);
  t.like(header, { format: 'geminik8s-backup', version: 1, siteId: 'store-0042', source: { name: 'node-a', term: 3 } });
  t.is(archiveBytes, archive.length);
  t.true((await read(await made(t, Buffer.from('PGDMP')))).equals(Buffer.from('PGDMP')), 'an archive smaller than a chunk');
});

test('a changed byte anywhere, a cut-off file, an appended chunk, another site or another secret are refused', async (t) => {
  const file = await made(t);
  const bytes = await readFile(file);
  const variant = async (b: Buffer) => {
    const f = `${file}.variant`;
    await writeFile(f, b);
    return read(f).then(
      () => 'accepted',
      (e: unknown) => (e instanceof BackupRefused ? e.code : String(e)),
    );
  };
  const headerEnd = 12 + bytes.readUInt32BE(8);
  for (const at of [headerEnd - 3, headerEnd + 100, Math.floor(bytes.length / 2), bytes.length - 1]) {
    const b = Buffer.from(bytes);
    b[at] = b[at]! ^ 0x01;
    const code = await variant(b);
    t.true(['tampered', 'bad-header'].includes(code), `byte ${at} flipped: ${code}`);
  }
  // Cut at the second chunk's start: what is left authenticates only as a non-final chunk.
  const secondChunk = headerEnd + 4 + bytes.readUInt32BE(headerEnd);
  t.is(await variant(bytes.subarray(0, secondChunk)), 'tampered');
  t.is(await variant(bytes.subarray(0, bytes.length - 10)), 'truncated');
  t.is(await variant(Buffer.concat([bytes, bytes.subarray(headerEnd, secondChunk)])), 'tampered', 'a chunk appended after the final one');
  t.is(await variant(Buffer.from('not a backup at all')), 'not-a-backup');
  await t.throwsAsync(read(file, { ...site, siteId: 'store-0043' }), {
    instanceOf: BackupRefused,
    message: /expected a backup of site store-0043, file has one of site store-0042/,
  });
  await t.throwsAsync(read(file, { ...site, pairSecret: `${site.pairSecret}x` }), { instanceOf: BackupRefused, message: /does not authenticate/ });
  await t.throwsAsync(read(await made(t, Buffer.from('SELECT 1;'))), { instanceOf: BackupRefused, message: /expected a pg_dump archive/ });
});

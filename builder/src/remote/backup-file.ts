/**
 * The site backup file: the leader's pg_dump archive of Kine's database, encrypted and
 * authenticated on the operator's machine with a key only the site file's holder has.
 *
 *   "GK8SBAK1" | u32 header length | header (JSON) | chunk* (the last one marked final)
 *   chunk = u32 ciphertext length | AES-256-GCM ciphertext | 16-byte tag
 *
 * - Key: HKDF-SHA256 of the site's pair secret, with a random salt per backup and the site id in
 *   its info (Node's crypto; nothing hand-rolled beyond the framing).
 * - Nonce: 8 random bytes per backup, then the chunk index (u32): never reused under one key.
 * - Each chunk's additional data is the header's SHA-256, its index and whether it is the last:
 *   a changed header, reordered, dropped or appended chunks, or a cut-off file fail to authenticate.
 * Errors are typed (BackupRefused: "expected X, file has Y").
 */
import { createCipheriv, createDecipheriv, createHash, hkdfSync, randomBytes } from 'node:crypto';
import { open } from 'node:fs/promises';
import { Transform, type TransformCallback } from 'node:stream';

const MAGIC = Buffer.from('GK8SBAK1', 'latin1');
const CHUNK_BYTES = 1 << 20;
const TAG_BYTES = 16;
const MAX_HEADER_BYTES = 64 * 1024;
/** pg_dump's custom-format archives start with these bytes. */
const ARCHIVE_MAGIC = Buffer.from('PGDMP', 'latin1');

export interface BackupHeader {
  format: 'geminik8s-backup';
  version: 1;
  siteId: string;
  createdAt: string;
  /** The box it was taken from: the leader at that moment. */
  source: { host: string; name: string; term: number };
  content: 'pg_dump custom-format archive of the kine database';
  kdf: { alg: 'hkdf-sha256'; salt: string };
  cipher: { alg: 'aes-256-gcm'; noncePrefix: string; chunkBytes: number };
}

export type BackupRefusal = 'not-a-backup' | 'bad-header' | 'other-site' | 'tampered' | 'truncated' | 'not-an-archive';

export class BackupRefused extends Error {
  constructor(
    readonly code: BackupRefusal,
    message: string,
  ) {
    super(message);
    this.name = 'BackupRefused';
  }
}

function keyFor(pairSecret: string, siteId: string, salt: Buffer): Buffer {
  return Buffer.from(hkdfSync('sha256', Buffer.from(pairSecret, 'utf8'), salt, `geminik8s backup v1 site ${siteId}`, 32));
}

function nonce(prefix: Buffer, index: number): Buffer {
  const n = Buffer.alloc(12);
  prefix.copy(n, 0, 0, 8);
  n.writeUInt32BE(index, 8);
  return n;
}

function aad(headerHash: Buffer, index: number, final: boolean): Buffer {
  const tail = Buffer.alloc(5);
  tail.writeUInt32BE(index, 0);
  tail.writeUInt8(final ? 1 : 0, 4);
  return Buffer.concat([headerHash, tail]);
}

export function newHeader(o: { siteId: string; source: BackupHeader['source'] }): BackupHeader {
  return {
    format: 'geminik8s-backup',
    version: 1,
    siteId: o.siteId,
    createdAt: new Date().toISOString(),
    source: o.source,
    content: 'pg_dump custom-format archive of the kine database',
    kdf: { alg: 'hkdf-sha256', salt: randomBytes(16).toString('base64') },
    cipher: { alg: 'aes-256-gcm', noncePrefix: randomBytes(8).toString('base64'), chunkBytes: CHUNK_BYTES },
  };
}

/** A stream that turns the archive's bytes into the backup file's (header first). */
export function encryptingStream(header: BackupHeader, pairSecret: string): Transform {
  const headerBytes = Buffer.from(JSON.stringify(header), 'utf8');
  const headerHash = createHash('sha256').update(headerBytes).digest();
  const key = keyFor(pairSecret, header.siteId, Buffer.from(header.kdf.salt, 'base64'));
  const prefix = Buffer.from(header.cipher.noncePrefix, 'base64');
  let pending = Buffer.alloc(0);
  let index = 0;
  const seal = (plain: Buffer, final: boolean): Buffer => {
    const c = createCipheriv('aes-256-gcm', key, nonce(prefix, index), { authTagLength: TAG_BYTES });
    c.setAAD(aad(headerHash, index, final));
    const body = Buffer.concat([c.update(plain), c.final(), c.getAuthTag()]);
    index++;
    const len = Buffer.alloc(4);
    len.writeUInt32BE(body.length, 0);
    return Buffer.concat([len, body]);
  };
  const len = Buffer.alloc(4);
  len.writeUInt32BE(headerBytes.length, 0);
  let started = false;
  return new Transform({
    transform(chunk: Buffer, _enc, done: TransformCallback) {
      if (!started) {
        this.push(Buffer.concat([MAGIC, len, headerBytes]));
        started = true;
      }
      pending = Buffer.concat([pending, chunk]);
      // Keep at least one byte back: the last chunk must be sealed as final, and only flush knows which it is.
      while (pending.length > CHUNK_BYTES) {
        this.push(seal(pending.subarray(0, CHUNK_BYTES), false));
        pending = pending.subarray(CHUNK_BYTES);
      }
      done();
    },
    flush(done: TransformCallback) {
      if (!started) this.push(Buffer.concat([MAGIC, len, headerBytes]));
      this.push(seal(pending, true));
      done();
    },
  });
}

/**
 * Reads a backup file: checks its header, that it is this site's, and that every chunk
 * authenticates up to the final one, handing each decrypted chunk to `onPlain` as it goes (nothing
 * should be acted on before this resolves). Returns the header and the archive's size.
 */
export async function readBackup(
  file: string,
  site: { siteId: string; pairSecret: string },
  onPlain: (chunk: Buffer) => Promise<void> | void,
): Promise<{ header: BackupHeader; archiveBytes: number }> {
  const fh = await open(file, 'r');
  try {
    let at = 0;
    const readExact = async (n: number): Promise<Buffer | undefined> => {
      const b = Buffer.alloc(n);
      const { bytesRead } = await fh.read(b, 0, n, at);
      at += bytesRead;
      return bytesRead === n ? b : undefined;
    };
    const magic = await readExact(MAGIC.length);
    if (!magic?.equals(MAGIC)) throw new BackupRefused('not-a-backup', `${file}: expected a geminik8s backup (starts with GK8SBAK1), file has other bytes`);
    const lenBytes = await readExact(4);
    const headerLen = lenBytes?.readUInt32BE(0) ?? 0;
    if (headerLen === 0 || headerLen > MAX_HEADER_BYTES)
      throw new BackupRefused('bad-header', `${file}: expected a header of 1 to ${MAX_HEADER_BYTES} bytes, file says ${headerLen}`);
    const headerBytes = await readExact(headerLen);
    if (!headerBytes) throw new BackupRefused('truncated', `${file}: ends inside its header`);
    const header = parseHeader(headerBytes, file);
    if (header.siteId !== site.siteId)
      throw new BackupRefused('other-site', `${file}: expected a backup of site ${site.siteId}, file has one of site ${header.siteId}`);
    const headerHash = createHash('sha256').update(headerBytes).digest();
    const key = keyFor(site.pairSecret, header.siteId, Buffer.from(header.kdf.salt, 'base64'));
    const prefix = Buffer.from(header.cipher.noncePrefix, 'base64');
    let archiveBytes = 0;
    for (let index = 0; ; index++) {
      const lb = await readExact(4);
      if (!lb) throw new BackupRefused('truncated', `${file}: expected chunk ${index} or the end marked final, file ends after ${at} bytes`);
      const n = lb.readUInt32BE(0);
      if (n < TAG_BYTES || n > header.cipher.chunkBytes + TAG_BYTES)
        throw new BackupRefused('tampered', `${file}: chunk ${index} has an impossible length ${n}`);
      const body = await readExact(n);
      if (!body) throw new BackupRefused('truncated', `${file}: ends inside chunk ${index}`);
      const final = (await fh.stat()).size === at;
      const d = createDecipheriv('aes-256-gcm', key, nonce(prefix, index), { authTagLength: TAG_BYTES });
      d.setAAD(aad(headerHash, index, final));
      d.setAuthTag(body.subarray(n - TAG_BYTES));
      let plain: Buffer;
      try {
        plain = Buffer.concat([d.update(body.subarray(0, n - TAG_BYTES)), d.final()]);
      } catch {
        throw new BackupRefused(
          'tampered',
          `${file}: chunk ${index} does not authenticate: the file was changed, cut short, or made with another pair secret than this site file's`,
        );
      }
      if (index === 0 && !plain.subarray(0, ARCHIVE_MAGIC.length).equals(ARCHIVE_MAGIC))
        throw new BackupRefused('not-an-archive', `${file}: expected a pg_dump archive (PGDMP) inside, file has other bytes`);
      archiveBytes += plain.length;
      await onPlain(plain);
      if (final) return { header, archiveBytes };
    }
  } finally {
    await fh.close();
  }
}

function parseHeader(bytes: Buffer, file: string): BackupHeader {
  let h: Partial<BackupHeader>;
  try {
    h = JSON.parse(bytes.toString('utf8')) as Partial<BackupHeader>;
  } catch (e) {
    throw new BackupRefused('bad-header', `${file}: header is not JSON (${(e as Error).message})`);
  }
  const bad = (field: string, expected: string, found: unknown) =>
    new BackupRefused('bad-header', `${file}: header ${field}: expected ${expected}, file has ${JSON.stringify(found)}`);
  if (h.format !== 'geminik8s-backup') throw bad('format', '"geminik8s-backup"', h.format);
  if (h.version !== 1) throw bad('version', '1 (this geminik8s reads version 1)', h.version);
  if (typeof h.siteId !== 'string') throw bad('siteId', 'a site id', h.siteId);
  if (h.kdf?.alg !== 'hkdf-sha256' || typeof h.kdf.salt !== 'string') throw bad('kdf', 'hkdf-sha256 with a salt', h.kdf);
  if (h.cipher?.alg !== 'aes-256-gcm' || typeof h.cipher.noncePrefix !== 'string' || Buffer.from(h.cipher.noncePrefix, 'base64').length !== 8)
    throw bad('cipher', 'aes-256-gcm with an 8-byte nonce prefix', h.cipher);
  if (!Number.isInteger(h.cipher.chunkBytes) || h.cipher.chunkBytes < 1 || h.cipher.chunkBytes > 64 << 20)
    throw bad('cipher.chunkBytes', '1 B to 64 MiB', h.cipher.chunkBytes);
  return h as BackupHeader;
}

import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { pipeline } from 'node:stream/promises';

/** Digest of a file's bytes, or of `range` of them (inclusive byte offsets), streamed (images and binaries are too large to read whole). */
export async function fileDigest(
  file: string,
  algorithm: 'sha256' | 'sha512',
  encoding: 'hex' | 'base64',
  range?: { start: number; end: number },
): Promise<string> {
  const h = createHash(algorithm);
  await pipeline(createReadStream(file, range), h);
  return h.digest(encoding);
}

/** The hex SHA-256 of a file, as sha256sum prints it. */
export const sha256File = (file: string): Promise<string> => fileDigest(file, 'sha256', 'hex');

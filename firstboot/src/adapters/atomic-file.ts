import { closeSync, fsyncSync, openSync, renameSync, writeSync, constants } from 'node:fs';
import { basename, dirname, join } from 'node:path';

/**
 * Replaces `path` with `data` so that after a power cut the file holds either the old or the new
 * content, never a mix: write a temp file in the same directory, fsync it, rename over the target,
 * fsync the directory (so the rename itself is durable). The temp name is fixed per target: a temp
 * file left by a cut is simply overwritten next time.
 */
export function writeFileAtomic(path: string, data: string, mode = 0o644): void {
  const dir = dirname(path);
  const tmp = join(dir, `.${basename(path)}.tmp`);
  const fd = openSync(tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC, mode);
  try {
    const buf = Buffer.from(data, 'utf8');
    let off = 0;
    while (off < buf.length) off += writeSync(fd, buf, off, buf.length - off);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, path);
  const dfd = openSync(dir, constants.O_RDONLY | constants.O_DIRECTORY);
  try {
    fsyncSync(dfd);
  } finally {
    closeSync(dfd);
  }
}

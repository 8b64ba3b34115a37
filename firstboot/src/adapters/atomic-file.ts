import { closeSync, constants, fchownSync, fsyncSync, openSync, renameSync, rmSync, writeSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';

export interface FileOwner {
  uid: number;
  gid: number;
}

/** Makes a rename or a new entry in `dir` durable. */
export function fsyncDir(dir: string): void {
  const fd = openSync(dir, constants.O_RDONLY | constants.O_DIRECTORY);
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/**
 * Replaces `path` with `data` so that after a power cut the file holds either the old or the new
 * content, never a mix: write a temp file in the same directory (mode and owner set before any
 * byte is written, so a secret is never briefly readable by the wrong user), fsync it, rename over
 * the target, fsync the directory. A temp file left by a cut is removed next time.
 */
export function writeFileAtomic(path: string, data: string, mode = 0o644, owner?: FileOwner): void {
  const dir = dirname(path);
  const tmp = join(dir, `.${basename(path)}.tmp`);
  rmSync(tmp, { force: true });
  const fd = openSync(tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, mode);
  try {
    if (owner) fchownSync(fd, owner.uid, owner.gid);
    const buf = Buffer.from(data, 'utf8');
    let off = 0;
    while (off < buf.length) off += writeSync(fd, buf, off, buf.length - off);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, path);
  fsyncDir(dir);
}

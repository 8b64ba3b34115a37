import { createHash } from 'node:crypto';
import { readFile, readdir, readlink, lstat } from 'node:fs/promises';
import path from 'node:path';

/** Digest of a directory tree: relative paths, modes, symlink targets and file contents. */
export async function hashTree(root: string): Promise<string> {
  const h = createHash('sha256');
  const walk = async (rel: string): Promise<void> => {
    const entries = (await readdir(path.join(root, rel))).sort();
    for (const name of entries) {
      const relPath = path.join(rel, name);
      const abs = path.join(root, relPath);
      const st = await lstat(abs);
      h.update(`${relPath}\0${st.mode}\0`);
      if (st.isSymbolicLink()) h.update(`->${await readlink(abs)}\0`);
      else if (st.isDirectory()) await walk(relPath);
      else h.update(await readFile(abs));
    }
  };
  await walk('');
  return h.digest('hex').slice(0, 20);
}

export async function hashFiles(files: string[]): Promise<string> {
  const h = createHash('sha256');
  for (const f of [...files].sort())
    h.update(`${f}\0`)
      .update(await readFile(f))
      .update('\0');
  return h.digest('hex').slice(0, 20);
}

/**
 * Mounts left inside a folder by a build that was killed hard (mmdebstrap mounts /proc, /sys and
 * /dev inside the rootfs it builds): they must be detached before the folder can be removed, or
 * `rm -r` walks into the host's /proc and /sys.
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { run } from './exec.ts';

/** Mount points at or under `dir`, deepest first. /proc/mounts escapes blanks as octal (\040). */
export function mountsUnder(procMounts: string, dir: string): string[] {
  const root = path.resolve(dir);
  return procMounts
    .split('\n')
    .map((line) => (line.split(' ')[1] ?? '').replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8))))
    .filter((m) => m === root || m.startsWith(`${root}/`))
    .sort((a, b) => b.length - a.length);
}

/** Removes `dir` (a build folder, possibly half-built) after detaching every mount at or under it. */
export async function removeMountedTree(dir: string): Promise<void> {
  const mounts = mountsUnder(await readFile('/proc/mounts', 'utf8').catch(() => ''), dir);
  // Lazy: a leftover process may still hold one; detaching is enough to remove the folder.
  for (const m of mounts) await run('umount', ['-l', m]);
  // --one-file-system: should a mount appear after the listing, rm leaves it alone instead of emptying it.
  await run('rm', ['-rf', '--one-file-system', dir]);
}

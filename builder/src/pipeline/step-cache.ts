import { randomBytes } from 'node:crypto';
import { mkdir, readdir, rename, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { removeMountedTree } from '../util/mounts.ts';

const COMPLETE_MARKER = '.complete';

/**
 * Content-addressed step outputs under <root>/<step>/<key>/. An output becomes visible only
 * by an atomic rename after its producer finished and wrote the completion marker, so a build
 * killed at any point leaves at most a `.tmp-*` folder, which the next run removes.
 */
export class StepCache {
  constructor(readonly root: string) {}

  dir(step: string, key: string): string {
    return path.join(this.root, step, key);
  }

  async has(step: string, key: string): Promise<boolean> {
    return exists(path.join(this.dir(step, key), COMPLETE_MARKER));
  }

  /** Returns the cached output, or runs `produce` into a fresh temp folder and publishes it. */
  async obtain(step: string, key: string, produce: (tmpDir: string) => Promise<void>): Promise<{ dir: string; cached: boolean }> {
    const final = this.dir(step, key);
    if (await this.has(step, key)) return { dir: final, cached: true };
    const stepDir = path.join(this.root, step);
    await mkdir(stepDir, { recursive: true });
    await removeStaleTemps(stepDir);
    const tmp = path.join(stepDir, `.tmp-${key}-${randomBytes(4).toString('hex')}`);
    await mkdir(tmp);
    try {
      await produce(tmp);
      await writeFile(path.join(tmp, COMPLETE_MARKER), `${new Date().toISOString()}\n`);
      // An incomplete output of the same key (killed before its marker) may still hold a producer's mounts.
      await removeMountedTree(final);
      await rename(tmp, final);
    } catch (err) {
      await removeMountedTree(tmp).catch(() => undefined);
      throw err;
    }
    return { dir: final, cached: false };
  }

  /** Drops every output of `step` except `keep` (large trees and images accumulate otherwise). */
  async prune(step: string, keep: string): Promise<void> {
    const stepDir = path.join(this.root, step);
    const entries = await readdir(stepDir).catch(() => [] as string[]);
    await Promise.all(entries.filter((e) => e !== keep && !e.startsWith('.tmp-')).map((e) => rm(path.join(stepDir, e), { recursive: true, force: true })));
  }
}

async function removeStaleTemps(stepDir: string): Promise<void> {
  // Only one build per cache at a time (the CLI takes a lock), so any temp folder is a leftover.
  const entries = await readdir(stepDir);
  for (const e of entries.filter((name) => name.startsWith('.tmp-'))) await removeMountedTree(path.join(stepDir, e));
}

export async function exists(p: string): Promise<boolean> {
  try {
    await stat(p);
    return true;
  } catch {
    return false;
  }
}

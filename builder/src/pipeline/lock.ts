import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { isAlive } from '../util/process.ts';

export interface LockOptions {
  /** How long to wait for a running build to finish before giving up (0: fail at once). */
  waitMs: number;
  /** Told once when the lock is held by another live build. */
  onWait?: (holderPid: number) => void;
}

/**
 * Held for the whole build so two builds never publish into the same cache at once. A second
 * build waits for the first (it will then find most steps cached) rather than failing.
 */
export async function acquireBuildLock(cacheRoot: string, opts: LockOptions): Promise<() => Promise<void>> {
  await mkdir(cacheRoot, { recursive: true });
  const file = path.join(cacheRoot, 'build.lock');
  const deadline = Date.now() + opts.waitMs;
  let told = false;
  for (;;) {
    try {
      await writeFile(file, `${process.pid}\n`, { flag: 'wx' });
      return () => rm(file, { force: true });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    const holder = Number.parseInt(await readFile(file, 'utf8').catch(() => ''), 10);
    if (!Number.isInteger(holder) || holder <= 0 || !isAlive(holder)) {
      // The holder died (killed build): its lock is stale.
      await rm(file, { force: true });
      continue;
    }
    if (Date.now() >= deadline) {
      throw new Error(`another build (pid ${holder}) is using the cache ${cacheRoot}; wait for it or stop it`);
    }
    if (!told) {
      opts.onWait?.(holder);
      told = true;
    }
    await new Promise((r) => setTimeout(r, 1000));
  }
}

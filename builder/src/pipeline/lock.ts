import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';

/** Held for the whole build so two builds never publish into the same cache at once. */
export async function acquireBuildLock(cacheRoot: string): Promise<() => Promise<void>> {
  await mkdir(cacheRoot, { recursive: true });
  const file = path.join(cacheRoot, 'build.lock');
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      await writeFile(file, `${process.pid}\n`, { flag: 'wx' });
      return () => rm(file, { force: true });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      const holder = Number.parseInt(await readFile(file, 'utf8').catch(() => ''), 10);
      if (Number.isInteger(holder) && holder > 0 && isAlive(holder)) {
        throw new Error(`another build (pid ${holder}) is using the cache ${cacheRoot}; wait for it or stop it`);
      }
      // The holder died (killed build): its lock is stale.
      await rm(file, { force: true });
    }
  }
  throw new Error(`could not take the build lock ${file}`);
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

import test from 'ava';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { acquireBuildLock } from '../../builder/src/pipeline/lock.ts';
import { scratchDirs } from '../helpers/scratch.ts';

const scratch = scratchDirs(test);

const tmp = () => scratch('gk8s-lock');

test('a second build waits for the first to release the cache, then proceeds', async (t) => {
  const dir = await tmp();
  const release = await acquireBuildLock(dir, { waitMs: 0 });
  let waitedFor = 0;
  const second = acquireBuildLock(dir, {
    waitMs: 10_000,
    onWait: (pid) => {
      waitedFor = pid;
    },
  });
  await new Promise((r) => setTimeout(r, 300));
  t.is(waitedFor, process.pid, 'told who holds the lock');
  await release();
  const releaseSecond = await second;
  await releaseSecond();
});

test('a lock left by a dead build is taken over; a live one times out with a clear message', async (t) => {
  const dir = await tmp();
  // pid 2^22+1 exceeds the kernel's pid_max default: never alive.
  await writeFile(path.join(dir, 'build.lock'), '4194305\n');
  const release = await acquireBuildLock(dir, { waitMs: 0 });
  const err = await t.throwsAsync(acquireBuildLock(dir, { waitMs: 1200 }));
  t.regex(err?.message ?? '', new RegExp(`another build \\(pid ${process.pid}\\) is using the cache`));
  await release();
});

/**
 * Scratch folders for a test file, removed when its tests end (pass or fail): tests clean up after
 * themselves, and a CI machine that runs the suite many times must not fill /tmp.
 */
import type { TestFn } from 'ava';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';

/** Call once per test file with its `test`; returns a maker of folders under the system's temp folder. */
export function scratchDirs(test: TestFn): (prefix: string) => Promise<string> {
  const made: string[] = [];
  test.after.always(async () => {
    await Promise.all(made.map((d) => rm(d, { recursive: true, force: true })));
  });
  return async (prefix) => {
    const dir = await mkdtemp(path.join(os.tmpdir(), `${prefix}-`));
    made.push(dir);
    return dir;
  };
}

import test from 'ava';
import { mkdir, mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DEFAULT_LIVENESS_CONFIG } from '../../firstboot/src/liveness/core/types.ts';
import { startDiskProbe } from '../../firstboot/src/liveness/disk-probe.ts';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

test('the disk probe turns bad when its write fails, good again when one goes through, and cleans up', async (t) => {
  const root = await mkdtemp(join(tmpdir(), 'g8s-disk-probe-'));
  t.teardown(() => rm(root, { recursive: true, force: true }));
  // A folder that is not there fails every write, as a disk gone read-only or away would.
  const dir = join(root, 'state');
  const probe = startDiskProbe(dir, { intervalMs: 50, stallMs: DEFAULT_LIVENESS_CONFIG.diskStallMs });
  await sleep(200);
  const bad = probe.state(performance.now());
  t.true(bad.badForMs > 0);
  t.is(bad.error, 'ENOENT');
  await mkdir(dir);
  await sleep(200);
  t.deepEqual(probe.state(performance.now()), { badForMs: 0 });
  await probe.stop();
  t.deepEqual(await readdir(dir), []);
});

/**
 * bench/upgrade: the A/B upgrade figures of issue 12, measured by the QEMU tests that exercise it
 * (test/image/upgrade.test.ts and test/image/pair-upgrade.test.ts; needs root, about an hour under
 * TCG on 2 cores): bundle and image sizes, one box's apply and its reboot to a committed slot, the
 * pair upgraded end to end and the longest stretch without an acknowledged write through the VIP.
 * BENCH_UPGRADE=single runs only the one-box test.
 */
import { execa } from 'execa';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { printReport } from './report.ts';

const repo = fileURLToPath(new URL('..', import.meta.url));
const dir = await mkdtemp(path.join(os.tmpdir(), 'gk8s-bench-upgrade-'));
const figures = path.join(dir, 'figures.jsonl');
const tests = ['test/image/upgrade.test.ts', ...(process.env.BENCH_UPGRADE === 'single' ? [] : ['test/image/pair-upgrade.test.ts'])];
try {
  for (const file of tests) {
    process.stderr.write(`bench: ${file} ...\n`);
    const r = await execa('node', ['test/run-suite.mjs', '--concurrency', '1', file], {
      cwd: repo,
      env: { ...process.env, GEMINIK8S_FIGURES: figures },
      reject: false,
      all: true,
    });
    if (r.exitCode !== 0) throw new Error(`${file} failed:\n${String(r.all).slice(-4000)}`);
  }
  const rows = (await readFile(figures, 'utf8'))
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as { metric: string; value: number; unit: string; target?: string });
  printReport('upgrade', rows);
} finally {
  await rm(dir, { recursive: true, force: true });
}

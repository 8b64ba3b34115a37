/**
 * bench/operator: how long the operator's commands take from a laptop on the site LAN. A pair of
 * real agents in throwaway network namespaces with real sshd (test/helpers/sshd.ts); the real CLI in
 * the gateway namespace runs `geminik8s status` RUNS times (the first pins the host keys) and one
 * planned `geminik8s switchover`; each box's /metrics is scraped RUNS times. Target: status <= 2 s.
 *
 * Environment: RUNS (5). Needs root; the pair is destroyed in a finally.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { waitHealthy } from '../test/helpers/fault-matrix.ts';
import { createPair } from '../test/helpers/pair-agents.ts';
import { cliOnLan, httpGetOnLan, serveSsh } from '../test/helpers/sshd.ts';
import { envInt, printReport } from './report.ts';

const RUNS = envInt('RUNS', 5, 1, 100);

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? Number.NaN;

async function main(): Promise<void> {
  const pair = await createPair();
  const dir = await mkdtemp(path.join(os.tmpdir(), 'gk8s-bench-operator-'));
  try {
    for (const a of pair.agents) a.start();
    await waitHealthy(pair);
    const ssh = await serveSsh(pair, dir);
    const [a, b] = pair.agents as [(typeof pair.agents)[0], (typeof pair.agents)[0]];
    const remote = [
      '--site',
      path.join(a.dirs.oem, 'site.yaml'),
      '--host',
      a.address,
      '--host',
      b.address,
      '--identity',
      ssh.identity,
      '--known-hosts',
      ssh.knownHosts,
    ];
    const status: number[] = [];
    for (let i = 0; i < RUNS; i++) {
      const r = await cliOnLan(pair, ['status', '--json', ...remote]);
      if (r.code !== 0) throw new Error(`status exit ${r.code}: ${r.stderr.trim()}`);
      status.push((JSON.parse(r.stdout) as { seconds: number }).seconds);
    }
    const scrape: number[] = [];
    for (let i = 0; i < RUNS; i++) {
      const t0 = performance.now();
      await httpGetOnLan(pair, `http://${pair.vip}:8008/metrics`);
      scrape.push((performance.now() - t0) / 1000);
    }
    const moved = await cliOnLan(pair, ['switchover', '--json', ...remote]);
    if (moved.code !== 0) throw new Error(`switchover exit ${moved.code}: ${moved.stderr.trim()}`);
    const done = moved.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { event: string; seconds?: number })
      .find((e) => e.event === 'done');
    printReport('operator', [
      { metric: 'status, first (host keys pinned)', value: status[0]!, unit: 's', target: '<= 2' },
      { metric: `status, median of ${RUNS}`, value: median(status), unit: 's', target: '<= 2' },
      { metric: `GET /metrics on the VIP, median of ${RUNS} (with the node process start)`, value: median(scrape), unit: 's' },
      { metric: 'switchover, asked to done', value: done?.seconds ?? Number.NaN, unit: 's' },
    ]);
  } finally {
    await pair.destroy();
    await rm(dir, { recursive: true, force: true });
  }
}

await main();

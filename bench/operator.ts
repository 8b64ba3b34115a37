/**
 * bench/operator: how long the operator's commands take from a laptop on the site LAN. A pair of
 * real agents in throwaway network namespaces with real sshd (test/helpers/sshd.ts); the real CLI in
 * the gateway namespace runs `geminik8s status` RUNS times (the first pins the host keys) and one
 * planned `geminik8s switchover`; each box's /metrics is scraped RUNS times. Target: status <= 2 s.
 * Then Kine's database is filled to BACKUP_MB with rows of 1 MiB of random bytes (written with SQL on
 * the leader: a Kine put per MiB would measure Kine, not the backup), and `geminik8s backup` and
 * `geminik8s restore --replace` (onto the same pair) are timed: their throughput in MB/s. Last, the
 * follower's box dies and a wiped one takes its place: `geminik8s replace-node` is timed from asked
 * to joined and to a synchronous follower (which copies the whole datastore, BACKUP_MB of it).
 *
 * Environment: RUNS (5), BACKUP_MB (1024; 0 leaves backup and restore out), REPLACE (1; 0 leaves
 * replace-node out). Needs root; the pair is destroyed in a finally.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { REPLACE_AFTER_SILENT_MS } from '../firstboot/src/core/replacement.ts';
import { waitHealthy } from '../test/helpers/fault-matrix.ts';
import { createPair } from '../test/helpers/pair-agents.ts';
import { cliOnLan, httpGetOnLan, serveSsh, sshdOnNewBox } from '../test/helpers/sshd.ts';
import { envInt, printReport } from './report.ts';

const RUNS = envInt('RUNS', 5, 1, 100);
const BACKUP_MB = envInt('BACKUP_MB', 1024, 0, 65_536);
const REPLACE = envInt('REPLACE', 1, 0, 1);
/** Rows written per INSERT while filling (64 MiB a statement). */
const FILL_BATCH = 64;

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? Number.NaN;

async function main(): Promise<void> {
  const pair = await createPair();
  const dir = await mkdtemp(path.join(os.tmpdir(), 'gk8s-bench-operator-'));
  try {
    for (const a of pair.agents) a.start();
    await waitHealthy(pair);
    const ssh = await serveSsh(pair, dir);
    const remote = ssh.siteArgs;
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
    const rows: { metric: string; value: number; unit: string; target?: string }[] = [];
    if (BACKUP_MB > 0) {
      const leaderHost = (JSON.parse((await cliOnLan(pair, ['status', '--json', ...remote])).stdout) as { leader: string }).leader;
      const leader = pair.agents.find((x) => x.address === leaderHost)!;
      const fillStart = performance.now();
      for (let done = 0; done < BACKUP_MB; done += FILL_BATCH) {
        const rowsNow = Math.min(FILL_BATCH, BACKUP_MB - done);
        const sql = `INSERT INTO kine (name, created, deleted, create_revision, prev_revision, lease, value, old_value)
          SELECT '/bench/backup/' || (${done} + g), 1, 0, 0, 0, 0,
                 (SELECT decode(string_agg(md5(random()::text || g || i), ''), 'hex') FROM generate_series(1, 65536) i), NULL
            FROM generate_series(1, ${rowsNow}) g`;
        const r = await leader.exec(
          ['runuser', '-u', 'postgres', '--', 'psql', '-X', '-v', 'ON_ERROR_STOP=1', '-h', `${leader.dirs.pg}/run`, '-d', 'kine', '-c', sql],
          600_000,
        );
        if (r.code !== 0) throw new Error(`filling Kine's database: ${r.stderr.trim()}`);
      }
      process.stderr.write(`bench/operator: ${BACKUP_MB} MiB written in ${((performance.now() - fillStart) / 1000).toFixed(0)} s\n`);
      const file = path.join(dir, 'site.backup');
      const made = await cliOnLan(pair, ['backup', '--out', file, '--json', ...remote], 3_600_000);
      if (made.code !== 0) throw new Error(`backup exit ${made.code}: ${made.stderr.trim()}`);
      const b = JSON.parse(made.stdout) as { archiveBytes: number; fileBytes: number; seconds: number };
      const restored = await cliOnLan(pair, ['restore', file, '--replace', '--json', ...remote], 3_600_000);
      if (restored.code !== 0) throw new Error(`restore exit ${restored.code}: ${restored.stderr.trim()}`);
      const r = JSON.parse(restored.stdout) as { seconds: number };
      const mb = (bytes: number) => bytes / 1e6;
      rows.push(
        { metric: `backup of ${BACKUP_MB} MiB of Kine rows: archive`, value: mb(b.archiveBytes), unit: 'MB' },
        { metric: 'backup: time (dump, SSH, encrypt, read back)', value: b.seconds, unit: 's' },
        { metric: 'backup: throughput (archive bytes)', value: mb(b.archiveBytes) / b.seconds, unit: 'MB/s' },
        { metric: 'restore: time (check, SSH, pg_restore, restarts)', value: r.seconds, unit: 's' },
        { metric: 'restore: throughput (archive bytes)', value: mb(b.archiveBytes) / r.seconds, unit: 'MB/s' },
      );
    }
    if (REPLACE) {
      const healthy = await waitHealthy(pair);
      const dead = healthy.follower;
      await dead.powerOff();
      const diedAt = performance.now();
      await dead.wipe();
      await dead.powerOn();
      await sshdOnNewBox(pair, dead, dir);
      await new Promise((r) => setTimeout(r, Math.max(0, diedAt + REPLACE_AFTER_SILENT_MS + 2000 - performance.now())));
      const replaced = await cliOnLan(pair, ['replace-node', '--json', ...remote], 3_600_000);
      if (replaced.code !== 0) throw new Error(`replace-node exit ${replaced.code}: ${replaced.stderr.trim()}`);
      const events = replaced.stdout
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l) as { event: string; seconds?: number });
      rows.push(
        { metric: 'replace-node: asked to the new box joined', value: events.find((e) => e.event === 'joined')?.seconds ?? Number.NaN, unit: 's' },
        {
          metric: `replace-node: asked to a synchronous follower (datastore copied${BACKUP_MB > 0 ? `, ${BACKUP_MB} MiB of rows` : ''})`,
          value: events.find((e) => e.event === 'done')?.seconds ?? Number.NaN,
          unit: 's',
        },
      );
    }
    printReport('operator', [
      { metric: 'status, first (host keys pinned)', value: status[0]!, unit: 's', target: '<= 2' },
      { metric: `status, median of ${RUNS}`, value: median(status), unit: 's', target: '<= 2' },
      { metric: `GET /metrics on the VIP, median of ${RUNS} (with the node process start)`, value: median(scrape), unit: 's' },
      { metric: 'switchover, asked to done', value: done?.seconds ?? Number.NaN, unit: 's' },
      ...rows,
    ]);
  } finally {
    await pair.destroy();
    await rm(dir, { recursive: true, force: true });
  }
}

await main();

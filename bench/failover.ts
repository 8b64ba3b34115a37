/**
 * bench/failover: the fault matrix of issue 4 (test/helpers/fault-matrix.ts) RUNS times over one
 * pair of real agents in network namespaces, with a writer putting numbered keys through Kine on
 * the VIP. Per scenario: time from the fault to the first acknowledged put sent after it (median
 * and max), time to a healthy synchronous pair again, acknowledged writes, acknowledged writes
 * lost (must be 0), and samples where both nodes took writes (must be 0).
 *
 * Targets are reported, never asserted: failover <= 10 s median for a, b and c.
 *
 * Environment: RUNS (3) passes through the matrix, SCENARIOS (all: "abcdefghi"), WRITE_PERIOD_MS
 * (20: at most 50 puts/s, one at a time), HEALTHY_TIMEOUT_S (180), VERBOSE=1 for progress lines.
 */
import { describe, FaultMatrix, isScenarioId, SCENARIOS, summarize, type ScenarioId, type ScenarioResult } from '../test/helpers/fault-matrix.ts';
import { envInt, printReport } from './report.ts';

const TARGET_MS: Partial<Record<ScenarioId, number>> = { a: 10_000, b: 10_000, c: 10_000 };

const median = (v: number[]): number => {
  if (v.length === 0) return Number.NaN;
  const s = [...v].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? (s[m] as number) : ((s[m - 1] as number) + (s[m] as number)) / 2;
};
const max = (v: number[]): number => (v.length === 0 ? Number.NaN : Math.max(...v));
const secs = (ms: number): number => ms / 1000;
const fmt = (ms: number): string => (Number.isNaN(ms) ? '-' : (ms / 1000).toFixed(2));

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) {
    process.stderr.write('bench/failover: must run as root (network namespaces, tmpfs mounts, PostgreSQL as the postgres user): sudo node --import tsx bench/failover.ts\n');
    process.exit(2);
  }
  const runs = envInt('RUNS', 3, 1, 100);
  const wanted = (process.env.SCENARIOS ?? SCENARIOS.map((s) => s.id).join('')).split('').filter((c) => c.trim() !== '');
  const bad = wanted.filter((c) => !isScenarioId(c));
  if (bad.length > 0 || wanted.length === 0) throw new Error(`SCENARIOS=${process.env.SCENARIOS}: expected letters among ${SCENARIOS.map((s) => s.id).join('')}`);
  const scenarios = SCENARIOS.filter((s) => wanted.includes(s.id));
  if (runs < 3) process.stderr.write(`bench/failover: RUNS=${runs} (< 3): the acceptance figures need at least 3 runs per scenario\n`);
  const say = (line: string): void => void process.stderr.write(`bench/failover: ${line}\n`);

  say(`pairing two agents (tmpfs under each PostgreSQL) ...`);
  const matrix = await FaultMatrix.create({
    writePeriodMs: envInt('WRITE_PERIOD_MS', 20, 1, 10_000),
    healthyTimeoutMs: envInt('HEALTHY_TIMEOUT_S', 180, 30, 1800) * 1000,
    ...(process.env.VERBOSE ? { log: say } : {}),
  });
  let interrupted = false;
  const onSignal = (sig: NodeJS.Signals): void => {
    if (interrupted) return;
    interrupted = true;
    say(`${sig}, destroying the pair`);
    void matrix.destroy().finally(() => process.exit(130));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);

  const results: ScenarioResult[] = [];
  const aborted: string[] = [];
  try {
    pass: for (let rep = 1; rep <= runs; rep++) {
      for (const s of scenarios) {
        say(`pass ${rep}/${runs}, ${s.id}: ${s.title} ...`);
        try {
          const r = await matrix.run(s.id, rep);
          results.push(r);
          const bad = r.error !== undefined || r.verifyError !== undefined || (r.missing?.length ?? 1) > 0 || r.dualPrimary.length > 0;
          say(bad ? describe(r) : summarize(r));
        } catch (e) {
          // No healthy pair to be had, even a fresh one: nothing further would measure anything.
          aborted.push(`${s.id}#${rep}: ${(e as Error).message}`);
          say(`aborting: ${(e as Error).message}`);
          break pass;
        }
      }
    }
  } finally {
    await matrix.destroy();
  }

  const rows: { metric: string; value: number; unit: string; target?: string }[] = [];
  const table: string[][] = [['scenario', 'runs ok', 'first write med (s)', 'max (s)', 'healthy med (s)', 'max (s)', 'acked', 'lost', 'dual', 'target']];
  for (const s of scenarios) {
    const rs = results.filter((r) => r.scenario === s.id);
    if (rs.length === 0) continue;
    const ok = rs.filter((r) => r.error === undefined && r.verifyError === undefined);
    const first = rs.flatMap((r) => (r.faultToFirstWriteMs !== undefined ? [r.faultToFirstWriteMs] : []));
    const healthy = rs.flatMap((r) => (r.recoveryMs !== undefined ? [r.recoveryMs] : []));
    const acked = rs.reduce((n, r) => n + r.acked, 0);
    const lost = rs.reduce((n, r) => n + (r.missing?.length ?? 0), 0);
    const unverified = rs.filter((r) => r.missing === undefined).length;
    const dual = rs.reduce((n, r) => n + r.dualPrimary.length, 0);
    const target = TARGET_MS[s.id];
    const targetText = target !== undefined ? `<= ${target / 1000} s median` : undefined;
    rows.push({ metric: `${s.id} runs completed (of ${rs.length})`, value: ok.length, unit: 'runs' });
    rows.push({ metric: `${s.id} fault -> first write via VIP, median`, value: secs(median(first)), unit: 's', ...(targetText ? { target: targetText } : {}) });
    rows.push({ metric: `${s.id} fault -> first write via VIP, max`, value: secs(max(first)), unit: 's' });
    rows.push({ metric: `${s.id} fault -> healthy sync pair, median`, value: secs(median(healthy)), unit: 's' });
    rows.push({ metric: `${s.id} fault -> healthy sync pair, max`, value: secs(max(healthy)), unit: 's' });
    rows.push({ metric: `${s.id} acked writes`, value: acked, unit: '' });
    rows.push({ metric: `${s.id} lost acked writes${unverified ? ` (${unverified} runs not read back)` : ''}`, value: lost, unit: '', target: '0' });
    rows.push({ metric: `${s.id} dual-primary samples`, value: dual, unit: '', target: '0' });
    const med = median(first);
    const verdict = target === undefined ? '' : Number.isNaN(med) ? 'no data' : med <= target ? `met (<= ${target / 1000} s)` : `MISSED (<= ${target / 1000} s)`;
    table.push([s.id, `${ok.length}/${rs.length}`, fmt(med), fmt(max(first)), fmt(median(healthy)), fmt(max(healthy)), String(acked), `${lost}${unverified ? '?' : ''}`, String(dual), verdict]);
  }
  printReport('failover', rows);

  process.stdout.write('\n');
  const widths = (table[0] ?? []).map((_, c) => Math.max(...table.map((r) => (r[c] ?? '').length)));
  for (const r of table) process.stdout.write(`${r.map((cell, c) => (c === 0 ? cell.padEnd(widths[c] ?? 0) : cell.padStart(widths[c] ?? 0))).join('  ')}\n`);
  for (const s of scenarios) process.stdout.write(`  ${s.id}: ${s.title}\n`);

  const failedRuns = results.filter((r) => r.error !== undefined || r.verifyError !== undefined);
  if (failedRuns.length > 0) say(`${failedRuns.length} run(s) did not complete:\n${failedRuns.map((r) => `  - ${r.scenario}#${r.rep}: ${r.error ?? r.verifyError}`).join('\n')}`);
  if (aborted.length > 0) say(`aborted: ${aborted.join('; ')}`);
  if (results.length === 0 || aborted.length > 0) process.exitCode = 1;
}

await main();

/**
 * bench/peers (`make bench-peers`): geminik8s beside the systems users would pick instead, in one
 * run, on the same kind of network namespaces, with the same writer, sampler and faults:
 *
 *   a  the primary's whole node dies (link down and every process killed at once)
 *   c  the primary's link goes down
 *
 * Systems: our pair of agents (the fault matrix's own runs of a and c: keys through Kine on the
 * VIP), then each of bench/peer-clusters.ts's: Patroni + etcd with default and with the tightest
 * documented timings, and pg_auto_failover (keys through a Kine on the gateway over a multi-host
 * connection string with target_session_attrs=read-write: what they offer clients). One system at a
 * time (two cores).
 *
 * Per system and fault: fault -> first acknowledged write sent after it (median and max over the
 * runs), acknowledged writes, acknowledged writes lost, dual-primary samples, and our median as a
 * ratio of theirs (below 1: we are faster). Reported, never asserted.
 *
 * Environment: RUNS (3), SYSTEMS (geminik8s,patroni,patroni-tight,pg_auto_failover),
 * SCENARIOS (ac), WRITE_PERIOD_MS (20), VERBOSE=1 for progress lines.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { FaultMatrix, firstWritableAfter, startWritableSampler, startWriter, summarize, verifyAcked, type WriteTarget } from '../test/helpers/fault-matrix.ts';
import { eventually } from '../test/helpers/poll.ts';
import { createPeerCluster, PEER_SYSTEMS, isPeerSystemId, waitPeerHealthy, type PeerCluster, type PeerSystemId } from './peer-clusters.ts';
import { envInt, printReport } from './report.ts';

const FAULTS = { a: "the primary's whole node dies", c: "the primary's link goes down" } as const;
type Fault = keyof typeof FAULTS;
const isFault = (s: string): s is Fault => s in FAULTS;
type SystemId = 'geminik8s' | PeerSystemId;
const OURS: SystemId = 'geminik8s';

interface Run {
  system: SystemId;
  fault: Fault;
  rep: number;
  firstWriteMs?: number;
  /** Fault -> the old standby sampled taking writes (the failover, without the client's way back). */
  standbyWritableMs?: number;
  acked: number;
  lost?: number;
  /** When each lost write was acknowledged, in ms from the fault (negative: before it). */
  lostAckedAtMs?: number[];
  dual: number;
  error?: string;
}

const errText = (e: unknown): string => (e instanceof Error ? e.message : String(e)).replace(/\s+/g, ' ').trim();
const median = (v: number[]): number => {
  if (v.length === 0) return Number.NaN;
  const s = [...v].sort((x, y) => x - y);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? (s[m] as number) : ((s[m - 1] as number) + (s[m] as number)) / 2;
};
const fmt = (ms: number): string => (Number.isNaN(ms) ? '-' : (ms / 1000).toFixed(2));

/** One fault on a peer system, measured the way FaultMatrix.run measures our pair. */
async function runPeer(c: PeerCluster, fault: Fault, rep: number, periodMs: number, say: (l: string) => void): Promise<Run> {
  const h0 = await waitPeerHealthy(c, 300_000);
  const prefix = `/peers/${Date.now().toString(36)}/${c.system}/${fault}${rep}/`;
  const target: WriteTarget = { kind: 'etcd', host: c.kineHost, client: c.client, prefix };
  const writer = startWriter(c, target, { periodMs });
  const sampler = startWritableSampler(c.nodes.map((n) => () => c.writable(n.index)));
  let faultAt = 0;
  let injectedAt = 0;
  let error: string | undefined;
  const standby = 1 - h0.primary;
  try {
    await eventually('the writer’s first acknowledged put', 60_000, () => writer.acks[0]);
    await sleep(3000);
    faultAt = Date.now();
    if (fault === 'a') await c.powerOff(h0.primary);
    else await c.linkDown(h0.primary);
    injectedAt = Date.now();
    const promotedAt = await eventually(
      `n${standby + 1} (the standby) to be promoted`,
      180_000,
      async () => ((await c.writable(standby)) ? Date.now() : undefined),
      200,
    );
    say(`${c.system} ${fault}#${rep}: n${standby + 1} primary ${promotedAt - faultAt} ms after the fault`);
    await eventually('a put acknowledged after the fault', 120_000, () => writer.firstAckFrom(injectedAt));
    if (fault === 'a') await c.powerOn(h0.primary);
    else await c.linkUp(h0.primary);
    await waitPeerHealthy(c, 300_000);
    await sleep(1000);
  } catch (e) {
    error = errText(e);
    say(`${c.system} ${fault}#${rep}: ${error}`);
  }
  const w = await writer.stop();
  const s = await sampler.stop();
  if (error !== undefined) {
    const last = w.failures.slice(-3).map((f) => `#${f.n} ${f.error}`);
    error += `; writer's last failures: ${last.join(' | ') || 'none'}; writable (n1 n2): ${s.writable.map((x) => `${x.at - faultAt} ms ${x.states}`).join(', ')}`;
  }
  let lost: number | undefined;
  let lostAckedAtMs: number[] = [];
  try {
    const missing = new Set(
      (
        await verifyAcked(
          c,
          target,
          w.acks.map((a) => a.key),
        )
      ).missing,
    );
    lost = missing.size;
    lostAckedAtMs = w.acks.filter((a) => missing.has(a.key)).map((a) => a.ackedAt - faultAt);
    // Lost through Kine, but is the row in PostgreSQL? On which node, with which id?
    for (const key of [...missing].slice(0, 3)) {
      const rows = await Promise.all(c.nodes.map((n) => c.kineSql(n.index, `SELECT id, deleted FROM kine WHERE name = '${key.replace(/'/g, "''")}'`)));
      say(`${c.system} ${fault}#${rep}: lost ${key}: rows in PostgreSQL: ${rows.map((r, i) => `n${i + 1} ${r || 'none'}`).join('; ')}`);
      // Its neighbours in the writer's order, and whatever holds the ids around theirs (a gap fill?).
      const n = Number(key.slice(prefix.length));
      const p = prefix.replace(/'/g, "''");
      const near = await c.kineSql(
        standby,
        `WITH w AS (SELECT id FROM kine WHERE name LIKE '${p}%' AND substring(name from ${prefix.length + 1})::int BETWEEN ${n - 15} AND ${n + 5})
         SELECT string_agg(id || ':' || replace(name, '${p}', '') || CASE WHEN deleted = 1 THEN '(deleted)' ELSE '' END, ' ' ORDER BY id)
         FROM kine WHERE id BETWEEN (SELECT min(id) - 2 FROM w) AND (SELECT max(id) + 2 FROM w)`,
      );
      say(`${c.system} ${fault}#${rep}: rows around it on n${standby + 1} (id:n): ${near}`);
      const nearby = (x: number): boolean => Math.abs(x - n) <= 4;
      say(
        `${c.system} ${fault}#${rep}: the writer around it (ms from the fault): ${[
          ...w.acks.filter((a) => nearby(a.n)).map((a) => `#${a.n} sent ${a.startedAt - faultAt} acked ${a.ackedAt - faultAt}`),
          ...w.failures.filter((f) => nearby(f.n)).map((f) => `#${f.n} sent ${f.startedAt - faultAt} failed ${f.at - faultAt} (${f.error.slice(0, 80)})`),
        ].join('; ')}`,
      );
    }
  } catch (e) {
    error ??= `read-back: ${errText(e)}`;
  }
  const first = injectedAt > 0 ? w.acks.find((a) => a.startedAt >= injectedAt) : undefined;
  const promoted = faultAt > 0 ? firstWritableAfter(s, standby, faultAt) : undefined;
  return {
    system: c.system,
    fault,
    rep,
    ...(first ? { firstWriteMs: first.ackedAt - faultAt } : {}),
    ...(promoted !== undefined ? { standbyWritableMs: promoted - faultAt } : {}),
    acked: w.acks.length,
    ...(lost !== undefined ? { lost } : {}),
    ...(lostAckedAtMs.length > 0 ? { lostAckedAtMs } : {}),
    dual: s.dual.length,
    ...(error !== undefined ? { error } : {}),
  };
}

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) {
    process.stderr.write('bench/peers: must run as root (network namespaces, tmpfs mounts, PostgreSQL as the postgres user)\n');
    process.exit(2);
  }
  const say = (line: string): void => void process.stderr.write(`bench/peers: ${line}\n`);
  const verbose = (line: string): void => (process.env.VERBOSE ? say(line) : undefined);
  const runs = envInt('RUNS', 3, 1, 100);
  const periodMs = envInt('WRITE_PERIOD_MS', 20, 1, 10_000);
  const faults = (process.env.SCENARIOS ?? 'ac').split('');
  const systems = (process.env.SYSTEMS ?? [OURS, ...PEER_SYSTEMS.map((p) => p.id)].join(',')).split(',').filter((s) => s !== '');
  const badFault = faults.filter((f) => !isFault(f));
  const badSystem = systems.filter((s) => s !== OURS && !isPeerSystemId(s));
  if (badFault.length > 0 || faults.length === 0) throw new Error(`SCENARIOS=${process.env.SCENARIOS}: expected letters among ${Object.keys(FAULTS).join('')}`);
  if (badSystem.length > 0 || systems.length === 0)
    throw new Error(`SYSTEMS=${process.env.SYSTEMS}: expected a comma-separated list among ${[OURS, ...PEER_SYSTEMS.map((p) => p.id)].join(', ')}`);

  const results: Run[] = [];
  const aborted: string[] = [];
  let destroyCurrent: (() => Promise<void>) | undefined;
  const onSignal = (sig: NodeJS.Signals): void => {
    say(`${sig}, tearing down`);
    void (destroyCurrent?.() ?? Promise.resolve()).finally(() => process.exit(130));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);

  for (const system of systems) {
    say(`${system}: starting ...`);
    try {
      if (system === OURS) {
        const matrix = await FaultMatrix.create({ writePeriodMs: periodMs, ...(process.env.VERBOSE ? { log: say } : {}) });
        destroyCurrent = () => matrix.destroy();
        try {
          for (let rep = 1; rep <= runs; rep++)
            for (const f of faults as Fault[]) {
              const r = await matrix.run(f, rep);
              // VERBOSE: the matrix said it already.
              if (!process.env.VERBOSE) say(summarize(r));
              results.push({
                system,
                fault: f,
                rep,
                ...(r.faultToFirstWriteMs !== undefined ? { firstWriteMs: r.faultToFirstWriteMs } : {}),
                ...(r.standbyWritableMs !== undefined ? { standbyWritableMs: r.standbyWritableMs } : {}),
                acked: r.acked,
                ...(r.missing ? { lost: r.missing.length } : {}),
                dual: r.dualPrimary.length,
                ...(r.error || r.verifyError ? { error: r.error ?? r.verifyError } : {}),
              });
            }
        } finally {
          await matrix.destroy();
        }
      } else if (isPeerSystemId(system)) {
        const cluster = await createPeerCluster(system, verbose, (destroy) => {
          destroyCurrent = destroy;
        });
        try {
          for (let rep = 1; rep <= runs; rep++)
            for (const f of faults as Fault[]) {
              say(`${system} ${f}#${rep}: ${FAULTS[f]} ...`);
              const r = await runPeer(cluster, f, rep, periodMs, say);
              say(
                `${system} ${f}#${rep}: first write ${fmt(r.firstWriteMs ?? Number.NaN)} s, acked ${r.acked}, lost ${r.lost ?? '?'}${r.lostAckedAtMs ? ` (acknowledged at ${r.lostAckedAtMs.map((ms) => `${ms} ms`).join(', ')} from the fault)` : ''}, dual ${r.dual}${r.error ? `, ERROR ${r.error}` : ''}`,
              );
              results.push(r);
            }
        } finally {
          await cluster.destroy();
          say(`${system}: its daemons' and Kine's logs are in ${cluster.logsDir}`);
        }
      }
    } catch (e) {
      aborted.push(`${system}: ${errText(e)}`);
      say(`${system} aborted: ${errText(e)}`);
    }
    destroyCurrent = undefined;
  }

  const rows: { metric: string; value: number; unit: string; target?: string }[] = [];
  const table: string[][] = [
    [
      'system',
      'fault',
      'runs ok',
      'standby writable med (s)',
      'first write med (s)',
      'max (s)',
      'acked',
      'lost',
      'dual',
      'ours/theirs writable',
      'ours/theirs write',
    ],
  ];
  const figure = (rs: Run[], pick: (r: Run) => number | undefined): number[] => rs.flatMap((r) => (pick(r) !== undefined ? [pick(r) as number] : []));
  const maxOf = (v: number[]): number => (v.length ? Math.max(...v) : Number.NaN);
  const ratio = (x: number): string => (Number.isNaN(x) ? '-' : x.toFixed(2));
  for (const f of faults as Fault[]) {
    const ours = results.filter((r) => r.system === OURS && r.fault === f);
    const oursWrite = median(figure(ours, (r) => r.firstWriteMs));
    const oursWritable = median(figure(ours, (r) => r.standbyWritableMs));
    for (const system of systems as SystemId[]) {
      const rs = results.filter((r) => r.system === system && r.fault === f);
      if (rs.length === 0) continue;
      const firsts = figure(rs, (r) => r.firstWriteMs);
      const writable = median(figure(rs, (r) => r.standbyWritableMs));
      const med = median(firsts);
      const lost = rs.reduce((n, r) => n + (r.lost ?? 0), 0);
      const unverified = rs.filter((r) => r.lost === undefined).length;
      const dual = rs.reduce((n, r) => n + r.dual, 0);
      const theirs = system !== OURS;
      rows.push({ metric: `${system} ${f} fault -> old standby takes writes, median`, value: writable / 1000, unit: 's' });
      rows.push({ metric: `${system} ${f} fault -> first acked write, median`, value: med / 1000, unit: 's' });
      rows.push({ metric: `${system} ${f} fault -> first acked write, max`, value: maxOf(firsts) / 1000, unit: 's' });
      rows.push({ metric: `${system} ${f} acked writes lost${unverified ? ` (${unverified} runs not read back)` : ''}`, value: lost, unit: '', target: '0' });
      rows.push({ metric: `${system} ${f} dual-primary samples`, value: dual, unit: '', target: '0' });
      if (theirs) {
        rows.push({ metric: `geminik8s / ${system} ${f}: standby takes writes (median)`, value: oursWritable / writable, unit: 'ratio' });
        rows.push({ metric: `geminik8s / ${system} ${f}: first acked write (median)`, value: oursWrite / med, unit: 'ratio' });
      }
      table.push([
        system,
        f,
        `${rs.filter((r) => r.error === undefined).length}/${rs.length}`,
        fmt(writable),
        fmt(med),
        fmt(maxOf(firsts)),
        String(rs.reduce((n, r) => n + r.acked, 0)),
        `${lost}${unverified ? '?' : ''}`,
        String(dual),
        theirs ? ratio(oursWritable / writable) : '',
        theirs ? ratio(oursWrite / med) : '',
      ]);
    }
  }
  if (rows.length > 0) printReport('peers', rows);
  process.stdout.write('\n');
  const widths = (table[0] ?? []).map((_, c) => Math.max(...table.map((r) => (r[c] ?? '').length)));
  for (const r of table) process.stdout.write(`${r.map((cell, c) => (c < 2 ? cell.padEnd(widths[c] ?? 0) : cell.padStart(widths[c] ?? 0))).join('  ')}\n`);
  for (const [f, t] of Object.entries(FAULTS)) process.stdout.write(`  ${f}: ${t}\n`);
  process.stdout.write(
    '  standby writable: the old standby first sampled taking writes (every 200 ms); first write: the first put sent after the fault and acknowledged\n',
  );
  process.stdout.write('  geminik8s: keys through Kine on the VIP; the others: keys through a Kine on the gateway over a multi-host connection string\n');
  for (const p of PEER_SYSTEMS) process.stdout.write(`  ${p.id}: ${p.title}\n`);
  const failed = results.filter((r) => r.error !== undefined);
  if (failed.length > 0) say(`${failed.length} run(s) did not complete:\n${failed.map((r) => `  - ${r.system} ${r.fault}#${r.rep}: ${r.error}`).join('\n')}`);
  if (aborted.length > 0) say(`aborted: ${aborted.join('; ')}`);
  if (results.length === 0 || aborted.length > 0) process.exitCode = 1;
}

await main();

/**
 * The fault-injection matrix of issue 4, shared by test/fault/matrix.test.ts,
 * test/fault/kubernetes.test.ts and bench/failover.ts.
 *
 * One pair (test/helpers/pair-agents.ts, a tmpfs under each node's PostgreSQL so that a disk can be
 * filled) serves a whole pass. Each scenario starts from a healthy pair, and while
 *  - a writer in the gateway namespace writes numbered objects through the VIP, one at a time,
 *    2 s per write, and records every acknowledged one. Its target is either
 *      etcd:      keys `/fault/<run>/<scenario>/<n>` through Kine (etcd gRPC KV/Put over mTLS with
 *                 a client certificate from the pair CA), or
 *      configmap: ConfigMaps `fault-<run>-<scenario>-<n>` created through the Kubernetes API at
 *                 https://<VIP>:6443 (TLS verified against the pair CA, the agents' admin
 *                 kubeconfig), labelled with the run and scenario,
 *    and
 *  - a checker samples both nodes' PostgreSQL every 200 ms and records any moment both take writes,
 * injects its fault, waits for the recovery it expects, undoes what is still broken (power, link,
 * bridge port, disk: the environment, never the software), waits for a healthy synchronous pair
 * (with Kubernetes: GET /readyz on the VIP answering 200 too), and reads every acknowledged object
 * back through the VIP.
 *
 * Everything is bounded in time; the writer is a child process (this file, `--fault-writer`) in the
 * gateway namespace and is stopped in a finally. Traffic stays inside the pair's namespaces.
 *
 * Static imports are node builtins, types and helpers built on builtins alone (etcd-client.ts,
 * poll.ts), so the writer child starts fast.
 */
import { access, constants, mkdtemp, rmdir } from 'node:fs/promises';
import type http2 from 'node:http2';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ChildProcess } from 'node:child_process';
import { etcdPut } from '../../firstboot/src/adapters/etcd-grpc.ts';
import { connectKine, etcdctlFlags, type EtcdClientFiles } from './etcd-client.ts';
import type { Pair, PairAgent, PairOptions } from './pair-agents.ts';
import { eventually } from './poll.ts';

const KUBE_CLIENT = fileURLToPath(new URL('./kube-client.ts', import.meta.url));

const SELF = fileURLToPath(import.meta.url);
const REPO = fileURLToPath(new URL('../..', import.meta.url));
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const errText = (e: unknown): string => (e instanceof Error ? e.message : String(e)).replace(/\s+/g, ' ').trim();

export const SCENARIOS = [
  { id: 'a', title: "the leader's whole node dies (all its processes killed)" },
  { id: 'b', title: "the leader's PostgreSQL crashes" },
  { id: 'c', title: "the leader's link goes down" },
  { id: 'd', title: 'partition: only the follower still reaches the gateway' },
  { id: 'e', title: 'full partition: each node loses the other and the gateway' },
  { id: 'f', title: 'both nodes restart together' },
  { id: 'g', title: "the follower's disk fills" },
  { id: 'h', title: 'planned switchover under write load' },
  { id: 'i', title: 'the old leader returns after a failover' },
  { id: 'j', title: "the leader's state disk turns read-only" },
  { id: 'k', title: "the leader's PostgreSQL hangs (every process stopped) for 20 s" },
  { id: 'm', title: 'a fenced leader receives a client that tries every way to write' },
  { id: 'n', title: 'the standby falls behind under bulk writes and the leader dies within a second of going async' },
] as const;
export type ScenarioId = (typeof SCENARIOS)[number]['id'];
export const isScenarioId = (s: string): s is ScenarioId => SCENARIOS.some((x) => x.id === s);

/** What the writer and the read-back need of a pair: its namespaces (a pair of agents or of VMs). */
export type OnLan = Pick<Pair, 'topology'>;

const gwExec = (pair: OnLan, argv: string[], timeoutMs = 15_000) => pair.topology.exec(pair.topology.gw.ns, argv, { timeoutMs });
const etcdctlArgs = async (pair: Pair, commandTimeoutS: number) => [
  'etcdctl',
  ...etcdctlFlags(pair.vip, await pair.etcdClient()),
  '--dial-timeout=2s',
  `--command-timeout=${commandTimeoutS}s`,
];
/** The Kubernetes API on the VIP, as the writer and the admin kubeconfig address it. */
export const vipServer = (pair: Pair): string => `https://${pair.vip}:6443`;
/** test/helpers/kube-client.ts's command line in the gateway namespace (the VIP is not reachable from the host). */
const kubeInGw = (pair: OnLan, args: string[], timeoutMs: number) => gwExec(pair, [process.execPath, '--import', 'tsx', KUBE_CLIENT, ...args], timeoutMs);

/** GET /readyz on the VIP from the gateway namespace: undefined when it answered 200, else what it said. */
export async function vipNotReady(pair: Pair): Promise<string | undefined> {
  const r = await kubeInGw(pair, ['readyz', await pair.adminKubeconfig(), vipServer(pair)], 30_000);
  if (r.code !== 0) return `no answer (${r.stderr.trim().split('\n').slice(-1)[0] ?? `exit ${r.code}`})`;
  const a = JSON.parse(r.stdout) as { status: number; body: string };
  if (a.status === 200) return undefined;
  const failing = a.body
    .split('\n')
    .filter((l) => l.startsWith('[-]'))
    .join(' ');
  return `HTTP ${a.status}: ${(failing || a.body).replace(/\s+/g, ' ').slice(0, 300)}`;
}

// ---------------------------------------------------------------------------------------------
// Prerequisites
// ---------------------------------------------------------------------------------------------

async function onPath(cmd: string): Promise<boolean> {
  const dirs = [...(process.env.PATH ?? '').split(':'), '/usr/sbin', '/sbin', '/usr/bin', '/bin'];
  for (const d of dirs)
    if (
      d &&
      (await access(path.join(d, cmd), constants.X_OK).then(
        () => true,
        () => false,
      ))
    )
      return true;
  return false;
}

/** Throws one error naming everything missing (never skips): root, the tools, a mountable tmpfs. */
export async function requireFaultPrereqs(): Promise<void> {
  const missing: string[] = [];
  if (process.getuid?.() !== 0) missing.push('root (network namespaces, tmpfs mounts, PostgreSQL as the postgres user): run as root');
  const tools: [string, string][] = [
    ['ip', 'iproute2'],
    ['etcdctl', 'etcd-client'],
    ['psql', 'postgresql-client-15'],
    ['runuser', 'util-linux'],
    ['mount', 'mount'],
    ['umount', 'mount'],
    ['dd', 'coreutils'],
  ];
  for (const [cmd, pkg] of tools) if (!(await onPath(cmd))) missing.push(`\`${cmd}\` (apt-get install ${pkg})`);
  if (
    !(await access('/usr/lib/postgresql/15/bin/pg_ctl', constants.X_OK).then(
      () => true,
      () => false,
    ))
  )
    missing.push('PostgreSQL 15 server binaries (apt-get install postgresql-15)');
  if (missing.length === 0) {
    const { run } = await import('./netns.ts');
    const dir = await mkdtemp(path.join(os.tmpdir(), 'gk8s-tmpfs-probe-'));
    try {
      const r = await run(['mount', '-t', 'tmpfs', '-o', 'size=1m', `gk8s-pg-${process.pid}`, dir]);
      if (r.code !== 0) missing.push(`a tmpfs mount (mount -t tmpfs failed: ${r.stderr.trim()})`);
      else await run(['umount', dir]);
    } finally {
      await rmdir(dir).catch(() => undefined);
    }
  }
  if (missing.length > 0) throw new Error(`the fault matrix cannot run here; missing: ${missing.join('; ')}`);
}

// ---------------------------------------------------------------------------------------------
// Writer: numbered objects through the VIP, from the gateway namespace
// ---------------------------------------------------------------------------------------------

/**
 * What the writer writes and verifyAcked() reads back, both through the VIP. Object n is called
 * `${prefix}${n}`: an etcd key, or a ConfigMap name in `namespace`.
 */
export type WriteTarget =
  | { kind: 'etcd'; host: string; client: EtcdClientFiles; prefix: string }
  | {
      kind: 'configmap';
      /** https://<VIP>:6443 (the kubeconfig's CA and client certificate are used, its server is not). */
      server: string;
      kubeconfig: string;
      namespace: string;
      prefix: string;
      /** On every ConfigMap; verification lists exactly these. */
      labels: Record<string, string>;
    };
export type WriteTargetKind = WriteTarget['kind'];

/** The label selector that lists exactly one writer's ConfigMaps. */
export const labelSelector = (labels: Record<string, string>): string =>
  Object.entries(labels)
    .map(([k, v]) => `${k}=${v}`)
    .join(',');

export interface Ack {
  n: number;
  /** The etcd key or ConfigMap name. */
  key: string;
  /** Epoch ms the put was sent / acknowledged. */
  startedAt: number;
  ackedAt: number;
}
export interface PutFailure {
  n: number;
  startedAt: number;
  at: number;
  error: string;
}
export interface WriterReport {
  prefix: string;
  acks: Ack[];
  failures: PutFailure[];
  /** How the writer process ended, and its stderr tail when it did not end cleanly. */
  exit: string;
}
export interface Writer {
  prefix: string;
  /** Live: grows while the writer runs. */
  readonly acks: readonly Ack[];
  readonly failures: readonly PutFailure[];
  /** The first acknowledged put that was sent at or after `t` (epoch ms). */
  firstAckFrom(t: number): Ack | undefined;
  stop(): Promise<WriterReport>;
}

export interface WriterOptions {
  /** Per put, connection included (2000). */
  putTimeoutMs?: number;
  /** At most one put started per period (20 ms: up to 50 puts/s). */
  periodMs?: number;
  /** The writer stops by itself after this long (15 min). */
  maxMs?: number;
}

export function startWriter(pair: OnLan, target: WriteTarget, o: WriterOptions = {}): Writer {
  const prefix = target.prefix;
  const putTimeoutMs = o.putTimeoutMs ?? 2000;
  const periodMs = o.periodMs ?? 20;
  const maxMs = o.maxMs ?? 15 * 60_000;
  const acks: Ack[] = [];
  const failures: PutFailure[] = [];
  const child: ChildProcess = pair.topology.spawn(
    pair.topology.gw.ns,
    [process.execPath, '--import', 'tsx', SELF, '--fault-writer', JSON.stringify(target), String(putTimeoutMs), String(periodMs), String(maxMs)],
    { cwd: REPO, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let buf = '';
  let stderr = '';
  child.stdout?.on('data', (d: Buffer) => {
    buf += d.toString();
    for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      const [kind, n, startedAt, at, ...rest] = line.split(' ');
      if (kind === 'A') acks.push({ n: Number(n), key: `${prefix}${n}`, startedAt: Number(startedAt), ackedAt: Number(at) });
      else if (kind === 'F') failures.push({ n: Number(n), startedAt: Number(startedAt), at: Number(at), error: rest.join(' ') });
    }
  });
  child.stderr?.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4000)));
  const closed = new Promise<string>((resolve) => child.once('close', (code, signal) => resolve(signal ? `signal ${signal}` : `exit ${code}`)));
  // Belt and braces: the writer bounds itself, this bounds a writer that hangs.
  const guard = setTimeout(() => child.kill('SIGKILL'), maxMs + 30_000);
  guard.unref();
  let stopped: Promise<WriterReport> | undefined;
  return {
    prefix,
    acks,
    failures,
    firstAckFrom: (t) => acks.find((a) => a.startedAt >= t),
    stop() {
      stopped ??= (async () => {
        child.kill('SIGTERM');
        // The current put ends within its timeout; then the writer exits.
        const exit = await Promise.race([closed, sleep(putTimeoutMs + 5000).then(() => undefined)]);
        clearTimeout(guard);
        if (exit === undefined) child.kill('SIGKILL');
        const how = exit ?? `killed after no exit within ${putTimeoutMs + 5000} ms`;
        return { prefix, acks, failures, exit: how === 'exit 0' ? how : `${how}${stderr ? `: ${stderr.trim().slice(-1500)}` : ''}` };
      })();
      return stopped;
    },
  };
}

/** The writer's put of object n, bounded by the put timeout; `reset` after a failure, `close` at the end. */
interface Putter {
  put(n: number): Promise<void>;
  reset(): void;
  close(): void;
}

async function putter(target: WriteTarget, putTimeoutMs: number): Promise<Putter> {
  if (target.kind === 'etcd') {
    let session: http2.ClientHttp2Session | undefined;
    return {
      async put(n) {
        if (!session || session.destroyed || session.closed) session = connectKine(target.host, target.client);
        await etcdPut(session, `${target.prefix}${n}`, Buffer.from(String(n)), putTimeoutMs);
      },
      // A fresh connection next time: the VIP may have moved, the old one may be black-holed.
      reset() {
        session?.destroy();
        session = undefined;
      },
      close() {
        session?.destroy();
      },
    };
  }
  // Imported here: the etcd writer does not load the YAML parser.
  const { kubeClient } = await import('./kube-client.ts');
  // One connection per request (kube-client): nothing to reset after a failover.
  const client = await kubeClient(target.kubeconfig, { server: target.server, timeoutMs: putTimeoutMs });
  return {
    put: async (n) => void (await client.createConfigMap(target.namespace, `${target.prefix}${n}`, { n: String(n) }, target.labels)),
    reset: () => undefined,
    close: () => undefined,
  };
}

/** Writer process: one line per put on stdout, `A n sentMs ackMs` or `F n sentMs failMs error`; `E` at the end. */
async function writerMain(target: WriteTarget, putTimeoutMs: number, periodMs: number, maxMs: number): Promise<void> {
  let stopping = false;
  process.on('SIGTERM', () => (stopping = true));
  process.on('SIGINT', () => (stopping = true));
  const deadline = Date.now() + maxMs;
  const out = (line: string): boolean => process.stdout.write(`${line}\n`);
  const p = await putter(target, putTimeoutMs);
  for (let n = 0; !stopping && Date.now() < deadline; n++) {
    const startedAt = Date.now();
    try {
      await p.put(n);
      out(`A ${n} ${startedAt} ${Date.now()}`);
    } catch (e) {
      out(`F ${n} ${startedAt} ${Date.now()} ${errText(e)}`);
      p.reset();
    }
    const wait = startedAt + periodMs - Date.now();
    if (wait > 0 && !stopping) await sleep(wait);
  }
  p.close();
  out('E');
  process.exit(0);
}

// ---------------------------------------------------------------------------------------------
// Dual-primary checker
// ---------------------------------------------------------------------------------------------

export interface DualSample {
  at: number;
  /** 1-based node numbers that took writes at that moment. */
  nodes: number[];
}
/** What sampling every node's PostgreSQL for writability found. */
export interface WritableReport {
  samples: number;
  /** Samples where a node's PostgreSQL did not answer. */
  unanswered: number;
  dual: DualSample[];
  /** Each change of the sampled states, e.g. "W r" = node 1 writable, node 2 not ("?" = no answer). */
  writable: { at: number; states: string }[];
}
export interface CheckerReport extends WritableReport {
  /** Each change of the agents' role/term (and kube-apiserver state, with Kubernetes). */
  roles: { at: number; states: string }[];
  /** Each change of a node's liveness reason (why it does or does not act). */
  reasons: { at: number; node: number; reason: string }[];
  /** Every second: how long each node had not heard the other's heartbeat (its last liveness tick; undefined: no status). */
  peerSilence: { at: number; ms: (number | undefined)[] }[];
}
export interface Checker {
  stop(): Promise<CheckerReport>;
}

/**
 * Samples each node's writability (probe i: node i + 1; true = takes writes, undefined = no
 * answer) every `intervalMs` and records every moment two or more take writes. Shared by the
 * pair's checker and bench-peers' systems.
 */
export function startWritableSampler(probes: readonly (() => Promise<boolean | undefined>)[], intervalMs = 200): { stop(): Promise<WritableReport> } {
  let stopping = false;
  const report: WritableReport = { samples: 0, unanswered: 0, dual: [], writable: [] };
  const sampling = (async () => {
    let last = '';
    while (!stopping) {
      const at = Date.now();
      const states = await Promise.all(probes.map((p) => p()));
      report.samples++;
      if (states.includes(undefined)) report.unanswered++;
      const writers = states.flatMap((s, i) => (s === true ? [i + 1] : []));
      if (writers.length >= 2) report.dual.push({ at, nodes: writers });
      const key = states.map((s) => (s === undefined ? '?' : s ? 'W' : 'r')).join(' ');
      if (key !== last) report.writable.push({ at, states: key });
      last = key;
      const wait = at + intervalMs - Date.now();
      if (wait > 0) await sleep(wait);
    }
  })();
  return {
    async stop() {
      stopping = true;
      await sampling;
      return report;
    },
  };
}

/** When node `index` (0-based) was first sampled taking writes at or after `from`; undefined if never. */
export function firstWritableAfter(r: WritableReport, index: number, from: number): number | undefined {
  return r.writable.find((s) => s.at >= from && s.states.split(' ')[index] === 'W')?.at;
}

export function startChecker(pair: Pair, intervalMs = 200): Checker {
  let stopping = false;
  const sampler = startWritableSampler(
    pair.agents.map((a) => () => a.writable()),
    intervalMs,
  );
  const report = { roles: [] as CheckerReport['roles'], reasons: [] as CheckerReport['reasons'], peerSilence: [] as CheckerReport['peerSilence'] };
  const lastReason: string[] = [];
  const roles = (async () => {
    let last = '';
    while (!stopping) {
      const at = Date.now();
      const silence: (number | undefined)[] = pair.agents.map(() => undefined);
      const states = await Promise.all(
        pair.agents.map(async (a) => {
          try {
            const s = await a.status();
            const api = (s.kubernetes as { apiserver?: unknown } | undefined)?.apiserver;
            const live = s.liveness as { reason?: unknown; peerSilentMs?: unknown } | undefined;
            if (typeof live?.peerSilentMs === 'number') silence[a.index] = live.peerSilentMs;
            if (typeof live?.reason === 'string' && live.reason !== lastReason[a.index]) {
              lastReason[a.index] = live.reason;
              report.reasons.push({ at, node: a.index + 1, reason: live.reason });
            }
            return `n${a.index + 1} ${String(s.role)}/${String(s.term)}${api !== undefined ? ` api ${String(api)}` : ''}`;
          } catch {
            return `n${a.index + 1} -`;
          }
        }),
      );
      report.peerSilence.push({ at, ms: silence });
      const key = states.join(', ');
      if (key !== last) report.roles.push({ at, states: key });
      last = key;
      const wait = at + 1000 - Date.now();
      if (wait > 0) await sleep(wait);
    }
  })();
  return {
    async stop() {
      stopping = true;
      const [writable] = await Promise.all([sampler.stop(), roles]);
      return { ...writable, ...report };
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Health and read-back
// ---------------------------------------------------------------------------------------------

export interface Healthy {
  leader: PairAgent;
  follower: PairAgent;
  term: number;
  /** Epoch ms the pair was found healthy. */
  at: number;
}

async function holdsVip(pair: Pair, a: PairAgent): Promise<boolean> {
  const r = await a.exec(['ip', '-4', '-o', 'addr', 'show', 'dev', 'eth0']);
  return r.stdout.includes(`inet ${pair.vip}/`);
}

/** One look at the pair: healthy, or what is missing. */
export async function checkHealthy(pair: Pair): Promise<Healthy | { missing: string }> {
  const agents = pair.agents.slice(0, 2);
  const st = await Promise.all(agents.map((a) => a.status().catch((e: unknown) => ({ error: errText(e) }) as Record<string, unknown>)));
  const seen = st
    .map((s, i) => `node ${i + 1}: ${s.error !== undefined ? `no status (${String(s.error)})` : `${String(s.role)} term ${String(s.term)}`}`)
    .join(', ');
  const li = st.findIndex((s) => s.role === 'leader');
  const fi = st.findIndex((s) => s.role === 'follower');
  if (li < 0 || fi < 0) return { missing: `one leader and one follower (${seen})` };
  const leader = agents[li] as PairAgent;
  const follower = agents[fi] as PairAgent;
  const ls = st[li] as Record<string, unknown>;
  const fs = st[fi] as Record<string, unknown>;
  if (ls.term !== fs.term || typeof ls.term !== 'number') return { missing: `the same term on both (${seen})` };
  // A follower that does not hear the leader's heartbeats cannot take over safely: not healthy.
  const { DEFAULT_LIVENESS_CONFIG } = await import('../../firstboot/src/liveness/core/types.ts');
  const silent = [ls, fs].map((s) => (s.liveness as { peerSilentMs?: unknown } | undefined)?.peerSilentMs);
  if (silent.some((ms) => typeof ms !== 'number' || ms >= DEFAULT_LIVENESS_CONFIG.peerDeadMs)) {
    return {
      missing: `both nodes hearing each other's heartbeats (peer silent for: leader ${String(silent[0])} ms, follower ${String(silent[1])} ms; alive below ${DEFAULT_LIVENESS_CONFIG.peerDeadMs} ms)`,
    };
  }
  const rows = await leader
    .sql("SELECT application_name || ' ' || state || ' ' || sync_state FROM pg_stat_replication")
    .catch((e: unknown) => `(${errText(e)})`);
  const name = typeof fs.name === 'string' ? fs.name : undefined;
  if (!rows.split('\n').some((r) => / streaming sync$/.test(r) && (name === undefined || r.startsWith(`${name} `)))) {
    return { missing: `the follower (node ${fi + 1}) streaming in sync in the leader's pg_stat_replication (rows: ${rows.replace(/\n/g, '; ') || 'none'})` };
  }
  const recovery = await follower.sql('SELECT pg_is_in_recovery()').catch((e: unknown) => `(${errText(e)})`);
  if (recovery !== 't') return { missing: `the follower's PostgreSQL in recovery (pg_is_in_recovery: ${recovery})` };
  if (!(await holdsVip(pair, leader))) return { missing: `the VIP on the leader (node ${li + 1})` };
  if (await holdsVip(pair, follower)) return { missing: `the follower (node ${fi + 1}) releasing the VIP` };
  const put = await gwExec(pair, [...(await etcdctlArgs(pair, 3)), 'put', '/fault/health', String(Date.now())], 10_000).catch((e: unknown) => ({
    code: -1,
    stdout: '',
    stderr: errText(e),
  }));
  if (put.code !== 0) return { missing: `Kine taking a put through the VIP (${put.stderr.trim() || `exit ${put.code}`})` };
  if (pair.kubernetes) {
    const notReady = await vipNotReady(pair).catch((e: unknown) => errText(e));
    if (notReady !== undefined) return { missing: `GET /readyz on ${vipServer(pair)} answering 200 (${notReady})` };
  }
  return { leader, follower, term: ls.term, at: Date.now() };
}

/**
 * Exactly one leader and one follower in status with the same term, hearing each other's
 * heartbeats (each one's liveness peerSilentMs below the agent's peerDeadMs), the follower streaming in
 * sync on the leader, the follower in recovery, the VIP on the leader only, Kine taking a put
 * through the VIP and, when the pair runs Kubernetes, GET /readyz on the VIP answering 200.
 * Throws after `timeoutMs` naming what is still missing.
 */
export async function waitHealthy(pair: Pair, timeoutMs = 180_000): Promise<Healthy> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const r = await checkHealthy(pair).catch((e: unknown) => ({ missing: errText(e) }));
    if ('leader' in r) return r;
    if (Date.now() > deadline) throw new Error(`the pair is not healthy after ${timeoutMs / 1000} s; missing: ${r.missing}`);
    await sleep(1000);
  }
}

/**
 * Reads every object the writer's target names back through the VIP (etcd: every key under the
 * prefix, through Kine; configmap: every ConfigMap with the writer's labels, through the API
 * server); returns the acknowledged ones that are missing. Kine serves rows in revision order and
 * holds back rows behind a gap in its id sequence (a PostgreSQL crash skips sequence values) until
 * it has filled the gap, so an object is only reported missing once it stayed unread for `settleMs`.
 */
export async function verifyAcked(
  pair: OnLan,
  target: WriteTarget,
  acked: readonly string[],
  timeoutMs = 60_000,
  settleMs = 30_000,
): Promise<{ present: number; missing: string[] }> {
  const prefix = target.prefix;
  const what = target.kind === 'etcd' ? prefix : `the ConfigMaps labelled ${labelSelector(target.labels)}`;
  const read = async (): Promise<Set<string>> => {
    const out = await eventually(
      `reading ${what} back through the VIP`,
      timeoutMs,
      async () => {
        if (target.kind === 'etcd') {
          const r = await gwExec(
            pair,
            ['etcdctl', ...etcdctlFlags(target.host, target.client), '--dial-timeout=2s', '--command-timeout=30s', 'get', '--prefix', '--keys-only', prefix],
            40_000,
          );
          if (r.code !== 0) throw new Error(`etcdctl get --prefix ${prefix}: ${r.stderr.trim() || `exit ${r.code}`}`);
          return r.stdout;
        }
        const r = await kubeInGw(pair, ['list', target.kubeconfig, target.server, target.namespace, labelSelector(target.labels)], 60_000);
        if (r.code !== 0) throw new Error(`listing ${what}: ${r.stderr.trim() || `exit ${r.code}`}`);
        return r.stdout;
      },
      1000,
    );
    return new Set(
      out
        .split('\n')
        .map((l) => l.trim())
        .filter((l) => l.length > 0),
    );
  };
  const deadline = Date.now() + settleMs;
  let present = await read();
  while (acked.some((k) => !present.has(k)) && Date.now() < deadline) {
    await sleep(2000);
    present = await read();
  }
  return { present: present.size, missing: acked.filter((k) => !present.has(k)) };
}

// ---------------------------------------------------------------------------------------------
// Scenarios
// ---------------------------------------------------------------------------------------------

interface ScenarioContext {
  pair: Pair;
  leader: PairAgent;
  follower: PairAgent;
  term: number;
  writer: Writer;
  /** Records the moment of the fault (call right before injecting it). */
  mark(): void;
  /**
   * Records that the fault is fully in place (call right after injecting it): only puts sent from
   * then on count as writes after the fault, a put that slipped through while the fault was being
   * set up (a kill or `ip` call takes a few ms) does not.
   */
  injected(): void;
  faultAt(): number;
  injectedAt(): number;
  note(text: string): void;
}

/** The follower of the healthy pair became leader with a higher term; resolves with the new term. */
async function followerPromoted(ctx: ScenarioContext, timeoutMs = 90_000): Promise<number> {
  const term = await eventually(`node ${ctx.follower.index + 1} (the follower) to become leader with a term above ${ctx.term}`, timeoutMs, async () => {
    const s = await ctx.follower.status();
    return s.role === 'leader' && typeof s.term === 'number' && s.term > ctx.term ? s.term : undefined;
  });
  ctx.note(`node ${ctx.follower.index + 1} leader with term ${term} ${Date.now() - ctx.faultAt()} ms after the fault`);
  return term;
}

async function writeAfterFault(ctx: ScenarioContext, timeoutMs: number): Promise<Ack> {
  return eventually('a put through the VIP acknowledged after the fault', timeoutMs, () => ctx.writer.firstAckFrom(ctx.injectedAt()));
}

const IMPLS: Record<ScenarioId, (ctx: ScenarioContext) => Promise<void>> = {
  async a(ctx) {
    ctx.mark();
    await ctx.leader.powerOff();
    ctx.injected();
    await followerPromoted(ctx);
    await ctx.leader.powerOn();
  },
  async b(ctx) {
    ctx.mark();
    const pid = await ctx.leader.crashPostgres();
    ctx.injected();
    ctx.note(`SIGKILLed postmaster ${pid} on node ${ctx.leader.index + 1}`);
    await writeAfterFault(ctx, 120_000);
  },
  async c(ctx) {
    ctx.mark();
    await ctx.leader.linkDown();
    ctx.injected();
    await followerPromoted(ctx);
    await ctx.leader.linkUp();
  },
  async d(ctx) {
    ctx.mark();
    await ctx.leader.detach();
    ctx.injected();
    await followerPromoted(ctx);
    await ctx.leader.attach();
  },
  async e(ctx) {
    ctx.mark();
    await Promise.all([ctx.leader.detach(), ctx.follower.detach()]);
    ctx.injected();
    await sleep(15_000);
    const roles = await Promise.all(
      [ctx.leader, ctx.follower].map((a) =>
        a.status().then(
          (s) => String(s.role),
          () => '-',
        ),
      ),
    );
    ctx.note(`after 15 s of full partition: old leader ${roles[0]}, old follower ${roles[1]}`);
    await Promise.all([ctx.leader.attach(), ctx.follower.attach()]);
  },
  async f(ctx) {
    ctx.mark();
    await Promise.all(ctx.pair.agents.map((a) => a.powerOff()));
    ctx.injected();
    await sleep(2000);
    await Promise.all(ctx.pair.agents.map((a) => a.powerOn()));
  },
  async g(ctx) {
    ctx.mark();
    await ctx.follower.fillDisk();
    ctx.injected();
    // Hold it full for 15 s, topping up whatever PostgreSQL frees (recycled WAL) meanwhile.
    for (let i = 0; i < 5; i++) {
      await sleep(3000);
      await ctx.follower.fillDisk().catch((e: unknown) => ctx.note(`top-up: ${errText(e)}`));
    }
    await ctx.follower.releaseDisk();
  },
  async h(ctx) {
    ctx.mark();
    const answer = await ctx.leader.switchover();
    ctx.note(`switchover answer: ${JSON.stringify(answer)}`);
    // The request is answered at once; writes stop when the old leader turns read-only. Puts sent
    // from then on can only be served by the new leader.
    await eventually(
      `node ${ctx.leader.index + 1} (the old leader) to stop taking writes`,
      60_000,
      async () => ((await ctx.leader.writable()) === true ? undefined : true),
      100,
    );
    ctx.injected();
    ctx.note(`old leader read-only ${Date.now() - ctx.faultAt()} ms after the request`);
    await followerPromoted(ctx, 60_000);
  },
  async i(ctx) {
    ctx.mark();
    await ctx.leader.powerOff();
    ctx.injected();
    const term = await followerPromoted(ctx);
    await writeAfterFault(ctx, 60_000);
    // Writes land on the new leader only while the old one is away.
    await sleep(5000);
    await ctx.leader.powerOn();
    await eventually(
      `node ${ctx.leader.index + 1} (the old leader) to rejoin as follower with term ${term}`,
      180_000,
      async () => {
        const s = await ctx.leader.status();
        if (s.role === 'follower' && s.term === term) return s;
        return undefined;
      },
      1000,
    ).then((s) => {
      const divergent = (s.liveness as Record<string, unknown> | undefined)?.divergentRowsFile;
      ctx.note(
        `old leader rejoined as follower ${Date.now() - ctx.faultAt()} ms after the fault${divergent ? `; divergent rows saved to ${String(divergent)}` : ''}`,
      );
    });
  },
  // Its PostgreSQL still works (another folder here): the agent's own disk probe must see it and
  // hand over, and the fence must not wait for a record it cannot write.
  async j(ctx) {
    ctx.mark();
    await ctx.leader.stateReadOnly();
    ctx.injected();
    await followerPromoted(ctx);
    await writeAfterFault(ctx, 60_000);
  },
  // A hung server, not a dead one: its sockets accept and never answer, pg_ctl still finds it
  // running, and every action that touches it would wait forever without its deadline.
  async k(ctx) {
    ctx.mark();
    const pids = await ctx.leader.freezePostgres();
    ctx.injected();
    ctx.note(`SIGSTOPped ${pids.length} PostgreSQL processes on node ${ctx.leader.index + 1}`);
    await followerPromoted(ctx);
    await writeAfterFault(ctx, 60_000);
    await sleep(Math.max(0, 20_000 - (Date.now() - ctx.faultAt())));
    await ctx.leader.thawPostgres();
  },
  // The fence is the server's (issue 11 point 4): the leader, cut off from the peer and the
  // gateway, fences; every way a client could write on it then fails, though each wrote before.
  async m(ctx) {
    const peerName = (await ctx.leader.sql('SELECT application_name FROM pg_stat_replication LIMIT 1')).trim();
    const control = await tryEveryWrite(ctx.pair, ctx.leader, peerName, 'healthy');
    // A session that began before the fence and calls itself the agent (whose own sessions a fence
    // keeps): it must be ended all the same, or it could turn read-only off and write.
    const early = await kineSession(ctx.leader, 'geminik8s-agent');
    control.push(await writeIn(early, 'an open kine session named geminik8s-agent', 'healthy'));
    const unwritten = control.filter((a) => !a.wrote);
    if (unwritten.length > 0) throw new Error(`a way to write failed on the healthy leader, so it proves nothing fenced: ${JSON.stringify(unwritten)}`);
    try {
      ctx.mark();
      await ctx.leader.detach();
      ctx.injected();
      await followerPromoted(ctx);
      await eventually(`node ${ctx.leader.index + 1} (the cut-off leader) to fence`, 60_000, async () =>
        (await ctx.leader.writable()) === false ? true : undefined,
      );
      const fenced = await tryEveryWrite(ctx.pair, ctx.leader, peerName, 'fenced');
      fenced.push(await writeIn(early, 'an open kine session named geminik8s-agent, after SET default_transaction_read_only = off', 'fenced'));
      for (const a of fenced) ctx.note(`fenced: ${a.way}: ${a.wrote ? 'WROTE' : 'refused'} (${a.said})`);
      const wrote = fenced.filter((a) => a.wrote);
      if (wrote.length > 0) throw new Error(`the fenced leader took writes: ${wrote.map((a) => a.way).join('; ')}`);
    } finally {
      await early.end().catch(() => undefined);
    }
    await ctx.leader.attach();
    // What the fenced node held must not surface once it rejoins: the new leader has only the healthy rows.
    await eventually(
      `node ${ctx.leader.index + 1} to rejoin as follower`,
      180_000,
      async () => ((await ctx.leader.status()).role === 'follower' ? true : undefined),
      1000,
    );
    const tags = (await ctx.follower.sql("SELECT string_agg(DISTINCT tag, ',') FROM fence_probe", 'kine')).trim();
    if (tags !== 'healthy') throw new Error(`fence_probe on the new leader holds ${JSON.stringify(tags)}, expected only the healthy leader's rows`);
  },
  // Issue 11 point 5: the standby's WAL receiver stalls under bulk writes (SIGSTOP), the leader's
  // walsender times out, the leader announces async, switches once the follower echoes it, and
  // dies within a second of the switch while the standby resumes behind. The keys it acknowledged
  // alone exist only on it: the follower must not promote over them, and once the leader is back
  // the pair resumes with every acknowledged key.
  async n(ctx) {
    const bulk = await kineSession(ctx.leader, 'gk8s-bulk-writer');
    await bulk.query('CREATE TABLE IF NOT EXISTS bulk_probe (v text)');
    let bulking = true;
    let bulkRows = 0;
    const bulkLoop = (async () => {
      while (bulking) {
        await bulk.query('INSERT INTO bulk_probe SELECT repeat(md5(g::text), 32) FROM generate_series(1, 2000) g').then(
          () => (bulkRows += 2000),
          () => sleep(200),
        );
      }
    })();
    const receiver = Number((await ctx.follower.sql('SELECT pid FROM pg_stat_wal_receiver')).trim());
    if (!(receiver > 0)) throw new Error(`node ${ctx.follower.index + 1} has no WAL receiver to stall`);
    let stalled = false;
    try {
      process.kill(receiver, 'SIGSTOP');
      stalled = true;
      ctx.note(`SIGSTOPped the follower's WAL receiver ${receiver} under bulk writes`);
      const syncNames = async () => (await ctx.leader.sql('SHOW synchronous_standby_names').catch(() => '?')).trim();
      // The walsender times out (10 s), the standby counts as gone 4 s later, the follower echoes the announcement.
      await eventually(`node ${ctx.leader.index + 1} (the leader) to switch to async`, 60_000, async () => ((await syncNames()) === '' ? true : undefined), 50);
      const asyncAt = Date.now();
      process.kill(receiver, 'SIGCONT');
      stalled = false;
      ctx.mark();
      const killFrom = Date.now() - asyncAt;
      await ctx.leader.powerOff();
      ctx.injected();
      ctx.note(
        `the leader went async; its power-off began ${killFrom} ms later and took ${Date.now() - asyncAt - killFrom} ms (${bulkRows} bulk rows committed)`,
      );
      // The power-off's own length depends on the host's load; its start is what the scenario sets.
      if (killFrom > 1000) throw new Error(`the leader's power-off began ${killFrom} ms after it went async, not within a second`);
    } finally {
      if (stalled) process.kill(receiver, 'SIGCONT');
      bulking = false;
      await bulk.end().catch(() => undefined);
      await bulkLoop;
    }
    // Long enough for a takeover (the peer silent 5 s, and then some): the follower heard the
    // announcement, so it must hold back.
    for (let i = 0; i < 12; i++) {
      await sleep(1000);
      const s = await ctx.follower.status().catch(() => undefined);
      if (s?.role === 'leader') throw new Error(`node ${ctx.follower.index + 1} promoted over the commits its leader made alone (term ${String(s.term)})`);
    }
    ctx.note('the follower held back while the async leader was down');
    await ctx.leader.powerOn();
    await writeAfterFault(ctx, 120_000);
  },
};

/**
 * Every way a client on the box, or one that still reaches it, could try to write to the node's
 * PostgreSQL with the application's credentials (the kine role: what a client can hold; the
 * postgres role is the agents' own, peer-mapped to root or known only to the peer's agent). Each
 * way is a real write that succeeds on a healthy leader, which the scenario checks first.
 */
const WRITE_WAYS = [
  { way: 'kine role over TCP, default_transaction_read_only=off, BEGIN READ WRITE', host: 'self', options: true, sql: 'BEGIN READ WRITE' },
  {
    way: "kine role over TCP named as the peer's standby, SET SESSION CHARACTERISTICS",
    host: 'self',
    appName: 'peer',
    sql: 'SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE; BEGIN',
  },
  { way: 'kine role on the unix socket, SET transaction_read_only = off', host: 'socket', sql: 'BEGIN; SET transaction_read_only = off' },
  { way: 'kine role through the VIP as this box sees it', host: 'vip', options: true, sql: 'BEGIN READ WRITE' },
] as const;

interface WriteAttempt {
  way: string;
  wrote: boolean;
  said: string;
}

/** Runs every WRITE_WAYS attempt and a put through the node's own Kine, from inside its namespace; `tag` marks the rows. */
async function tryEveryWrite(pair: Pair, node: PairAgent, peerName: string, tag: string): Promise<WriteAttempt[]> {
  const { writeFile } = await import('node:fs/promises');
  const password = await kinePassword(node);
  // The password reaches psql through a 0600 passfile, never an argument or the environment.
  const passfile = path.join(node.dirs.root, 'fence-probe.pgpass');
  await writeFile(passfile, `*:*:*:kine:${password.replaceAll('\\', '\\\\').replaceAll(':', '\\:')}\n`, { mode: 0o600 });
  const hosts = { self: node.address, socket: path.join(node.dirs.pg, 'run'), vip: pair.vip };
  const attempts: WriteAttempt[] = [];
  for (const w of WRITE_WAYS) {
    const conninfo = [
      `host=${hosts[w.host]}`,
      'port=5432',
      'dbname=kine',
      'user=kine',
      'connect_timeout=3',
      ...(w.host === 'socket' ? [] : ['sslmode=require']),
      ...('appName' in w ? [`application_name=${peerName}`] : []),
      ...('options' in w ? ["options='-c default_transaction_read_only=off'"] : []),
    ].join(' ');
    const sql = `CREATE TABLE IF NOT EXISTS fence_probe (tag text, way text); ${w.sql}; INSERT INTO fence_probe VALUES ('${tag}', '${w.way.replaceAll("'", "''")}'); COMMIT`;
    const r = await node.exec(
      ['env', `PGPASSFILE=${passfile}`, '/usr/lib/postgresql/15/bin/psql', '-X', '-w', '-v', 'ON_ERROR_STOP=1', conninfo, '-c', sql],
      15_000,
    );
    attempts.push({ way: w.way, wrote: r.code === 0, said: (r.code === 0 ? r.stdout : r.stderr).replace(/\s+/g, ' ').trim().slice(0, 200) });
  }
  const put = await node.exec(
    ['etcdctl', ...etcdctlFlags(node.address, await pair.etcdClient()), '--dial-timeout=3s', '--command-timeout=5s', 'put', `/fence-probe/${tag}`, 'v'],
    15_000,
  );
  attempts.push({
    way: "a put through this box's own Kine",
    wrote: put.code === 0,
    said: (put.code === 0 ? put.stdout : put.stderr).replace(/\s+/g, ' ').trim().slice(0, 200),
  });
  return attempts;
}

/** A kine-role session on the node's unix socket (reachable from the host), named `appName`. */
async function kineSession(node: PairAgent, appName: string) {
  const { default: pg } = await import('pg');
  const c = new pg.Client({
    host: path.join(node.dirs.pg, 'run'),
    port: 5432,
    user: 'kine',
    database: 'kine',
    password: await kinePassword(node),
    application_name: appName,
    connectionTimeoutMillis: 3000,
    query_timeout: 5000,
  });
  c.on('error', () => undefined);
  await c.connect();
  return c;
}

/** One write in an open session, after turning read-only off for it. */
async function writeIn(c: { query(sql: string): Promise<unknown> }, way: string, tag: string): Promise<WriteAttempt> {
  try {
    await c.query('SET default_transaction_read_only = off');
    await c.query('CREATE TABLE IF NOT EXISTS fence_probe (tag text, way text)');
    await c.query(`INSERT INTO fence_probe VALUES ('${tag}', '${way.replaceAll("'", "''")}')`);
    return { way, wrote: true, said: 'INSERT 0 1' };
  } catch (e) {
    return { way, wrote: false, said: errText(e).slice(0, 200) };
  }
}

async function kinePassword(node: PairAgent): Promise<string> {
  const { loadSecrets } = await import('../../firstboot/src/provision/secrets.ts');
  const { secretsDirOf } = await import('../../firstboot/src/cluster/settings.ts');
  const password = loadSecrets(secretsDirOf(node.dirs.state))?.kinePassword;
  if (!password) throw new Error(`node ${node.index + 1} has no kine password in its secrets`);
  return password;
}

export interface ScenarioResult {
  scenario: ScenarioId;
  rep: number;
  /** What the writer wrote through the VIP: etcd keys (Kine) or ConfigMaps (the Kubernetes API). */
  target: WriteTargetKind;
  /** The pair had an arbiter (MatrixOptions `arbiter`). */
  arbiter: boolean;
  prefix: string;
  /** 1-based node numbers and terms before and after. */
  leaderBefore: number;
  termBefore: number;
  leaderAfter?: number;
  termAfter?: number;
  /**
   * Time from the fault to the first acknowledged put sent once it was in place; with the
   * configmap target this is the API's unavailability on the VIP.
   */
  faultToFirstWriteMs?: number;
  /**
   * Time from the fault to the first sample (checker, every 200 ms) in which the old follower's
   * PostgreSQL takes writes: the failover itself, without the client's way back to it.
   */
  standbyWritableMs?: number;
  /** How long injecting the fault took (the fault counts from its start). */
  injectMs: number;
  /**
   * The longest a node had not heard its peer's heartbeat while both were up, from the writer's
   * start to the fault (sampled every second): a follower that missed heartbeats just before the
   * fault may rightly refuse to promote (the leader may have degraded to async unheard).
   */
  heartbeatGapBeforeFaultMs?: number;
  /** Time from the fault to the pair found healthy again. */
  recoveryMs?: number;
  acked: number;
  ackedAfterFault: number;
  failures: number;
  /** Acknowledged keys / ConfigMaps not read back (undefined when the read-back failed, see verifyError). */
  missing?: string[];
  dualPrimary: DualSample[];
  samples: number;
  /** The scenario did not complete (recovery timed out, ...). */
  error?: string;
  verifyError?: string;
  writerExit: string;
  notes: string[];
  checker: CheckerReport;
  firstFailures: PutFailure[];
}

export interface MatrixOptions {
  /** Size of the tmpfs under each node's PostgreSQL (1024 MiB). */
  pgTmpfsMb?: number;
  /** Writer pace (20 ms between put starts). */
  writePeriodMs?: number;
  /** Bound on the wait for a healthy pair after a fault (180 s). */
  healthyTimeoutMs?: number;
  /** Progress lines (default: none). */
  log?: (line: string) => void;
  /**
   * The pair runs Kubernetes (createPair `kubernetes`) and the writer creates ConfigMaps through
   * https://<VIP>:6443 instead of putting etcd keys; health needs /readyz on the VIP too.
   */
  kubernetes?: boolean;
  /**
   * The site names an arbiter (createPair `arbiter`), run on the gateway once the pair is healthy:
   * takeovers and the switch to async then take its lease first (bench-failover ARBITER=1).
   */
  arbiter?: boolean;
}

export class FaultMatrix {
  /** Unique per matrix: keys are `/fault/<id>-r<rep>/<scenario>/<n>`, ConfigMaps `fault-<id>-r<rep>-<scenario>-<n>`. */
  readonly id = `${Date.now().toString(36)}${process.pid.toString(36)}`;
  private constructor(
    public pair: Pair,
    private readonly o: MatrixOptions,
  ) {}

  private static async newPair(o: MatrixOptions): Promise<Pair> {
    const { createPair } = await import('./pair-agents.ts');
    const opts: PairOptions = { pgTmpfsMb: o.pgTmpfsMb ?? 1024, ...(o.kubernetes ? { kubernetes: true } : {}), ...(o.arbiter ? { arbiter: true } : {}) };
    const pair = await createPair(opts);
    try {
      for (const a of pair.agents) a.start();
      // Kubernetes starts once the datastore is ready, and a cold kube-apiserver takes its time.
      const h = await waitHealthy(pair, o.kubernetes ? 420_000 : 240_000);
      if (o.arbiter) {
        const arbiter = await pair.startArbiter();
        await eventually('the arbiter to record the leader and its term', 90_000, async () => {
          const st = await arbiter.state();
          return st && st.term === h.term && st.holder !== null && !st.alone ? st : undefined;
        });
      }
      return pair;
    } catch (e) {
      await pair.destroy();
      throw new Error(`the pair for the fault matrix did not pair: ${errText(e)}`);
    }
  }

  /** Checks the prerequisites, pairs two agents (tmpfs under each PostgreSQL; Kubernetes if asked) and waits until healthy. */
  static async create(o: MatrixOptions = {}): Promise<FaultMatrix> {
    await requireFaultPrereqs();
    return new FaultMatrix(await FaultMatrix.newPair(o), o);
  }

  private log(line: string): void {
    this.o.log?.(line);
  }

  /** Undoes leftover faults and waits for health; a pair that does not recover is replaced (noted). */
  private async ensureHealthy(notes: string[]): Promise<Healthy> {
    for (const a of this.pair.agents) await a.heal().catch((e: unknown) => notes.push(`heal node ${a.index + 1}: ${errText(e)}`));
    try {
      return await waitHealthy(this.pair, this.o.healthyTimeoutMs ?? 180_000);
    } catch (e) {
      const why = `the pair was not healthy before the scenario (${errText(e)}); replaced by a fresh pair`;
      this.log(why);
      notes.push(why);
      await this.pair.destroy();
      this.pair = await FaultMatrix.newPair(this.o);
      return waitHealthy(this.pair, 60_000);
    }
  }

  /** The writer's target for one scenario run, through the VIP. */
  private async target(scenario: ScenarioId, rep: number): Promise<WriteTarget> {
    if (!this.o.kubernetes)
      return { kind: 'etcd', host: this.pair.vip, client: await this.pair.etcdClient(), prefix: `/fault/${this.id}-r${rep}/${scenario}/` };
    return {
      kind: 'configmap',
      server: vipServer(this.pair),
      kubeconfig: await this.pair.adminKubeconfig(),
      namespace: 'default',
      prefix: `fault-${this.id}-r${rep}-${scenario}-`,
      labels: { 'fault.geminik8s.test/run': `${this.id}-r${rep}-${scenario}` },
    };
  }

  /** Runs one scenario once; never throws for a scenario failure (see `error`), only when no healthy pair can be had. */
  async run(scenario: ScenarioId, rep: number): Promise<ScenarioResult> {
    const notes: string[] = [];
    const h0 = await this.ensureHealthy(notes);
    const pair = this.pair;
    const target = await this.target(scenario, rep);
    const prefix = target.prefix;
    this.log(
      `${scenario}#${rep}: leader node ${h0.leader.index + 1} term ${h0.term}, writing ${target.kind === 'etcd' ? 'keys' : `ConfigMaps in ${target.namespace} through ${target.server}:`} ${prefix}*`,
    );
    const writer = startWriter(pair, target, { periodMs: this.o.writePeriodMs ?? 20 });
    const checker = startChecker(pair);
    let faultAt = 0;
    let injectedAt = 0;
    let error: string | undefined;
    let healthy: Healthy | undefined;
    try {
      await eventually('the writer’s first acknowledged put', 30_000, () => writer.acks[0]);
      await sleep(3000);
      const ctx: ScenarioContext = {
        pair,
        leader: h0.leader,
        follower: h0.follower,
        term: h0.term,
        writer,
        mark: () => {
          faultAt = Date.now();
        },
        injected: () => {
          injectedAt = Date.now();
        },
        faultAt: () => faultAt,
        injectedAt: () => injectedAt || faultAt,
        note: (t) => notes.push(t),
      };
      await IMPLS[scenario](ctx);
      if (faultAt === 0) faultAt = Date.now();
      if (injectedAt === 0) injectedAt = faultAt;
      for (const a of pair.agents) await a.heal();
      this.log(`${scenario}#${rep}: fault injected and undone, waiting for a healthy pair`);
      healthy = await waitHealthy(pair, this.o.healthyTimeoutMs ?? 180_000);
      // The service is back: a put sent after the fault was acknowledged (normally long ago).
      await eventually('a put through the VIP acknowledged after the fault', 30_000, () => writer.firstAckFrom(injectedAt));
      await sleep(1000);
    } catch (e) {
      error = errText(e);
      this.log(`${scenario}#${rep}: ${error}`);
      for (const a of pair.agents) await a.heal().catch(() => undefined);
    }
    const w = await writer.stop();
    const c = await checker.stop();
    let missing: string[] | undefined;
    let verifyError: string | undefined;
    try {
      // After a failure the pair may still be recovering: give it a moment, bounded.
      if (error !== undefined) await waitHealthy(pair, 60_000).catch(() => undefined);
      missing = (
        await verifyAcked(
          pair,
          target,
          w.acks.map((a) => a.key),
        )
      ).missing;
    } catch (e) {
      verifyError = errText(e);
    }
    if (faultAt > 0 && injectedAt === 0) injectedAt = faultAt;
    const first = faultAt > 0 ? w.acks.find((a) => a.startedAt >= injectedAt) : undefined;
    const promoted = faultAt > 0 ? firstWritableAfter(c, h0.follower.index, faultAt) : undefined;
    const gaps = c.peerSilence.filter((p) => faultAt === 0 || p.at < faultAt).flatMap((p) => p.ms.filter((v): v is number => v !== undefined));
    const result: ScenarioResult = {
      scenario,
      rep,
      target: target.kind,
      arbiter: this.o.arbiter === true,
      prefix,
      leaderBefore: h0.leader.index + 1,
      termBefore: h0.term,
      ...(healthy ? { leaderAfter: healthy.leader.index + 1, termAfter: healthy.term, recoveryMs: healthy.at - faultAt } : {}),
      ...(first ? { faultToFirstWriteMs: first.ackedAt - faultAt } : {}),
      ...(promoted !== undefined ? { standbyWritableMs: promoted - faultAt } : {}),
      acked: w.acks.length,
      injectMs: injectedAt - faultAt,
      ...(gaps.length > 0 ? { heartbeatGapBeforeFaultMs: Math.max(...gaps) } : {}),
      ackedAfterFault: faultAt > 0 ? w.acks.filter((a) => a.startedAt >= injectedAt).length : 0,
      failures: w.failures.length,
      ...(missing ? { missing } : {}),
      dualPrimary: c.dual,
      samples: c.samples,
      ...(error !== undefined ? { error } : {}),
      ...(verifyError !== undefined ? { verifyError } : {}),
      writerExit: w.exit,
      notes,
      checker: c,
      firstFailures: w.failures.slice(0, 5),
    };
    this.log(`${scenario}#${rep}: ${summarize(result)}`);
    return result;
  }

  async destroy(): Promise<void> {
    await this.pair.destroy();
  }
}

/** One line per run for logs. */
export function summarize(r: ScenarioResult): string {
  const ms = (v: number | undefined): string => (v === undefined ? '-' : `${(v / 1000).toFixed(2)} s`);
  const things = r.target === 'etcd' ? 'puts' : 'ConfigMap creates';
  return [
    `${r.scenario}#${r.rep}${r.target === 'etcd' ? '' : ` (${r.target})`}`,
    `leader n${r.leaderBefore}/t${r.termBefore} -> ${r.leaderAfter !== undefined ? `n${r.leaderAfter}/t${r.termAfter}` : '?'}`,
    `first ${r.target === 'etcd' ? 'write' : 'ConfigMap'} after fault ${ms(r.faultToFirstWriteMs)}`,
    `healthy after ${ms(r.recoveryMs)}`,
    `acked ${r.acked} (${r.ackedAfterFault} after the fault), failed ${things} ${r.failures}`,
    `missing ${r.missing ? r.missing.length : `? (${r.verifyError ?? 'not read back'})`}`,
    `dual-primary samples ${r.dualPrimary.length}/${r.samples}`,
    `longest heartbeat gap before the fault ${ms(r.heartbeatGapBeforeFaultMs)}`,
    ...(r.error ? [`ERROR ${r.error}`] : []),
  ].join('; ');
}

/** Everything a failed run needs for a post-mortem, as text. */
export function describe(r: ScenarioResult): string {
  const t0 = r.checker.writable[0]?.at ?? 0;
  const rel = (at: number): string => `+${((at - t0) / 1000).toFixed(1)}s`;
  return [
    summarize(r),
    `notes: ${r.notes.join(' | ') || '-'}`,
    `writer: ${r.writerExit}; first failures: ${r.firstFailures.map((f) => `#${f.n} ${f.error}`).join(' | ') || '-'}`,
    `writable (n1 n2): ${r.checker.writable.map((s) => `${rel(s.at)} ${s.states}`).join(', ')}`,
    `roles: ${r.checker.roles.map((s) => `${rel(s.at)} ${s.states}`).join(' | ')}`,
    `liveness reasons: ${r.checker.reasons.map((s) => `${rel(s.at)} n${s.node} ${s.reason}`).join(' | ') || '-'}`,
    ...(r.dualPrimary.length
      ? [
          `dual primary at: ${r.dualPrimary
            .slice(0, 10)
            .map((d) => rel(d.at))
            .join(', ')}`,
        ]
      : []),
    ...(r.missing?.length
      ? [`missing ${r.target === 'etcd' ? 'keys' : 'ConfigMaps'}: ${r.missing.slice(0, 20).join(', ')}${r.missing.length > 20 ? ' …' : ''}`]
      : []),
  ].join('\n');
}

// Writer mode: `node --import tsx test/helpers/fault-matrix.ts --fault-writer <WriteTarget JSON> <putTimeoutMs> <periodMs> <maxMs>`
if (process.argv[2] === '--fault-writer' && process.argv[1] !== undefined && path.resolve(process.argv[1]) === SELF) {
  const [target, putTimeoutMs, periodMs, maxMs] = process.argv.slice(3);
  if (!target || !putTimeoutMs || !periodMs || !maxMs)
    throw new Error('usage: fault-matrix.ts --fault-writer <WriteTarget JSON> <putTimeoutMs> <periodMs> <maxMs>');
  await writerMain(JSON.parse(target) as WriteTarget, Number(putTimeoutMs), Number(periodMs), Number(maxMs));
}

/**
 * Kine as a supervised child process of the agent, and its health check.
 *
 * The endpoint URL carries the kine role's password, so it is passed in the child's environment
 * (KINE_ENDPOINT, readable only by root through /proc), never in argv. Kine must point at the
 * current primary: a standby is read-only. On the leader that is its local PostgreSQL; on the
 * follower the VIP (or, in tests, the leader's address).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import { kineEndpoint } from './core/pgconf.ts';
import { runTool } from '../adapters/exec.ts';

export interface KineOptions {
  /** The kine executable (appliance: /usr/local/bin/kine). */
  binary: string;
  /** etcd API listen address, e.g. 127.0.0.1:2379. */
  listenAddress: string;
  /** The primary PostgreSQL as reached from this node. */
  db: { host: string; port: number };
  /** kine role password (from the secrets bundle). */
  password: string;
  /** CA certificate that signed the PostgreSQL server certificates (verify-full). */
  caFile: string;
  /** Kine's stdout/stderr are appended here (default: discarded). */
  logFile?: string;
  /** Metrics listener; '0' (default) disables it. */
  metricsBindAddress?: string;
  extraArgs?: string[];
  /** How long start waits for a healthy answer (default 30 s). */
  startTimeoutMs?: number;
  /** Called as soon as the process exists, before the health wait (to record its pid durably). */
  onSpawn?: (pid: number) => void;
}

export interface KineProcess {
  pid: number;
  listenAddress: string;
  /** Settles when the process exits (any reason). */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** SIGTERM, then SIGKILL after `graceMs` (default 5 s). Resolves when gone. */
  stop(graceMs?: number): Promise<void>;
}

export type KineHealth = { ok: true; revision: number; ms: number } | { ok: false; reason: string; ms: number };

/**
 * Health: an etcd `endpoint status` through etcdctl (Debian etcd-client), which goes through Kine to
 * the database; returns the current revision.
 */
export async function kineHealth(listenAddress: string, timeoutMs = 3000): Promise<KineHealth> {
  const t = Date.now();
  try {
    const r = await runTool('etcdctl', [`--endpoints=http://${listenAddress}`, `--command-timeout=${Math.max(1, Math.round(timeoutMs / 1000))}s`, '-w', 'json', 'get', '--keys-only', '--limit=1', '/registry/health'], {
      env: { ETCDCTL_API: '3' },
      timeoutMs: timeoutMs + 2000,
    });
    const rev = (JSON.parse(r.stdout) as { header?: { revision?: number } }).header?.revision;
    return { ok: true, revision: Number(rev ?? 0), ms: Date.now() - t };
  } catch (e) {
    return { ok: false, reason: (e as Error).message, ms: Date.now() - t };
  }
}

export async function startKine(o: KineOptions): Promise<KineProcess> {
  const endpoint = kineEndpoint({ host: o.db.host, port: o.db.port, password: o.password, sslRootCert: o.caFile });
  const fd = o.logFile ? openSync(o.logFile, 'a', 0o640) : undefined;
  let child: ChildProcess;
  try {
    child = spawn(o.binary, ['--listen-address', o.listenAddress, '--metrics-bind-address', o.metricsBindAddress ?? '0', ...(o.extraArgs ?? [])], {
      stdio: ['ignore', fd ?? 'ignore', fd ?? 'ignore'],
      env: { ...process.env, KINE_ENDPOINT: endpoint },
    });
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.once('exit', (code, signal) => resolve({ code, signal }));
    child.once('error', () => resolve({ code: null, signal: null }));
  });
  const spawnError = new Promise<Error>((resolve) => child.once('error', (e: NodeJS.ErrnoException) => resolve(e)));
  if (child.pid !== undefined) o.onSpawn?.(child.pid);
  let gone = false;
  void exited.then(() => (gone = true));
  const proc: KineProcess = {
    pid: child.pid ?? -1,
    listenAddress: o.listenAddress,
    exited,
    async stop(graceMs = 5000) {
      if (gone) return;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
      await exited;
      clearTimeout(timer);
    },
  };
  const until = Date.now() + (o.startTimeoutMs ?? 30_000);
  let last: KineHealth | undefined;
  while (Date.now() < until) {
    const raced = await Promise.race([exited.then(() => 'exited' as const), spawnError.then((e) => e), new Promise((r) => setTimeout(r, 200)).then(() => 'tick' as const)]);
    if (raced instanceof Error) throw new Error(`kine could not start: ${raced.message}`);
    if (raced === 'exited') throw new Error(`kine exited during start (${JSON.stringify(await exited)})${o.logFile ? `; see ${o.logFile}` : ''}`);
    last = await kineHealth(o.listenAddress, 2000);
    if (last.ok) return proc;
  }
  await proc.stop();
  throw new Error(`kine on ${o.listenAddress} not healthy after ${o.startTimeoutMs ?? 30_000}ms: ${last && !last.ok ? last.reason : 'no answer'}`);
}

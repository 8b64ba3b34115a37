/**
 * Kine as a supervised child process of the agent, and its health check.
 *
 * Who reaches Kine's etcd API: by default it listens on loopback only (the Kubernetes server on the
 * same box is its only client). A profile that serves remote etcd clients (`components.kine.
 * remoteClients`) makes it listen on the LAN with TLS that requires a client certificate from the
 * pair CA (mTLS); the node certificate is both its server certificate and the agent's own client
 * certificate for the health check. Plain text never leaves the box.
 *
 * The endpoint URL carries the kine role's password, so it is passed in the child's environment
 * (KINE_ENDPOINT, readable only by root through /proc), never in argv. Kine must point at the
 * current primary: a standby is read-only. On the leader that is its local PostgreSQL; on the
 * follower the VIP (or, in tests, the leader's address).
 */
import { join } from 'node:path';
import { kineEndpoint } from './core/pgconf.ts';
import type { ClusterSecrets } from './core/secrets.ts';
import { ensureDir, lookupUser, type OsUser } from './files.ts';
import { writeFileAtomic } from '../adapters/atomic-file.ts';
import { spawnDaemon, type DaemonExit } from '../adapters/daemons.ts';
import { connectEtcd, etcdRevision, usable } from '../adapters/etcd-grpc.ts';
import type { ClientHttp2Session } from 'node:http2';

/** The unprivileged user Kine runs as on the appliance (the image creates it with sysusers.d). */
export const KINE_USER = 'geminik8s-kine';

/** The Kine user when this system has one (the appliance), else undefined (Kine runs as the agent's user). */
export function kineUser(): OsUser | undefined {
  try {
    return lookupUser(KINE_USER);
  } catch {
    return undefined;
  }
}

/**
 * What a Kine process reads, in a directory of its own that only it (and root) can read: the CA of
 * the PostgreSQL server certificates (verify-full) and, for remote clients, its server certificate,
 * key and the CA client certificates must chain to (the pair CA). Rewritten at every start, so a
 * re-issued node certificate takes effect.
 */
export function writeKineFiles(
  dir: string,
  secrets: ClusterSecrets,
  nodeName: string,
  o: { remoteClients: boolean; owner?: OsUser },
): { pgCaFile: string; tls?: KineTls } {
  ensureDir(dir, 0o700, o.owner);
  const write = (name: string, pem: string): string => {
    const path = join(dir, name);
    writeFileAtomic(path, pem, 0o600, o.owner);
    return path;
  };
  const pgCaFile = write('pg-ca.crt', secrets.ca.certPem);
  if (!o.remoteClients) return { pgCaFile };
  const node = secrets.nodes[nodeName];
  if (!node) throw new Error(`the cluster secrets hold no certificate for node ${nodeName}; Kine cannot serve TLS`);
  return {
    pgCaFile,
    tls: { certFile: write('server.crt', node.certPem), keyFile: write('server.key', node.keyPem), caFile: write('client-ca.crt', secrets.ca.certPem) },
  };
}

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
  /** Metrics listener (plain HTTP even when the etcd API is TLS: keep it on loopback); '0' (default) disables it. */
  metricsBindAddress?: string;
  extraArgs?: string[];
  /** How long start waits for a healthy answer (default 30 s). */
  startTimeoutMs?: number;
  /** Serve TLS and require client certificates signed by `caFile` (remote etcd clients). */
  tls?: KineTls;
  /** Run Kine as this user instead of the agent's (root): it needs no privilege. */
  runAs?: { uid: number; gid: number };
}

/** Server certificate, key and the CA client certificates must chain to (PEM files). */
export interface KineTls {
  certFile: string;
  keyFile: string;
  caFile: string;
}

/** How a client on this box reaches a Kine listening on `listenAddress` (a wildcard listens on loopback too). */
export interface KineClient {
  endpoint: string;
  tls?: KineTls;
}

export function localKineClient(listenAddress: string, tls?: KineTls): KineClient {
  const port = listenAddress.slice(listenAddress.lastIndexOf(':') + 1);
  const host = listenAddress.slice(0, listenAddress.lastIndexOf(':'));
  // Not a listener: the agent's own client of a Kine bound to every address dials it on loopback.
  const local = host === '0.0.0.0' || host === '' ? '127.0.0.1' : host;
  return { endpoint: `${tls ? 'https' : 'http'}://${local}:${port}`, ...(tls ? { tls } : {}) };
}

export interface KineProcess {
  pid: number;
  listenAddress: string;
  /** How the agent itself talks to this Kine. */
  client: KineClient;
  /** Settles when the process exits (any reason). */
  exited: Promise<DaemonExit>;
  /** Does it answer, from the database behind it? */
  health(timeoutMs: number): Promise<KineHealth>;
  /** SIGTERM, then SIGKILL after `graceMs` (default 5 s). Resolves when gone. */
  stop(graceMs?: number): Promise<void>;
}

export type KineHealth = { ok: true; revision: number; ms: number } | { ok: false; reason: string; ms: number };

/**
 * Health: one etcd Range through Kine to the database (adapters/etcd-grpc.ts), on an HTTP/2 session
 * kept while it works: no process started and no TLS handshake per check.
 */
export class KineHealthCheck {
  readonly #client: KineClient;
  #session: ClientHttp2Session | undefined;

  constructor(client: KineClient) {
    this.#client = client;
  }

  async check(timeoutMs: number): Promise<KineHealth> {
    const t = Date.now();
    try {
      if (!usable(this.#session)) this.#session = connectEtcd(this.#client);
      return { ok: true, revision: await etcdRevision(this.#session, '/registry/health', timeoutMs), ms: Date.now() - t };
    } catch (e) {
      // A session a check timed out on may be wedged (a Kine stopped, a dropped link): the next check starts afresh.
      this.close();
      return { ok: false, reason: (e as Error).message, ms: Date.now() - t };
    }
  }

  close(): void {
    this.#session?.destroy();
    this.#session = undefined;
  }
}

export async function startKine(o: KineOptions): Promise<KineProcess> {
  const tlsArgs = o.tls ? ['--server-cert-file', o.tls.certFile, '--server-key-file', o.tls.keyFile, '--trusted-ca-file', o.tls.caFile] : [];
  // Kine's metrics would otherwise take the etcd API's TLS and client certificates; they are served
  // on loopback only (metricsBindAddress) to the agent, which appends them to its read-only /metrics.
  const metricsArgs = o.metricsBindAddress && o.metricsBindAddress !== '0' && o.tls ? ['--metrics-ignore-tls-config'] : [];
  const daemon = spawnDaemon({
    binary: o.binary,
    args: ['--listen-address', o.listenAddress, '--metrics-bind-address', o.metricsBindAddress ?? '0', ...metricsArgs, ...tlsArgs, ...(o.extraArgs ?? [])],
    // The datastore password travels in the environment, never on the command line (ps shows that).
    env: { KINE_ENDPOINT: kineEndpoint({ host: o.db.host, port: o.db.port, password: o.password, sslRootCert: o.caFile }) },
    ...(o.logFile ? { logFile: o.logFile } : {}),
    ...(o.runAs ? { runAs: o.runAs } : {}),
  });
  const exited = daemon.exited;
  let gone = false;
  void exited.then(() => {
    gone = true;
  });
  const client = localKineClient(o.listenAddress, o.tls);
  const healthCheck = new KineHealthCheck(client);
  const proc: KineProcess = {
    pid: daemon.pid,
    listenAddress: o.listenAddress,
    client,
    exited,
    health: (timeoutMs) => healthCheck.check(timeoutMs),
    stop: async (graceMs = 5000) => {
      healthCheck.close();
      if (!gone) await daemon.stop(graceMs);
    },
  };
  const until = Date.now() + (o.startTimeoutMs ?? 30_000);
  let last: KineHealth | undefined;
  while (Date.now() < until) {
    const raced = await Promise.race([exited.then(() => 'exited' as const), new Promise((r) => setTimeout(r, 200)).then(() => 'tick' as const)]);
    if (raced === 'exited') throw new Error(`kine exited during start (${JSON.stringify(await exited)})${o.logFile ? `; see ${o.logFile}` : ''}`);
    last = await proc.health(2000);
    if (last.ok) return proc;
  }
  await proc.stop();
  throw new Error(`kine on ${o.listenAddress} not healthy after ${o.startTimeoutMs ?? 30_000}ms: ${last && !last.ok ? last.reason : 'no answer'}`);
}

/**
 * Thin I/O around one node's PostgreSQL 15: paths, the server tools run as the `postgres` OS user,
 * start/stop/status, and SQL connections for the agent (root, mapped to the postgres role by peer
 * authentication over the unix socket; no password involved locally).
 */
import pg from 'pg';
import { join } from 'node:path';
import { Readable, type Writable } from 'node:stream';
import { runFilter, runTool, type ToolResult } from '../adapters/exec.ts';
import { ensureDir, lookupUser, pathExists, type OsUser } from './files.ts';
import { writeFileAtomic } from '../adapters/atomic-file.ts';
import type { ClusterSecrets } from './core/secrets.ts';

export interface PgPaths {
  /** PostgreSQL server binaries (Debian: /usr/lib/postgresql/15/bin). */
  binDir: string;
  /** The cluster's data directory (owned by postgres, 0700). */
  dataDir: string;
  /** Agent-written config outside the data dir: include file, pg_hba, pg_ident, pgpass, tls/. */
  confDir: string;
  /** unix_socket_directories. */
  socketDir: string;
  /** Server log (pg_ctl -l). */
  logFile: string;
}

/** Where things go on the appliance (all on the data partition except the socket under /run). */
export function appliancePgPaths(): PgPaths {
  return {
    binDir: '/usr/lib/postgresql/15/bin',
    dataDir: '/var/lib/postgresql/15/geminik8s',
    confDir: '/var/lib/geminik8s/postgresql',
    socketDir: '/run/postgresql',
    logFile: '/var/log/postgresql/geminik8s.log',
  };
}

export const confFiles = (confDir: string) => ({
  include: join(confDir, 'postgresql.geminik8s.conf'),
  hba: join(confDir, 'pg_hba.conf'),
  ident: join(confDir, 'pg_ident.conf'),
  pgpass: join(confDir, 'pgpass'),
  pwfile: join(confDir, '.initdb-pwfile'),
  tlsDir: join(confDir, 'tls'),
  serverCert: join(confDir, 'tls', 'server.crt'),
  serverKey: join(confDir, 'tls', 'server.key'),
  caCert: join(confDir, 'tls', 'ca.crt'),
  fence: join(confDir, 'fence.conf'),
});

export interface LocalPg {
  paths: PgPaths;
  port: number;
}

let cachedPostgres: OsUser | undefined;
export function postgresUser(): OsUser {
  cachedPostgres ??= lookupUser('postgres');
  return cachedPostgres;
}

/** Runs a PostgreSQL binary as the postgres OS user (initdb and postgres refuse root). */
export function runPgTool(
  paths: PgPaths,
  tool: string,
  args: readonly string[],
  o: { env?: Record<string, string>; okCodes?: number[]; timeoutMs?: number; input?: string } = {},
): Promise<ToolResult> {
  const file = join(paths.binDir, tool);
  if (!pathExists(file)) {
    const pkg = ['pg_basebackup', 'pg_dump', 'psql'].includes(tool) ? 'postgresql-client-15' : 'postgresql-15';
    return Promise.reject(new Error(`${file} not found (install the Debian package ${pkg})`));
  }
  return runTool(file, args, { ...o, asUser: 'postgres', cwd: '/' });
}

export type ServerState = 'running' | 'stopped' | 'no-data-dir';

export async function serverState(p: LocalPg): Promise<ServerState> {
  if (!pathExists(join(p.paths.dataDir, 'PG_VERSION'))) return 'no-data-dir';
  // A deadline: the liveness tick awaits this look, and a hung pg_ctl must not stall it past the watchdog.
  const r = await runPgTool(p.paths, 'pg_ctl', ['status', '-D', p.paths.dataDir], { okCodes: [0, 3, 4], timeoutMs: 10_000 });
  return r.code === 0 ? 'running' : 'stopped';
}

function ensureRuntimeDirs(paths: PgPaths): void {
  const pgUser = postgresUser();
  ensureDir(paths.socketDir, 0o2775, pgUser);
  const logDir = paths.logFile.slice(0, paths.logFile.lastIndexOf('/')) || '/';
  ensureDir(logDir, 0o2775, pgUser);
  if (!pathExists(paths.logFile)) writeFileAtomic(paths.logFile, '', 0o640, pgUser);
}

/** Starts the server (pg_ctl start -w) unless running; reloads the config when it already runs. */
export async function startServer(p: LocalPg, timeoutSec = 120): Promise<'started' | 'reloaded'> {
  ensureRuntimeDirs(p.paths);
  if ((await serverState(p)) === 'running') {
    await runPgTool(p.paths, 'pg_ctl', ['reload', '-D', p.paths.dataDir]);
    return 'reloaded';
  }
  await runPgTool(p.paths, 'pg_ctl', ['start', '-w', '-t', String(timeoutSec), '-D', p.paths.dataDir, '-l', p.paths.logFile], {
    timeoutMs: (timeoutSec + 10) * 1000,
  });
  return 'started';
}

/** Stops the server if running. `immediate` simulates a power cut (crash recovery on next start). */
export async function stopServer(p: LocalPg, mode: 'fast' | 'immediate' = 'fast'): Promise<void> {
  if ((await serverState(p)) !== 'running') return;
  await runPgTool(p.paths, 'pg_ctl', ['stop', '-w', '-m', mode, '-D', p.paths.dataDir], { okCodes: [0, 1] });
}

/** Connection as the postgres role over the unix socket (peer auth; the agent runs as root). */
export function adminClientConfig(p: LocalPg, database = 'postgres'): pg.ClientConfig {
  return { host: p.paths.socketDir, port: p.port, user: 'postgres', database, connectionTimeoutMillis: 5000, application_name: 'geminik8s-agent' };
}

export async function withClient<T>(config: pg.ClientConfig, fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const c = new pg.Client(config);
  c.on('error', () => undefined); // a dropped connection surfaces on the next query
  await c.connect();
  try {
    return await fn(c);
  } finally {
    await c.end().catch(() => undefined);
  }
}

export function withAdmin<T>(p: LocalPg, fn: (c: pg.Client) => Promise<T>, database = 'postgres'): Promise<T> {
  return withClient(adminClientConfig(p, database), fn);
}

/** Waits until the server accepts a local admin connection. */
export async function waitForServer(p: LocalPg, timeoutMs = 30_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < until) {
    try {
      await withAdmin(p, (c) => c.query('SELECT 1'));
      return;
    } catch (e) {
      last = e;
      await new Promise((r) => setTimeout(r, 200));
    }
  }
  throw new Error(`PostgreSQL on port ${p.port} not accepting connections after ${timeoutMs}ms: ${(last as Error)?.message}`);
}

/** A physical replication slot for the standby, kept when it exists (re-runs, a rejoin). */
export async function ensurePhysicalSlot(client: pg.Client, name: string): Promise<'created' | 'kept'> {
  const r = await client.query('SELECT 1 FROM pg_replication_slots WHERE slot_name = $1', [name]);
  if (r.rowCount) return 'kept';
  await client.query('SELECT pg_create_physical_replication_slot($1, true)', [name]);
  return 'created';
}

/**
 * Drops the physical slot of a standby that will never come back (a replaced box), so it stops
 * holding WAL on the primary. A slot a walsender still uses is left alone.
 */
export async function dropPhysicalSlot(client: pg.Client, name: string): Promise<'dropped' | 'absent' | 'active'> {
  const r = await client.query<{ active: boolean }>("SELECT active FROM pg_replication_slots WHERE slot_name = $1 AND slot_type = 'physical'", [name]);
  if (!r.rowCount) return 'absent';
  if (r.rows[0]?.active) return 'active';
  await client.query('SELECT pg_drop_replication_slot($1)', [name]);
  return 'dropped';
}

/** The postgres role on another node's server over verified TLS (the node certificates carry its IP). */
export function remoteAdminConfig(host: string, port: number, s: ClusterSecrets, database: string): pg.ClientConfig {
  return {
    host,
    port,
    user: 'postgres',
    password: s.superuserPassword,
    database,
    connectionTimeoutMillis: 5000,
    application_name: 'geminik8s-agent',
    ssl: { ca: s.ca.certPem, rejectUnauthorized: true },
  };
}

/** The database Kine keeps its keys in (the whole datastore a backup holds). */
export const KINE_DATABASE = 'kine';

function pgToolAsPostgres(p: LocalPg, tool: string): { runuser: string; args: string[] } {
  const file = join(p.paths.binDir, tool);
  if (!pathExists(file)) throw new Error(`${file} not found (install the Debian package postgresql-client-15)`);
  return { runuser: 'runuser', args: ['-u', 'postgres', '--', file, '-h', p.paths.socketDir, '-p', String(p.port)] };
}

/** Kine's database as a pg_dump custom-format archive (compressed, one consistent snapshot) into `out`. */
export async function dumpKineDatabase(p: LocalPg, out: Writable): Promise<void> {
  const t = pgToolAsPostgres(p, 'pg_dump');
  await runFilter(t.runuser, [...t.args, '--format=custom', '--dbname', KINE_DATABASE], emptyInput(), out);
}

/**
 * Replaces Kine's tables with those of a pg_dump archive read from `archive`, all or nothing (one
 * transaction: a failure leaves the database as it was). Kine must not run meanwhile.
 */
export async function restoreKineDatabase(p: LocalPg, archive: Readable, out: Writable): Promise<void> {
  const t = pgToolAsPostgres(p, 'pg_restore');
  await runFilter(t.runuser, [...t.args, '--clean', '--if-exists', '--single-transaction', '--exit-on-error', '--dbname', KINE_DATABASE], archive, out);
}

function emptyInput(): Readable {
  return Readable.from([]);
}

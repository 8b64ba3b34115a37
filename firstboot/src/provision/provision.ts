/**
 * The provisioning step list of one node (leader/primary, physical follower/standby, logical
 * follower). Every step decides from what is on disk or in the running server, so the list can be
 * killed anywhere and re-run from the top: it converges. Data directories are built under
 * `<data>.partial` and renamed into place when complete (see core/plan.ts).
 */
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import type pg from 'pg';
import type { Logger } from '../adapters/output.ts';
import type { PairRole } from '../core/hostmeta.ts';
import {
  dropAutoConfSettings,
  ensureIncludeLine,
  quoteIdent,
  quoteLiteral,
  fencedHba,
  renderPgHba,
  renderPgIdent,
  renderPgpass,
  renderPostgresConf,
  slotName,
  confString,
  upstreamConninfo,
  conninfo,
  type ReplicationMode,
} from './core/pgconf.ts';
import {
  BASEBACKUP_ATTEMPTS,
  basebackupRetryAfter,
  FOLLOWER_STEPS,
  LEADER_STEPS,
  LOGICAL_FOLLOWER_STEPS,
  basebackupAppName,
  classifyDataDir,
  partialPath,
  type StepName,
} from './core/plan.ts';
import { scramVerifier, type ClusterSecrets, type NodeIdentity } from './core/secrets.ts';
import { randomBytes, timingSafeEqual } from 'node:crypto';
import { ensureDir, isDir, isEmptyDir, pathExists, renameDurable } from './files.ts';
import { writeFileAtomic } from '../adapters/atomic-file.ts';
import {
  confFiles,
  ensurePhysicalSlot,
  postgresUser,
  remoteAdminConfig,
  runPgTool,
  startServer,
  waitForServer,
  withAdmin,
  withClient,
  type LocalPg,
  type PgPaths,
} from './postgres.ts';
import { ensureClusterSecrets, loadSecrets, storeSecrets } from './secrets.ts';

export interface ProvisionConfig {
  role: PairRole;
  mode: ReplicationMode;
  self: NodeIdentity;
  peer: NodeIdentity;
  /** The VIP (no prefix): listened on, allowed for Kine, in certificates. */
  vip?: string;
  /** PostgreSQL port of this node (5432 on the appliance). */
  port: number;
  /** Follower: where the primary is reached: the peer's own address (the VIP moves with failovers and handovers). */
  upstream?: { host: string; port: number };
  paths: PgPaths;
  /** Root-only directory of the secrets bundle (appliance: /var/lib/geminik8s/secrets). */
  secretsDir: string;
  /** Follower: the bundle received from the leader over the pairing channel; absent on a re-run (loaded from disk). */
  receivedSecrets?: ClusterSecrets;
  siteId?: string;
  log?: Logger;
}

export interface ProvisionStep {
  name: StepName;
  /** Returns what it did: a short word for the log (`created`, `kept`, `started`, …). */
  run(): Promise<string>;
}

export const PUBLICATION = 'geminik8s_kine';
export const SUBSCRIPTION = 'geminik8s_kine';
/** Marker put on the kine table when a logical follower is promoted (table comments are not replicated). */
export const PROMOTED_COMMENT = 'geminik8s: promoted logical follower';

const localPg = (c: ProvisionConfig): LocalPg => ({ paths: c.paths, port: c.port });

function upstreamOf(c: ProvisionConfig): { host: string; port: number } {
  return c.upstream ?? { host: c.vip ?? c.peer.ip, port: c.port };
}

function requireSecrets(c: ProvisionConfig): ClusterSecrets {
  const s = loadSecrets(c.secretsDir);
  if (!s) throw new Error(`no cluster secrets in ${c.secretsDir} (the secrets step has not run)`);
  return s;
}

function dataFacts(dataDir: string) {
  const exists = pathExists(dataDir);
  return {
    exists,
    empty: exists && isDir(dataDir) && isEmptyDir(dataDir),
    hasPgVersion: existsSync(join(dataDir, 'PG_VERSION')),
    hasStandbySignal: existsSync(join(dataDir, 'standby.signal')),
    partialExists: pathExists(partialPath(dataDir)),
  };
}

// ---------------------------------------------------------------------------------------------- steps

async function stepSecrets(c: ProvisionConfig): Promise<string> {
  if (c.role === 'leader') {
    const before = pathExists(join(c.secretsDir, 'cluster.json'));
    const s = await ensureClusterSecrets(c.secretsDir, { nodes: [c.self, c.peer], vip: c.vip, siteId: c.siteId });
    if (!s.nodes[c.self.name]) throw new Error(`secrets bundle has no certificate for ${c.self.name}`);
    return before ? 'kept' : 'generated';
  }
  const stored = loadSecrets(c.secretsDir);
  if (c.receivedSecrets) {
    if (!c.receivedSecrets.nodes[c.self.name]) throw new Error(`received secrets bundle has no certificate for ${c.self.name}`);
    if (stored && JSON.stringify(stored) === JSON.stringify(c.receivedSecrets)) return 'kept';
    storeSecrets(c.secretsDir, c.receivedSecrets);
    return 'stored';
  }
  if (!stored) throw new Error(`no cluster secrets received from the leader and none stored in ${c.secretsDir}`);
  return 'kept';
}

function stepTls(c: ProvisionConfig): string {
  const s = requireSecrets(c);
  const mine = s.nodes[c.self.name];
  if (!mine) throw new Error(`secrets bundle has no certificate for ${c.self.name}`);
  const f = confFiles(c.paths.confDir);
  const pgUser = postgresUser();
  ensureDir(c.paths.confDir, 0o700, pgUser);
  ensureDir(f.tlsDir, 0o700, pgUser);
  writeFileAtomic(f.serverCert, mine.certPem, 0o644, pgUser);
  writeFileAtomic(f.serverKey, mine.keyPem, 0o600, pgUser);
  writeFileAtomic(f.caCert, s.ca.certPem, 0o644, pgUser);
  writeFileAtomic(
    f.pgpass,
    renderPgpass([
      { host: '*', port: '*', database: '*', user: 'replicator', password: s.replicationPassword },
      { host: '*', port: '*', database: '*', user: 'postgres', password: s.superuserPassword },
    ]),
    0o600,
    pgUser,
  );
  return 'written';
}

async function stepInitdb(c: ProvisionConfig): Promise<string> {
  const { dataDir } = c.paths;
  const state = classifyDataDir(dataFacts(dataDir));
  if (state.kind === 'primary') return 'kept';
  if (state.kind === 'standby') throw new Error(`${dataDir} holds a standby; a primary needs promotion, not initdb`);
  if (state.kind === 'foreign') throw new Error(`${dataDir} exists and is not a PostgreSQL data directory; refusing to touch it`);
  const s = requireSecrets(c);
  const pgUser = postgresUser();
  const partial = partialPath(dataDir);
  rmSync(partial, { recursive: true, force: true });
  ensureDir(dirname(dataDir), 0o755, pgUser);
  ensureDir(partial, 0o700, pgUser);
  const f = confFiles(c.paths.confDir);
  writeFileAtomic(f.pwfile, `${s.superuserPassword}\n`, 0o600, pgUser);
  try {
    await runPgTool(
      c.paths,
      'initdb',
      ['-D', partial, '-U', 'postgres', '--data-checksums', '-A', 'scram-sha-256', '--pwfile', f.pwfile, '-E', 'UTF8', '--locale', 'C', '--no-instructions'],
      {
        timeoutMs: 300_000,
      },
    );
  } finally {
    rmSync(f.pwfile, { force: true });
  }
  if (pathExists(dataDir)) rmSync(dataDir, { recursive: true }); // an empty directory (checked above)
  renameDurable(partial, dataDir);
  return 'created';
}

async function stepBasebackup(c: ProvisionConfig): Promise<string> {
  const { dataDir } = c.paths;
  const state = classifyDataDir(dataFacts(dataDir));
  if (state.kind === 'standby') return 'kept';
  if (state.kind === 'primary') throw new Error(`${dataDir} holds a primary; following needs pg_rewind or a rebuild, refusing to overwrite`);
  if (state.kind === 'foreign') throw new Error(`${dataDir} exists and is not a PostgreSQL data directory; refusing to touch it`);
  const pgUser = postgresUser();
  const partial = partialPath(dataDir);
  rmSync(partial, { recursive: true, force: true });
  ensureDir(dirname(dataDir), 0o755, pgUser);
  const f = confFiles(c.paths.confDir);
  const up = upstreamOf(c);
  const conn = upstreamConninfo({ host: up.host, port: up.port, applicationName: basebackupAppName(c.self.name), sslRootCert: f.caCert, passfile: f.pgpass });
  for (let attempt = 1; ; attempt++) {
    try {
      await runPgTool(c.paths, 'pg_basebackup', ['-D', partial, '-d', conn, '-S', slotName(c.self.name), '-X', 'stream', '-R', '-c', 'fast', '-w'], {
        timeoutMs: 3_600_000,
      });
      break;
    } catch (e) {
      const retryInMs = basebackupRetryAfter(attempt);
      if (retryInMs === undefined) throw e;
      c.log?.event('warn', 'basebackup-retry', { attempt, attempts: BASEBACKUP_ATTEMPTS, retryInMs, error: (e as Error).message });
      await new Promise((r) => setTimeout(r, retryInMs));
      // pg_basebackup removes what it wrote when it fails; a kill may have left a part behind.
      rmSync(partial, { recursive: true, force: true });
    }
  }
  // The copy carries the leader's runtime settings; this node renders its own (config step).
  const auto = join(partial, 'postgresql.auto.conf');
  if (existsSync(auto)) {
    const kept = dropAutoConfSettings(readFileSync(auto, 'utf8'), ['synchronous_standby_names', 'primary_conninfo', 'primary_slot_name']);
    writeFileAtomic(auto, kept, 0o600, pgUser);
  }
  writeFileAtomic(join(partial, 'standby.signal'), '', 0o600, pgUser);
  if (pathExists(dataDir)) rmSync(dataDir, { recursive: true });
  renameDurable(partial, dataDir);
  return 'created';
}

function stepConfig(c: ProvisionConfig): string {
  const { dataDir } = c.paths;
  const facts = dataFacts(dataDir);
  if (!facts.hasPgVersion) throw new Error(`${dataDir} is not a data directory yet`);
  const standby = facts.hasStandbySignal;
  const f = confFiles(c.paths.confDir);
  const pgUser = postgresUser();
  let conf = renderPostgresConf({
    port: c.port,
    listenAddresses: [c.self.ip, '127.0.0.1', ...(c.vip ? [c.vip] : [])],
    socketDir: c.paths.socketDir,
    hbaFile: f.hba,
    identFile: f.ident,
    sslCertFile: f.serverCert,
    sslKeyFile: f.serverKey,
    sslCaFile: f.caCert,
    mode: c.mode,
    fenceFile: f.fence,
  });
  if (standby) {
    const up = upstreamOf(c);
    conf += `primary_conninfo = ${confString(upstreamConninfo({ host: up.host, port: up.port, applicationName: c.self.name, sslRootCert: f.caCert, passfile: f.pgpass }))}\n`;
    conf += `primary_slot_name = ${confString(slotName(c.self.name))}\n`;
  }
  writeFileAtomic(f.include, conf, 0o600, pgUser);
  // A fenced node stays fenced through a re-provisioning (the fence file says whether it is).
  const hba = renderPgHba({ peerIp: c.peer.ip, selfIp: c.self.ip, vip: c.vip, mode: c.mode });
  writeFileAtomic(f.hba, fencedHba(hba, existsSync(f.fence)), 0o600, pgUser);
  writeFileAtomic(f.ident, renderPgIdent(), 0o600, pgUser);
  const mainConf = join(dataDir, 'postgresql.conf');
  const text = readFileSync(mainConf, 'utf8');
  const next = ensureIncludeLine(text, f.include);
  if (next !== text) writeFileAtomic(mainConf, next, 0o600, pgUser);
  if (standby) {
    const auto = join(dataDir, 'postgresql.auto.conf');
    if (existsSync(auto)) {
      const a = readFileSync(auto, 'utf8');
      const kept = dropAutoConfSettings(a, ['primary_conninfo', 'primary_slot_name']);
      if (kept !== a) writeFileAtomic(auto, kept, 0o600, pgUser);
    }
  }
  return standby ? 'standby' : 'primary';
}

async function stepStart(c: ProvisionConfig): Promise<string> {
  const r = await startServer(localPg(c));
  await waitForServer(localPg(c));
  return r;
}

/** True when `verifier` (pg_authid.rolpassword) was made from `password`. */
function verifierMatches(verifier: string | null, password: string): boolean {
  const m = /^SCRAM-SHA-256\$(\d+):([^$]+)\$/.exec(verifier ?? '');
  if (!m || !verifier) return false;
  const again = scramVerifier(password, Buffer.from(m[2] ?? '', 'base64'), Number(m[1]));
  return again.length === verifier.length && timingSafeEqual(Buffer.from(again), Buffer.from(verifier));
}

/** Creates or updates a login role; the password goes as a SCRAM verifier, never plaintext. */
export async function ensureRole(client: pg.Client, name: string, password: string, attrs: string): Promise<'created' | 'updated' | 'kept'> {
  const r = await client.query<{ rolpassword: string | null }>('SELECT rolpassword FROM pg_authid WHERE rolname = $1', [name]);
  const verifier = () => quoteLiteral(scramVerifier(password, randomBytes(16)));
  if (r.rowCount === 0) {
    await client.query(`CREATE ROLE ${quoteIdent(name)} WITH LOGIN ${attrs} PASSWORD ${verifier()}`);
    return 'created';
  }
  await client.query(`ALTER ROLE ${quoteIdent(name)} WITH LOGIN ${attrs}`);
  if (verifierMatches(r.rows[0]?.rolpassword ?? null, password)) return 'kept';
  await client.query(`ALTER ROLE ${quoteIdent(name)} PASSWORD ${verifier()}`);
  return 'updated';
}

/** A physical replication slot for a standby (reserving WAL at once). Idempotent. */
async function stepBootstrap(c: ProvisionConfig): Promise<string> {
  const s = requireSecrets(c);
  const p = localPg(c);
  const did: string[] = [];
  await withAdmin(p, async (db) => {
    const inRecovery = (await db.query<{ r: boolean }>('SELECT pg_is_in_recovery() AS r')).rows[0]?.r;
    if (inRecovery) throw new Error('bootstrap needs a primary; this server is in recovery');
    if ((await ensureRole(db, 'postgres', s.superuserPassword, 'SUPERUSER')) !== 'kept') did.push('postgres');
    if ((await ensureRole(db, 'replicator', s.replicationPassword, 'REPLICATION')) !== 'kept') did.push('replicator');
    if ((await ensureRole(db, 'kine', s.kinePassword, 'NOREPLICATION')) !== 'kept') did.push('kine');
    const hasDb = await db.query("SELECT 1 FROM pg_database WHERE datname = 'kine'");
    if (!hasDb.rowCount) {
      await db.query("CREATE DATABASE kine OWNER kine TEMPLATE template0 ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C'");
      did.push('db');
    }
    if (c.mode === 'physical' && c.role === 'leader') {
      if ((await ensurePhysicalSlot(db, slotName(c.peer.name))) === 'created') did.push('slot');
    }
  });
  if (c.mode === 'logical') {
    await withAdmin(
      p,
      async (db) => {
        const pub = await db.query('SELECT 1 FROM pg_publication WHERE pubname = $1', [PUBLICATION]);
        if (!pub.rowCount) {
          await db.query(`CREATE PUBLICATION ${quoteIdent(PUBLICATION)} FOR ALL TABLES`);
          did.push('publication');
        }
        await db.query('GRANT SELECT ON ALL TABLES IN SCHEMA public TO replicator');
        await db.query('ALTER DEFAULT PRIVILEGES FOR ROLE kine IN SCHEMA public GRANT SELECT ON TABLES TO replicator');
      },
      'kine',
    );
  }
  return did.length ? `created ${did.join(',')}` : 'kept';
}

/** Connection to the primary (leader), for the logical follower's setup. */
function upstreamAdminConfig(c: ProvisionConfig, s: ClusterSecrets, database: string): pg.ClientConfig {
  const up = upstreamOf(c);
  return remoteAdminConfig(up.host, up.port, s, database);
}

async function stepSubscribe(c: ProvisionConfig): Promise<string> {
  const s = requireSecrets(c);
  const p = localPg(c);
  const f = confFiles(c.paths.confDir);
  const up = upstreamOf(c);
  const conn = upstreamConninfo({ host: up.host, port: up.port, dbname: 'kine', applicationName: c.self.name, sslRootCert: f.caCert, passfile: f.pgpass });
  const slot = slotName(c.self.name);
  const existing = await withAdmin(p, (db) => db.query('SELECT 1 FROM pg_subscription WHERE subname = $1', [SUBSCRIPTION]), 'kine');
  if (existing.rowCount) {
    await withAdmin(
      p,
      async (db) => {
        await db.query(`ALTER SUBSCRIPTION ${quoteIdent(SUBSCRIPTION)} CONNECTION ${quoteLiteral(conn)}`);
        await db.query(`ALTER SUBSCRIPTION ${quoteIdent(SUBSCRIPTION)} ENABLE`);
      },
      'kine',
    );
    return 'kept';
  }
  // The kine table's schema comes from the leader (whose Kine created it), so both sides match exactly.
  const hasTable = async (): Promise<boolean> =>
    (await withAdmin(p, (db) => db.query("SELECT to_regclass('public.kine') IS NOT NULL AS t"), 'kine')).rows[0]?.t === true;
  if (!(await hasTable())) {
    const leaderHas = await withClient(upstreamAdminConfig(c, s, 'kine'), (db) => db.query("SELECT to_regclass('public.kine') IS NOT NULL AS t"));
    if (leaderHas.rows[0]?.t !== true) throw new Error('the leader has no kine table yet: start Kine on the leader before subscribing');
    const dumpConn = conninfo({
      host: up.host,
      port: up.port,
      user: 'postgres',
      dbname: 'kine',
      sslmode: 'verify-full',
      sslrootcert: f.caCert,
      passfile: f.pgpass,
    });
    const dump = await runPgTool(c.paths, 'pg_dump', ['-d', dumpConn, '--schema-only', '--no-publications', '--no-subscriptions', '-t', 'public.kine', '-w'], {
      timeoutMs: 120_000,
    });
    await runPgTool(
      c.paths,
      'psql',
      ['-h', c.paths.socketDir, '-p', String(c.port), '-U', 'postgres', '-d', 'kine', '-X', '-q', '--single-transaction', '-v', 'ON_ERROR_STOP=1', '-f', '-'],
      {
        input: dump.stdout,
        timeoutMs: 120_000,
      },
    );
  }
  await withAdmin(
    p,
    async (db) => {
      const rows = await db.query<{ n: boolean; c: string | null }>(
        "SELECT EXISTS (SELECT 1 FROM kine) AS n, obj_description('public.kine'::regclass, 'pg_class') AS c",
      );
      if (rows.rows[0]?.c === PROMOTED_COMMENT) throw new Error('this node was promoted (its kine table is authoritative); refusing to re-subscribe over it');
      // A table with rows but no subscription: a copy cut short before the subscription committed. The leader is authoritative.
      if (rows.rows[0]?.n) await db.query('TRUNCATE public.kine');
    },
    'kine',
  );
  // A slot left on the leader by a CREATE SUBSCRIPTION cut before it committed here would make the retry fail.
  await withClient(upstreamAdminConfig(c, s, 'kine'), (db) =>
    db.query('SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1 AND NOT active', [slot]),
  );
  await withAdmin(
    p,
    (db) =>
      db.query(
        `CREATE SUBSCRIPTION ${quoteIdent(SUBSCRIPTION)} CONNECTION ${quoteLiteral(conn)} PUBLICATION ${quoteIdent(PUBLICATION)} WITH (copy_data = true, slot_name = ${quoteLiteral(slot)})`,
      ),
    'kine',
  );
  return 'created';
}

export function provisionSteps(c: ProvisionConfig): ProvisionStep[] {
  const names: readonly StepName[] = c.role === 'leader' ? LEADER_STEPS : c.mode === 'logical' ? LOGICAL_FOLLOWER_STEPS : FOLLOWER_STEPS;
  const impl: Record<StepName, () => Promise<string>> = {
    secrets: () => stepSecrets(c),
    tls: async () => stepTls(c),
    initdb: () => stepInitdb(c),
    basebackup: () => stepBasebackup(c),
    config: async () => stepConfig(c),
    start: () => stepStart(c),
    bootstrap: () => stepBootstrap(c),
    subscribe: () => stepSubscribe(c),
  };
  return names.map((name) => ({ name, run: impl[name] }));
}

export interface StepRecord {
  step: StepName;
  outcome: string;
  ms: number;
}

/**
 * Runs the steps in order (optionally only the first `count`), logging name, outcome and duration —
 * never a secret. Throws the first failure, after logging it.
 */
export async function runProvisioning(c: ProvisionConfig, o: { count?: number } = {}): Promise<StepRecord[]> {
  const steps = provisionSteps(c).slice(0, o.count);
  const out: StepRecord[] = [];
  for (const s of steps) {
    const t = Date.now();
    try {
      const outcome = await s.run();
      const rec = { step: s.name, outcome, ms: Date.now() - t };
      out.push(rec);
      c.log?.event('info', 'provision-step', { role: c.role, mode: c.mode, ...rec });
    } catch (e) {
      c.log?.event('error', 'provision-step-failed', { role: c.role, mode: c.mode, step: s.name, ms: Date.now() - t, error: (e as Error).message });
      throw e;
    }
  }
  return out;
}

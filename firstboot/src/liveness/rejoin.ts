/**
 * A node that led on a history the pair left behind (it was cut off, crashed, or handed over)
 * becomes the new leader's standby without losing anything silently:
 *  1. with its old primary up read-only (the fence is in place), the Kine rows it holds that the
 *     leader does not are saved as JSON lines under <state>/divergent/ and reported;
 *  2. pg_rewind against the leader winds the data directory back to the fork;
 *  3. when rewind cannot (no common history, an earlier rewind cut short), the old directory is set
 *     aside and a fresh base backup is taken instead;
 *  4. it starts as a standby through the normal follower provisioning steps.
 * Every step can be re-run after a crash: a marker file says a rewind had started.
 */
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type pg from 'pg';
import { fsyncDir, writeFileAtomic } from '../adapters/atomic-file.ts';
import type { Logger } from '../adapters/output.ts';
import { conninfo, dropAutoConfSettings } from '../provision/core/pgconf.ts';
import type { ClusterSecrets } from '../provision/core/secrets.ts';
import {
  confFiles,
  postgresUser,
  remoteAdminConfig,
  runPgTool,
  serverState,
  startServer,
  stopServer,
  waitForServer,
  withAdmin,
  withClient,
  type LocalPg,
} from '../provision/postgres.ts';
import { runProvisioning, type ProvisionConfig } from '../provision/provision.ts';

export interface RejoinOptions {
  pg: LocalPg;
  /** The leader's own address (not the VIP: pg_hba admits this node's address). */
  leader: { host: string; port: number };
  secrets: ClusterSecrets;
  /** Where divergent rows are saved (the appliance: /var/lib/geminik8s/divergent). */
  divergentDir: string;
  term: number;
  /** Follower provisioning of this node (config and start of the standby). */
  follower: ProvisionConfig;
  log: Logger;
  /** A standby that cannot start (its history does not fit the leader's): copy the leader afresh. */
  rebuild?: boolean;
}

export interface RejoinResult {
  method: 'already-standby' | 'rewind' | 'basebackup';
  divergent: { file: string; rows: number } | null;
  /** The old data directory, kept for an operator when its rows could not be compared. */
  keptAside?: string;
}

interface RowKey {
  id: string;
  h: string;
}

/** How far back (rows by id) the old primary's kine table is compared with the leader's. */
const COMPARE_ROWS = 5000;

async function hasKineTable(db: pg.Client): Promise<boolean> {
  return (await db.query<{ t: boolean }>("SELECT to_regclass('public.kine') IS NOT NULL AS t")).rows[0]?.t === true;
}

/**
 * Kine rows are insert-only (a revision per row), so a row of the old primary is divergent when the
 * leader has no row with the same id and the same content.
 */
export async function saveDivergentRows(
  o: Pick<RejoinOptions, 'pg' | 'leader' | 'secrets' | 'divergentDir' | 'term' | 'log'>,
): Promise<{ file: string; rows: number } | null> {
  const local = await withAdmin(
    o.pg,
    async (db) => {
      if (!(await hasKineTable(db))) return [];
      return (await db.query<RowKey>(`SELECT id::text AS id, md5(k::text) AS h FROM kine k ORDER BY id DESC LIMIT ${COMPARE_ROWS}`)).rows;
    },
    'kine',
  ).catch((e: Error) => {
    if (/database "kine" does not exist/.test(e.message)) return [];
    throw e;
  });
  if (local.length === 0) return null;
  const minId = local.reduce((m, r) => (BigInt(r.id) < m ? BigInt(r.id) : m), BigInt(local[0]?.id ?? '0'));
  const remote = await withClient(remoteAdminConfig(o.leader.host, o.leader.port, o.secrets, 'kine'), async (db) => {
    if (!(await hasKineTable(db))) return [];
    return (await db.query<RowKey>('SELECT id::text AS id, md5(k::text) AS h FROM kine k WHERE id >= $1', [minId.toString()])).rows;
  });
  const theirs = new Set(remote.map((r) => `${r.id}:${r.h}`));
  const ids = local.filter((r) => !theirs.has(`${r.id}:${r.h}`)).map((r) => r.id);
  if (ids.length === 0) {
    o.log.event('info', 'divergent-rows-none', { compared: local.length });
    return null;
  }
  const rows = await withAdmin(
    o.pg,
    async (db) => (await db.query<{ row: unknown }>('SELECT row_to_json(k) AS row FROM kine k WHERE id = ANY($1::bigint[]) ORDER BY id', [ids])).rows,
    'kine',
  );
  mkdirSync(o.divergentDir, { recursive: true, mode: 0o700 });
  const file = join(o.divergentDir, `${new Date().toISOString().replace(/[:.]/g, '-')}-term${o.term}.jsonl`);
  writeFileAtomic(file, `${rows.map((r) => JSON.stringify(r.row)).join('\n')}\n`, 0o600);
  o.log.event('warn', 'divergent-rows-saved', {
    file,
    rows: rows.length,
    message: `${rows.length} Kine rows that the leader does not have were saved to ${file} before rewinding`,
  });
  return { file, rows: rows.length };
}

function markerOf(pg: LocalPg): string {
  return join(pg.paths.confDir, 'rewind-in-progress');
}

async function rewind(o: RejoinOptions): Promise<boolean> {
  const f = confFiles(o.pg.paths.confDir);
  const source = conninfo({
    host: o.leader.host,
    port: o.leader.port,
    user: 'postgres',
    dbname: 'postgres',
    sslmode: 'verify-full',
    sslrootcert: f.caCert,
    passfile: f.pgpass,
    connect_timeout: 5,
  });
  // pg_rewind compares timelines as recorded in pg_control; a leader promoted moments ago may not
  // have checkpointed its new timeline yet.
  await withClient(remoteAdminConfig(o.leader.host, o.leader.port, o.secrets, 'postgres'), (db) => db.query('CHECKPOINT'));
  writeFileSync(markerOf(o.pg), `${new Date().toISOString()}\n`);
  fsyncDir(o.pg.paths.confDir);
  try {
    const r = await runPgTool(o.pg.paths, 'pg_rewind', ['-D', o.pg.paths.dataDir, `--source-server=${source}`], { timeoutMs: 30 * 60_000 });
    o.log.event('info', 'pg-rewind-done', { output: `${r.stdout}${r.stderr}`.trim().split('\n').slice(-2).join(' | ') });
  } catch (e) {
    o.log.event('warn', 'pg-rewind-failed', { error: (e as Error).message });
    return false;
  }
  // The copy carries the leader's runtime settings; this node's config step renders its own.
  const auto = join(o.pg.paths.dataDir, 'postgresql.auto.conf');
  if (existsSync(auto)) {
    writeFileAtomic(
      auto,
      dropAutoConfSettings(readFileSync(auto, 'utf8'), ['synchronous_standby_names', 'primary_conninfo', 'primary_slot_name']),
      0o600,
      postgresUser(),
    );
  }
  writeFileAtomic(join(o.pg.paths.dataDir, 'standby.signal'), '', 0o600, postgresUser());
  rmSync(markerOf(o.pg), { force: true });
  return true;
}

export async function rejoinAsStandby(o: RejoinOptions): Promise<RejoinResult> {
  const { dataDir } = o.pg.paths;
  const isStandby = existsSync(join(dataDir, 'standby.signal')) && existsSync(join(dataDir, 'PG_VERSION'));
  let method: RejoinResult['method'] = 'already-standby';
  let divergent: RejoinResult['divergent'] = null;
  let unreadable = false;
  const aside = `${dataDir}.before-rejoin`;
  if (o.rebuild && isStandby) {
    // A standby holds nothing the leader lacks: nothing to save before replacing it.
    await stopServer(o.pg, 'fast');
    method = 'basebackup';
    rmSync(aside, { recursive: true, force: true });
    renameSync(dataDir, aside);
    fsyncDir(join(dataDir, '..'));
    o.log.event('warn', 'standby-rebuild', { kept: aside });
  } else if (!isStandby && existsSync(join(dataDir, 'PG_VERSION'))) {
    const rewindCutShort = existsSync(markerOf(o.pg));
    if (!rewindCutShort) {
      // Up read-only (the caller fenced it) so its rows can be read; crash recovery happens here.
      try {
        await startServer(o.pg);
        await waitForServer(o.pg);
        divergent = await saveDivergentRows(o);
      } catch (e) {
        unreadable = true;
        o.log.event('error', 'divergent-rows-unreadable', {
          error: (e as Error).message,
          kept: aside,
          message: `could not compare rows with the leader; the old data directory is kept at ${aside}`,
        });
      }
      await stopServer(o.pg, 'fast');
    }
    method = !rewindCutShort && !unreadable && (await rewind(o)) ? 'rewind' : 'basebackup';
    if (method === 'basebackup') {
      if ((await serverState(o.pg)) === 'running') await stopServer(o.pg, 'fast');
      rmSync(aside, { recursive: true, force: true });
      renameSync(dataDir, aside);
      fsyncDir(join(dataDir, '..'));
      rmSync(markerOf(o.pg), { force: true });
      o.log.event('warn', 'rejoin-basebackup', { kept: aside });
    }
  }
  await runProvisioning(o.follower);
  if (method === 'basebackup' && !unreadable) rmSync(aside, { recursive: true, force: true });
  return { method, divergent, ...(unreadable ? { keptAside: aside } : {}) };
}

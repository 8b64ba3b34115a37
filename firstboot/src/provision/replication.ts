/**
 * Runtime replication controls and status, for the agent's status endpoint and the failover engineer:
 * synchronous ↔ asynchronous switch, waiting for a standby to stream, typed status of either role, and
 * the logical follower's promotion (sequence advance).
 */
import type pg from 'pg';
import { quoteIdent, quoteLiteral, synchronousStandbyNames } from './core/pgconf.ts';
import {
  mapReceiverRow,
  mapSlotRow,
  mapStandbyRow,
  mapSubscriptionRow,
  type PrimaryStatus,
  type ReplicationStatus,
  type StandbyPeerStatus,
  type StandbyStatus,
} from './core/status.ts';
import { withAdmin, type LocalPg } from './postgres.ts';
import { PROMOTED_COMMENT, SUBSCRIPTION } from './provision.ts';

/**
 * Synchronous replication to `standby` (its application_name = node name), or asynchronous (null):
 * ALTER SYSTEM (persisted in postgresql.auto.conf, survives restarts) + pg_reload_conf(), then waits
 * until the server runs with the new value. Call with null when the peer is known down, or right
 * after promoting (a promoted standby must not wait for itself).
 */
export async function setSynchronousStandby(p: LocalPg, standby: string | null, timeoutMs = 5000): Promise<void> {
  const want = synchronousStandbyNames(standby);
  await withAdmin(p, async (db) => {
    await db.query(`ALTER SYSTEM SET synchronous_standby_names = ${quoteLiteral(want)}`);
    await db.query('SELECT pg_reload_conf()');
  });
  const until = Date.now() + timeoutMs;
  for (;;) {
    // a fresh session sees the reloaded value once the postmaster has processed SIGHUP
    const now = await withAdmin(p, async (db) => (await db.query<{ v: string }>("SELECT current_setting('synchronous_standby_names') AS v")).rows[0]?.v);
    if (now === want) return;
    if (Date.now() > until) throw new Error(`synchronous_standby_names did not take effect within ${timeoutMs}ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

export async function primaryStatus(db: pg.Client): Promise<PrimaryStatus> {
  const head = await db.query<{ lsn: string; tl: number; ssn: string }>(
    "SELECT pg_current_wal_lsn()::text AS lsn, (SELECT timeline_id FROM pg_control_checkpoint()) AS tl, current_setting('synchronous_standby_names') AS ssn",
  );
  const standbys = await db.query(
    `SELECT application_name, host(client_addr) AS client_addr, state, sync_state,
            sent_lsn::text, write_lsn::text, flush_lsn::text, replay_lsn::text,
            extract(epoch FROM write_lag) * 1000 AS write_lag_ms,
            extract(epoch FROM flush_lag) * 1000 AS flush_lag_ms,
            extract(epoch FROM replay_lag) * 1000 AS replay_lag_ms,
            pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::float8 AS replay_lag_bytes
       FROM pg_stat_replication ORDER BY application_name`,
  );
  const slots = await db.query(
    `SELECT slot_name, slot_type, active, restart_lsn::text, wal_status,
            pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::float8 AS retained_bytes
       FROM pg_replication_slots ORDER BY slot_name`,
  );
  const subs = await db.query(
    `SELECT s.subname, s.subenabled, st.received_lsn::text, st.latest_end_lsn::text, st.last_msg_receipt_time
       FROM pg_subscription s LEFT JOIN pg_stat_subscription st ON st.subid = s.oid AND st.relid IS NULL
      WHERE s.subdbid = (SELECT oid FROM pg_database WHERE datname = current_database())`,
  );
  const h = head.rows[0];
  return {
    role: 'primary',
    inRecovery: false,
    currentLsn: h?.lsn ?? '',
    timeline: Number(h?.tl ?? 0),
    synchronousStandbyNames: h?.ssn ?? '',
    standbys: standbys.rows.map(mapStandbyRow),
    slots: slots.rows.map(mapSlotRow),
    subscriptions: subs.rows.map(mapSubscriptionRow),
  };
}

export async function standbyStatus(db: pg.Client): Promise<StandbyStatus> {
  const head = await db.query<{ recv: string | null; replay: string | null; backlog: number | null; ts: Date | null; tl: number }>(
    `SELECT pg_last_wal_receive_lsn()::text AS recv, pg_last_wal_replay_lsn()::text AS replay,
            pg_wal_lsn_diff(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn())::float8 AS backlog,
            pg_last_xact_replay_timestamp() AS ts,
            (SELECT timeline_id FROM pg_control_checkpoint()) AS tl`,
  );
  const rec = await db.query(
    `SELECT status, sender_host, sender_port, slot_name, flushed_lsn::text, latest_end_lsn::text, last_msg_receipt_time FROM pg_stat_wal_receiver`,
  );
  const h = head.rows[0];
  const r = rec.rows[0] as Record<string, unknown> | undefined;
  return {
    role: 'standby',
    inRecovery: true,
    timeline: Number(h?.tl ?? 0),
    receiver: r ? mapReceiverRow(r) : null,
    receiveLsn: h?.recv ?? null,
    replayLsn: h?.replay ?? null,
    replayBacklogBytes: h?.backlog ?? null,
    lastReplayTime: h?.ts ? h.ts.toISOString() : null,
  };
}

/** The local server's replication status: primary (pg_stat_replication, slots, subscriptions) or standby (WAL receiver, replay). */
export async function replicationStatus(p: LocalPg): Promise<ReplicationStatus> {
  return withAdmin(
    p,
    async (db) => {
      const rec = (await db.query<{ r: boolean }>('SELECT pg_is_in_recovery() AS r')).rows[0]?.r;
      return rec ? standbyStatus(db) : primaryStatus(db);
    },
    'kine',
  ).catch(async (e: Error) => {
    // before the kine database exists (early provisioning) ask the postgres database
    if (!/database "kine" does not exist/.test(e.message)) throw e;
    return withAdmin(p, async (db) => ((await db.query<{ r: boolean }>('SELECT pg_is_in_recovery() AS r')).rows[0]?.r ? standbyStatus(db) : primaryStatus(db)));
  });
}

/**
 * Waits until the primary shows `applicationName` streaming (and, with `sync`, as the sync standby).
 * Returns that standby's row.
 */
export async function waitForStandby(p: LocalPg, applicationName: string, o: { sync?: boolean; timeoutMs?: number } = {}): Promise<StandbyPeerStatus> {
  const until = Date.now() + (o.timeoutMs ?? 60_000);
  let last: StandbyPeerStatus | undefined;
  for (;;) {
    const s = await replicationStatus(p);
    if (s.role === 'primary') {
      last = s.standbys.find((x) => x.applicationName === applicationName);
      if (last && last.state === 'streaming' && (!o.sync || last.syncState === 'sync')) return last;
    }
    if (Date.now() > until)
      throw new Error(
        `standby ${applicationName} not ${o.sync ? 'sync ' : ''}streaming after ${o.timeoutMs ?? 60_000}ms (last: ${last ? `${last.state}/${last.syncState}` : 'absent'})`,
      );
    await new Promise((r) => setTimeout(r, 100));
  }
}

/**
 * Pair bring-up on the leader: once the follower streams, make it the synchronous standby. Zero
 * acknowledged writes lost from then on; the leader stays async (writable) until the follower is there.
 */
export async function enableSynchronousReplication(p: LocalPg, follower: string, timeoutMs = 60_000): Promise<StandbyPeerStatus> {
  await waitForStandby(p, follower, { timeoutMs });
  await setSynchronousStandby(p, follower);
  return waitForStandby(p, follower, { sync: true, timeoutMs });
}

export interface SequenceAdvance {
  sequence: string;
  /** The sequence's next value is > this. */
  value: number;
}

/**
 * Logical follower → primary: stop applying from the (gone) leader without needing it (disable, detach
 * the remote slot, drop), mark the kine table as promoted (a re-run of the follower steps then refuses
 * to re-subscribe over it), and advance every column-owned sequence of the kine database past the
 * column's max — logical replication carries rows, not sequences, and Kine's revision is kine.id.
 * Idempotent.
 */
export async function promoteLogicalFollower(p: LocalPg): Promise<SequenceAdvance[]> {
  return withAdmin(
    p,
    async (db) => {
      const sub = await db.query('SELECT 1 FROM pg_subscription WHERE subname = $1', [SUBSCRIPTION]);
      if (sub.rowCount) {
        await db.query(`ALTER SUBSCRIPTION ${quoteIdent(SUBSCRIPTION)} DISABLE`);
        await db.query(`ALTER SUBSCRIPTION ${quoteIdent(SUBSCRIPTION)} SET (slot_name = NONE)`);
        await db.query(`DROP SUBSCRIPTION ${quoteIdent(SUBSCRIPTION)}`);
      }
      await db.query(`COMMENT ON TABLE public.kine IS ${quoteLiteral(PROMOTED_COMMENT)}`);
      const seqs = await db.query<{ seq: string; tbl: string; col: string }>(
        `SELECT s.oid::regclass::text AS seq, t.oid::regclass::text AS tbl, a.attname AS col
           FROM pg_class s
           JOIN pg_depend d ON d.objid = s.oid AND d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')
           JOIN pg_class t ON t.oid = d.refobjid
           JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = d.refobjsubid
          WHERE s.relkind = 'S'`,
      );
      const out: SequenceAdvance[] = [];
      for (const r of seqs.rows) {
        await db.query('BEGIN');
        await db.query(`LOCK TABLE ${r.tbl} IN EXCLUSIVE MODE`);
        const v = await db.query<{ v: string }>(
          `SELECT setval(${quoteLiteral(r.seq)}, GREATEST((SELECT COALESCE(max(${quoteIdent(r.col)}), 0) FROM ${r.tbl}), (SELECT last_value FROM ${r.seq}), 1), true)::text AS v`,
        );
        await db.query('COMMIT');
        out.push({ sequence: r.seq, value: Number(v.rows[0]?.v) });
      }
      return out;
    },
    'kine',
  );
}

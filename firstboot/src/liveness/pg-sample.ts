/**
 * One look at the local PostgreSQL per tick: is it a primary or a standby, how far is its WAL,
 * is the peer streaming to it (primary) or is it streaming from the leader (standby). Short
 * timeouts: a hung server must read as "down" within a tick, not stall the liveness loop.
 */
import type { PgState } from './core/types.ts';
import { adminClientConfig, withClient, type LocalPg } from '../provision/postgres.ts';

export interface PgSample {
  state: PgState;
  timeline: number;
  lsn: string;
  /** synchronous_standby_names is set (a primary's commits wait for the standby). */
  syncRep: boolean;
  /** Primary: the peer's walsender is streaming, and its flush position lag in bytes. */
  standbyStreaming: boolean;
  /** Primary: the peer's walsender is connected, streaming or still catching up. */
  standbyConnected: boolean;
  standbyLagBytes: number;
  /** Standby: the WAL receiver is streaming. */
  receiverStreaming: boolean;
  /** The fence is in force (default_transaction_read_only). */
  readOnly: boolean;
  error?: string;
}

const DOWN: Omit<PgSample, 'error'> = {
  state: 'down',
  timeline: 0,
  lsn: '0/0',
  syncRep: false,
  standbyStreaming: false,
  standbyConnected: false,
  standbyLagBytes: 0,
  receiverStreaming: false,
  readOnly: true,
};

interface Row {
  rec: boolean;
  tl: number;
  lsn: string | null;
  ssn: string;
  ro: string;
  standby_state: string | null;
  lag: number | null;
  receiver: string | null;
}

export async function samplePg(pg: LocalPg, peerName: string, timeoutMs = 1500): Promise<PgSample> {
  try {
    const row = await withClient(
      { ...adminClientConfig(pg), connectionTimeoutMillis: timeoutMs, statement_timeout: timeoutMs, query_timeout: timeoutMs },
      async (db) => {
        // CASE keeps pg_current_wal_lsn() (an error during recovery) off a standby.
        const r = await db.query<Row>(
          `SELECT pg_is_in_recovery() AS rec,
                -- The live timeline: a primary's current WAL file, a standby's receiver; the last
                -- checkpoint's lags behind a promotion until the next checkpoint.
                CASE WHEN pg_is_in_recovery()
                     THEN coalesce((SELECT received_tli FROM pg_stat_wal_receiver LIMIT 1), (SELECT timeline_id FROM pg_control_checkpoint()))
                     ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int END AS tl,
                CASE WHEN pg_is_in_recovery()
                     THEN greatest(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn())::text
                     ELSE pg_current_wal_lsn()::text END AS lsn,
                current_setting('synchronous_standby_names') AS ssn,
                current_setting('default_transaction_read_only') AS ro,
                (SELECT state FROM pg_stat_replication WHERE application_name = $1 ORDER BY state = 'streaming' DESC LIMIT 1) AS standby_state,
                CASE WHEN pg_is_in_recovery() THEN NULL
                     ELSE (SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), flush_lsn)::float8 FROM pg_stat_replication WHERE application_name = $1 AND state = 'streaming' LIMIT 1) END AS lag,
                (SELECT status FROM pg_stat_wal_receiver LIMIT 1) AS receiver`,
          [peerName],
        );
        return r.rows[0];
      },
    );
    if (!row) return { ...DOWN, error: 'no row' };
    return {
      state: row.rec ? 'standby' : 'primary',
      timeline: Number(row.tl ?? 0),
      lsn: row.lsn ?? '0/0',
      syncRep: row.ssn.trim() !== '',
      standbyStreaming: row.standby_state === 'streaming',
      standbyConnected: row.standby_state === 'streaming' || row.standby_state === 'catchup',
      standbyLagBytes: Math.max(0, Number(row.lag ?? 0)),
      receiverStreaming: row.receiver === 'streaming',
      readOnly: row.ro === 'on',
    };
  } catch (e) {
    return { ...DOWN, error: (e as Error).message };
  }
}

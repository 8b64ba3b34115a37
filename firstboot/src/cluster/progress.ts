/**
 * How far this node's copy of the cluster has got, for the election: committed cluster state
 * (a PostgreSQL data directory of this pair), its timeline and WAL position. A node that holds
 * the newest data must lead, whatever was agreed before: otherwise acknowledged writes are lost.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { runPgTool, serverState, withAdmin, type LocalPg } from '../provision/postgres.ts';

export interface Progress {
  committed: boolean;
  timeline: number;
  lsn: string;
}

export const NO_PROGRESS: Progress = { committed: false, timeline: 0, lsn: '0/0' };

/**
 * Live from the server when it runs (a primary's current WAL position, a standby's received or
 * replayed one), else from pg_controldata (the last checkpoint). Read at each negotiation: a stale
 * value could rank a standby above the primary it copies.
 */
export async function readProgress(pg: LocalPg): Promise<Progress> {
  if (!existsSync(join(pg.paths.dataDir, 'PG_VERSION'))) return NO_PROGRESS;
  if ((await serverState(pg)) === 'running') {
    const live = await withAdmin(pg, async (db) => {
      const r = await db.query<{ lsn: string | null; timeline: number }>(
        `SELECT CASE WHEN pg_is_in_recovery()
                  THEN greatest(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn())::text
                  ELSE pg_current_wal_lsn()::text END AS lsn,
                (SELECT timeline_id FROM pg_control_checkpoint()) AS timeline`,
      );
      return r.rows[0];
    }).catch(() => undefined);
    if (live?.lsn) return { committed: true, timeline: Number(live.timeline), lsn: live.lsn };
  }
  const out = (await runPgTool(pg.paths, 'pg_controldata', ['-D', pg.paths.dataDir])).stdout;
  const timeline = Number(/^Latest checkpoint's TimeLineID:\s+(\d+)/m.exec(out)?.[1] ?? 0);
  const lsn = /^Latest checkpoint location:\s+([0-9A-F]+\/[0-9A-F]+)/m.exec(out)?.[1] ?? '0/0';
  return { committed: true, timeline, lsn };
}

/**
 * The write fence on the local PostgreSQL, enforced by the server (issue 11 point 4). A fenced or
 * following node keeps FENCE_CONF in its config (included from the agent's file) and the fence's
 * reject rows first in pg_hba, so whenever and by whoever the server is (re)started, the
 * application role (kine) cannot connect, whatever it would set or begin, and the superuser's
 * sessions are read-only. Raising the fence on a running server reloads it (pg_hba and the setting
 * apply to new sessions) and ends the client sessions, so a transaction begun before the fence
 * cannot commit after it. Why pg_hba and not a role change: ALTER ROLE is a write, which a primary
 * whose synchronous standby is gone would never commit; a reloaded file needs nobody.
 */
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { fsyncDir, writeFileAtomic } from '../adapters/atomic-file.ts';
import { FENCE_CONF, fencedHba } from '../provision/core/pgconf.ts';
import { adminClientConfig, confFiles, postgresUser, runPgTool, serverState, withClient, type LocalPg } from '../provision/postgres.ts';

export function fenceFileOf(pg: LocalPg): string {
  return confFiles(pg.paths.confDir).fence;
}

/**
 * Puts the fence up (no kine sessions, read-only, sessions ended) or takes it down, on disk and in
 * the running server. Raising it on a failing disk (read-only, EIO, full) still ends the sessions:
 * the files are then reported unwritten (`unrecorded`) rather than thrown, since a server on such
 * a disk commits nothing anyway and a leader must not keep its VIP for want of a file (issue 11
 * point 3). Lowering it throws: a node must not take writes it could not record.
 */
export async function setFence(pg: LocalPg, on: boolean): Promise<{ unrecorded?: string; unended?: string }> {
  const file = fenceFileOf(pg);
  let unrecorded: string | undefined;
  try {
    if (on) writeFileAtomic(file, FENCE_CONF, 0o600, postgresUser());
    else if (existsSync(file)) {
      rmSync(file);
      fsyncDir(pg.paths.confDir);
    }
    // Before provisioning there is no pg_hba yet: provisioning writes it with the fence as the fence file says.
    const hbaFile = confFiles(pg.paths.confDir).hba;
    const hba = existsSync(hbaFile) ? readFileSync(hbaFile, 'utf8') : undefined;
    if (hba !== undefined && fencedHba(hba, on) !== hba) writeFileAtomic(hbaFile, fencedHba(hba, on), 0o600, postgresUser());
  } catch (e) {
    if (!on) throw e;
    unrecorded = (e as Error).message;
  }
  try {
    await endSessions(pg, on);
  } catch (e) {
    // Raising: the VIP is already gone and the server is hung or going; say so, the fence stands.
    if (!on) throw e;
    return { ...(unrecorded ? { unrecorded } : {}), unended: (e as Error).message };
  }
  return unrecorded ? { unrecorded } : {};
}

/** Reloads the server so new sessions see the fence as it is on disk, and with it up ends the client sessions. */
async function endSessions(pg: LocalPg, on: boolean): Promise<void> {
  if ((await serverState(pg)) !== 'running') return;
  await runPgTool(pg.paths, 'pg_ctl', ['reload', '-D', pg.paths.dataDir], { timeoutMs: 10_000 });
  // The reload is asynchronous: wait until new sessions see the new value. Bounded in time, and
  // each look too: a hung server (SIGSTOP, a stalled disk) must not hold the fence's batch.
  const want = on ? 'on' : 'off';
  const quick = { ...adminClientConfig(pg), connectionTimeoutMillis: 2000, query_timeout: 2000 };
  const until = performance.now() + 3000;
  while (performance.now() < until) {
    const now = await withClient(
      quick,
      async (db) => (await db.query<{ v: string }>("SELECT current_setting('default_transaction_read_only') AS v")).rows[0]?.v,
    ).catch(() => undefined);
    if (now === want) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  if (!on) return;
  // Longer than a look: ending the sessions that began before the fence is what the fence is for.
  // Chosen by role, not by name: a client may call itself anything, the agent's own name included;
  // only the superuser's sessions (the agents', peer-mapped or known to the peer's agent) stay.
  await withClient({ ...adminClientConfig(pg), connectionTimeoutMillis: 5000, query_timeout: 5000 }, (db) =>
    db.query(
      `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
        WHERE backend_type = 'client backend' AND pid <> pg_backend_pid() AND usename IS DISTINCT FROM current_user`,
    ),
  ).catch(() => undefined);
}

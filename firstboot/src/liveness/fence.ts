/**
 * The write fence on the local PostgreSQL. A fenced or following node keeps FENCE_CONF in its
 * config (included from the agent's file), so the server is read-only whenever and by whoever it
 * is (re)started; raising the fence on a running server also reloads it and ends the client
 * sessions, so a transaction begun before the fence cannot commit after it.
 */
import { existsSync, rmSync } from 'node:fs';
import { fsyncDir, writeFileAtomic } from '../adapters/atomic-file.ts';
import { FENCE_CONF } from '../provision/core/pgconf.ts';
import { confFiles, postgresUser, runPgTool, serverState, withAdmin, type LocalPg } from '../provision/postgres.ts';

export function fenceFileOf(pg: LocalPg): string {
  return confFiles(pg.paths.confDir).fence;
}

/** Puts the fence up (read-only, sessions ended) or takes it down, on disk and in the running server. */
export async function setFence(pg: LocalPg, on: boolean): Promise<void> {
  const file = fenceFileOf(pg);
  if (on) writeFileAtomic(file, FENCE_CONF, 0o600, postgresUser());
  else if (existsSync(file)) {
    rmSync(file);
    fsyncDir(pg.paths.confDir);
  }
  if ((await serverState(pg)) !== 'running') return;
  await runPgTool(pg.paths, 'pg_ctl', ['reload', '-D', pg.paths.dataDir], { timeoutMs: 10_000 });
  // The reload is asynchronous: wait until new sessions see the new value.
  const want = on ? 'on' : 'off';
  for (let i = 0; i < 50; i++) {
    const now = await withAdmin(
      pg,
      async (db) => (await db.query<{ v: string }>("SELECT current_setting('default_transaction_read_only') AS v")).rows[0]?.v,
    ).catch(() => undefined);
    if (now === want) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  if (!on) return;
  await withAdmin(pg, (db) =>
    db.query(
      `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
        WHERE backend_type = 'client backend' AND pid <> pg_backend_pid() AND application_name <> 'geminik8s-agent'`,
    ),
  ).catch(() => undefined);
}

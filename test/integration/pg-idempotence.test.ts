/**
 * Crash convergence: for every step boundary k, run the first k steps, cut the power (PostgreSQL
 * stopped with -m immediate, debris of a half-done initdb/basebackup left where that step would leave
 * it), then run the whole list again and assert the node converges to the same state. A second full
 * run changes nothing.
 */
import test from 'ava';
import { mkdirSync, writeFileSync, existsSync, rmSync, chownSync } from 'node:fs';
import { join } from 'node:path';
import { makePair, requirePrerequisites } from '../helpers/provision-pair.ts';
import { provisionSteps, runProvisioning } from '../../firstboot/src/provision/provision.ts';
import { loadSecrets } from '../../firstboot/src/provision/secrets.ts';
import { postgresUser, stopServer, withAdmin, type LocalPg } from '../../firstboot/src/provision/postgres.ts';
import { partialPath } from '../../firstboot/src/provision/core/plan.ts';
import { waitForStandby } from '../../firstboot/src/provision/replication.ts';

/** What a cut in the middle of a data-directory step leaves behind. */
function leaveDebris(dataDir: string): void {
  const partial = partialPath(dataDir);
  mkdirSync(partial, { recursive: true });
  writeFileSync(join(partial, 'PG_VERSION'), '15\n');
  mkdirSync(join(partial, 'base'), { recursive: true });
  const pgUser = postgresUser();
  chownSync(partial, pgUser.uid, pgUser.gid);
}

async function leaderConverged(pg: LocalPg): Promise<string[]> {
  return withAdmin(pg, async (db) => {
    const roles = await db.query<{ rolname: string }>("SELECT rolname FROM pg_roles WHERE rolname IN ('replicator','kine') ORDER BY 1");
    const dbs = await db.query("SELECT 1 FROM pg_database WHERE datname = 'kine'");
    const slots = await db.query<{ slot_name: string }>('SELECT slot_name FROM pg_replication_slots');
    const checksums = await db.query<{ v: string }>("SELECT current_setting('data_checksums') AS v");
    const ssl = await db.query<{ v: string }>("SELECT current_setting('ssl') AS v");
    return [
      ...roles.rows.map((r) => r.rolname),
      dbs.rowCount ? 'db:kine' : 'no-db',
      ...slots.rows.map((s) => `slot:${s.slot_name}`),
      `checksums:${checksums.rows[0]?.v}`,
      `ssl:${ssl.rows[0]?.v}`,
    ];
  });
}

const EXPECTED_LEADER = ['kine', 'replicator', 'db:kine', 'slot:geminik8s_node_b', 'checksums:on', 'ssl:on'];

test('leader: killed at every step boundary, a re-run converges; a further run changes nothing', async (t) => {
  if (!requirePrerequisites(t)) return;
  const names = provisionSteps(makePairConfigProbe()).map((s) => s.name);
  t.deepEqual(names, ['secrets', 'tls', 'initdb', 'config', 'start', 'bootstrap']);
  for (let k = 0; k <= names.length; k++) {
    const pair = makePair(`idem-l${k}`, 25440 + 2 * k);
    try {
      const cfg = pair.leaderConfig();
      const pg = { paths: cfg.paths, port: cfg.port };
      await runProvisioning(cfg, { count: k });
      await stopServer(pg, 'immediate');
      if (names[k] === 'initdb') leaveDebris(cfg.paths.dataDir);
      const secretsBefore = JSON.stringify(loadSecrets(cfg.secretsDir) ?? null);
      await runProvisioning(cfg);
      t.deepEqual(await leaderConverged(pg), EXPECTED_LEADER, `converged after a cut at step ${k} (${names[k] ?? 'end'})`);
      t.false(existsSync(partialPath(cfg.paths.dataDir)), 'no debris left');
      if (k > 0) t.is(JSON.stringify(loadSecrets(cfg.secretsDir)), secretsBefore, 'secrets are not regenerated');
      const again = await runProvisioning(cfg);
      t.deepEqual(
        again.map((s) => `${s.step}=${s.outcome}`),
        ['secrets=kept', 'tls=written', 'initdb=kept', 'config=primary', 'start=reloaded', 'bootstrap=kept'],
        `idempotent after a cut at step ${k}`,
      );
    } finally {
      await pair.cleanup();
    }
  }
});

test('follower: killed at every step boundary (and mid-basebackup), a re-run converges to a streaming standby', async (t) => {
  if (!requirePrerequisites(t)) return;
  const pair = makePair('idem-f', 25460);
  t.teardown(() => pair.cleanup());
  await runProvisioning(pair.leaderConfig());
  const leaderPg = { paths: pair.leader.paths, port: pair.leader.port };
  const secrets = loadSecrets(pair.leader.secretsDir)!;
  const names = provisionSteps(pair.followerConfig()).map((s) => s.name);
  t.deepEqual(names, ['secrets', 'tls', 'basebackup', 'config', 'start']);
  for (let k = 0; k <= names.length; k++) {
    const fpg = { paths: pair.follower.paths, port: pair.follower.port };
    await stopServer(fpg, 'immediate');
    rmSync(pair.follower.base, { recursive: true, force: true });
    // The pairing channel delivered the secrets on the first run only; re-runs find them on disk.
    await runProvisioning(pair.followerConfig({ receivedSecrets: secrets }), { count: k });
    await stopServer(fpg, 'immediate');
    if (names[k] === 'basebackup') leaveDebris(pair.follower.paths.dataDir);
    const t0 = Date.now();
    const rec = await runProvisioning(pair.followerConfig(k === 0 ? { receivedSecrets: secrets } : {}));
    const s = await waitForStandby(leaderPg, 'node-b', { timeoutMs: 30_000 });
    t.is(s.state, 'streaming', `streaming after a cut at step ${k} (${names[k] ?? 'end'})`);
    t.log(`cut at ${names[k] ?? 'end'}: re-run ${rec.map((r) => `${r.step}=${r.outcome}`).join(', ')}; streaming in ${Date.now() - t0}ms`);
    t.false(existsSync(partialPath(pair.follower.paths.dataDir)));
    const again = await runProvisioning(pair.followerConfig());
    t.deepEqual(
      again.map((r) => `${r.step}=${r.outcome}`),
      ['secrets=kept', 'tls=written', 'basebackup=kept', 'config=standby', 'start=reloaded'],
    );
  }
  // A follower whose data dir became a primary is never overwritten by a basebackup.
  const fpg = { paths: pair.follower.paths, port: pair.follower.port };
  await stopServer(fpg, 'fast');
  rmSync(join(pair.follower.paths.dataDir, 'standby.signal'));
  await t.throwsAsync(runProvisioning(pair.followerConfig()), { message: /holds a primary/ });
});

function makePairConfigProbe() {
  const p = makePair('probe', 1);
  rmSync(p.root, { recursive: true, force: true });
  return p.leaderConfig();
}

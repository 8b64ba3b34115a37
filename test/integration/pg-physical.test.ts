/**
 * Leader + follower with physical streaming replication on real PostgreSQL 15, Kine on both "nodes"
 * (the follower's pointed at the primary), synchronous replication, typed status.
 */
import test from 'ava';
import { execa } from 'execa';
import { kineBinary, makePair, requirePrerequisites } from '../helpers/provision-pair.ts';
import { runProvisioning } from '../../firstboot/src/provision/provision.ts';
import { loadSecrets } from '../../firstboot/src/provision/secrets.ts';
import { confFiles, withAdmin } from '../../firstboot/src/provision/postgres.ts';
import { enableSynchronousReplication, replicationStatus, setSynchronousStandby, waitForStandby } from '../../firstboot/src/provision/replication.ts';
import { startKine } from '../../firstboot/src/provision/kine.ts';
import { join } from 'node:path';

const etcdctl = (addr: string, ...args: string[]) => execa('etcdctl', [`--endpoints=http://${addr}`, ...args], { env: { ETCDCTL_API: '3' } });

test('physical: leader + standby stream synchronously; a key put through Kine(leader) is read through Kine(follower) and is on the standby', async (t) => {
  if (!requirePrerequisites(t)) return;
  const pair = makePair('phys', 25432);
  t.teardown(() => pair.cleanup());
  const kine = await kineBinary();

  const t0 = Date.now();
  const lead = await runProvisioning(pair.leaderConfig());
  t.log(`leader: ${lead.map((s) => `${s.step}=${s.outcome} ${s.ms}ms`).join(', ')}`);
  const tFollower = Date.now();
  const fol = await runProvisioning(pair.followerConfig({ receivedSecrets: loadSecrets(pair.leader.secretsDir) }));
  t.log(`follower: ${fol.map((s) => `${s.step}=${s.outcome} ${s.ms}ms`).join(', ')}`);

  const leaderPg = { paths: pair.leader.paths, port: pair.leader.port };
  const followerPg = { paths: pair.follower.paths, port: pair.follower.port };
  await waitForStandby(leaderPg, 'node-b', { timeoutMs: 30_000 });
  t.log(`time to streaming: ${Date.now() - tFollower}ms after follower start, ${Date.now() - t0}ms overall`);
  const sync = await enableSynchronousReplication(leaderPg, 'node-b');
  t.is(sync.state, 'streaming');
  t.is(sync.syncState, 'sync');

  const st = await replicationStatus(leaderPg);
  if (st.role !== 'primary') return t.fail('leader is not primary');
  t.is(st.synchronousStandbyNames, 'FIRST 1 ("node-b")');
  const slot = st.slots.find((s) => s.name === 'geminik8s_node_b');
  t.truthy(slot?.active, 'the follower streams over its slot');
  const fst = await replicationStatus(followerPg);
  if (fst.role !== 'standby') return t.fail('follower is not standby');
  t.is(fst.receiver?.status, 'streaming');
  t.is(fst.receiver?.slotName, 'geminik8s_node_b');

  // The replication connection is TLS-verified and authenticated by scram.
  const ssl = await withAdmin(leaderPg, (db) =>
    db.query("SELECT s.ssl, s.version FROM pg_stat_ssl s JOIN pg_stat_replication r ON r.pid = s.pid WHERE r.application_name = 'node-b'"),
  );
  t.is(ssl.rows[0]?.ssl, true);

  // Kine on both nodes, both pointed at the primary.
  const secrets = loadSecrets(pair.leader.secretsDir)!;
  const ca = confFiles(pair.leader.paths.confDir).caCert;
  const kl = await startKine({
    binary: kine,
    listenAddress: '127.0.0.1:23791',
    db: { host: '127.0.0.1', port: pair.leader.port },
    password: secrets.kinePassword,
    caFile: ca,
    logFile: join(pair.root, 'kine-a.log'),
  });
  pair.kines.push(kl);
  const kf = await startKine({
    binary: kine,
    listenAddress: '127.0.0.1:23792',
    db: { host: '127.0.0.1', port: pair.leader.port },
    password: secrets.kinePassword,
    caFile: confFiles(pair.follower.paths.confDir).caCert,
    logFile: join(pair.root, 'kine-b.log'),
  });
  pair.kines.push(kf);
  await etcdctl(kl.listenAddress, 'put', '/geminik8s/test', 'hello-pair');
  const got = await etcdctl(kf.listenAddress, 'get', '--print-value-only', '/geminik8s/test');
  t.is(got.stdout.trim(), 'hello-pair');
  const health = await kf.health(3000);
  t.true(health.ok);

  // Synchronous commit: acknowledged ⇒ on the standby (flushed); wait for replay then read it there.
  const leaderLsn = await withAdmin(leaderPg, async (db) => (await db.query<{ l: string }>('SELECT pg_current_wal_lsn()::text AS l')).rows[0]!.l);
  const onStandby = await withAdmin(
    followerPg,
    async (db) => {
      for (let i = 0; i < 100; i++) {
        const r = await db.query<{ ok: boolean }>('SELECT pg_last_wal_replay_lsn() >= $1::pg_lsn AS ok', [leaderLsn]);
        if (r.rows[0]?.ok) break;
        await new Promise((res) => setTimeout(res, 50));
      }
      return db.query<{ value: Buffer }>("SELECT value FROM kine WHERE name = '/geminik8s/test' ORDER BY id DESC LIMIT 1");
    },
    'kine',
  );
  t.is(onStandby.rows[0]?.value.toString(), 'hello-pair');
  const inRecovery = await withAdmin(followerPg, async (db) => (await db.query<{ r: boolean }>('SELECT pg_is_in_recovery() AS r')).rows[0]?.r);
  t.true(inRecovery);

  // sync → async → sync at runtime
  await setSynchronousStandby(leaderPg, null);
  const a = await waitForStandby(leaderPg, 'node-b');
  t.is(a.syncState, 'async');
  await setSynchronousStandby(leaderPg, 'node-b');
  t.is((await waitForStandby(leaderPg, 'node-b', { sync: true, timeoutMs: 10_000 })).syncState, 'sync');
});

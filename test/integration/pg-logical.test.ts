/**
 * Logical-replication mode (profile option): both nodes are primaries; the leader publishes the kine
 * table, the follower subscribes (copy_data). Promotion of the follower advances the kine id sequence
 * past max(id), so Kine on the promoted follower keeps revisions increasing (no duplicate keys).
 */
import test from 'ava';
import { execa } from 'execa';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { eventually } from '../helpers/poll.ts';
import { kineBinary, makePair, requirePrerequisites } from '../helpers/provision-pair.ts';
import { runProvisioning } from '../../firstboot/src/provision/provision.ts';
import { loadSecrets } from '../../firstboot/src/provision/secrets.ts';
import { confFiles, stopServer, withAdmin, type LocalPg } from '../../firstboot/src/provision/postgres.ts';
import { promoteLogicalFollower, replicationStatus, setSynchronousStandby, waitForStandby } from '../../firstboot/src/provision/replication.ts';
import { startKine } from '../../firstboot/src/provision/kine.ts';

const put = async (addr: string, key: string, value: string): Promise<number> => {
  const r = await execa('etcdctl', [`--endpoints=http://${addr}`, '-w', 'json', 'put', key, value], { env: { ETCDCTL_API: '3' } });
  return Number((JSON.parse(r.stdout) as { header: { revision: number } }).header.revision);
};
const maxId = async (pg: LocalPg): Promise<number> =>
  withAdmin(pg, async (db) => Number((await db.query<{ m: string }>('SELECT COALESCE(max(id),0)::text AS m FROM kine')).rows[0]?.m), 'kine');

test('logical: publication/subscription of kine; promoting the follower advances the sequence and Kine revisions keep increasing', async (t) => {
  if (!requirePrerequisites(t)) return;
  const pair = makePair('logical', 25480, 'logical');
  t.teardown(() => pair.cleanup());
  const kine = await kineBinary();
  const leaderPg = { paths: pair.leader.paths, port: pair.leader.port };
  const followerPg = { paths: pair.follower.paths, port: pair.follower.port };
  const followerCaughtUp = async () => ((await maxId(followerPg)) === (await maxId(leaderPg)) ? true : undefined);

  await runProvisioning(pair.leaderConfig());
  const secrets = loadSecrets(pair.leader.secretsDir)!;
  const kl = await startKine({
    binary: kine,
    listenAddress: '127.0.0.1:23795',
    db: { host: '127.0.0.1', port: pair.leader.port },
    password: secrets.kinePassword,
    caFile: confFiles(pair.leader.paths.confDir).caCert,
    logFile: join(pair.root, 'kine-a.log'),
  });
  pair.kines.push(kl);
  let lastRev = 0;
  for (let i = 0; i < 20; i++) lastRev = await put(kl.listenAddress, `/before/${i}`, `v${i}`);

  const rec = await runProvisioning(pair.followerConfig({ receivedSecrets: secrets }));
  t.log(`logical follower: ${rec.map((r) => `${r.step}=${r.outcome} ${r.ms}ms`).join(', ')}`);
  t.deepEqual(
    rec.map((r) => r.step),
    ['secrets', 'tls', 'initdb', 'config', 'start', 'bootstrap', 'subscribe'],
  );
  await eventually('initial copy', 30_000, followerCaughtUp, 100);

  // sync logical replication: the subscription's walsender carries application_name = node-b
  await waitForStandby(leaderPg, 'node-b', { timeoutMs: 30_000 });
  await setSynchronousStandby(leaderPg, 'node-b');
  t.is((await waitForStandby(leaderPg, 'node-b', { sync: true, timeoutMs: 15_000 })).syncState, 'sync');
  for (let i = 0; i < 20; i++) lastRev = await put(kl.listenAddress, `/during/${i}`, `w${i}`);
  await eventually('streamed changes', 30_000, followerCaughtUp, 100);
  const fst = await replicationStatus(followerPg);
  t.is(fst.role, 'primary');
  if (fst.role === 'primary')
    t.deepEqual(
      fst.subscriptions.map((s) => [s.name, s.enabled]),
      [['geminik8s_kine', true]],
    );

  // re-running the follower steps is a no-op
  const again = await runProvisioning(pair.followerConfig());
  t.is(again.at(-1)?.outcome, 'kept');

  // Without the sequence advance, the follower's next id would collide (the point of the test).
  const seqBefore = await withAdmin(
    followerPg,
    async (db) => Number((await db.query<{ v: string }>('SELECT last_value::text AS v FROM kine_id_seq')).rows[0]?.v),
    'kine',
  );
  const replicatedMax = await maxId(followerPg);
  t.true(seqBefore < replicatedMax, `follower sequence (${seqBefore}) lags the replicated max id (${replicatedMax})`);

  // Failover: the leader dies; the follower is promoted and serves Kine locally.
  await kl.stop();
  await stopServer(leaderPg, 'immediate');
  await setSynchronousStandby(followerPg, null);
  const adv = await promoteLogicalFollower(followerPg);
  t.log(`sequence advance: ${JSON.stringify(adv)}`);
  t.true(adv.some((a) => /kine_id_seq/.test(a.sequence) && a.value >= replicatedMax));
  t.deepEqual(await promoteLogicalFollower(followerPg), adv, 'promotion is idempotent');

  const kf = await startKine({
    binary: kine,
    listenAddress: '127.0.0.1:23796',
    db: { host: '127.0.0.1', port: pair.follower.port },
    password: secrets.kinePassword,
    caFile: confFiles(pair.follower.paths.confDir).caCert,
    logFile: join(pair.root, 'kine-b.log'),
  });
  pair.kines.push(kf);
  const got = await execa('etcdctl', [`--endpoints=http://${kf.listenAddress}`, 'get', '--print-value-only', '/during/19'], { env: { ETCDCTL_API: '3' } });
  t.is(got.stdout.trim(), 'w19', 'data replicated before the failover is served by the promoted follower');
  let prev = lastRev;
  for (let i = 0; i < 20; i++) {
    const rev = await put(kf.listenAddress, `/after/${i}`, `x${i}`);
    t.true(rev > prev, `revision ${rev} > ${prev}`);
    prev = rev;
  }
  const kineLog = readFileSync(join(pair.root, 'kine-b.log'), 'utf8');
  t.notRegex(kineLog, /duplicate key/i);

  // A re-run of the follower steps on the promoted node refuses to re-subscribe over its data.
  await t.throwsAsync(runProvisioning(pair.followerConfig()), { message: /promoted/ });
});

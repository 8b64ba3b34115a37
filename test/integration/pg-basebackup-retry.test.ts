/**
 * A follower's base backup that fails part-way is tried again in the same process (issue 11: a
 * stalled leader box cut the backup's WAL stream past wal_sender_timeout, and the agent died on it
 * and was restarted by systemd). The first attempt here fails for real: the leader's replication slot
 * is gone, so pg_basebackup exits non-zero; the slot comes back while the agent waits to retry.
 */
import test from 'ava';
import type { Logger } from '../../firstboot/src/adapters/output.ts';
import { withAdmin } from '../../firstboot/src/provision/postgres.ts';
import { runProvisioning } from '../../firstboot/src/provision/provision.ts';
import { loadSecrets } from '../../firstboot/src/provision/secrets.ts';
import { makePair, requirePrerequisites } from '../helpers/provision-pair.ts';

const SLOT = 'geminik8s_node_b';

test('a base backup that fails is retried from a clean start and the follower provisions', async (t) => {
  if (!requirePrerequisites(t)) return;
  const retries: Record<string, unknown>[] = [];
  let slotBack: Promise<unknown> | undefined;
  const log: Logger = {
    event(_level, event, fields = {}) {
      if (event !== 'basebackup-retry') return;
      retries.push(fields);
      slotBack ??= withAdmin(leaderPg, (db) => db.query('SELECT pg_create_physical_replication_slot($1, true)', [SLOT]));
    },
  };
  const pair = makePair('bb-retry', 25470, 'physical', log);
  t.teardown(() => pair.cleanup());
  const leaderPg = { paths: pair.leader.paths, port: pair.leader.port };

  await runProvisioning(pair.leaderConfig());
  await withAdmin(leaderPg, (db) => db.query('SELECT pg_drop_replication_slot($1)', [SLOT]));

  const steps = await runProvisioning(pair.followerConfig({ receivedSecrets: loadSecrets(pair.leader.secretsDir) }));
  await slotBack;
  t.is(retries.length, 1, 'one failed attempt, then a good one');
  t.is(retries[0]?.attempt, 1);
  t.regex(String(retries[0]?.error), /replication slot .* does not exist/);
  t.deepEqual(
    steps.map((s) => [s.step, s.outcome]),
    [
      ['secrets', 'stored'],
      ['tls', 'written'],
      ['basebackup', 'created'],
      ['config', 'standby'],
      ['start', 'started'],
    ],
  );
});

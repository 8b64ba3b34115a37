/**
 * The fence is the server's, not the client's (issue 11 point 4): on real PostgreSQL 15, a fenced
 * primary ends the application role's sessions and refuses its new ones (pg_hba), whatever the
 * client sets; taking the fence down lets it write again.
 */
import test from 'ava';
import { execa } from 'execa';
import { readFileSync } from 'node:fs';
import pg from 'pg';
import { makePair, requirePrerequisites } from '../helpers/provision-pair.ts';
import { setFence } from '../../firstboot/src/liveness/fence.ts';
import { runProvisioning } from '../../firstboot/src/provision/provision.ts';
import { loadSecrets } from '../../firstboot/src/provision/secrets.ts';
import { confFiles, withAdmin } from '../../firstboot/src/provision/postgres.ts';

test('a fenced primary refuses every session of the kine role, even one that turns read-only off', async (t) => {
  if (!requirePrerequisites(t)) return;
  const pair = makePair('fence', 25500);
  t.teardown(() => pair.cleanup());
  await runProvisioning(pair.leaderConfig());
  const local = { paths: pair.leader.paths, port: pair.leader.port };
  const password = loadSecrets(pair.leader.secretsDir)?.kinePassword;
  if (!password) return t.fail('no kine password in the leader secrets');
  const kineClient = async (applicationName = 'fence-test-client'): Promise<pg.Client> => {
    const c = new pg.Client({
      host: '127.0.0.1',
      port: local.port,
      user: 'kine',
      database: 'kine',
      password,
      ssl: { ca: readFileSync(confFiles(local.paths.confDir).caCert, 'utf8'), checkServerIdentity: () => undefined },
      // What a client that ignores the fence would ask for.
      options: '-c default_transaction_read_only=off',
      application_name: applicationName,
      connectionTimeoutMillis: 5000,
    });
    c.on('error', () => undefined);
    await c.connect();
    return c;
  };

  const before = await kineClient();
  await before.query('CREATE TABLE fence_probe (v int)');
  await before.query('INSERT INTO fence_probe VALUES (1)');

  // A client may call itself anything, the agent's own name included.
  const impostor = await kineClient('geminik8s-agent');
  await impostor.query('INSERT INTO fence_probe VALUES (0)');

  await setFence(local, true);
  await t.throwsAsync(
    () => before.query('BEGIN READ WRITE; INSERT INTO fence_probe VALUES (2); COMMIT'),
    undefined,
    'the session open before the fence was ended',
  );
  await t.throwsAsync(
    () => impostor.query('BEGIN READ WRITE; INSERT INTO fence_probe VALUES (3); COMMIT'),
    undefined,
    'the kine session named as the agent was ended too (the fence ends sessions by role, not by name)',
  );
  await impostor.end().catch(() => undefined);
  await before.end().catch(() => undefined);
  await t.throwsAsync(kineClient, { message: /pg_hba\.conf rejects connection .*user "kine"/ }, 'no new session of the kine role');
  const superuserReadOnly = await withAdmin(
    local,
    async (db) => (await db.query<{ v: string }>("SELECT current_setting('default_transaction_read_only') AS v")).rows[0]?.v,
  );
  t.is(superuserReadOnly, 'on', "the agents' own sessions are read-only by default");
  // Idempotent: a fence raised twice leaves the same pg_hba.
  const hba = readFileSync(confFiles(local.paths.confDir).hba, 'utf8');
  await setFence(local, true);
  t.is(readFileSync(confFiles(local.paths.confDir).hba, 'utf8'), hba);

  await setFence(local, false);
  const after = await kineClient();
  await after.query('INSERT INTO fence_probe VALUES (3)');
  t.deepEqual((await after.query<{ v: number }>('SELECT v FROM fence_probe ORDER BY v')).rows, [{ v: 0 }, { v: 1 }, { v: 3 }]);

  // The configuration's disk turns read-only: raising the fence still ends the sessions, and says
  // the files are unwritten instead of failing; lowering it refuses.
  const confDir = local.paths.confDir;
  await execa('mount', ['--bind', confDir, confDir]);
  // Registered after the pair's cleanup, so it runs first (AVA runs teardowns last-in first-out): every bind mount off before the folder goes.
  t.teardown(async () => {
    while ((await execa('umount', [confDir], { reject: false })).exitCode === 0);
  });
  await execa('mount', ['-o', 'remount,bind,ro', confDir]);
  const onReadOnly = await setFence(local, true);
  t.regex(onReadOnly.unrecorded ?? '', /EROFS|read-only/i);
  await t.throwsAsync(() => after.query('INSERT INTO fence_probe VALUES (4)'), undefined, 'the open session was ended all the same');
  await after.end().catch(() => undefined);
  await execa('umount', [confDir]);
  // Up on disk, then read-only again: a fence that cannot be taken off the disk stays up.
  await setFence(local, true);
  await execa('mount', ['--bind', confDir, confDir]);
  await execa('mount', ['-o', 'remount,bind,ro', confDir]);
  await t.throwsAsync(() => setFence(local, false), { message: /EROFS|read-only/i });
  await execa('umount', [confDir]);
});

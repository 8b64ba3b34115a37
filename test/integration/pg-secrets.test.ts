/**
 * Secrets on disk are private (0600 files, 0700 dirs, the right owner) and no secret value ever shows
 * in the agent's log lines, stdout, PostgreSQL's or Kine's logs, process command lines, or the
 * follower's copied configuration; roles store SCRAM verifiers only.
 */
import test from 'ava';
import { existsSync, mkdirSync, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { kineBinary, makePair, requirePrerequisites } from '../helpers/provision-pair.ts';
import { runProvisioning } from '../../firstboot/src/provision/provision.ts';
import { loadSecrets, SECRETS_FILE } from '../../firstboot/src/provision/secrets.ts';
import { confFiles, postgresUser, withAdmin } from '../../firstboot/src/provision/postgres.ts';
import { secretValues } from '../../firstboot/src/provision/core/secrets.ts';
import { startKine } from '../../firstboot/src/provision/kine.ts';
import { waitForStandby } from '../../firstboot/src/provision/replication.ts';
import { jsonLogger } from '../../firstboot/src/adapters/output.ts';

const mode = (p: string) => statSync(p).mode & 0o777;

function allFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? allFiles(join(dir, e.name)) : e.isFile() ? [join(dir, e.name)] : []));
}

test('secrets: 0600 on disk, never in logs, stdout, argv or copied config', async (t) => {
  if (!requirePrerequisites(t)) return;
  const logLines: string[] = [];
  const log = jsonLogger((l) => logLines.push(l));
  const pair = makePair('secrets', 25490, 'physical', log);
  t.teardown(() => pair.cleanup());
  const stdout: string[] = [];
  const origOut = process.stdout.write.bind(process.stdout);
  const origErr = process.stderr.write.bind(process.stderr);
  process.stdout.write = ((c: string | Uint8Array, ...rest: never[]) => {
    stdout.push(String(c));
    return origOut(c, ...rest);
  }) as typeof process.stdout.write;
  process.stderr.write = ((c: string | Uint8Array, ...rest: never[]) => {
    stdout.push(String(c));
    return origErr(c, ...rest);
  }) as typeof process.stderr.write;
  let cmdlines = '';
  try {
    await runProvisioning(pair.leaderConfig());
    const secrets = loadSecrets(pair.leader.secretsDir)!;
    await runProvisioning(pair.followerConfig({ receivedSecrets: secrets }));
    await waitForStandby({ paths: pair.leader.paths, port: pair.leader.port }, 'node-b', { timeoutMs: 30_000 });
    const k = await startKine({
      binary: await kineBinary(),
      listenAddress: '127.0.0.1:23798',
      db: { host: '127.0.0.1', port: pair.leader.port },
      password: secrets.kinePassword,
      caFile: confFiles(pair.leader.paths.confDir).caCert,
      logFile: join(pair.root, 'kine.log'),
    });
    pair.kines.push(k);
    // every process command line on the box while the pair runs
    for (const pid of readdirSync('/proc').filter((d) => /^\d+$/.test(d))) {
      try {
        cmdlines += `${readFileSync(`/proc/${pid}/cmdline`, 'utf8').replaceAll('\0', ' ')}\n`;
      } catch {
        /* exited */
      }
    }
    t.regex(cmdlines, /kine --listen-address 127\.0\.0\.1:23798/, 'the process scan sees kine');
  } finally {
    process.stdout.write = origOut;
    process.stderr.write = origErr;
  }
  const secrets = loadSecrets(pair.leader.secretsDir)!;

  // permissions and owners
  const pgUser = postgresUser();
  for (const n of [pair.leader, pair.follower]) {
    t.is(mode(n.secretsDir), 0o700, `${n.name} secrets dir`);
    t.is(mode(join(n.secretsDir, SECRETS_FILE)), 0o600, `${n.name} secrets file`);
    t.is(statSync(join(n.secretsDir, SECRETS_FILE)).uid, 0);
    const f = confFiles(n.paths.confDir);
    for (const p of [f.serverKey, f.pgpass, f.include, f.hba]) {
      t.is(mode(p), 0o600, p);
      t.is(statSync(p).uid, pgUser.uid, p);
    }
    t.is(mode(n.paths.confDir), 0o700);
    t.is(mode(n.paths.dataDir), 0o700);
    t.false(existsSync(f.pwfile), 'the initdb password file is gone');
  }
  t.deepEqual(loadSecrets(pair.follower.secretsDir), secrets, 'the follower stored the bundle it received');

  // roles hold SCRAM verifiers, never plaintext
  const pw = await withAdmin({ paths: pair.leader.paths, port: pair.leader.port }, (db) =>
    db.query<{ rolname: string; rolpassword: string }>("SELECT rolname, rolpassword FROM pg_authid WHERE rolname IN ('postgres','replicator','kine')"),
  );
  t.is(pw.rowCount, 3);
  for (const r of pw.rows) t.regex(r.rolpassword, /^SCRAM-SHA-256\$4096:/);

  // no secret anywhere it could leak
  const haystacks: [string, string][] = [
    ['agent log', logLines.join('')],
    ['stdout/stderr', stdout.join('')],
    ['process command lines', cmdlines],
    ['kine log', readFileSync(join(pair.root, 'kine.log'), 'utf8')],
  ];
  t.true(
    logLines.some((l) => l.includes('provision-step')),
    'the agent did log its steps',
  );
  for (const n of [pair.leader, pair.follower]) {
    haystacks.push([`${n.name} postgresql log`, readFileSync(n.paths.logFile, 'utf8')]);
    for (const f of allFiles(n.paths.dataDir).filter((p) => /\.conf$|signal$|backup_label/.test(p))) haystacks.push([f, readFileSync(f, 'utf8')]);
    haystacks.push(['include file', readFileSync(confFiles(n.paths.confDir).include, 'utf8')]);
  }
  const needles = secretValues(secrets).map((v) => (v.includes('PRIVATE KEY') ? (v.split('\n')[1] ?? v) : v));
  for (const [where, text] of haystacks) {
    for (const needle of needles) t.false(text.includes(needle), `a secret appears in ${where}`);
  }

  // a damaged bundle is reported by field, without its content
  const badDir = join(pair.root, 'bad');
  mkdirSync(badDir);
  writeFileSync(join(badDir, SECRETS_FILE), JSON.stringify({ ...secrets, kinePassword: 'x' }));
  const err = t.throws(() => loadSecrets(badDir));
  t.regex(err?.message ?? '', /kinePassword/);
  for (const needle of needles) t.false((err?.message ?? '').includes(needle));
});

/**
 * Operating a site (issue 14) end to end on a network-namespace pair with real sshd on both nodes:
 * the real `geminik8s` CLI on the gateway namespace (the operator's laptop on the LAN) runs status,
 * logs, kubeconfig and a planned switchover under the etcd writer over SSH (ssh2, host keys pinned
 * on first contact); a wrong host key is refused; each box's /metrics parses with a Prometheus text
 * parser and its status page renders in headless Chromium (Debian's).
 */
import test from 'ava';
import { execa } from 'execa';
import { access, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import parsePrometheusTextFormat from 'parse-prometheus-text-format';
import { startWriter, verifyAcked, waitHealthy, type WriteTarget } from '../helpers/fault-matrix.ts';
import { run } from '../helpers/netns.ts';
import { assertHealthyPair, testPair } from '../helpers/pair-checks.ts';
import { eventually } from '../helpers/poll.ts';
import { cliArgvOnLan, cliOnLan, httpGetOnLan, serveSsh } from '../helpers/sshd.ts';

interface StatusJson {
  boxes: {
    host: string;
    reachable: boolean;
    role?: string;
    term?: number;
    replication?: string;
    holdsVip?: boolean;
    lastPromotion?: { cause: string } | null;
  }[];
  leader: string | null;
  problems: string[];
  seconds: number;
}

test.serial('status, logs, kubeconfig, switchover under writes, metrics and the status page, over real SSH', async (t) => {
  const pair = await testPair(t);
  await assertHealthyPair(t, pair);
  const dir = await mkdtemp(path.join(os.tmpdir(), 'gk8s-operator-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const ssh = await serveSsh(pair, dir);
  const [a, b] = pair.agents as [(typeof pair.agents)[0], (typeof pair.agents)[0]];
  const site = path.join(a.dirs.oem, 'site.yaml');
  const hosts = ['--host', a.address, '--host', b.address];
  const remote = ['--site', site, ...hosts, '--identity', ssh.identity, '--known-hosts', ssh.knownHosts];
  const cli = (args: string[]) => cliOnLan(pair, [...args, ...remote]);

  // status: both boxes as their agents see themselves; host keys pinned on this first contact.
  await waitHealthy(pair);
  const status = await eventually('a healthy site status', 60_000, async () => {
    const r = await cli(['status', '--json']);
    if (r.code !== 0) throw new Error(`exit ${r.code}: ${r.stdout.slice(-600)} ${r.stderr.trim()}`);
    return JSON.parse(r.stdout) as StatusJson;
  });
  t.log(`status read in ${status.seconds} s`);
  for (const agent of [a, b]) {
    const own = await agent.status();
    const seen = status.boxes.find((x) => x.host === agent.address);
    t.like(seen, { reachable: true, role: own.role as string, term: own.term as number }, `node ${agent.index + 1} as its agent reports itself`);
  }
  const leader = status.boxes.find((x) => x.role === 'leader')!;
  const follower = status.boxes.find((x) => x.role === 'follower')!;
  t.like(leader, { replication: 'sync', holdsVip: true });
  t.deepEqual(status.problems, []);
  const pinned = await readFile(ssh.knownHosts, 'utf8');
  t.is(pinned.trim().split('\n').length, 2, 'both host keys pinned on first contact');
  // Without --host (a DHCP site): the boxes are found by their authenticated beacons on the LAN.
  const found = await cliOnLan(pair, ['status', '--json', '--site', site, '--identity', ssh.identity, '--known-hosts', ssh.knownHosts]);
  t.is(found.code, 0, found.stderr);
  t.deepEqual((JSON.parse(found.stdout) as StatusJson).boxes.map((x) => x.host).sort(), [a.address, b.address].sort());
  t.regex(found.stderr, /listening for site lab-pair's boxes on the LAN/);
  const table = await cli(['status']);
  t.is(table.code, 0, table.stderr);
  t.regex(table.stdout, /^role .*leader \(term \d+\), holds VIP/m);
  t.regex(table.stdout, /healthy: a leader with a synchronous follower/);
  // --watch refreshes until stopped: one JSON view per line, each of both boxes.
  const [ip, ...watchArgs] = cliArgvOnLan(pair, ['status', '--watch', '1', '--json', ...remote]);
  const watched = await execa(ip!, watchArgs, { timeout: 15_000, killSignal: 'SIGKILL', reject: false, stdin: 'ignore' });
  t.true(watched.timedOut, `--watch ran until stopped (${watched.stderr})`);
  const views = watched.stdout
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => JSON.parse(l) as StatusJson);
  t.true(views.length >= 2, `${views.length} refreshes in 15 s`);
  for (const v of views) t.is(v.boxes.length, 2);

  // A box presenting another host key than the pinned one is refused, and nothing is asked of it.
  const wrong = path.join(dir, 'wrong_known_hosts');
  const otherKey = (await readFile(path.join(dir, 'operator.pub'), 'utf8')).split(' ')[1];
  await writeFile(wrong, pinned.replace(new RegExp(`^(${a.address.replace(/\./g, '\\.')} ssh-ed25519 )\\S+`, 'm'), `$1${otherKey}`));
  const refused = await cliOnLan(pair, ['status', '--site', site, ...hosts, '--identity', ssh.identity, '--known-hosts', wrong]);
  t.is(refused.code, 2);
  t.regex(refused.stderr, new RegExp(`${a.address.replace(/\./g, '\\.')} presented a host key different from the one pinned`));

  // metrics: each box's own, parsed; roles and lag; Kine's own follow ours.
  for (const box of [leader, follower]) {
    const text = await httpGetOnLan(pair, `http://${box.host}:8008/metrics`);
    const families = new Map(parsePrometheusTextFormat(text).map((f) => [f.name, f]));
    const one = (name: string) => families.get(name)?.metrics[0]?.value;
    t.is(one('patroni_primary'), box === leader ? '1' : '0', `${box.host} patroni_primary`);
    t.is(one('patroni_replica'), box === leader ? '0' : '1', `${box.host} patroni_replica`);
    t.truthy(one('geminik8s_replication_lag_bytes'), `${box.host} reports its replication lag`);
    t.true(
      [...families.keys()].some((n) => n.startsWith('kine_') || n.startsWith('go_')),
      `${box.host}: Kine's metrics are appended`,
    );
  }
  t.is(
    await httpGetOnLan(pair, `http://${leader.host}:8008/nothing`).catch((e: Error) => e.message),
    `GET http://${leader.host}:8008/nothing: 404 GET / (status page) or GET /metrics (Prometheus)`,
  );

  // The status page on the VIP is the leader's, as a browser renders it.
  const page = path.join(dir, 'status-page.png');
  const chromium = [
    'ip',
    'netns',
    'exec',
    pair.topology.gw.ns,
    'env',
    `HOME=${dir}`,
    'chromium',
    '--headless',
    '--no-sandbox',
    '--disable-gpu',
    '--window-size=900,600',
  ];
  const dom = await run([...chromium, '--dump-dom', `http://${pair.vip}:8008/`], { timeoutMs: 90_000 });
  t.is(dom.code, 0, dom.stderr.slice(-500));
  t.regex(dom.stdout, /id="role">LEADER</);
  t.regex(dom.stdout, /<th>replication<\/th><td>sync lag /);
  const shot = await run([...chromium, `--screenshot=${page}`, `http://${pair.vip}:8008/`], { timeoutMs: 90_000 });
  t.is(shot.code, 0, shot.stderr.slice(-500));
  const png = await readFile(page);
  t.is(png.subarray(1, 4).toString('latin1'), 'PNG');
  t.deepEqual([png.readUInt32BE(16), png.readUInt32BE(20)], [900, 600], 'the page as rendered at the window size');

  // logs: both agents' events, merged by time.
  const logs = await cli(['logs', '--lines', '2000', '--json']);
  t.is(logs.code, 0, logs.stderr);
  const events = logs.stdout
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as { host: string; ts: string; event: string });
  t.deepEqual([...new Set(events.filter((e) => e.event === 'liveness-started').map((e) => e.host))].sort(), [a.address, b.address].sort());
  t.deepEqual(
    events.map((e) => e.ts),
    events.map((e) => e.ts).sort(),
    'oldest first',
  );

  // kubeconfig: this pair runs no Kubernetes; nothing is written.
  const kubeconfig = path.join(dir, 'kubeconfig');
  const noKube = await cli(['kubeconfig', '--out', kubeconfig]);
  t.is(noKube.code, 1);
  t.regex(noKube.stderr, /no box gave an admin kubeconfig:[\s\S]*runs no Kubernetes/);
  await t.throwsAsync(access(kubeconfig));

  // A planned switchover under the writer: the follower leads, no acknowledged write is lost.
  const target: WriteTarget = { kind: 'etcd', host: pair.vip, client: await pair.etcdClient(), prefix: '/operator/switchover/' };
  const writer = startWriter(pair, target);
  await eventually('writes acknowledged before the switchover', 30_000, () => (writer.acks.length >= 20 ? true : undefined));
  const moved = await cli(['switchover', '--json']);
  t.is(moved.code, 0, `${moved.stdout} ${moved.stderr}`);
  const done = moved.stdout
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as { event: string; leader?: string; seconds?: number })
    .find((e) => e.event === 'done');
  t.is(done?.leader, follower.host);
  t.log(`switchover done in ${done?.seconds?.toFixed(1)} s`);
  await eventually('writes acknowledged after the switchover', 30_000, () => (writer.firstAckFrom(Date.now() - 1000) ? true : undefined));
  const report = await writer.stop();
  const check = await verifyAcked(
    pair,
    target,
    report.acks.map((x) => x.key),
  );
  t.log(`${report.acks.length} writes acknowledged, ${report.failures.length} failed during the switchover`);
  t.deepEqual(check.missing, [], 'every acknowledged write survives the switchover');

  const after = await eventually('a healthy site after the switchover', 90_000, async () => {
    const r = await cli(['status', '--json']);
    return r.code === 0 ? (JSON.parse(r.stdout) as StatusJson) : undefined;
  });
  t.is(after.leader, follower.host);
  t.like(
    after.boxes.find((x) => x.host === follower.host),
    { role: 'leader', lastPromotion: { cause: 'handover' } },
  );
});

test.serial('backup, both boxes lost, restore onto a new pair: every acknowledged key back, later ones gone; a tampered backup is refused', async (t) => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'gk8s-backup-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const backup = path.join(dir, 'site.backup');
  const remoteFor = async (pair: Awaited<ReturnType<typeof testPair>>, sshDir: string) => {
    const ssh = await serveSsh(pair, sshDir);
    return ssh.siteArgs;
  };
  const write = async (pair: Awaited<ReturnType<typeof testPair>>, prefix: string, count: number) => {
    const target: WriteTarget = { kind: 'etcd', host: pair.vip, client: await pair.etcdClient(), prefix };
    const writer = startWriter(pair, target);
    await eventually(`${count} writes under ${prefix}`, 60_000, () => (writer.acks.length >= count ? true : undefined));
    return (await writer.stop()).acks.map((x) => x.key);
  };

  // The site as it was: keys written, then backed up, then more keys written after the backup.
  const old = await testPair(t);
  await waitHealthy(old);
  const oldRemote = await remoteFor(old, path.join(dir, 'ssh-old'));
  const kept = await write(old, '/operator/backup/kept/', 200);
  const made = await cliOnLan(old, ['backup', '--out', backup, '--json', ...oldRemote]);
  t.is(made.code, 0, made.stderr);
  const result = JSON.parse(made.stdout) as { archiveBytes: number; fileBytes: number; seconds: number; source: { term: number } };
  t.log(`backup: archive ${result.archiveBytes} B, file ${result.fileBytes} B, ${result.seconds.toFixed(1)} s`);
  t.true(result.archiveBytes > 0);
  t.is(((await stat(backup)).mode & 0o777).toString(8), '600');
  const later = await write(old, '/operator/backup/later/', 20);
  t.true(later.length >= 20);

  // Verified offline against the site file; a changed byte is refused.
  const verified = await cliOnLan(old, ['restore', backup, '--verify-only', '--json', ...oldRemote]);
  t.is(verified.code, 0, verified.stderr);
  const bytes = await readFile(backup);
  const middle = Math.floor(bytes.length / 2);
  bytes[middle] = bytes[middle]! ^ 0x40;
  const tampered = path.join(dir, 'tampered.backup');
  await writeFile(tampered, bytes);
  const refused = await cliOnLan(old, ['restore', tampered, '--verify-only', ...oldRemote]);
  t.is(refused.code, 2);
  t.regex(refused.stderr, /refused \(tampered\): .*does not authenticate/);

  // Both boxes lost: two fresh boxes with the same site file pair on their own, empty.
  await old.destroy();
  const fresh = await testPair(t);
  await waitHealthy(fresh);
  const freshRemote = await remoteFor(fresh, path.join(dir, 'ssh-fresh'));
  const unconfirmed = await cliOnLan(fresh, ['restore', backup, ...freshRemote]);
  t.is(unconfirmed.code, 2, 'a restore replaces the datastore only when told to');
  t.regex(unconfirmed.stderr, /add --replace/);
  const restored = await cliOnLan(fresh, ['restore', backup, '--replace', '--json', ...freshRemote]);
  t.is(restored.code, 0, `${restored.stdout} ${restored.stderr}`);
  t.log(`restore: ${(JSON.parse(restored.stdout) as { seconds: number }).seconds.toFixed(1)} s`);

  const target = (prefix: string): Promise<WriteTarget> => fresh.etcdClient().then((client) => ({ kind: 'etcd', host: fresh.vip, client, prefix }));
  const back = await verifyAcked(fresh, await target('/operator/backup/kept/'), kept);
  t.deepEqual(back.missing, [], 'every key acknowledged before the backup is back');
  const after = await verifyAcked(fresh, await target('/operator/backup/later/'), [], 30_000, 0);
  t.is(after.present, 0, 'keys written after the backup are not');
  // The restored pair takes writes again, on both boxes' Kine.
  t.true((await write(fresh, '/operator/backup/after-restore/', 10)).length >= 10);
  await waitHealthy(fresh);
});

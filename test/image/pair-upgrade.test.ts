/**
 * The rolling pair upgrade of the built image under QEMU (issue 12, acceptance 5; `make
 * test-upgrade-pair`, about 35 minutes under TCG on 2 cores, out of `make test`): two VMs of v1
 * pair on one L2; `geminik8s upgrade` (run in the gateway namespace, as an operator's laptop on the
 * site LAN) upgrades them to v2 over SSH while the fault matrix's writer puts numbered keys through
 * Kine on the VIP. Every acknowledged write must read back, both boxes must run v2, and the pair
 * must end as one leader and one synchronous follower.
 */
import test from 'ava';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { buildSigned, geminik8s, REPO } from '../helpers/cli.ts';
import { recordFigure } from '../helpers/figures.ts';
import { stampedPair } from '../helpers/first-boot.ts';
import type { EtcdClientFiles } from '../helpers/etcd-client.ts';
import { startWriter, verifyAcked } from '../helpers/fault-matrix.ts';
import { createTopology } from '../helpers/netns.ts';
import { type BootedVm, bootImage } from '../helpers/qemu.ts';

const work = await mkdtemp(path.join(os.tmpdir(), 'gk8s-pair-upgrade-'));
const dist = path.join(work, 'dist');
const READY = /GEMINIK8S-AGENT: cluster ready role=(leader|follower) term=\d+ kine=([\d.]+):2379/;
const AGENT = '/usr/lib/geminik8s/geminik8s-agent';

test.after.always(() => rm(work, { recursive: true, force: true }));

test('two paired VMs are upgraded v1 -> v2 by geminik8s upgrade under the VIP writer: no acknowledged write lost', async (t) => {
  const key = path.join(work, 'release');
  t.is((await geminik8s(['keygen', '--out', key])).exitCode, 0);
  const v1 = await buildSigned('edge-datastore', dist, `${key}.key`);
  const base = await readFile(path.join(REPO, 'profiles', 'edge-datastore.yaml'), 'utf8');
  const v2Profile = path.join(work, 'v2.yaml');
  await writeFile(v2Profile, base.replace(/^version: .*$/m, 'version: 0.2.0'));
  const v2 = await buildSigned(v2Profile, dist, `${key}.key`);

  const topology = await createTopology(0);
  const vms: BootedVm[] = [];
  const ips: string[] = [];
  let sshKey: string | undefined;
  t.teardown(async () => {
    if (!t.passed)
      for (const [i, vm] of vms.entries()) {
        t.log(`--- vm-${i} console tail ---\n${(await readFile(vm.consoleFile, 'utf8').catch(() => '')).slice(-5000)}`);
        // Why an agent restarted or a box stalled is in its journal, not on the console.
        const ip = ips[i];
        if (ip === undefined || !sshKey) continue;
        const journal = await topology
          .ssh(
            { key: sshKey, knownHosts: path.join(work, 'known_hosts') },
            ip,
            ['sh', '-c', 'journalctl -b -o short-monotonic -n 120 -u geminik8s-agent; journalctl -b -k -o short-monotonic -n 20'],
            90_000,
          )
          .catch((e: unknown) => ({ stdout: '', stderr: (e as Error).message }));
        t.log(`--- vm-${i} journal (agent, kernel) ---\n${journal.stdout.slice(-12_000)}${journal.stderr.slice(-500)}`);
      }
    await Promise.all(vms.map((vm) => vm.stop()));
    await topology.destroy();
  });
  topology.serveDhcp(path.join(work, 'dnsmasq.leases'));
  const vip = `${topology.subnet}.10`;
  // Two emulated boxes on two host cores stall each other for seconds (README "Failover pace").
  const { raws, site, operatorKey } = await stampedPair(t, v1, work, 'pair-upgrade-1', { vip: `${vip}/24`, gateway: topology.gw.address, timeScale: 3 });
  for (const [i, raw] of raws.entries()) {
    const dir = path.join(work, `vm-${i}`);
    await mkdir(dir);
    const tap = await topology.addTap(i);
    vms.push(await bootImage(raw, dir, { memoryMiB: 1280, network: { tap, mac: `52:54:00:6b:3a:${(0x11 + i).toString(16)}`, netns: topology.gw.ns } }));
  }
  sshKey = operatorKey;
  const consoles = await Promise.all(vms.map((vm) => vm.waitFor([READY], 20 * 60_000)));
  ips.push(...consoles.map((c) => READY.exec(c)![2]!));
  const leaderIp = ips[consoles.findIndex((c) => READY.exec(c)![1] === 'leader')]!;

  const knownHosts = path.join(work, 'known_hosts');
  const ssh = (host: string, command: string[]) => topology.ssh({ key: operatorKey, knownHosts }, host, command);
  const issued = await ssh(leaderIp, [AGENT, 'etcd-client-cert', '--name', 'pair-upgrade-test']);
  t.is(issued.code, 0, issued.stderr);
  const cert = JSON.parse(issued.stdout) as { ca: string; cert: string; key: string };
  const client: EtcdClientFiles = { caFile: path.join(work, 'ca.crt'), certFile: path.join(work, 'client.crt'), keyFile: path.join(work, 'client.key') };
  await writeFile(client.caFile, cert.ca, { mode: 0o600 });
  await writeFile(client.certFile, cert.cert, { mode: 0o600 });
  await writeFile(client.keyFile, cert.key, { mode: 0o600 });

  const target = { kind: 'etcd' as const, host: vip, client, prefix: `/pair-upgrade/${Date.now()}/` };
  const writer = startWriter({ topology }, target, { periodMs: 100, maxMs: 60 * 60_000 });
  const started = Date.now();
  const upgrade = await topology.exec(
    topology.gw.ns,
    [
      process.execPath,
      path.join(REPO, 'bin', 'geminik8s.js'),
      'upgrade',
      '--site',
      site,
      '--host',
      ips[0]!,
      '--host',
      ips[1]!,
      '--identity',
      operatorKey,
      '--known-hosts',
      path.join(work, 'operator_known_hosts'),
      '--json',
      path.join(v2, 'update.bundle'),
    ],
    { timeoutMs: 50 * 60_000 },
  );
  const seconds = (Date.now() - started) / 1000;
  const report = await writer.stop();
  const events = upgrade.stdout
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as { event: string; boxes?: { host: string; role?: string; version?: string; synchronous?: boolean }[]; reason?: string });
  const last = events.at(-1);
  t.is(upgrade.code, 0, `geminik8s upgrade: ${upgrade.stderr.slice(-2000)}\n${JSON.stringify(last)}`);
  t.is(last?.event, 'done', JSON.stringify(last));
  t.deepEqual(
    last?.boxes?.map((b) => b.version),
    ['0.2.0', '0.2.0'],
  );
  t.deepEqual(last?.boxes?.map((b) => b.role).sort(), ['follower', 'leader']);
  t.true(last?.boxes?.find((b) => b.role === 'leader')?.synchronous, 'the leader replicates synchronously at the end');

  const acked = report.acks.map((a) => a.key);
  t.true(acked.length > 0, 'the writer got writes through');
  const { missing } = await verifyAcked({ topology }, target, acked, 120_000);
  t.deepEqual(missing, [], `${missing.length} of ${acked.length} acknowledged writes lost`);
  // The longest stretch without an acknowledged write through the VIP (the switchover's, ideally).
  let gap = 0;
  for (let i = 1; i < report.acks.length; i++) gap = Math.max(gap, report.acks[i]!.ackedAt - report.acks[i - 1]!.ackedAt);
  t.log(
    `pair upgraded in ${seconds.toFixed(0)} s; ${acked.length} writes acknowledged, ${report.failures.length} failed, longest gap ${(gap / 1000).toFixed(1)} s`,
  );
  await recordFigure('pair upgraded end to end, QEMU TCG', seconds, 's');
  await recordFigure('longest stretch without an acknowledged write on the VIP', gap / 1000, 's', '<= one planned switchover');
  await recordFigure('acknowledged writes lost', missing.length, '', '0');
});

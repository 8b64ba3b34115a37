/**
 * An A/B upgrade of the Raspberry Pi 4 image under QEMU, the test playing the Pi bootloader
 * (test/helpers/pi-bootloader.ts: autoboot.txt, the tryboot flag, config.txt): v1 boots from
 * boot-a; `upgrade apply` of a signed v2 writes root-b, fills boot-b from v2's root, points
 * `[tryboot]` at it and reboots with the tryboot flag; the trial boots boot-b's kernel with root-b,
 * passes its health gate and commits (`[all]` now names boot-b); a plain reboot stays on v2. The
 * box is reached over SSH with its site's operator key, on a throwaway L2. `make test-rpi4`.
 */
import test from 'ava';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { readGpt } from '../../builder/src/disk/index.ts';
import { buildSigned, geminik8s, REPO } from '../helpers/cli.ts';
import { recordFigure } from '../helpers/figures.ts';
import { createTopology, type Topology } from '../helpers/netns.ts';
import { fatCopy, piBoot } from '../helpers/pi-bootloader.ts';
import { stampedDisk } from '../helpers/first-boot.ts';
import { eventually } from '../helpers/poll.ts';
import type { BootedVm } from '../helpers/qemu.ts';

const work = await mkdtemp(path.join(os.tmpdir(), 'gk8s-upgrade-rpi4-'));
const MARKER = 'GEMINIK8S-AGENT:';
const AGENT = '/usr/lib/geminik8s/geminik8s-agent';
const UPDATES = '/var/lib/geminik8s/updates';
const HARDWARE = 'raspberrypi4';

let topology: Topology | undefined;
let vm: BootedVm | undefined;
test.after.always(async () => {
  await vm?.stop();
  await topology?.destroy();
  await rm(work, { recursive: true, force: true });
});

interface Status {
  version: string;
  backend: string;
  slots: { booted: string; committed: string; trying: string | null };
  last?: { state: string; reason?: string };
}

test('v1 → v2 on the Pi image: the trial boots boot-b with root-b after a tryboot reboot, commits, and a plain reboot stays on v2', async (t) => {
  t.timeout(90 * 60_000, 'two arm64 builds and three boots under TCG');
  const key = path.join(work, 'release');
  t.is((await geminik8s(['keygen', '--out', key])).exitCode, 0);
  const dist = path.join(work, 'dist');
  const v1 = await buildSigned('edge-datastore', dist, `${key}.key`, HARDWARE);
  const base = await readFile(path.join(REPO, 'profiles', 'edge-datastore.yaml'), 'utf8');
  const v2Profile = path.join(work, 'v2.yaml');
  await writeFile(v2Profile, base.replace(/^version: .*$/m, 'version: 0.2.0'));
  const v2 = await buildSigned(v2Profile, dist, `${key}.key`, HARDWARE);

  // One box on a throwaway L2, stamped with a site whose operator key the agent installs.
  topology = await createTopology(0);
  const topo = topology;
  const dhcp = topo.serveDhcp(path.join(work, 'dnsmasq.leases'));
  t.teardown(() => {
    if (!t.passed) t.log(`--- dnsmasq ---\n${dhcp.log()}`);
  });
  const { raw, operatorKey } = await stampedDisk(t, v1, work, 'upgrade-rpi4', {
    vip: `${topo.subnet}.10/24`,
    gateway: topo.gw.address,
    operatorKey: true,
  });
  if (!operatorKey) throw new Error('stampedDisk made no operator key');
  const network = { tap: await topo.addTap(0), mac: '52:54:00:6b:3a:11', netns: topo.gw.ns };
  const keys = { key: operatorKey, knownHosts: path.join(work, 'known_hosts') };
  let ip = '';
  const ssh = (command: string[], timeoutMs?: number) => topo.ssh(keys, ip, command, timeoutMs);
  const status = async (): Promise<Status> => {
    const r = await ssh([AGENT, 'upgrade', 'status', '--json']);
    if (r.code !== 0) throw new Error(`upgrade status: ${r.stderr}`);
    return JSON.parse(r.stdout) as Status;
  };
  /** Powers the box on as the Pi bootloader would, and waits for its agent's address. */
  const powerOn = async (name: string, tryboot: boolean) => {
    const dir = path.join(work, name);
    await mkdir(dir, { recursive: true });
    const booted = await piBoot(raw, dir, { tryboot, network, memoryMiB: 1280 });
    vm = booted.vm;
    const text = await vm.waitFor([new RegExp(`${MARKER} discovering peer on \\S+ ([\\d.]+)`)], 15 * 60_000);
    ip = new RegExp(`${MARKER} discovering peer on \\S+ ([\\d.]+)`).exec(text)![1]!;
    return booted;
  };

  const first = await powerOn('boot-1', false);
  t.is(first.partition, 2, 'autoboot.txt boots boot-a');
  await eventually(
    'ssh',
    240_000,
    async () => {
      const r = await ssh(['mkdir', '-p', UPDATES]);
      if (r.code !== 0) throw new Error(r.stderr);
      return true;
    },
    3000,
  );
  const s1 = await eventually('status on v1', 120_000, status, 3000);
  t.like(s1, { version: '0.1.0', backend: 'tryboot', slots: { booted: 'a', committed: 'a', trying: null } });
  const copied = await topo.copyTo(keys, ip, [path.join(v2, 'update.bundle')], UPDATES);
  t.is(copied.code, 0, copied.stderr);

  // apply: root-b written, boot-b filled from it, [tryboot] → boot-b, reboot with the tryboot flag.
  const applyStarted = Date.now();
  const apply = await ssh([AGENT, 'upgrade', 'apply', `${UPDATES}/update.bundle`, '--json'], 900_000);
  t.is(apply.code, 0, apply.stdout + apply.stderr);
  const result = JSON.parse(apply.stdout.trim().split('\n').at(-1) ?? '{}') as { result: string; slot: string; rebootWith: string };
  t.like(result, { result: 'installed', slot: 'b', rebootWith: "systemctl reboot '--reboot-argument=0 tryboot'" });
  await vm!.exited(5 * 60_000);
  await recordFigure('rpi4: apply (verify, write root-b, fill boot-b) and reboot, QEMU TCG', (Date.now() - applyStarted) / 1000, 's');
  const gpt = await readGpt(raw);
  const bootB = gpt.partitions.find((p) => p.name === 'boot-b')!;
  t.is(
    (await readFile(await fatCopy(raw, bootB.offsetBytes, 'cmdline.txt', path.join(work, 'boot-b-cmdline.txt')), 'utf8')).split(' ')[0],
    'root=PARTLABEL=root-b',
    "boot-b's cmdline.txt names root-b",
  );

  // The bootloader saw the tryboot flag: [tryboot]'s partition, once.
  const trial = await powerOn('boot-2-tryboot', true);
  t.is(trial.partition, 3, '[tryboot] names boot-b');
  t.regex(trial.cmdline, /^root=PARTLABEL=root-b /);
  await vm!.waitFor([new RegExp(`${MARKER} upgrade committed version=0\\.2\\.0 slot=b`)], 15 * 60_000);
  await recordFigure('rpi4: tryboot boot to the committed v2, QEMU TCG', (Date.now() - applyStarted) / 1000, 's');
  const s2 = await eventually('status on v2', 180_000, status, 3000);
  t.like(s2, { version: '0.2.0', slots: { booted: 'b', committed: 'b', trying: null }, last: { state: 'committed' } });

  // A plain reboot: [all] now names boot-b.
  await ssh(['systemctl', 'reboot']).catch(() => undefined);
  await vm!.exited(5 * 60_000);
  const again = await powerOn('boot-3', false);
  t.is(again.partition, 3, 'the committed slot is boot-b');
  const s3 = await eventually('status after the reboot', 180_000, status, 3000);
  t.like(s3, { version: '0.2.0', slots: { booted: 'b', committed: 'b', trying: null } });
});

/**
 * A/B upgrades of the built image under QEMU (issue 12, acceptance 1–4; `make test-upgrade`: too
 * slow for `make test` on a 2-core TCG host). One VM on a throwaway L2 (test/helpers/netns.ts),
 * reached over SSH with the operator key of its site file, as an operator would:
 *
 *  - refused with the slot untouched: a byte of the manifest, a byte of the slot image, another
 *    signer, other hardware, a downgrade;
 *  - the power cut while the slot is written: the box boots the old version and the retry works;
 *  - v1 → v2 boots v2, gates and commits it, and a reboot stays on v2;
 *  - v3 whose health gate fails (a profile health check that always fails) comes back to v2;
 *  - v4 whose slot never boots (signed, but no filesystem) comes back to v2 in the same power cycle
 *    (grub's fallback entry), after a power cut right after the apply.
 *
 * v1, v2 and v3 are real builds with the same signing key; the refused and unbootable bundles are
 * re-signed by the test with that key (it is the signer), or with another one.
 */
import test from 'ava';
import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { loadPrivateKey, loadPublicKey, readVerifiedHead, writeBundle } from '../../firstboot/src/upgrade/bundle.ts';
import type { BundleManifest } from '../../firstboot/src/upgrade/core/manifest.ts';
import { buildSigned, geminik8s, REPO } from '../helpers/cli.ts';
import { recordFigure } from '../helpers/figures.ts';
import { stampedDisk } from '../helpers/first-boot.ts';
import { eventually } from '../helpers/poll.ts';
import { createTopology, type ExecResult, sshOptions, type Topology } from '../helpers/netns.ts';
import { type BootedVm, bootImage } from '../helpers/qemu.ts';

const work = await mkdtemp(path.join(os.tmpdir(), 'gk8s-upgrade-'));
const dist = path.join(work, 'dist');
const MARKER = 'GEMINIK8S-AGENT:';
const UPDATES = '/var/lib/geminik8s/updates';
const AGENT = '/usr/lib/geminik8s/geminik8s-agent';

interface Ctx {
  topology: Topology;
  vm?: BootedVm;
  raw: string;
  ip: string;
  ssh(command: string[], timeoutMs?: number): Promise<ExecResult>;
  sshKeys: { key: string; knownHosts: string };
  bundles: Record<string, string>;
}
let ctx: Ctx | undefined;
/** Offsets in v2's bundle where the refusal test flips a byte, and the flipped values. */
let flips = { manifest: 0, slot: 0, manifestByte: 0, slotByte: 0 };

test.after.always(async () => {
  await ctx?.vm?.stop();
  await ctx?.topology.destroy();
  await rm(work, { recursive: true, force: true });
});

async function profileVariant(name: string, version: string, extra = ''): Promise<string> {
  const base = await readFile(path.join(REPO, 'profiles', 'edge-datastore.yaml'), 'utf8');
  const file = path.join(work, `${name}.yaml`);
  await writeFile(file, `${base.replace(/^version: .*$/m, `version: ${version}`)}${extra}`);
  return file;
}

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/** Result line of `geminik8s-agent upgrade apply --json` (the last JSON line). */
function applyResult(stdout: string): { result: string; code?: string; message?: string; version?: string } {
  const lines = stdout.trim().split('\n').filter(Boolean);
  return JSON.parse(lines.at(-1) ?? '{}') as { result: string };
}

async function status(c: Ctx): Promise<{
  slots: { booted: string; committed: string; trying: string | null };
  version: string;
  last?: { state: string; reason?: string; to: { version: string } };
}> {
  const r = await c.ssh([AGENT, 'upgrade', 'status', '--json']);
  if (r.code !== 0) throw new Error(`upgrade status: ${r.stderr}`);
  return JSON.parse(r.stdout) as never;
}

/** Marker lines seen so far, counted: waits until `pattern` has appeared `count` times in the console. */
async function waitForCount(vm: BootedVm, pattern: RegExp, count: number, timeoutMs: number): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const text = await readFile(vm.consoleFile, 'utf8').catch(() => '');
    if ((text.match(new RegExp(pattern.source, 'g')) ?? []).length >= count) return text;
    if (Date.now() > deadline) throw new Error(`no ${count}× ${pattern} within ${timeoutMs / 1000} s\n--- console tail ---\n${text.slice(-4000)}`);
    await new Promise((r) => setTimeout(r, 2000));
  }
}

test.serial('builds v1, v2 and v3 with one signing key; bundle verify accepts the signer and refuses another key', async (t) => {
  const k1 = path.join(work, 'release');
  const k2 = path.join(work, 'stranger');
  for (const k of [k1, k2]) t.is((await geminik8s(['keygen', '--out', k])).exitCode, 0);
  const v1 = await buildSigned('edge-datastore', dist, `${k1}.key`);
  const v2 = await buildSigned(await profileVariant('v2', '0.2.0'), dist, `${k1}.key`);
  const v3 = await buildSigned(
    await profileVariant('v3', '0.3.0', '\nupgrade:\n  gateSeconds: 30\n  healthChecks:\n    - name: always-fails\n      command: [/bin/false]\n'),
    dist,
    `${k1}.key`,
  );
  const ok = await geminik8s(['bundle', 'verify', path.join(v2, 'update.bundle'), '--key', `${k1}.pub`, '--json']);
  t.is(ok.exitCode, 0, ok.stderr);
  t.is((JSON.parse(ok.stdout) as { manifest: BundleManifest }).manifest.version, '0.2.0');
  const wrong = await geminik8s(['bundle', 'verify', path.join(v2, 'update.bundle'), '--key', `${k2}.pub`]);
  t.is(wrong.exitCode, 2);
  t.regex(wrong.stderr, /refused \(bad-signature\)/);
  const image = (await execa('stat', ['-c', '%s', path.join(v2, 'image.raw.zst')])).stdout;
  const bundleSize = (await execa('stat', ['-c', '%s', path.join(v2, 'update.bundle')])).stdout;
  t.log(`v2: image.raw.zst ${image} bytes, update.bundle ${bundleSize} bytes`);
  await recordFigure('compressed image (image.raw.zst)', Number(image) / 1024 ** 2, 'MiB');
  await recordFigure('update bundle', Number(bundleSize) / 1024 ** 2, 'MiB', '<= the compressed image');
  t.true(Number(bundleSize) <= Number(image), 'the bundle is no larger than the compressed image');

  // The bundles the box must refuse, and one that never boots: re-signed by the test. Those refused
  // on their manifest carry a small slot (the box refuses them before it reads the slot); the two
  // one-byte alterations of v2's bundle are made on the box (see below), saving two 200 MB copies.
  const signer = loadPrivateKey(await readFile(`${k1}.key`, 'utf8'), 'release.key');
  const v2Bundle = path.join(v2, 'update.bundle');
  const { manifest } = await readVerifiedHead(v2Bundle, [loadPublicKey(await readFile(`${k1}.pub`, 'utf8'), 'release.pub')]);
  const bundles: Record<string, string> = {};
  for (const [name, dir] of [
    ['v2', v2],
    ['v3', v3],
  ] as const) {
    bundles[name] = path.join(work, `${name}.bundle`);
    await execa('ln', [path.join(dir, 'update.bundle'), bundles[name]!]);
  }
  const small = path.join(work, 'small.zst');
  await writeFile(small, 'not a slot image');
  const smallSlot = { ...manifest.slot, bytes: 16, sha256: sha(Buffer.from('not a slot image')) };
  const resign = async (name: string, m: BundleManifest, slotFile: string, key = signer) => {
    bundles[name] = path.join(work, `${name}.bundle`);
    await writeBundle(bundles[name]!, { manifest: m, slotFile, signingKey: key, mtime: 0 });
  };
  await resign('other-hardware', { ...manifest, hardware: 'raspberrypi4', slot: smallSlot }, small);
  await resign('downgrade', { ...manifest, version: '0.0.1', slot: smallSlot }, small);
  await resign('other-key', { ...manifest, slot: smallSlot }, small, loadPrivateKey(await readFile(`${k2}.key`, 'utf8'), 'stranger.key'));
  const v2Bytes = await readFile(v2Bundle);
  // Where to flip a byte of v2's bundle on the box: in the manifest's version, and in the slot image.
  const at = { manifest: v2Bytes.indexOf('"0.2.0"') + 2, slot: v2Bytes.length - 4096 };
  flips = { ...at, manifestByte: v2Bytes[at.manifest]! ^ 1, slotByte: v2Bytes[at.slot]! ^ 1 };
  // v4: signed and compatible, but its slot holds no filesystem, so grub cannot load a kernel from it.
  const empty = path.join(work, 'empty.img');
  await execa('truncate', ['-s', String(manifest.slot.rawBytes), empty]);
  await execa('zstd', ['-q', '-f', empty, '-o', `${empty}.zst`]);
  const zst = await readFile(`${empty}.zst`);
  const rawSha = (await execa('sha256sum', [empty])).stdout.split(' ')[0]!;
  await resign(
    'unbootable',
    { ...manifest, version: '0.4.0', slot: { ...manifest.slot, bytes: zst.length, sha256: sha(zst), rawSha256: rawSha } },
    `${empty}.zst`,
  );
  await rm(empty);

  // The VM: v1 stamped with a site whose operator key the agent installs.
  const topology = await createTopology(0);
  const dhcp = topology.serveDhcp(path.join(work, 'dnsmasq.leases'));
  const { raw, operatorKey } = await stampedDisk(t, v1, work, 'upgrade-1', {
    vip: `${topology.subnet}.10/24`,
    gateway: topology.gw.address,
    operatorKey: true,
  });
  if (!operatorKey) throw new Error('stampedDisk made no operator key');
  const knownHosts = path.join(work, 'known_hosts');
  const c: Ctx = {
    topology,
    raw,
    ip: '',
    ssh: (command, timeoutMs) => topology.ssh({ key: operatorKey, knownHosts }, c.ip, command, timeoutMs),
    sshKeys: { key: operatorKey, knownHosts },
    bundles,
  };
  t.teardown(() => {
    if (!t.passed) t.log(`--- dnsmasq ---\n${dhcp.log()}`);
  });
  ctx = c;
  await bootV(c, 'boot-1');
  await eventually(
    'ssh',
    180_000,
    async () => {
      const r = await c.ssh(['mkdir', '-p', UPDATES]);
      if (r.code !== 0) throw new Error(r.stderr);
      return true;
    },
    3000,
  );
  const copied = await topology.copyTo(c.sshKeys, c.ip, Object.values(bundles), UPDATES);
  t.is(copied.code, 0, copied.stderr);
  const s = await status(c);
  t.is(s.version, '0.1.0');
  t.like(s.slots, { booted: 'a', committed: 'a', trying: null });
});

/** Boots (or reboots after a kill) the VM on its disk and learns its address from the console. */
async function bootV(c: Ctx, name: string): Promise<void> {
  const dir = path.join(work, name);
  await mkdir(dir, { recursive: true });
  if (!c.vm) {
    const tap = await c.topology.addTap(0);
    (c as { tap?: string }).tap = tap;
  }
  c.vm = await bootImage(c.raw, dir, { memoryMiB: 1280, network: { tap: (c as { tap?: string }).tap!, mac: '52:54:00:6b:39:11', netns: c.topology.gw.ns } });
  const text = await c.vm.waitFor([new RegExp(`${MARKER} discovering peer on \\S+ ([\\d.]+)`)], 8 * 60_000);
  c.ip = new RegExp(`${MARKER} discovering peer on \\S+ ([\\d.]+)`).exec(text)![1]!;
}

test.serial('refused bundles leave the inactive slot and the slot state untouched, each saying why', async (t) => {
  const c = ctx!;
  // ssh hands the remote shell one command line: pipes and quotes go in a single string.
  const slotHead = async () => (await c.ssh(['sh', '-c', 'head -c 67108864 /dev/disk/by-partlabel/root-b | sha256sum'])).stdout.trim();
  const before = await slotHead();
  for (const [name, at, value] of [
    ['manifest-byte', flips.manifest, flips.manifestByte],
    ['slot-byte', flips.slot, flips.slotByte],
  ] as const) {
    const file = `${UPDATES}/${name}.bundle`;
    const octal = value.toString(8).padStart(3, '0');
    const made = await c.ssh(['sh', '-c', `cp ${UPDATES}/v2.bundle ${file} && printf '\\${octal}' | dd of=${file} bs=1 seek=${at} conv=notrunc status=none`]);
    t.is(made.code, 0, made.stderr);
  }
  const expected: [string, string, RegExp][] = [
    ['manifest-byte', 'bad-signature', /does not verify with any trusted key/],
    ['slot-byte', 'slot-mismatch', /does not match its signed manifest: expected \d+ bytes with sha256 [0-9a-f]{64}, bundle has/],
    ['other-key', 'bad-signature', /signed by another key/],
    ['other-hardware', 'wrong-hardware', /expected hardware generic-x86_64-uefi, bundle has hardware raspberrypi4/],
    ['downgrade', 'downgrade', /expected a version newer than 0\.1\.0, bundle has version 0\.0\.1/],
  ];
  for (const [name, code, message] of expected) {
    const r = await c.ssh([AGENT, 'upgrade', 'apply', `${UPDATES}/${name}.bundle`, '--json'], 300_000);
    t.is(r.code, 2, `${name}: exit 2 (refused): ${r.stdout}${r.stderr}`);
    const result = applyResult(r.stdout);
    t.is(result.code, code, name);
    t.regex(result.message ?? '', message, name);
  }
  t.is(await slotHead(), before, 'slot b is untouched');
  const s = await status(c);
  t.like(s.slots, { booted: 'a', committed: 'a', trying: null });
  t.is(s.last, undefined, 'no upgrade was recorded');
});

test.serial('a power cut while the slot is written: the box boots v1, says so, and the retry installs v2, which commits and survives a reboot', async (t) => {
  const c = ctx!;
  // The apply's progress lines, live: the power goes once a tenth of the slot is written.
  const apply = c.topology.spawn(c.topology.gw.ns, [
    'ssh',
    ...sshOptions(c.sshKeys),
    `root@${c.ip}`,
    AGENT,
    'upgrade',
    'apply',
    `${UPDATES}/v2.bundle`,
    '--json',
  ]);
  let seen = '';
  const cutAt = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no write progress within 5 min: ${seen.slice(-2000)}`)), 300_000);
    apply.stdout?.on('data', (d: Buffer) => {
      seen += d.toString();
      const m = [...seen.matchAll(/"step":"write","doneBytes":(\d+),"totalBytes":(\d+)/g)].at(-1);
      if (m && Number(m[1]) >= Number(m[2]) / 10) {
        clearTimeout(timer);
        resolve(`${m[1]} of ${m[2]} compressed bytes`);
      }
    });
    apply.on('exit', () => reject(new Error(`apply ended before the cut: ${seen.slice(-2000)}`)));
  });
  await c.vm!.kill();
  t.log(`power cut after ${cutAt}`);
  await bootV(c, 'boot-2');
  const text = await c.vm!.waitFor([new RegExp(`${MARKER} upgrade failed version=0\\.2\\.0 writing slot b was interrupted`)], 120_000);
  t.regex(text, /slot a still runs 0\.1\.0; apply the bundle again/);
  const after = await eventually('status', 180_000, () => status(c), 3000);
  t.like(after.slots, { booted: 'a', committed: 'a', trying: null });
  t.is(after.version, '0.1.0');

  const applyStarted = Date.now();
  const retry = await c.ssh([AGENT, 'upgrade', 'apply', `${UPDATES}/v2.bundle`, '--json'], 600_000);
  const applied = Date.now();
  t.is(retry.code, 0, retry.stdout + retry.stderr);
  t.like(applyResult(retry.stdout), { result: 'installed', version: '0.2.0' });
  await waitForCount(c.vm!, new RegExp(`${MARKER} upgrade committed version=0\\.2\\.0 slot=b`), 1, 8 * 60_000);
  await recordFigure('one box: apply (verify + write the slot), QEMU TCG', (applied - applyStarted) / 1000, 's');
  await recordFigure('one box: reboot to the committed slot, QEMU TCG', (Date.now() - applied) / 1000, 's');
  const v2 = await eventually('status on v2', 180_000, () => status(c), 3000);
  t.is(v2.version, '0.2.0');
  t.like(v2.slots, { booted: 'b', committed: 'b', trying: null });
  t.is(v2.last?.state, 'committed');
  t.regex((await c.ssh(['cat', '/etc/geminik8s/image.yaml'])).stdout, /^version: 0\.2\.0$/m);

  await c.ssh(['systemctl', 'reboot']).catch(() => undefined);
  // boot-2's console: v1 after the cut, the v2 trial, now v2 again.
  await waitForCount(c.vm!, new RegExp(`${MARKER} started`), 3, 8 * 60_000);
  const again = await eventually('status after the reboot', 240_000, () => status(c), 3000);
  t.like(again.slots, { booted: 'b', committed: 'b', trying: null });
});

test.serial('v3 whose health gate fails comes back to v2 by itself, and the status says why', async (t) => {
  const c = ctx!;
  const r = await c.ssh([AGENT, 'upgrade', 'apply', `${UPDATES}/v3.bundle`, '--json'], 600_000);
  t.is(r.code, 0, r.stdout + r.stderr);
  await waitForCount(
    c.vm!,
    new RegExp(`${MARKER} upgrade rolled-back version=0\\.3\\.0 health gate not passed within 30 s: health check always-fails`),
    1,
    10 * 60_000,
  );
  // Back on b after the agent's reboot: the fifth agent start on boot-2's console.
  await waitForCount(c.vm!, new RegExp(`${MARKER} started`), 5, 8 * 60_000);
  const s = await eventually('status back on v2', 240_000, () => status(c), 3000);
  t.is(s.version, '0.2.0');
  t.like(s.slots, { booted: 'b', committed: 'b', trying: null });
  t.is(s.last?.state, 'rolled-back');
  t.regex(s.last?.reason ?? '', /health check always-fails/);
});

test.serial('v4 whose slot never boots comes back to v2 by itself, and the status says why', async (t) => {
  const c = ctx!;
  // Installed without the agent's reboot, then the power is cut: apply has synced the slot and
  // grubenv before it answers, and the box must come back from a power cycle as from a reboot.
  // (A power cycle also steers clear of a QEMU TCG/OVMF hang seen once on a warm reset into a slot
  // with no filesystem, before grub ran a command; the same disk booted cold fell back correctly.)
  const r = await c.ssh([AGENT, 'upgrade', 'apply', `${UPDATES}/unbootable.bundle`, '--no-reboot', '--json'], 600_000);
  t.is(r.code, 0, r.stdout + r.stderr);
  t.like(applyResult(r.stdout), { result: 'installed', version: '0.4.0', slot: 'a' });
  await c.vm!.kill();
  await bootV(c, 'boot-3');
  const text = await c.vm!.waitFor([new RegExp(`${MARKER} upgrade rolled-back version=0\\.4\\.0 slot a \\(0\\.4\\.0\\) could not be booted`)], 10 * 60_000);
  t.regex(text, /Falling back to `geminik8s fallback \(slot b\)'/);
  const s = await eventually('status back on v2', 240_000, () => status(c), 3000);
  t.is(s.version, '0.2.0');
  t.like(s.slots, { booted: 'b', committed: 'b', trying: null });
  t.is(s.last?.state, 'rolled-back');
});

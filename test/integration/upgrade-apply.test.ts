/**
 * The box's side of an A/B upgrade without a VM: the agent's UpgradeService applies real bundles
 * (written by the builder's writer, slot image through the real `zstd -d`) to a file standing in
 * for the inactive slot, with a grubenv made and read back by the real grub-editenv. Refused
 * bundles leave the slot and grubenv untouched; an installed one sets the try grub reads; the next
 * boot on that slot gates and commits; a failing health check rolls back with its reason.
 */
import test from 'ava';
import { sha256, testManifest } from '../helpers/bundle-manifest.ts';
import { execa } from 'execa';
import { generateKeyPairSync, type KeyObject } from 'node:crypto';
import { closeSync, openSync, writeSync } from 'node:fs';
import { access, mkdir, mkdtemp, readFile, rm, stat, truncate, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { Logger } from '../../firstboot/src/adapters/output.ts';
import { writeBundle } from '../../firstboot/src/upgrade/bundle.ts';
import type { BundleManifest } from '../../firstboot/src/upgrade/core/manifest.ts';
import { enforceDeadline, readUpgradeRecord, type RunningImage, UpgradeService } from '../../firstboot/src/upgrade/service.ts';
import { grubBackend, trybootBackend } from '../../firstboot/src/upgrade/slot-backend.ts';

const work = await mkdtemp(path.join(os.tmpdir(), 'gk8s-upgrade-apply-'));
const SLOT_BYTES = 8 * 1024 * 1024;
const trusted = generateKeyPairSync('ed25519');
const stranger = generateKeyPairSync('ed25519');
const keysDir = path.join(work, 'keys');
await mkdir(keysDir);
await writeFile(path.join(keysDir, 'trusted.pem'), trusted.publicKey.export({ type: 'spki', format: 'pem' }));

// The new slot's content: 6 MiB with a recognisable head, compressed as the builder does.
const slotRaw = Buffer.alloc(6 * 1024 * 1024, 0);
for (let i = 0; i < slotRaw.length; i += 4096) slotRaw.write(`block ${i}`, i);
const rawFile = path.join(work, 'root.img');
await writeFile(rawFile, slotRaw);
await execa('zstd', ['-q', '-f', '-3', rawFile, '-o', `${rawFile}.zst`]);
const sha = sha256;
const compressed = await readFile(`${rawFile}.zst`);
const manifest: BundleManifest = testManifest({ bytes: compressed.length, sha256: sha(compressed), rawBytes: slotRaw.length, rawSha256: sha(slotRaw) });

async function bundle(name: string, o: { manifest?: Partial<BundleManifest>; key?: KeyObject } = {}): Promise<string> {
  const file = path.join(work, name);
  await writeBundle(file, { manifest: { ...manifest, ...o.manifest }, slotFile: `${rawFile}.zst`, signingKey: o.key ?? trusted.privateKey, mtime: 0 });
  return file;
}

const events: string[] = [];
const log: Logger = { event: (_level: string, event: string) => void events.push(event) } as unknown as Logger;
const lines: string[] = [];

/** The Raspberry Pi layout's boot partitions: 1 holds autoboot.txt, 2 and 3 are boot-a and boot-b. */
const PI_BOOT_PARTITIONS = { a: 2, b: 3 };

/**
 * One box: a state dir, the bootloader's file (a grubenv made by grub-editenv, or the Pi's
 * autoboot.txt as the image ships it), a cmdline naming the booted slot, a file as slot b.
 */
async function box(name: string, healthChecks: RunningImage['policy']['healthChecks'] = [], bootloader: 'grub' | 'tryboot' = 'grub') {
  const dir = path.join(work, name);
  await mkdir(path.join(dir, 'state'), { recursive: true });
  const grubenv = path.join(dir, 'grubenv');
  await execa('grub-editenv', [grubenv, 'create']);
  await execa('grub-editenv', [grubenv, 'set', 'slot=a', 'try_slot=', 'boot_tries=0']);
  const autoboot = path.join(dir, 'autoboot.txt');
  await writeFile(autoboot, '[all]\ntryboot_a_b=1\nboot_partition=2\n[tryboot]\nboot_partition=2\n');
  const cmdline = path.join(dir, 'cmdline');
  await writeFile(cmdline, 'BOOT_IMAGE=/vmlinuz root=PARTLABEL=root-a ro console=ttyS0\n');
  const slotB = path.join(dir, 'slot-b');
  await writeFile(slotB, '');
  await truncate(slotB, SLOT_BYTES);
  const slots = bootloader === 'grub' ? grubBackend({ grubenv, cmdline }) : trybootBackend({ autoboot, cmdline, partitions: async () => PI_BOOT_PARTITIONS });
  // The slot is a file here, so the Pi's boot partition is not filled (test/integration/rpi-boot-partition.test.ts
  // does that on loop devices); the order is checked: prepared before the trial is set.
  const prepared: string[] = [];
  const backend = {
    ...slots,
    device: async () => ({ path: slotB, bytes: SLOT_BYTES }),
    prepare: async (slot: 'a' | 'b') => {
      prepared.push(`${slot} while ${(await slots.state()).trying === null ? 'no trial is set' : 'a trial is set'}`);
    },
  };
  let reboots = 0;
  const service = new UpgradeService({
    stateDir: path.join(dir, 'state'),
    keysDir,
    image: { version: '0.1.0', arch: 'amd64', hardware: 'generic-x86_64-uefi', policy: { gateSeconds: 30, healthChecks } },
    backend,
    log,
    out: { line: (l: string) => void lines.push(l), close: () => undefined },
    reboot: async () => {
      reboots++;
    },
    uptimeSeconds: () => 1000,
  });
  const env = async () =>
    Object.fromEntries((await execa('grub-editenv', [grubenv, 'list'])).stdout.split('\n').map((l) => l.split('=')) as [string, string][]);
  /** autoboot.txt's settings, comments left out, as the bootloader reads them. */
  const autobootLines = async () =>
    (await readFile(autoboot, 'utf8'))
      .split('\n')
      .filter((l) => l !== '' && !l.startsWith('#'))
      .join(' ');
  return { dir, grubenv, cmdline, slotB, service, env, autobootLines, backend, prepared, reboots: () => reboots, state: path.join(dir, 'state') };
}

test.after.always(() => rm(work, { recursive: true, force: true }));

test('refused bundles say why and touch neither the slot nor grubenv', async (t) => {
  const b = await box('refusals');
  const before = { env: await readFile(b.grubenv), slot: sha(await readFile(b.slotB)) };
  const cases: [string, string][] = [
    [await bundle('stranger.bundle', { key: stranger.privateKey }), 'bad-signature'],
    [await bundle('other-hw.bundle', { manifest: { hardware: 'raspberrypi4' } }), 'wrong-hardware'],
    [await bundle('downgrade.bundle', { manifest: { version: '0.0.9' } }), 'downgrade'],
    [await bundle('huge.bundle', { manifest: { slot: { ...manifest.slot, rawBytes: SLOT_BYTES + 1 } } }), 'slot-too-small'],
  ];
  const altered = path.join(work, 'altered.bundle');
  const bytes = await readFile(await bundle('good-for-altering.bundle'));
  bytes[bytes.length - 2048] = bytes[bytes.length - 2048]! ^ 1;
  await writeFile(altered, bytes);
  cases.push([altered, 'slot-mismatch']);
  for (const [file, code] of cases) {
    const r = await b.service.apply({ bundle: file, reboot: false }, () => undefined);
    t.like(r, { result: 'refused', code }, `${path.basename(file)}: ${JSON.stringify(r)}`);
  }
  const other = await b.service.apply({ bundle: path.join(work, 'downgrade.bundle'), reboot: false }, () => undefined);
  t.regex((other as { message: string }).message, /expected a version newer than 0\.1\.0, bundle has version 0\.0\.9/);
  t.true((await readFile(b.grubenv)).equals(before.env), 'grubenv untouched');
  t.is(sha(await readFile(b.slotB)), before.slot, 'slot untouched');
  t.is(readUpgradeRecord(b.state), undefined, 'no upgrade recorded');
});

test('an installed bundle sets the try grub reads; the trial boot gates and commits', async (t) => {
  const b = await box('install');
  const progress: string[] = [];
  const r = await b.service.apply({ bundle: await bundle('v2.bundle'), reboot: false }, (e) => void progress.push(e.step));
  t.like(r, { result: 'installed', version: '0.2.0', slot: 'b', rebooting: false });
  t.true(progress.includes('verify') && progress.includes('write') && progress.includes('try'));
  t.true((await readFile(b.slotB)).subarray(0, slotRaw.length).equals(slotRaw), 'the slot holds the raw image');
  t.is((await stat(b.slotB)).size, SLOT_BYTES, 'written in place: the rest of the slot is not cut off');
  t.like(await b.env(), { slot: 'a', try_slot: 'b', boot_tries: '3' });
  t.is(readUpgradeRecord(b.state)?.state, 'trying');

  // grub booted b (and spent a try): the agent's gate passes (an unpaired box) and commits.
  await execa('grub-editenv', [b.grubenv, 'set', 'boot_tries=2']);
  await writeFile(b.cmdline, 'root=PARTLABEL=root-b ro\n');
  await b.service.settle(new AbortController().signal);
  t.like(await b.env(), { slot: 'b', try_slot: '', boot_tries: '0' });
  t.is(readUpgradeRecord(b.state)?.state, 'committed');
  t.true(lines.some((l) => /upgrade committed version=0\.2\.0 slot=b/.test(l)));
});

test('a slot that cannot take the image (the device fills up) fails the apply, says so, and sets no try', async (t) => {
  const b = await box('device-full');
  b.backend.device = async () => ({ path: '/dev/full', bytes: SLOT_BYTES });
  const r = await b.service.apply({ bundle: await bundle('v2-full.bundle'), reboot: false }, () => undefined);
  t.like(r, { result: 'failed' });
  t.regex((r as { message: string }).message, /No space left on device/);
  t.like(await b.env(), { slot: 'a', try_slot: '', boot_tries: '0' });
  t.is(b.reboots(), 0);
  t.like(readUpgradeRecord(b.state), { state: 'failed', reason: (r as { message: string }).message });
});

test("a bundle altered on disk after its check fails the write with zstd's own error, and sets no try", async (t) => {
  const b = await box('altered-after-verify');
  const file = await bundle('v2-swapped.bundle');
  const bytes = await readFile(file);
  // Inside the compressed slot image: zstd's frame starts at its magic number.
  const frame = bytes.indexOf(Buffer.from([0x28, 0xb5, 0x2f, 0xfd]));
  t.true(frame > 0);
  let altered = false;
  const r = await b.service.apply({ bundle: file, reboot: false }, (e) => {
    if (e.step !== 'verify' || e.doneBytes !== e.totalBytes || altered) return;
    altered = true;
    const fd = openSync(file, 'r+');
    writeSync(fd, Buffer.alloc(256, 0xff), 0, 256, frame + Math.floor(compressed.length / 2));
    closeSync(fd);
  });
  t.true(altered);
  t.like(r, { result: 'failed' });
  t.regex((r as { message: string }).message, /Decoding error .*Data corruption detected/);
  t.like(await b.env(), { slot: 'a', try_slot: '', boot_tries: '0' });
  t.is(readUpgradeRecord(b.state)?.state, 'failed');
});

test('a failing health check rolls the trial back with its reason, and a boot back on a records a rollback', async (t) => {
  const b = await box('gate-fails', [{ name: 'always-fails', command: ['/bin/false'], timeoutSeconds: 5 }]);
  t.like(await b.service.apply({ bundle: await bundle('v2-check.bundle'), reboot: false }, () => undefined), { result: 'installed' });
  await writeFile(b.cmdline, 'root=PARTLABEL=root-b ro\n');
  await b.service.settle(new AbortController().signal);
  t.like(await b.env(), { slot: 'a', try_slot: '', boot_tries: '0' });
  t.is(b.reboots(), 1, 'rebooted into the old slot');
  const record = readUpgradeRecord(b.state);
  t.is(record?.state, 'rolled-back');
  t.regex(record?.reason ?? '', /health gate not passed within 30 s: health check always-fails/);

  // Tries that ran out: grub cleared the try and booted a; the next agent start records why.
  const c = await box('tries-out');
  t.like(await c.service.apply({ bundle: await bundle('v2-tries.bundle'), reboot: false }, () => undefined), { result: 'installed' });
  await execa('grub-editenv', [c.grubenv, 'set', 'try_slot=', 'boot_tries=0']);
  await c.service.settle(new AbortController().signal);
  t.regex(readUpgradeRecord(c.state)?.reason ?? '', /never reached its health gate/);
});

test('the deadline unit ends a trial the agent never gated, and only past the gate deadline plus its grace', async (t) => {
  const b = await box('deadline');
  t.like(await b.service.apply({ bundle: await bundle('v2-deadline.bundle'), reboot: false }, () => undefined), { result: 'installed' });
  await writeFile(b.cmdline, 'root=PARTLABEL=root-b ro\n');
  let reboots = 0;
  const options = (uptime: number) => ({
    stateDir: b.state,
    backend: { ...grubBackend({ grubenv: b.grubenv, cmdline: b.cmdline }), device: async () => ({ path: b.slotB, bytes: SLOT_BYTES }) },
    image: { version: '0.1.0', arch: 'amd64', hardware: 'generic-x86_64-uefi', policy: { gateSeconds: 30, healthChecks: [] } },
    reboot: async () => {
      reboots++;
    },
    uptimeSeconds: () => uptime,
    log,
  });
  t.regex(await enforceDeadline(options(80)), /trial of slot b: 10 s left/);
  t.like(await b.env(), { try_slot: 'b' });
  t.regex(await enforceDeadline(options(95)), /rolled back: slot b did not pass its health gate within 90 s of boot/);
  t.like(await b.env(), { slot: 'a', try_slot: '', boot_tries: '0' });
  t.is(reboots, 1);
  t.is(readUpgradeRecord(b.state)?.state, 'rolled-back');
  // Back on a: nothing to do.
  await writeFile(b.cmdline, 'root=PARTLABEL=root-a ro\n');
  t.is(await enforceDeadline(options(500)), 'no trial');
});

test("a rolling upgrade's apply neither tries nor reboots a box that became the leader while it wrote the slot", async (t) => {
  const b = await box('role-changed');
  b.service.watch(async () => ({ phase: 'provisioned', role: 'leader' }));
  const r = await b.service.apply({ bundle: await bundle('v2-role.bundle'), onlyAsFollower: true }, () => undefined);
  t.like(r, { result: 'refused', code: 'role-changed' });
  t.like(await b.env(), { slot: 'a', try_slot: '', boot_tries: '0' });
  t.is(b.reboots(), 0);
  t.is(readUpgradeRecord(b.state)?.state, 'failed');
  b.service.watch(async () => ({ phase: 'provisioned', role: 'follower' }));
  t.like(await b.service.apply({ bundle: await bundle('v2-role-again.bundle'), onlyAsFollower: true, reboot: false }, () => undefined), {
    result: 'installed',
  });
  t.like(await b.env(), { try_slot: 'b' });
});

test('the trial marker the deadline unit is conditioned on exists exactly while a trial is pending', async (t) => {
  const b = await box('marker');
  const marker = path.join(b.state, 'upgrade-trial');
  const exists = () =>
    access(marker).then(
      () => true,
      () => false,
    );
  t.false(await exists());
  t.like(await b.service.apply({ bundle: await bundle('v2-marker.bundle'), reboot: false }, () => undefined), { result: 'installed' });
  t.true(await exists(), 'set with the try');
  await writeFile(b.cmdline, 'root=PARTLABEL=root-b ro\n');
  await b.service.settle(new AbortController().signal);
  t.false(await exists(), 'gone once committed');
});

// The Raspberry Pi bootloader's tryboot, as its documentation describes autoboot.txt (config_txt/
// autoboot.adoc): `[all] boot_partition` is what boots, `[tryboot] boot_partition` what boots once
// after `reboot "0 tryboot"`; the flag is cleared before the firmware starts, so any reset falls back.
test('tryboot: an installed bundle points [tryboot] at slot b and reboots with the tryboot flag; the trial boot gates and commits', async (t) => {
  const b = await box('tryboot-install', [], 'tryboot');
  t.deepEqual(await b.backend.rebootArguments(), [], 'no trial: a plain reboot');
  t.like(await b.service.apply({ bundle: await bundle('v2-tryboot.bundle'), reboot: false }, () => undefined), {
    result: 'installed',
    slot: 'b',
    rebootWith: "systemctl reboot '--reboot-argument=0 tryboot'",
  });
  t.is(await b.autobootLines(), '[all] tryboot_a_b=1 boot_partition=2 [tryboot] boot_partition=3');
  t.deepEqual(b.prepared, ['b while no trial is set'], "slot b's boot partition is filled before [tryboot] names it");
  t.deepEqual(await b.backend.rebootArguments(), ['--reboot-argument=0 tryboot'], 'the reboot sets the one-shot flag');
  t.true((await readFile(b.slotB)).subarray(0, slotRaw.length).equals(slotRaw));

  // The bootloader booted partition 3 in tryboot mode: the gate passes and b becomes the default.
  await writeFile(b.cmdline, 'root=PARTLABEL=root-b ro\n');
  await b.service.settle(new AbortController().signal);
  t.is(await b.autobootLines(), '[all] tryboot_a_b=1 boot_partition=3 [tryboot] boot_partition=3');
  t.is(readUpgradeRecord(b.state)?.state, 'committed');
  t.deepEqual(await b.backend.rebootArguments(), []);
});

test('tryboot: a new root whose boot partition cannot be filled is not tried; the record says why', async (t) => {
  const b = await box('tryboot-unbootable', [], 'tryboot');
  b.backend.prepare = async () => {
    throw new Error('the new root in slot b has no /usr/lib/geminik8s/rpi-boot.json');
  };
  t.like(await b.service.apply({ bundle: await bundle('v2-tryboot-unbootable.bundle'), reboot: false }, () => undefined), {
    result: 'failed',
    message: 'slot b holds the new root but cannot be made bootable: the new root in slot b has no /usr/lib/geminik8s/rpi-boot.json',
  });
  t.is(await b.autobootLines(), '[all] tryboot_a_b=1 boot_partition=2 [tryboot] boot_partition=2', 'no trial set');
  t.is(readUpgradeRecord(b.state)?.state, 'failed');
  t.is(b.reboots(), 0);
});

test('tryboot: a failing gate goes back to slot a with a plain reboot; a trial the bootloader never finished is recorded as rolled back', async (t) => {
  const b = await box('tryboot-gate-fails', [{ name: 'always-fails', command: ['/bin/false'], timeoutSeconds: 5 }], 'tryboot');
  t.like(await b.service.apply({ bundle: await bundle('v2-tryboot-check.bundle'), reboot: false }, () => undefined), { result: 'installed' });
  await writeFile(b.cmdline, 'root=PARTLABEL=root-b ro\n');
  await b.service.settle(new AbortController().signal);
  t.is(await b.autobootLines(), '[all] tryboot_a_b=1 boot_partition=2 [tryboot] boot_partition=2');
  t.is(b.reboots(), 1);
  t.deepEqual(await b.backend.rebootArguments(), [], 'the reboot back carries no tryboot flag');
  t.regex(readUpgradeRecord(b.state)?.reason ?? '', /health gate not passed within 30 s: health check always-fails/);

  // A power cut during the trial: the bootloader cleared the flag and booted partition 2, autoboot.txt still names 3.
  const c = await box('tryboot-reset', [], 'tryboot');
  t.like(await c.service.apply({ bundle: await bundle('v2-tryboot-reset.bundle'), reboot: false }, () => undefined), { result: 'installed' });
  await c.service.settle(new AbortController().signal);
  t.is(readUpgradeRecord(c.state)?.state, 'rolled-back');
  t.regex(readUpgradeRecord(c.state)?.reason ?? '', /slot b \(0\.2\.0\) was not booted: .*did not carry the tryboot flag/);
  t.is(await c.autobootLines(), '[all] tryboot_a_b=1 boot_partition=2 [tryboot] boot_partition=2', 'the trial ended: a stray tryboot boots a');
});

/**
 * The Raspberry Pi 4 SD card image, built on this x86_64 machine: its partition table and boot
 * partitions checked against what the Pi firmware documents (autoboot.txt, config.txt, cmdline.txt,
 * the files the firmware loads), then its root booted under qemu-system-aarch64 (virt, TCG) by
 * direct kernel boot of the kernel, initrd and command line on its boot partition, since QEMU cannot
 * run the Pi 4's firmware: the same first-boot assertions as the other images. Too slow for
 * `make test` on 2 cores: `make test-rpi4`.
 */
import test from 'ava';
import { mkdtemp, open, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { readGpt, toolPath } from '../../builder/src/disk/index.ts';
import { run } from '../../builder/src/util/exec.ts';
import { parseAutoboot } from '../../firstboot/src/upgrade/core/slots.ts';
import { GPT_TYPE } from '../../image/src/layout.ts';
import { RPI_DEVICE_TREES } from '../../image/src/rpi.ts';
import { events, geminik8s } from '../helpers/cli.ts';
import { recordFigure } from '../helpers/figures.ts';
import { checkFirstBoot, FIRST_BOOT_LINES, stampedDisk } from '../helpers/first-boot.ts';
import { fatCopy, piBoot } from '../helpers/pi-bootloader.ts';

const work = await mkdtemp(path.join(os.tmpdir(), 'gk8s-rpi4-'));
const out = path.join(work, 'dist');

test.after.always(async () => {
  await rm(work, { recursive: true, force: true });
});

let artifact = '';
let disk: { raw: string; site: string } | undefined;

/** A file from a FAT partition of the disk (mtools reads it in place). */
async function fatFile(raw: string, offsetBytes: number, name: string): Promise<Buffer> {
  return readFile(await fatCopy(raw, offsetBytes, name, path.join(work, `fat-${offsetBytes}-${name}`)));
}

async function fatNames(raw: string, offsetBytes: number): Promise<string[]> {
  const listing = await run(await toolPath('mdir'), ['-b', '-i', `${raw}@@${offsetBytes}`, '::/'], { env: { MTOOLS_SKIP_CHECK: '1' } });
  return listing
    .split('\n')
    .filter(Boolean)
    .map((f) => f.replace(/^::\//, ''));
}

async function bytesAt(file: string, offset: number, length: number): Promise<Buffer> {
  const fh = await open(file, 'r');
  try {
    const buf = Buffer.alloc(length);
    await fh.read(buf, 0, length, offset);
    return buf;
  } finally {
    await fh.close();
  }
}

test.serial('the Raspberry Pi 4 image builds on this x86_64 host, with the Pi firmware and the arm64 kernel', async (t) => {
  t.timeout(90 * 60_000, 'a cold arm64 build runs its root under qemu-user');
  const started = performance.now();
  const r = await geminik8s(['build', '--profile', 'edge-datastore', '--hardware', 'raspberrypi4', '--out', out, '--json']);
  t.is(r.exitCode, 0, r.stderr.slice(-3000));
  const ev = events(r.stdout);
  if (ev.filter((e) => e.event === 'step-done').every((e) => e.cached === false))
    await recordFigure('rpi4 cold build', (performance.now() - started) / 1000, 's');
  artifact = String(ev.find((e) => e.event === 'done')?.artifactDir);
  t.is(path.basename(artifact), 'edge-datastore-raspberrypi4-0.1.0');
  const manifest = JSON.parse(await readFile(path.join(artifact, 'manifest.json'), 'utf8')) as {
    components: { name: string; arch: string }[];
    packages: { name: string; arch: string }[];
  };
  t.deepEqual(manifest.components.map((c) => `${c.name}:${c.arch}`).sort(), ['geminik8s-agent:arm64', 'kine:arm64']);
  for (const needed of ['linux-image-arm64', 'raspi-firmware'])
    t.true(
      manifest.packages.some((p) => p.name === needed),
      needed,
    );
  t.false(
    manifest.packages.some((p) => p.name.startsWith('grub')),
    'no grub on a Pi',
  );
});

test.serial(
  'the SD image is what the Pi firmware documents: autoboot.txt on FAT partition 1 picks a FAT boot partition with the firmware, kernel, initrd, device trees, config.txt and a cmdline.txt naming its root slot',
  async (t) => {
    t.truthy(artifact, 'the build published its artifact');
    disk = await stampedDisk(t, artifact, work, 'rpi4-boot-1');
    const { raw } = disk;
    // GPT behind a protective MBR (one 0xEE entry), which the Pi 4 bootloader reads.
    const mbr = await bytesAt(raw, 0, 512);
    t.is(mbr.readUInt16LE(510), 0xaa55, 'MBR signature');
    t.is(mbr[446 + 4], 0xee, 'protective MBR entry');
    const gpt = await readGpt(raw);
    t.deepEqual(
      gpt.partitions.map((p) => `${p.index}:${p.name}`),
      ['1:autoboot', '2:boot-a', '3:boot-b', '4:root-a', '5:root-b', '6:oem', '7:data'],
    );
    const part = (index: number) => {
      const p = gpt.partitions.find((x) => x.index === index);
      if (!p) throw new Error(`no partition ${index}`);
      return p;
    };
    // The bootloader's FAT partitions: basic-data GPT entries, FAT12/16/32 filesystems.
    for (const index of [1, 2, 3]) t.is(part(index).typeGuid.toUpperCase(), GPT_TYPE.basicData, `partition ${index} type`);
    const fatType = async (index: number) => {
      const boot = await bytesAt(raw, part(index).offsetBytes, 512);
      return /FAT(12|16|32)/.exec(boot.subarray(54, 62).toString('latin1') + boot.subarray(82, 90).toString('latin1'))?.[0];
    };
    t.truthy(await fatType(1), 'partition 1 is FAT');

    // autoboot.txt: at most 512 bytes, [all] tryboot_a_b=1 and the committed boot partition, [tryboot] a partition too.
    const autoboot = await fatFile(raw, part(1).offsetBytes, 'autoboot.txt');
    t.true(autoboot.length <= 512, `autoboot.txt is ${autoboot.length} bytes`);
    const { all, tryboot } = parseAutoboot(autoboot.toString('utf8'));
    t.is(all, 2, 'boots boot-a');
    t.is(tryboot, 2, 'a tryboot with no trial set boots boot-a as well');

    // The boot partition it names: FAT, with start.elf (what makes it bootable), the Pi 4 firmware, config.txt.
    const boot = part(all);
    t.truthy(await fatType(all), 'the boot partition is FAT');
    const names = await fatNames(raw, boot.offsetBytes);
    for (const f of ['start.elf', 'fixup.dat', 'start4.elf', 'fixup4.dat', 'config.txt', 'cmdline.txt', RPI_DEVICE_TREES.pi4, RPI_DEVICE_TREES.pi400])
      t.true(names.includes(f), `${f} on boot-a (${names.join(' ')})`);
    const config = (await fatFile(raw, boot.offsetBytes, 'config.txt')).toString('utf8');
    const setting = (name: string) => new RegExp(`^${name}=(\\S+)$`, 'm').exec(config)?.[1];
    t.is(setting('arm_64bit'), '1');
    t.is(setting('enable_uart'), '1');
    const kernel = setting('kernel') ?? '';
    const initrd = /^initramfs (\S+) followkernel$/m.exec(config)?.[1] ?? '';
    const cmdlineFile = setting('cmdline') ?? 'cmdline.txt';
    for (const f of [kernel, initrd, cmdlineFile]) t.true(names.includes(f), `config.txt names ${f}, which is on the partition`);
    if (/^\[cm4\]$/m.test(config)) t.true(names.includes(/^device_tree=(\S+)$/m.exec(config)?.[1] ?? ''), 'the CM4 device tree is there');
    // A 64-bit kernel Image ("ARM\x64" at 0x38, the arm64 boot protocol's magic) and a real initrd.
    const image = await fatFile(raw, boot.offsetBytes, kernel);
    t.is(image.readUInt32LE(0x38), 0x644d5241, 'an arm64 kernel Image');
    t.true((await fatFile(raw, boot.offsetBytes, initrd)).length > 1024 * 1024, 'an initrd');
    // cmdline.txt: one line, the root of the same slot, the serial console.
    const cmdline = (await fatFile(raw, boot.offsetBytes, cmdlineFile)).toString('utf8');
    t.regex(cmdline, /^[^\n]+\n?$/, 'one line');
    t.regex(cmdline, /(^| )root=PARTLABEL=root-a( |$)/);
    t.regex(cmdline, /(^| )console=ttyS1,115200( |\n|$)/);
    t.is(part(4).name, 'root-a');
    // boot-b stays empty until an upgrade fills it from its new root.
    t.true(
      (await bytesAt(raw, part(3).offsetBytes, 65536)).every((b) => b === 0),
      'boot-b is empty',
    );
  },
);

test.serial(
  "the Pi image's root boots under qemu-system-aarch64 from its boot partition's kernel, initrd and command line, and the agent reads the site and grows the data partition",
  async (t) => {
    t.timeout(45 * 60_000, 'an arm64 boot under TCG');
    t.truthy(disk, 'the image was stamped');
    if (!disk) return;
    const started = performance.now();
    const { vm, partition, cmdline } = await piBoot(disk.raw, work, { tryboot: false });
    t.is(partition, 2, 'autoboot.txt boots boot-a');
    t.regex(cmdline, /console=ttyS1,115200/, 'the Pi console (moved to the PL011 for QEMU)');
    try {
      await vm.waitFor([/GEMINIK8S-AGENT: /], 20 * 60_000);
      await recordFigure('rpi4 root: power-on to the agent first console line (TCG, direct kernel boot)', (performance.now() - started) / 1000, 's');
      const console = await vm.waitFor([...FIRST_BOOT_LINES, /GEMINIK8S-AGENT: site rpi4-boot-1/], 20 * 60_000);
      await checkFirstBoot(t, console, artifact, disk.site);
      t.regex(console, /Kernel command line: root=PARTLABEL=root-a /, 'the root named by cmdline.txt');
    } finally {
      await vm.stop();
    }
  },
);

/**
 * Boot smoke test of the grub A/B logic: OVMF (TCG) → our BOOTX64.EFI → grub.cfg → a real Debian
 * kernel from the chosen slot. We only need the kernel to start and print its command line, so the
 * initrd is a placeholder and QEMU is killed as soon as "Command line:" appears.
 */
import test from 'ava';
import { copyFile, mkdir, mkdtemp, readdir, rm, symlink, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { run } from '../../builder/src/util/exec.ts';
import { bootImage, requireQemu } from '../helpers/qemu.ts';
import { assembleDiskImage, readGpt, requireTools, toolPath } from '../../builder/src/disk/index.ts';

const REPO = fileURLToPath(new URL('../../', import.meta.url));
const MT = { MTOOLS_SKIP_CHECK: '1' };
let dir: string;
let img: string;
let espOff: number;

/** A Debian kernel: the host's /boot, else one unpacked (once, cached under .cache/) from apt. */
async function debianKernel(): Promise<string> {
  const fromDir = async (d: string) => {
    const names = existsSync(d) ? (await readdir(d)).filter((n) => /^vmlinuz-.*amd64$/.test(n)).sort() : [];
    return names.length ? path.join(d, names.at(-1)!) : undefined;
  };
  const host = await fromDir('/boot');
  if (host) return host;
  const cache = path.join(REPO, '.cache', 'test-kernel');
  const cached = await fromDir(path.join(cache, 'x', 'boot'));
  if (cached) return cached;
  await mkdir(cache, { recursive: true });
  const deps = await run('apt-cache', ['depends', 'linux-image-amd64']);
  const pkg = /Depends: (linux-image-[0-9][^\s]*-amd64)/.exec(deps)?.[1];
  if (!pkg) throw new Error('cannot find the kernel package behind linux-image-amd64 (apt-get update?)');
  await run('apt-get', ['download', pkg], { cwd: cache, timeoutMs: 300_000 });
  const deb = (await readdir(cache)).find((n) => n.startsWith(pkg) && n.endsWith('.deb'));
  if (!deb) throw new Error(`apt-get download ${pkg} produced no .deb`);
  await run('dpkg-deb', ['-x', path.join(cache, deb), path.join(cache, 'x')]);
  await rm(path.join(cache, deb));
  const k = await fromDir(path.join(cache, 'x', 'boot'));
  if (!k) throw new Error(`${pkg} contains no /boot/vmlinuz-*`);
  return k;
}

/** Boots `image` until the kernel prints its command line; returns that line. Always stops QEMU. */
async function bootToKernelCmdline(image: string, timeoutMs = 100_000): Promise<string> {
  const vm = await bootImage(image, await mkdtemp(path.join(dir, 'vm-')), { memoryMiB: 1024 });
  try {
    const text = await vm.waitFor([/Command line: [^\r\n]*\r?\n/], timeoutMs);
    return /Command line: ([^\r\n]*)/.exec(text)?.[1] ?? '';
  } finally {
    await vm.stop();
  }
}

async function grubenv(...setArgs: string[]): Promise<Record<string, string>> {
  const local = path.join(dir, 'grubenv');
  const target = `${img}@@${espOff}`;
  await run(await toolPath('mcopy'), ['-n', '-i', target, '::/grub/grubenv', local], { env: MT });
  if (setArgs.length) {
    await run(await toolPath('grub-editenv'), [local, 'set', ...setArgs]);
    await run(await toolPath('mcopy'), ['-o', '-i', target, local, '::/grub/grubenv'], { env: MT });
  }
  const list = await run(await toolPath('grub-editenv'), [local, 'list']);
  return Object.fromEntries(
    list
      .split('\n')
      .filter(Boolean)
      .map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]),
  );
}

test.before(async () => {
  await requireQemu();
  await requireTools(['mcopy', 'grub-editenv', 'dd', 'dpkg-deb']).catch((e: Error) => {
    throw new Error(`${e.message}${/dpkg-deb/.test(e.message) ? ' (dpkg-deb: Debian package dpkg)' : ''}`);
  });
  dir = await mkdtemp(path.join(tmpdir(), 'gk8s-boot-'));
  const root = path.join(dir, 'rootfs');
  await mkdir(path.join(root, 'boot'), { recursive: true });
  const kernel = await debianKernel();
  const kname = path.basename(kernel);
  await copyFile(kernel, path.join(root, 'boot', kname));
  const initrd = kname.replace('vmlinuz', 'initrd.img');
  await writeFile(path.join(root, 'boot', initrd), 'placeholder\n');
  await symlink(`boot/${kname}`, path.join(root, 'vmlinuz'));
  await symlink(`boot/${initrd}`, path.join(root, 'initrd.img'));
  img = path.join(dir, 'boot.raw');
  await assembleDiskImage({ arch: 'amd64', rootfsDir: root, outFile: img, workDir: path.join(dir, 'work'), seed: 'boot-test', sourceDateEpoch: 1_700_000_000 });
  espOff = (await readGpt(img)).partitions.find((p) => p.name === 'esp')!.offsetBytes;
});

test.after.always(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

test.serial('grub A/B: try_slot with an empty slot falls back, a good try_slot boots, exhausted tries roll back', async (t) => {
  // 1. An upgrade marked slot b for trial, but b holds nothing bootable: grub spends a try and
  //    falls back to the committed slot a in the same boot.
  await grubenv('try_slot=b', 'boot_tries=3');
  let started = Date.now();
  let cmdline = await bootToKernelCmdline(img);
  t.log(`boot 1: ${Date.now() - started} ms: ${cmdline}`);
  t.regex(cmdline, /root=PARTLABEL=root-a ro rootwait panic=10 console=tty0 console=ttyS0,115200/);
  t.like(await grubenv(), { slot: 'a', try_slot: 'b', boot_tries: '2' });

  // 2. Put a copy of slot a into slot b: the trial now boots b.
  const gpt = await readGpt(img);
  const a = gpt.partitions.find((p) => p.name === 'root-a')!;
  const b = gpt.partitions.find((p) => p.name === 'root-b')!;
  const MiB = 2 ** 20;
  await run(await toolPath('dd'), [
    `if=${img}`,
    `of=${img}`,
    'bs=1M',
    `skip=${a.offsetBytes / MiB}`,
    `seek=${b.offsetBytes / MiB}`,
    `count=${a.sizeBytes / MiB}`,
    'conv=notrunc,sparse',
    'status=none',
  ]);
  started = Date.now();
  cmdline = await bootToKernelCmdline(img);
  t.log(`boot 2: ${Date.now() - started} ms: ${cmdline}`);
  t.regex(cmdline, /root=PARTLABEL=root-b /);
  t.like(await grubenv(), { slot: 'a', try_slot: 'b', boot_tries: '1' });

  // 3. Tries exhausted (the agent never committed): grub clears try_slot and boots slot a.
  await grubenv('boot_tries=0');
  started = Date.now();
  cmdline = await bootToKernelCmdline(img);
  t.log(`boot 3: ${Date.now() - started} ms: ${cmdline}`);
  t.regex(cmdline, /root=PARTLABEL=root-a /);
  t.like(await grubenv(), { slot: 'a', try_slot: '', boot_tries: '0' });

  // 4. Committed slot b (what the agent writes after its health gate) boots b with no trial.
  await grubenv('slot=b');
  cmdline = await bootToKernelCmdline(img);
  t.regex(cmdline, /root=PARTLABEL=root-b /);
  t.like(await grubenv(), { slot: 'b', try_slot: '', boot_tries: '0' });
});

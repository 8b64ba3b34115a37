/**
 * The Raspberry Pi 4 bootloader, as its documentation describes it (config_txt/autoboot.adoc),
 * played by the test for QEMU, which cannot run the Pi firmware: read autoboot.txt on partition 1,
 * take `[tryboot]`'s boot_partition when the one-shot tryboot flag was given and `[all]`'s
 * otherwise, and load the kernel, initrd and command line config.txt names on that partition. The
 * VM is `virt`, so the command line's console moves from the Pi's mini UART to the PL011.
 */
import { readFile, rm } from 'node:fs/promises';
import path from 'node:path';
import { readGpt, toolPath } from '../../builder/src/disk/index.ts';
import { run } from '../../builder/src/util/exec.ts';
import { parseAutoboot } from '../../firstboot/src/upgrade/core/slots.ts';
import { type BootedVm, bootImage, type DirectKernel, type VmNetwork } from './qemu.ts';

const MTOOLS = { env: { MTOOLS_SKIP_CHECK: '1' } };

/** A file of the FAT filesystem at `offsetBytes` of `raw`, copied to `out`. */
export async function fatCopy(raw: string, offsetBytes: number, name: string, out: string): Promise<string> {
  await rm(out, { force: true });
  await run(await toolPath('mcopy'), ['-n', '-i', `${raw}@@${offsetBytes}`, `::/${name}`, out], MTOOLS);
  return out;
}

/** What the bootloader would load from `raw`: the partition autoboot.txt picks, its kernel, initrd and command line. */
export async function piBootChoice(raw: string, work: string, tryboot: boolean): Promise<{ partition: number; direct: DirectKernel; cmdline: string }> {
  const gpt = await readGpt(raw);
  const at = (index: number) => {
    const p = gpt.partitions.find((x) => x.index === index);
    if (!p) throw new Error(`${raw} has no partition ${index}`);
    return p.offsetBytes;
  };
  const autoboot = parseAutoboot(await readFile(await fatCopy(raw, at(1), 'autoboot.txt', path.join(work, 'autoboot.txt')), 'utf8'));
  const partition = tryboot ? autoboot.tryboot : autoboot.all;
  const config = await readFile(await fatCopy(raw, at(partition), 'config.txt', path.join(work, 'config.txt')), 'utf8');
  const kernel = /^kernel=(\S+)$/m.exec(config)?.[1];
  const initrd = /^initramfs (\S+) followkernel$/m.exec(config)?.[1];
  const cmdlineFile = /^cmdline=(\S+)$/m.exec(config)?.[1] ?? 'cmdline.txt';
  if (!kernel || !initrd) throw new Error(`config.txt on partition ${partition} names no kernel or initramfs:\n${config}`);
  const cmdline = (await readFile(await fatCopy(raw, at(partition), cmdlineFile, path.join(work, 'cmdline.txt')), 'utf8')).trim();
  return {
    partition,
    cmdline,
    direct: {
      kernel: await fatCopy(raw, at(partition), kernel, path.join(work, 'kernel')),
      initrd: await fatCopy(raw, at(partition), initrd, path.join(work, 'initrd')),
      append: cmdline.replace(/(^| )console=ttyS1,115200( |$)/, '$1console=ttyAMA0,115200$2'),
    },
  };
}

/** Powers the VM on as the Pi bootloader would boot `raw`; QEMU exits when the guest reboots, so the next boot is chosen again. */
export async function piBoot(
  raw: string,
  work: string,
  o: { tryboot: boolean; network?: VmNetwork; memoryMiB?: number },
): Promise<{ vm: BootedVm; partition: number; cmdline: string }> {
  const choice = await piBootChoice(raw, work, o.tryboot);
  const vm = await bootImage(raw, work, {
    arch: 'arm64',
    direct: choice.direct,
    exitOnReboot: true,
    ...(o.network ? { network: o.network } : {}),
    ...(o.memoryMiB ? { memoryMiB: o.memoryMiB } : {}),
  });
  return { vm, partition: choice.partition, cmdline: choice.cmdline };
}

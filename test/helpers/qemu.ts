import { spawn, type ChildProcess } from 'node:child_process';
import { copyFile, readFile, rm, stat } from 'node:fs/promises';
import path from 'node:path';

/**
 * The virtual machine of each image arch: Debian's emulator, a machine type, and Debian's UEFI
 * firmware (read-only code plus a per-VM writable copy of the variable store). On arm64, `virt`
 * with a PL011 UART (ttyAMA0) and AAVMF; cortex-a72 rather than `max`, whose pointer
 * authentication QEMU emulates slowly under TCG.
 */
const MACHINES = {
  amd64: {
    qemu: ['qemu-system-x86_64', 'qemu-system-x86'],
    machine: ['-machine', 'q35', '-cpu', 'max'],
    code: ['/usr/share/OVMF/OVMF_CODE_4M.fd', 'ovmf'],
    vars: '/usr/share/OVMF/OVMF_VARS_4M.fd',
  },
  arm64: {
    qemu: ['qemu-system-aarch64', 'qemu-system-arm'],
    machine: ['-machine', 'virt', '-cpu', 'cortex-a72'],
    code: ['/usr/share/AAVMF/AAVMF_CODE.fd', 'qemu-efi-aarch64'],
    vars: '/usr/share/AAVMF/AAVMF_VARS.fd',
  },
} as const;
export type VmArch = keyof typeof MACHINES;

export interface BootedVm {
  consoleFile: string;
  /** Resolves with the console text once every pattern has appeared; rejects on timeout or exit. */
  waitFor(patterns: RegExp[], timeoutMs: number): Promise<string>;
  /** Resolves once QEMU has exited on its own (with `exitOnReboot`, the guest rebooted); rejects after `timeoutMs`. */
  exited(timeoutMs: number): Promise<void>;
  /** Pulls the power: SIGKILL to QEMU, no guest shutdown; resolves once QEMU is gone (at most 10 s). */
  kill(): Promise<void>;
  stop(): Promise<void>;
}

/** The emulator of `arch`, and its UEFI firmware unless the kernel is loaded directly. */
export async function requireQemu(arch: VmArch = 'amd64', firmware = true): Promise<void> {
  const m = MACHINES[arch];
  const needed: (readonly [string, string])[] = [[`/usr/bin/${m.qemu[0]}`, m.qemu[1]], ...(firmware ? [m.code] : [])];
  for (const [file, pkg] of needed) {
    await stat(file).catch(() => {
      throw new Error(`${file} is missing: apt-get install ${pkg} (or run \`make deps\`)`);
    });
  }
}

/** A virtio NIC on an existing tap device; QEMU then runs inside `netns` (where the tap lives). */
export interface VmNetwork {
  /** Tap device, created (and attached to a bridge) by the caller. */
  tap: string;
  /** Distinct per VM on one L2, e.g. 52:54:00:00:00:01. */
  mac: string;
  /** Network namespace holding the tap: QEMU is started with `ip netns exec <netns>`. */
  netns?: string;
}

/**
 * A kernel QEMU loads itself instead of the firmware (a Raspberry Pi image's, whose firmware QEMU
 * cannot run): the files the Pi firmware would load from the boot partition, and its command line.
 */
export interface DirectKernel {
  kernel: string;
  initrd: string;
  append: string;
}

/**
 * Boots a raw disk image under TCG (KVM is not usable here) with UEFI firmware, or with `direct`
 * its kernel and initrd, and records the serial console to a file the test can read. No network
 * unless `network` names a tap device.
 */
export async function bootImage(
  image: string,
  workDir: string,
  opts: {
    memoryMiB?: number;
    cpus?: number;
    network?: VmNetwork;
    arch?: VmArch;
    direct?: DirectKernel;
    /** QEMU exits when the guest reboots (-no-reboot), so the caller can pick what boots next, as a bootloader would. */
    exitOnReboot?: boolean;
  } = {},
): Promise<BootedVm> {
  const m = MACHINES[opts.arch ?? 'amd64'];
  await requireQemu(opts.arch, opts.direct === undefined);
  let boot: string[];
  if (opts.direct) {
    boot = ['-kernel', opts.direct.kernel, '-initrd', opts.direct.initrd, '-append', opts.direct.append];
  } else {
    const vars = path.join(workDir, 'UEFI_VARS.fd');
    await copyFile(m.vars, vars);
    boot = ['-drive', `if=pflash,format=raw,readonly=on,file=${m.code[0]}`, '-drive', `if=pflash,format=raw,file=${vars}`];
  }
  const consoleFile = path.join(workDir, 'console.log');
  // A console left by an earlier boot would satisfy waitFor before this VM prints anything.
  await rm(consoleFile, { force: true });
  const net = opts.network;
  // romfile= drops the iPXE option ROM: the firmware never tries a network boot before the disk.
  const nic = net
    ? ['-netdev', `tap,id=n0,ifname=${net.tap},script=no,downscript=no`, '-device', `virtio-net-pci,netdev=n0,mac=${net.mac},romfile=`]
    : ['-nic', 'none'];
  const qemu = [
    m.qemu[0],
    '-accel',
    'tcg',
    ...m.machine,
    '-smp',
    String(opts.cpus ?? 2),
    '-m',
    String(opts.memoryMiB ?? 1536),
    '-display',
    'none',
    '-monitor',
    'none',
    ...nic,
    ...boot,
    '-drive',
    `file=${image},format=raw,if=virtio,cache=unsafe`,
    '-serial',
    `file:${consoleFile}`,
    ...(opts.exitOnReboot ? ['-no-reboot'] : []),
  ];
  // `ip netns exec` execs QEMU in place, so the child's pid (and its signals) are QEMU's.
  const argv = net?.netns ? ['ip', 'netns', 'exec', net.netns, ...qemu] : qemu;
  const child: ChildProcess = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => {
    stderr += d.toString();
  });
  let exited = false;
  child.on('exit', () => {
    exited = true;
  });

  const readConsole = () => readFile(consoleFile, 'utf8').catch(() => '');
  return {
    consoleFile,
    async waitFor(patterns, timeoutMs) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const text = await readConsole();
        if (patterns.every((p) => p.test(text))) return text;
        if (exited)
          throw new Error(
            `QEMU exited before the console showed ${patterns.filter((p) => !p.test(text)).join(', ')}\n${stderr}\n--- console tail ---\n${text.slice(-3000)}`,
          );
        if (Date.now() > deadline)
          throw new Error(
            `timed out after ${timeoutMs / 1000} s waiting for ${patterns.filter((p) => !p.test(text)).join(', ')}\n--- console tail ---\n${text.slice(-3000)}`,
          );
        await new Promise((r) => setTimeout(r, 1000));
      }
    },
    async exited(timeoutMs) {
      if (exited) return;
      const gone = new Promise((r) => child.once('exit', r));
      const timer = new Promise((_, reject) => setTimeout(() => reject(new Error(`QEMU still runs after ${timeoutMs / 1000} s`)), timeoutMs).unref());
      await Promise.race([gone, timer]);
    },
    async kill() {
      if (exited) return;
      const gone = new Promise((r) => child.once('exit', r));
      child.kill('SIGKILL');
      await Promise.race([gone, new Promise((r) => setTimeout(r, 10_000))]);
      if (!exited) throw new Error(`QEMU (pid ${child.pid}) still runs 10 s after SIGKILL`);
    },
    async stop() {
      if (exited) return;
      const gone = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      await Promise.race([gone, new Promise((r) => setTimeout(r, 5000))]);
      if (!exited) child.kill('SIGKILL');
    },
  };
}

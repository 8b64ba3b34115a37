/**
 * grub (UEFI) boot configuration for the geminik8s A/B layout — pure rendering, no I/O
 * except the explicit template loaders at the bottom.
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import Handlebars from 'handlebars';
import { assertCmdlineWord } from './cmdline.ts';
import { FS_LABEL, type Arch } from './layout.ts';

export interface GrubTarget {
  /** grub platform directory under /usr/lib/grub. */
  platform: 'x86_64-efi' | 'arm64-efi';
  /** Removable-media file name under /EFI/BOOT. */
  efiName: 'BOOTX64.EFI' | 'BOOTAA64.EFI';
  /** Debian package that provides the platform's modules. */
  debianPackage: string;
  /** Default kernel consoles, in order: the last one becomes /dev/console, where the agent and systemd report, so a headless box's serial port goes last. */
  consoles: string[];
}

export const GRUB_TARGETS: Record<Arch, GrubTarget> = {
  amd64: { platform: 'x86_64-efi', efiName: 'BOOTX64.EFI', debianPackage: 'grub-efi-amd64-bin', consoles: ['tty0', 'ttyS0,115200'] },
  arm64: { platform: 'arm64-efi', efiName: 'BOOTAA64.EFI', debianPackage: 'grub-efi-arm64-bin', consoles: ['tty0', 'ttyAMA0,115200'] },
};

/**
 * Modules built into the EFI binary. Everything grub.cfg uses is built in, so no module directory
 * (and no memdisk) is needed on the ESP.
 */
export function grubModules(arch: Arch): string[] {
  void arch; // same set on x86_64-efi and arm64-efi
  return [
    'part_gpt', 'fat', 'ext2', 'linux', 'normal', 'configfile', 'loadenv', 'regexp', 'search', 'test', 'echo',
    'all_video', 'efi_gop', 'serial', 'terminal', 'boot', 'sleep', 'reboot', 'halt', 'ls', 'cat',
  ];
}

export interface SlotSpec {
  /** GPT partition name, which is also what the kernel gets as root=PARTLABEL=… */
  label: string;
  /** grub partition name on the boot disk. */
  part: string;
}

export interface GrubCfgValues {
  arch: Arch;
  /** Menu timeout in seconds (default 1). */
  timeout?: number;
  /** Kernel consoles (default per arch, e.g. tty0 then ttyS0,115200). */
  consoles?: string[];
  /** Extra kernel command line words, appended last. */
  cmdlineExtra?: string[];
  /** grub serial terminal (default unit 0 at 115200); null disables it. */
  serial?: { unit: number; speed: number } | null;
  slotA?: SlotSpec;
  slotB?: SlotSpec;
  /** Highest boot_tries value grub understands (if-chain length, default 9). */
  maxTries?: number;
}

export function kernelCmdline(values: Pick<GrubCfgValues, 'arch' | 'consoles' | 'cmdlineExtra'>): string {
  const consoles = values.consoles ?? GRUB_TARGETS[values.arch].consoles;
  // panic=10: a kernel panic, or an initramfs that cannot mount the root (initramfs-tools honours
  // panic= instead of dropping to a shell), reboots after 10 s, so a trial slot that never reaches
  // the agent spends grub's boot tries and the box falls back to its committed slot on its own.
  const words = ['ro', 'rootwait', 'panic=10', ...consoles.map((c) => `console=${c}`), ...(values.cmdlineExtra ?? [])];
  return words.map(assertCmdlineWord).join(' ');
}

const compile = (text: string) => Handlebars.compile(text, { noEscape: true, strict: true });

export function renderGrubCfg(template: string, values: GrubCfgValues): string {
  const maxTries = values.maxTries ?? 9;
  if (!Number.isInteger(maxTries) || maxTries < 1 || maxTries > 99) throw new RangeError(`maxTries must be 1..99, got ${maxTries}`);
  const timeout = values.timeout ?? 1;
  if (!Number.isInteger(timeout) || timeout < 0) throw new RangeError(`timeout must be an integer >= 0, got ${timeout}`);
  const slotA = values.slotA ?? { label: 'root-a', part: 'gpt2' };
  const slotB = values.slotB ?? { label: 'root-b', part: 'gpt3' };
  for (const s of [slotA, slotB]) {
    if (!/^[A-Za-z0-9_-]+$/.test(s.label) || !/^(gpt|msdos)[0-9]+$/.test(s.part)) throw new Error(`bad slot spec ${JSON.stringify(s)}`);
  }
  const serial = values.serial === undefined ? { unit: 0, speed: 115200 } : values.serial;
  const triesChain = [];
  for (let n = maxTries; n >= 1; n--) triesChain.push({ from: n, to: n - 1 });
  return compile(template)({
    timeout,
    serial,
    slotA,
    slotB,
    maxTries,
    triesChain,
    cmdline: kernelCmdline(values),
  });
}

export function renderEarlyCfg(template: string, arch: Arch, espLabel: string = FS_LABEL.esp): string {
  // Comment lines are dropped: grub's embedded-config reader trips over some of them ("Unknown command `#'").
  return compile(template)({ efiName: GRUB_TARGETS[arch].efiName, espLabel })
    .split('\n')
    .filter((l) => !/^\s*#/.test(l))
    .join('\n');
}

/** Directory holding the grub templates (image/grub). */
export const GRUB_TEMPLATE_DIR = fileURLToPath(new URL('../grub/', import.meta.url));

export function loadGrubTemplates(): { grubCfg: string; earlyCfg: string } {
  return {
    grubCfg: readFileSync(`${GRUB_TEMPLATE_DIR}grub.cfg.hbs`, 'utf8'),
    earlyCfg: readFileSync(`${GRUB_TEMPLATE_DIR}early.cfg.hbs`, 'utf8'),
  };
}

/**
 * Raspberry Pi 4 boot files, pure: config.txt and the recipe of a slot's boot partition
 * (firstboot/src/upgrade/core/rpi-boot.ts) from what a root holds. Debian's raspi-firmware ships the
 * firmware (/usr/lib/raspi-firmware), linux-image-arm64 the kernel and the mainline device trees;
 * Debian's own kernel hooks that copy them to /boot/firmware are not used (the image has no such
 * partition: each slot has its own, built from this recipe).
 */
import type { RpiBootRecipe } from '../../firstboot/src/upgrade/core/rpi-boot.ts';
import { kernelCmdline } from './grub.ts';

/** Where raspi-firmware installs the firmware, relative to the root. */
export const RPI_FIRMWARE_DIR = 'usr/lib/raspi-firmware';

/**
 * The Pi 4 firmware (start4.elf with its matching fixup4.dat), and start.elf/fixup.dat: the
 * bootloader counts a FAT partition as bootable when it holds start.elf (autoboot.txt's
 * documentation), whichever firmware it then loads.
 */
export const RPI_FIRMWARE_FILES = ['start4.elf', 'fixup4.dat', 'start.elf', 'fixup.dat'] as const;

/**
 * Mainline device trees of the boards this image is for, as the firmware names them with
 * upstream_kernel=1: Pi 4 B and Pi 400 by their model, the CM4 (on its IO board) through config.txt.
 */
export const RPI_DEVICE_TREES = { pi4: 'bcm2711-rpi-4-b.dtb', pi400: 'bcm2711-rpi-400.dtb', cm4: 'bcm2711-rpi-cm4-io.dtb' } as const;

/** The names on the boot partition of the kernel and initrd the firmware loads. */
export const RPI_KERNEL = 'vmlinuz';
export const RPI_INITRD = 'initrd.img';

/** config.txt, the same in both slots: it names files on its own partition, never a partition. */
export function rpiConfigTxt(o: { cm4: boolean }): string {
  return [
    '# geminik8s: Raspberry Pi 4 firmware settings, the same in both slots. autoboot.txt on partition 1',
    '# picks the slot\'s partition; with tryboot_a_b=1 a trial boot reads this file too.',
    '[all]',
    'arm_64bit=1',
    `kernel=${RPI_KERNEL}`,
    `initramfs ${RPI_INITRD} followkernel`,
    'cmdline=cmdline.txt',
    '# The console is the UART on GPIO 14/15 (ttyS1 under the mainline kernel); this also fixes the',
    '# core clock its baud rate depends on.',
    'enable_uart=1',
    "# Debian's kernel is mainline, not Raspberry Pi's: mainline device-tree names.",
    'upstream_kernel=1',
    ...(o.cm4 ? ['[cm4]', `device_tree=${RPI_DEVICE_TREES.cm4}`, '[all]'] : []),
    '',
  ].join('\n');
}

export interface RpiRootFacts {
  /** The kernel and initrd of the root, relative to it (boot/vmlinuz-<version>, boot/initrd.img-<version>). */
  kernel: string;
  initrd: string;
  /** The directory of the kernel's device trees, relative to the root (usr/lib/linux-image-<version>). */
  deviceTreeDir: string;
  /** Which of {@link RPI_DEVICE_TREES} are in deviceTreeDir/broadcom. */
  deviceTrees: string[];
  /** Which of {@link RPI_FIRMWARE_FILES} are in {@link RPI_FIRMWARE_DIR}. */
  firmware: string[];
}

/** The boot recipe of a root, or why the root cannot boot a Pi 4 (naming the package to add). */
export function rpiBootRecipe(facts: RpiRootFacts, o: { consoles: string[]; cmdlineExtra: string[] }): RpiBootRecipe {
  const missingFirmware = RPI_FIRMWARE_FILES.filter((f) => !facts.firmware.includes(f));
  if (missingFirmware.length > 0)
    throw new Error(`the root has no ${missingFirmware.join(', ')} in /${RPI_FIRMWARE_DIR}: list raspi-firmware in the hardware definition's packages`);
  if (!facts.deviceTrees.includes(RPI_DEVICE_TREES.pi4))
    throw new Error(`the root's kernel has no ${RPI_DEVICE_TREES.pi4} in /${facts.deviceTreeDir}/broadcom: the kernel package must be an arm64 one with Raspberry Pi 4 support (linux-image-arm64)`);
  const cmdline = kernelCmdline({ arch: 'arm64', consoles: o.consoles, cmdlineExtra: o.cmdlineExtra }).split(' ');
  return {
    files: [
      ...RPI_FIRMWARE_FILES.map((f) => ({ from: `${RPI_FIRMWARE_DIR}/${f}`, to: f })),
      { from: facts.kernel, to: RPI_KERNEL },
      { from: facts.initrd, to: RPI_INITRD },
      ...Object.values(RPI_DEVICE_TREES)
        .filter((d) => facts.deviceTrees.includes(d))
        .map((d) => ({ from: `${facts.deviceTreeDir}/broadcom/${d}`, to: d })),
    ],
    configTxt: rpiConfigTxt({ cm4: facts.deviceTrees.includes(RPI_DEVICE_TREES.cm4) }),
    cmdline,
  };
}

/**
 * The bootloader side of A/B, behind one small interface: read the slot state, set the next one,
 * find a slot's partition, and how to reboot into what was set. Two backends: grub (grubenv on the
 * ESP, UEFI machines) and the Raspberry Pi bootloader's tryboot (autoboot.txt on the first FAT
 * partition); the image's facts say which (`bootloader`). Decisions stay in upgrade/core/slots.ts.
 */
import { open, readFile } from 'node:fs/promises';
import { writeFileAtomic } from '../adapters/atomic-file.ts';
import { readPartitionTable } from '../adapters/disk.ts';
import { runTool } from '../adapters/exec.ts';
import { fillRpiBootPartition } from './rpi-boot-partition.ts';
import { GRUB_UNBOOTED_TRIAL, TRYBOOT_UNBOOTED_TRIAL } from './core/lifecycle.ts';
import {
  type BootPartitions,
  bootedSlotFromCmdline,
  GRUBENV_BYTES,
  grubSlotState,
  grubVarsFor,
  parseGrubenv,
  renderAutoboot,
  renderGrubenv,
  type Slot,
  type SlotState,
  trybootRebootArgument,
  trybootSlotState,
} from './core/slots.ts';

export interface SlotBackend {
  readonly kind: 'grub' | 'tryboot';
  state(): Promise<SlotState>;
  /** Makes `next` what the bootloader does from the next boot on, durably (synced before it returns). */
  set(next: Omit<SlotState, 'booted'>): Promise<void>;
  /** The block device of `slot` on the disk this system booted from, and its size. */
  device(slot: Slot): Promise<{ path: string; bytes: number }>;
  /**
   * Makes a root just written to `slot` bootable, before the trial is set: nothing under grub
   * (grub.cfg boots the kernel inside the root); on a Pi, that slot's boot partition, filled from
   * the new root's boot recipe.
   */
  prepare(slot: Slot): Promise<void>;
  /** What `systemctl reboot` must be given for the next boot to be what `set` made it. */
  rebootArguments(): Promise<string[]>;
  /** Why a trial that is set did not boot, in this bootloader's terms (the upgrade record's reason). */
  readonly unbootedTrial: string;
}

/** The backend of an image's `bootloader` fact (hardware definition: grub-efi or rpi-tryboot). */
export function slotBackendFor(bootloader: 'grub-efi' | 'rpi-tryboot' | undefined): SlotBackend {
  return bootloader === 'rpi-tryboot' ? trybootBackend() : grubBackend();
}

export interface GrubPaths {
  /** The grub environment block on the ESP, where the image's fstab mounts it (BOOT_STATE_MOUNT in image/src/layout.ts). */
  grubenv: string;
  cmdline: string;
}

export const GRUB_PATHS: GrubPaths = { grubenv: '/boot/efi/grub/grubenv', cmdline: '/proc/cmdline' };

async function booted(cmdlineFile: string): Promise<Slot> {
  const cmdline = await readFile(cmdlineFile, 'utf8');
  const slot = bootedSlotFromCmdline(cmdline);
  if (!slot) throw new Error(`${cmdlineFile} names no A/B root (root=PARTLABEL=root-a|root-b): this system was not booted from a geminik8s slot`);
  return slot;
}

async function readGrubenv(file: string): Promise<Map<string, string>> {
  const block = await readFile(file).catch((e: NodeJS.ErrnoException) => {
    throw new Error(`${file}: cannot read the grub environment (${e.code ?? e.message}); is the ESP mounted?`);
  });
  try {
    return parseGrubenv(block);
  } catch (e) {
    throw new Error(`${file}: ${(e as Error).message}`);
  }
}

export function grubBackend(paths: GrubPaths = GRUB_PATHS): SlotBackend {
  return {
    kind: 'grub',
    async state() {
      const slot = await booted(paths.cmdline);
      return grubSlotState(await readGrubenv(paths.grubenv), slot);
    },
    async set(next) {
      const block = renderGrubenv(grubVarsFor(await readGrubenv(paths.grubenv), next));
      // In place, never a new file: grub's save_env rewrites these same 1024 bytes on disk and
      // needs the file to keep its size and its blocks.
      const fh = await open(paths.grubenv, 'r+');
      try {
        const { bytesWritten } = await fh.write(block, 0, GRUBENV_BYTES, 0);
        if (bytesWritten !== GRUBENV_BYTES) throw new Error(`${paths.grubenv}: wrote ${bytesWritten} of ${GRUBENV_BYTES} bytes`);
        await fh.sync();
      } finally {
        await fh.close();
      }
    },
    async device(slot) {
      return slotPartition(`root-${slot}`);
    },
    async prepare() {},
    async rebootArguments() {
      // grub's counter and try_slot are in grubenv: a plain reboot boots the trial.
      return [];
    },
    unbootedTrial: GRUB_UNBOOTED_TRIAL,
  };
}

export interface TrybootPaths {
  /** autoboot.txt on the disk's first FAT partition, where the image's fstab mounts it (BOOT_STATE_MOUNT in image/src/layout.ts). */
  autoboot: string;
  cmdline: string;
  /** The partition numbers of boot-a and boot-b (default: read from the booted disk's table). */
  partitions?: () => Promise<BootPartitions>;
}

export const TRYBOOT_PATHS: TrybootPaths = { autoboot: '/boot/autoboot/autoboot.txt', cmdline: '/proc/cmdline' };

export function trybootBackend(paths: TrybootPaths = TRYBOOT_PATHS): SlotBackend {
  const partitions = paths.partitions ?? bootPartitionsOfRootDisk;
  const read = () =>
    readFile(paths.autoboot, 'utf8').catch((e: NodeJS.ErrnoException) => {
      throw new Error(`${paths.autoboot}: cannot read the bootloader's A/B file (${e.code ?? e.message}); is the first FAT partition mounted?`);
    });
  const state = async (): Promise<SlotState> => {
    const slot = await booted(paths.cmdline);
    const [text, parts] = [await read(), await partitions()];
    try {
      return trybootSlotState(text, parts, slot);
    } catch (e) {
      throw new Error(`${paths.autoboot}: ${(e as Error).message}`);
    }
  };
  return {
    kind: 'tryboot',
    state,
    async set(next) {
      // Old or new after a power cut, never a mix: the bootloader reads it before anything can repair it.
      writeFileAtomic(paths.autoboot, renderAutoboot(next, await partitions()));
    },
    async device(slot) {
      return slotPartition(`root-${slot}`);
    },
    async prepare(slot) {
      const boot = await slotPartition(`boot-${slot}`);
      await fillRpiBootPartition({ slot, rootDevice: (await slotPartition(`root-${slot}`)).path, bootDevice: boot.path, bootBytes: boot.bytes });
    },
    async rebootArguments() {
      // Unreadable state: a plain reboot, which boots the committed slot (the safe way back).
      const argument = trybootRebootArgument(await state().catch(() => ({ trying: null })));
      return argument === undefined ? [] : [`--reboot-argument=${argument}`];
    },
    unbootedTrial: TRYBOOT_UNBOOTED_TRIAL,
  };
}

/**
 * A partition of a disk, by its GPT name: its device, size, and number in the table (as a
 * bootloader counts). Read from the table on the disk itself, as the bootloader reads it (lsblk's
 * names come from udev), and the number from sysfs: Debian 12's lsblk (util-linux 2.38) has no PARTN.
 */
export async function partitionOnDisk(disk: string, partlabel: string): Promise<{ path: string; bytes: number; number: number }> {
  const table = await readPartitionTable(disk);
  const part = table.partitions?.find((p) => p.name === partlabel);
  if (!part) throw new Error(`${disk} has no partition named ${partlabel}`);
  const file = `/sys/class/block/${part.node.slice(part.node.lastIndexOf('/') + 1)}/partition`;
  const number = Number((await readFile(file, 'utf8').catch(() => '')).trim());
  if (!Number.isInteger(number) || number < 1) throw new Error(`${file}: no partition number for ${partlabel} (${part.node})`);
  return { path: part.node, bytes: part.size * (table.sectorsize ?? 512), number };
}

/** The partition named `partlabel` on the disk that holds the mounted root (never a same-named one on another disk). */
async function slotPartition(partlabel: string): Promise<{ path: string; bytes: number; number: number }> {
  const root = (await runTool('findmnt', ['-n', '-o', 'SOURCE', '/'])).stdout.trim();
  const disk = (JSON.parse((await runTool('lsblk', ['-J', '-d', '-o', 'PKNAME', root])).stdout) as { blockdevices: { pkname?: string | null }[] })
    .blockdevices[0]?.pkname;
  if (!disk) throw new Error(`the root ${root} is not a partition of a disk`);
  return partitionOnDisk(`/dev/${disk}`, partlabel);
}

/** The numbers the bootloader knows boot-a and boot-b by, from the booted disk's partition table. */
async function bootPartitionsOfRootDisk(): Promise<BootPartitions> {
  return { a: (await slotPartition('boot-a')).number, b: (await slotPartition('boot-b')).number };
}

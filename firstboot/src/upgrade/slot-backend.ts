/**
 * The bootloader side of A/B, behind one small interface: read the slot state, set the next one,
 * find a slot's partition. grub (grubenv on the ESP) is the backend today; the Raspberry Pi's
 * tryboot (autoboot.txt) plugs in beside it. Decisions stay in upgrade/core/slots.ts.
 */
import { open, readFile } from 'node:fs/promises';
import { runTool } from '../adapters/exec.ts';
import { bootedSlotFromCmdline, GRUBENV_BYTES, grubSlotState, grubVarsFor, parseGrubenv, renderGrubenv, type Slot, type SlotState } from './core/slots.ts';

export interface SlotBackend {
  readonly kind: string;
  state(): Promise<SlotState>;
  /** Makes `next` what the bootloader does from the next boot on, durably (synced before it returns). */
  set(next: Omit<SlotState, 'booted'>): Promise<void>;
  /** The block device of `slot` on the disk this system booted from, and its size. */
  device(slot: Slot): Promise<{ path: string; bytes: number }>;
}

export interface GrubPaths {
  /** The grub environment block on the ESP (fstab automounts the ESP at /boot/efi). */
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
  };
}

interface LsblkDevice {
  path: string;
  pkname?: string | null;
  partlabel?: string | null;
  size: number;
  type: string;
}

/** The partition named `partlabel` on the disk that holds the mounted root (never a same-named one on another disk). */
async function slotPartition(partlabel: string): Promise<{ path: string; bytes: number }> {
  const root = (await runTool('findmnt', ['-n', '-o', 'SOURCE', '/'])).stdout.trim();
  const lsblk = async (args: string[]) =>
    (JSON.parse((await runTool('lsblk', ['-J', '-l', '-b', '-o', 'PATH,PKNAME,PARTLABEL,SIZE,TYPE', ...args])).stdout) as { blockdevices: LsblkDevice[] })
      .blockdevices;
  const disk = (await lsblk(['-d', root]))[0]?.pkname;
  if (!disk) throw new Error(`the root ${root} is not a partition of a disk`);
  const part = (await lsblk([`/dev/${disk}`])).find((d) => d.type === 'part' && d.partlabel === partlabel);
  if (!part) throw new Error(`/dev/${disk} has no partition named ${partlabel}`);
  return { path: part.path, bytes: Number(part.size) };
}

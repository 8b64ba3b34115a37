/**
 * Fills a Raspberry Pi slot's boot partition from the root just written to that slot: the recipe
 * in the new root (upgrade/core/rpi-boot.ts) names its kernel, initrd, device trees and firmware,
 * and says what config.txt and cmdline.txt hold. A fresh FAT filesystem each time, so nothing of
 * the partition's earlier content survives. The new root is mounted read-only for the copy; the
 * FAT is written with mtools (the hardware definition lists it), as the builder writes boot-a. Nothing boots it until the trial is set, after this
 * returns: a power cut here leaves the committed slot as it was.
 */
import { lstat, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { FS_LABEL, fatSizeFor, MiB } from '../../../image/src/layout.ts';
import { runTool } from '../adapters/exec.ts';
import { parseRpiBootRecipe, RPI_BOOT_RECIPE, rpiBootPartition } from './core/rpi-boot.ts';
import type { Slot } from './core/slots.ts';

export interface RpiBootTarget {
  slot: Slot;
  /** The slot's root partition, holding the new root (ext4, not mounted). */
  rootDevice: string;
  /** The slot's boot partition and its size. */
  bootDevice: string;
  bootBytes: number;
  /** Where the two are mounted while this runs (default: the system's temporary folder). */
  scratch?: string;
}

/** Returns the names written to the boot partition. */
export async function fillRpiBootPartition(t: RpiBootTarget): Promise<string[]> {
  const dir = await mkdtemp(path.join(t.scratch ?? os.tmpdir(), 'gk8s-rpi-boot-'));
  const rootDir = path.join(dir, 'root');
  await mkdir(rootDir);
  let mounted = false;
  try {
    // noload: a read-only look at the new root never replays or writes its journal.
    await runTool('mount', ['-t', 'ext4', '-o', 'ro,noload', t.rootDevice, rootDir]);
    mounted = true;
    const recipeFile = path.join(rootDir, RPI_BOOT_RECIPE);
    const recipe = parseRpiBootRecipe(
      await readFile(recipeFile, 'utf8').catch((e: NodeJS.ErrnoException) => {
        throw new Error(`the new root in slot ${t.slot} has no /${RPI_BOOT_RECIPE} (${e.code ?? e.message}): it was not built for a Raspberry Pi`);
      }),
    );
    const content = rpiBootPartition(recipe, t.slot);
    for (const c of content.copies) {
      // A link would lead out of the new root (into the running system's files).
      if (!(await lstat(path.join(rootDir, c.from)).catch(() => undefined))?.isFile())
        throw new Error(`the new root in slot ${t.slot}: /${c.from}, which its boot recipe names, is not a regular file`);
    }
    // mtools writes the FAT on the partition itself, as the builder writes boot-a's: no FAT driver
    // or mount needed, and nothing but this partition changes.
    const label = FS_LABEL[`boot-${t.slot}`];
    await runTool('mkfs.vfat', ['-F', String(fatSizeFor(t.bootBytes / MiB)), '-n', label, t.bootDevice]);
    const mtools = { env: { MTOOLS_SKIP_CHECK: '1' } };
    for (const c of content.copies) await runTool('mcopy', ['-i', t.bootDevice, path.join(rootDir, c.from), `::/${c.to}`], mtools);
    for (const w of content.written) {
      const file = path.join(dir, w.name);
      await writeFile(file, w.content);
      await runTool('mcopy', ['-i', t.bootDevice, file, `::/${w.name}`], mtools);
    }
    // Durable before the trial is set: the firmware reads this partition on the next boot.
    await runTool('sync', [t.bootDevice]);
    return [...content.copies.map((c) => c.to), ...content.written.map((w) => w.name)];
  } finally {
    if (mounted) await runTool('umount', [rootDir]).catch(() => undefined);
    await rm(dir, { recursive: true, force: true });
  }
}

/**
 * A Raspberry Pi slot's boot partition, pure: which files of that slot's root it holds and the two
 * it gets written. The Pi firmware loads the kernel, initrd and device tree from the FAT partition
 * autoboot.txt names, not from the root, so each slot has its own boot partition (boot-a, boot-b)
 * and its content comes from the root it boots: the builder writes the recipe into every root
 * (RPI_BOOT_RECIPE) and fills boot-a from it, and an upgrade fills the other slot's boot partition
 * from the recipe in the root it has just written. The same root thus always boots with its own
 * kernel, and a rollback brings both back.
 */
import { CMDLINE_WORD } from '../../../../image/src/cmdline.ts';
import type { Slot } from './slots.ts';

/** Where the recipe lives in a root tree (relative to the root). */
export const RPI_BOOT_RECIPE = 'usr/lib/geminik8s/rpi-boot.json';

export interface RpiBootRecipe {
  /** Files copied from the root (a relative path in it) to the boot partition (a plain file name). */
  files: { from: string; to: string }[];
  /** config.txt, the same for both slots (it names files, never a partition). */
  configTxt: string;
  /** The kernel command line after root=, e.g. ["ro", "rootwait", "console=ttyS1,115200"]. */
  cmdline: string[];
}

/** What a slot's boot partition is made of: files copied from its root, and files written. */
export interface RpiBootPartition {
  copies: { from: string; to: string }[];
  written: { name: string; content: string }[];
}

const ROOT_PATH = /^(?!\/)(?!.*(^|\/)\.\.?(\/|$))[A-Za-z0-9._+/-]+$/;
/** FAT names the firmware reads: one level, no path. */
const BOOT_NAME = /^[A-Za-z0-9._+-]+$/;

/** cmdline.txt for a slot: one line, as the firmware reads it; root= names the slot's own root partition. */
export function cmdlineTxt(recipe: Pick<RpiBootRecipe, 'cmdline'>, slot: Slot): string {
  return `${[`root=PARTLABEL=root-${slot}`, ...recipe.cmdline].join(' ')}\n`;
}

export function rpiBootPartition(recipe: RpiBootRecipe, slot: Slot): RpiBootPartition {
  return {
    copies: recipe.files.map((f) => ({ ...f })),
    written: [
      { name: 'config.txt', content: recipe.configTxt },
      { name: 'cmdline.txt', content: cmdlineTxt(recipe, slot) },
    ],
  };
}

/** Reads and checks a recipe (from a root the box is about to boot: refuse what it cannot act on). */
export function parseRpiBootRecipe(text: string): RpiBootRecipe {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (e) {
    throw new Error(`${RPI_BOOT_RECIPE}: not JSON (${(e as Error).message})`);
  }
  const r = v as Partial<RpiBootRecipe> | null;
  const problem = (what: string) => new Error(`${RPI_BOOT_RECIPE}: ${what}`);
  if (r === null || typeof r !== 'object') throw problem('expected an object');
  if (!Array.isArray(r.files) || r.files.length === 0) throw problem('expected "files", a non-empty list');
  const names = new Set<string>();
  for (const [i, f] of r.files.entries()) {
    if (typeof f?.from !== 'string' || !ROOT_PATH.test(f.from))
      throw problem(`files[${i}].from: expected a relative path inside the root, found ${JSON.stringify(f?.from)}`);
    if (typeof f.to !== 'string' || !BOOT_NAME.test(f.to)) throw problem(`files[${i}].to: expected a plain file name, found ${JSON.stringify(f.to)}`);
    if (names.has(f.to.toLowerCase())) throw problem(`files[${i}].to: ${f.to} twice (FAT names ignore case)`);
    names.add(f.to.toLowerCase());
  }
  for (const written of ['config.txt', 'cmdline.txt']) if (names.has(written)) throw problem(`files: ${written} is written from the recipe, not copied`);
  if (typeof r.configTxt !== 'string' || r.configTxt === '') throw problem('expected "configTxt", the text of config.txt');
  if (!Array.isArray(r.cmdline) || !r.cmdline.every((w) => typeof w === 'string' && CMDLINE_WORD.test(w) && !w.startsWith('root=')))
    throw problem('expected "cmdline", kernel command line words without spaces and without root=');
  return { files: r.files, configTxt: r.configTxt, cmdline: r.cmdline };
}

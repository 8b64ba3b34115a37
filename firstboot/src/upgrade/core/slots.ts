/**
 * The A/B protocol, pure: which slot booted, what the bootloader will boot next, and the grub
 * environment block that holds it (image/README.md, "A/B protocol"). A backend (grub today, the
 * Raspberry Pi's tryboot later) maps its own files to {@link SlotState} and back; everything that
 * decides (commit, roll back, give up) works on SlotState only.
 */

export type Slot = 'a' | 'b';

export interface SlotState {
  /** The slot the running kernel's root came from. */
  booted: Slot;
  /** The slot the bootloader boots by default and falls back to. */
  committed: Slot;
  /** A slot on trial (boot-once with a counter), or null. */
  trying: Slot | null;
  /** Boots the trial slot has left. */
  triesLeft: number;
}

export const BOOT_TRIES = 3;

export function otherSlot(s: Slot): Slot {
  return s === 'a' ? 'b' : 'a';
}

/** The booted slot from the kernel command line (`root=PARTLABEL=root-a|root-b`, written by grub.cfg and cmdline.txt). */
export function bootedSlotFromCmdline(cmdline: string): Slot | undefined {
  const m = /(?:^|\s)root=PARTLABEL=root-([ab])(?:\s|$)/.exec(cmdline);
  return m ? (m[1] as Slot) : undefined;
}

/** Is the running system a trial boot that has not been committed yet? */
export function onTrial(s: SlotState): boolean {
  return s.trying === s.booted && s.committed !== s.booted;
}

// --- grub environment block -------------------------------------------------------------------

export const GRUBENV_BYTES = 1024;
const GRUBENV_HEADER = '# GRUB Environment Block\n';
/** What this module writes as a value: grub escapes `\` and newlines, and nothing here needs them. */
const PLAIN_VALUE = /^[A-Za-z0-9_.-]*$/;

/** Reads a grub environment block (grub-editenv's format); throws on anything else. */
export function parseGrubenv(block: Uint8Array): Map<string, string> {
  const text = Buffer.from(block).toString('latin1');
  if (block.length !== GRUBENV_BYTES) throw new Error(`grubenv must be ${GRUBENV_BYTES} bytes, found ${block.length}`);
  if (!text.startsWith(GRUBENV_HEADER)) throw new Error('grubenv has no "# GRUB Environment Block" header');
  const vars = new Map<string, string>();
  for (const line of text.slice(GRUBENV_HEADER.length).split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const eq = line.indexOf('=');
    if (eq <= 0) throw new Error(`grubenv line ${JSON.stringify(line.slice(0, 40))} is not name=value`);
    vars.set(line.slice(0, eq), line.slice(eq + 1));
  }
  return vars;
}

/** Writes a grub environment block: header, `name=value` lines, `#` padding to exactly 1024 bytes. */
export function renderGrubenv(vars: Map<string, string>): Buffer {
  let body = GRUBENV_HEADER;
  for (const [k, v] of vars) {
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(k) || !PLAIN_VALUE.test(v)) throw new Error(`grubenv: refusing to write ${JSON.stringify(`${k}=${v}`)}`);
    body += `${k}=${v}\n`;
  }
  if (body.length > GRUBENV_BYTES) throw new Error(`grubenv: ${body.length} bytes of variables do not fit ${GRUBENV_BYTES}`);
  return Buffer.from(body.padEnd(GRUBENV_BYTES, '#'), 'latin1');
}

const asSlot = (v: string | undefined): Slot | null => (v === 'a' || v === 'b' ? v : null);

/** The slot state grub.cfg acts on: `slot` (anything else is a), `try_slot`, `boot_tries`. */
export function grubSlotState(vars: Map<string, string>, booted: Slot): SlotState {
  const tries = Number(vars.get('boot_tries') ?? '0');
  return {
    booted,
    committed: asSlot(vars.get('slot')) ?? 'a',
    trying: asSlot(vars.get('try_slot')),
    triesLeft: Number.isInteger(tries) && tries >= 0 ? tries : 0,
  };
}

/** The variables for `next`: every other variable is kept, so a grubenv edited by hand keeps its extras. */
export function grubVarsFor(vars: Map<string, string>, next: Omit<SlotState, 'booted'>): Map<string, string> {
  const out = new Map(vars);
  out.set('slot', next.committed);
  out.set('try_slot', next.trying ?? '');
  out.set('boot_tries', String(next.trying ? next.triesLeft : 0));
  return out;
}

// --- transitions, the same for every backend -------------------------------------------------

/** Boot `slot` once (up to `tries` times), falling back to the committed slot. */
export function tryTransition(s: SlotState, slot: Slot, tries = BOOT_TRIES): Omit<SlotState, 'booted'> {
  if (slot === s.booted) throw new Error(`slot ${slot} is the running slot; an upgrade writes the other one`);
  return { committed: s.committed, trying: slot, triesLeft: tries };
}

/** The booted trial slot becomes the default. */
export function commitTransition(s: SlotState): Omit<SlotState, 'booted'> {
  return { committed: s.booted, trying: null, triesLeft: 0 };
}

/** No trial any more: the committed slot is what boots. */
export function abandonTransition(s: SlotState): Omit<SlotState, 'booted'> {
  return { committed: s.committed, trying: null, triesLeft: 0 };
}

// --- Raspberry Pi tryboot (autoboot.txt) ------------------------------------------------------
//
// The Pi bootloader reads autoboot.txt from the disk's first FAT partition: `boot_partition` in
// `[all]` is the partition it boots; after `reboot "0 tryboot"` (a one-shot flag the bootloader
// clears before it starts the firmware) the `[tryboot]` section's `boot_partition` wins, once.
// `tryboot_a_b=1` makes it read the normal config.txt there. Here: `[all]` names the committed
// slot's boot partition and `[tryboot]` the slot on trial, or the committed one again when none is,
// so a stray tryboot reboot boots the committed slot. A crash or power cut during the trial clears
// the flag: the next boot is the committed slot, the fallback grub's counter gives.

/** The partition number (1-based, as the bootloader counts) of each slot's boot partition. */
export type BootPartitions = Record<Slot, number>;

export const AUTOBOOT_MAX_BYTES = 512;

/**
 * The `boot_partition` the bootloader takes from an autoboot.txt in a normal boot and in a tryboot
 * one, evaluated as it does: lines in order, each applying while its filter passes (`[all]`
 * always, `[tryboot]` only in tryboot mode, `[none]` never), a later value replacing an earlier
 * one. Throws naming the line when the file is not one this module can act on.
 */
export function parseAutoboot(text: string): { all: number; tryboot: number } {
  if (Buffer.byteLength(text) > AUTOBOOT_MAX_BYTES)
    throw new Error(`autoboot.txt is ${Buffer.byteLength(text)} bytes; the bootloader reads ${AUTOBOOT_MAX_BYTES}`);
  const normal = new Map<string, string>();
  const tryboot = new Map<string, string>();
  let filter: 'all' | 'tryboot' | 'none' = 'all';
  for (const [i, raw] of text.split('\n').entries()) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    const section = /^\[([a-z0-9_]+)\]$/.exec(line)?.[1];
    if (section !== undefined) {
      if (section !== 'all' && section !== 'tryboot' && section !== 'none')
        throw new Error(`autoboot.txt line ${i + 1}: filter [${section}]; expected [all], [tryboot] or [none]`);
      filter = section;
      continue;
    }
    const kv = /^([a-z_]+)=(\S+)$/.exec(line);
    if (!kv) throw new Error(`autoboot.txt line ${i + 1}: ${JSON.stringify(line)} is not name=value`);
    if (filter === 'all') normal.set(kv[1]!, kv[2]!);
    if (filter !== 'none') tryboot.set(kv[1]!, kv[2]!);
  }
  if (normal.get('tryboot_a_b') !== '1') throw new Error('autoboot.txt: no tryboot_a_b=1 under [all] (A/B at the partition level)');
  const partition = (settings: Map<string, string>, mode: string): number => {
    const v = Number(settings.get('boot_partition'));
    if (!Number.isInteger(v) || v < 1)
      throw new Error(`autoboot.txt: the ${mode} boot's boot_partition is ${settings.get('boot_partition') ?? '(missing)'}; expected a partition number`);
    return v;
  };
  return { all: partition(normal, 'normal'), tryboot: partition(tryboot, 'tryboot') };
}

function slotOfPartition(partition: number, parts: BootPartitions, where: string): Slot {
  if (partition === parts.a) return 'a';
  if (partition === parts.b) return 'b';
  throw new Error(`autoboot.txt: the ${where} boot's boot_partition=${partition} is neither slot's boot partition (a: ${parts.a}, b: ${parts.b})`);
}

/** The slot state an autoboot.txt describes. Tryboot gives a trial one boot: triesLeft is 1 while one is set. */
export function trybootSlotState(text: string, parts: BootPartitions, booted: Slot): SlotState {
  const { all, tryboot } = parseAutoboot(text);
  const committed = slotOfPartition(all, parts, 'normal');
  const next = slotOfPartition(tryboot, parts, 'tryboot');
  const trying = next === committed ? null : next;
  return { booted, committed, trying, triesLeft: trying ? 1 : 0 };
}

/** The autoboot.txt for `next`. */
export function renderAutoboot(next: Omit<SlotState, 'booted' | 'triesLeft'>, parts: BootPartitions): string {
  const text = [
    '# geminik8s A/B (the agent rewrites this file): [all] boots the committed slot,',
    '# [tryboot] the slot on trial after `reboot "0 tryboot"`, once.',
    '[all]',
    'tryboot_a_b=1',
    `boot_partition=${parts[next.committed]}`,
    '[tryboot]',
    `boot_partition=${parts[next.trying ?? next.committed]}`,
    '',
  ].join('\n');
  if (Buffer.byteLength(text) > AUTOBOOT_MAX_BYTES)
    throw new Error(`autoboot.txt would be ${Buffer.byteLength(text)} bytes; the bootloader reads ${AUTOBOOT_MAX_BYTES}`);
  return text;
}

/**
 * The reboot(2) argument that makes the next boot the trial: partition 0 (autoboot.txt decides)
 * with the bootloader's tryboot flag. systemctl passes it with --reboot-argument.
 */
export function trybootRebootArgument(s: Pick<SlotState, 'trying'>): string | undefined {
  return s.trying ? '0 tryboot' : undefined;
}

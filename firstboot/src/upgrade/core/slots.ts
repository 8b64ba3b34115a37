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

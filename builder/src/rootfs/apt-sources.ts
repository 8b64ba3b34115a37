/**
 * Debian mirror detection from the build host's apt sources.
 *
 * The repository never names a registry host: the mirror comes from the host's
 * /etc/apt configuration unless the profile (`debian.mirror`) or the CLI (`--mirror`)
 * sets one. Pure parsing/picking lives here; `detectDebianMirror` is the thin shell
 * that reads the files.
 */
import { readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';

export interface AptSourceEntry {
  uri: string;
  suites: string[];
  components: string[];
  /** The file the entry came from (for messages). */
  file?: string;
}

export interface AptSourceFile {
  path: string;
  text: string;
}

export interface DebianMirrors {
  /** Main archive, e.g. `<scheme>://<host>/debian` (no trailing slash). */
  mirror: string;
  /** Security archive if the host has one configured. */
  securityMirror?: string;
  /** Where the mirror came from: an override or the file it was read from. */
  origin: string;
}

export class NoDebianMirrorError extends Error {
  constructor(detail?: string) {
    super("no Debian mirror in the build host's apt sources; set `debian.mirror` in the profile or pass --mirror" + (detail ? ` (${detail})` : ''));
    this.name = 'NoDebianMirrorError';
  }
}

const isTrue = (v: string | undefined): boolean => v === undefined || !/^(no|false|0|off)$/i.test(v.trim());

function normUri(uri: string): string {
  return uri.replace(/\/+$/, '');
}

/** Parses deb822 `.sources` text into its stanzas (field name lower-cased → value with continuations joined). */
function parseDeb822Stanzas(text: string): Record<string, string>[] {
  const stanzas: Record<string, string>[] = [];
  let cur: Record<string, string> = {};
  let last: string | undefined;
  const flush = (): void => {
    if (Object.keys(cur).length > 0) stanzas.push(cur);
    cur = {};
    last = undefined;
  };
  for (const raw of text.split(/\r?\n/)) {
    if (raw.trim() === '') {
      flush();
      continue;
    }
    if (raw.startsWith('#')) continue; // comments may sit inside a stanza
    if (/^[ \t]/.test(raw)) {
      if (last !== undefined) cur[last] = `${cur[last] ?? ''}\n${raw.trim()}`;
      continue;
    }
    const m = /^([A-Za-z0-9-]+):\s*(.*)$/.exec(raw);
    if (!m) continue;
    last = m[1]!.toLowerCase();
    cur[last] = m[2]!.trim();
  }
  flush();
  return stanzas;
}

const words = (v: string | undefined): string[] => (v ?? '').split(/\s+/).filter(Boolean);

function parseDeb822(file: AptSourceFile): AptSourceEntry[] {
  const out: AptSourceEntry[] = [];
  for (const s of parseDeb822Stanzas(file.text)) {
    if (!isTrue(s.enabled)) continue;
    if (!words(s.types).includes('deb')) continue;
    const suites = words(s.suites);
    const components = words(s.components);
    for (const uri of words(s.uris)) out.push({ uri: normUri(uri), suites, components, file: file.path });
  }
  return out;
}

function parseOneLine(file: AptSourceFile): AptSourceEntry[] {
  const out: AptSourceEntry[] = [];
  for (const raw of file.text.split(/\r?\n/)) {
    let line = raw.replace(/#.*$/, '').trim();
    if (!line) continue;
    const typeMatch = /^(deb|deb-src)\s+/.exec(line);
    if (typeMatch?.[1] !== 'deb') continue;
    line = line.slice(typeMatch[0].length);
    if (line.startsWith('[')) {
      const end = line.indexOf(']');
      if (end < 0) continue; // malformed options: apt would reject the line too
      line = line.slice(end + 1).trim();
    }
    const [uri, suite, ...components] = words(line);
    if (!uri || !suite) continue;
    out.push({ uri: normUri(uri), suites: [suite], components, file: file.path });
  }
  return out;
}

/** Parses apt source files; `.sources` files are deb822, everything else one-line format. Disabled and deb-src entries are dropped. */
export function parseAptSources(files: AptSourceFile[]): AptSourceEntry[] {
  return files.flatMap((f) => (f.path.endsWith('.sources') ? parseDeb822(f) : parseOneLine(f)));
}

const isSecuritySuite = (s: string, suite: string): boolean => s === `${suite}-security` || s === `${suite}/updates`;

/**
 * Picks Debian's main archive (the entry whose suites contain `suite` exactly and whose
 * components include `main`, not a security suite) and, if present, the security archive.
 * Returns undefined when no main archive is configured.
 */
export function pickDebianMirror(entries: AptSourceEntry[], suite = 'bookworm'): { mirror: string; securityMirror?: string; file?: string } | undefined {
  const main = entries.find(
    (e) => e.suites.includes(suite) && e.components.includes('main') && !e.suites.some((s) => isSecuritySuite(s, suite)) && /^(https?|file):/.test(e.uri),
  );
  if (!main) return undefined;
  const sec = entries.find((e) => e.suites.some((s) => isSecuritySuite(s, suite)) && e.components.includes('main') && /^(https?|file):/.test(e.uri));
  return { mirror: main.uri, ...(sec ? { securityMirror: sec.uri } : {}), ...(main.file ? { file: main.file } : {}) };
}

/** Reads the apt source files apt itself would read (sources.list, sources.list.d/*.list|*.sources). */
export async function readAptSourceFiles(aptDir = '/etc/apt'): Promise<AptSourceFile[]> {
  const files: AptSourceFile[] = [];
  const tryRead = async (path: string): Promise<void> => {
    try {
      files.push({ path, text: await readFile(path, 'utf8') });
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    }
  };
  await tryRead(join(aptDir, 'sources.list'));
  let names: string[] = [];
  try {
    names = await readdir(join(aptDir, 'sources.list.d'));
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
  }
  // apt ignores files whose name is not [A-Za-z0-9_.-]+ ending in .list/.sources (e.g. *.disabled, *.save).
  for (const n of names.sort()) {
    if (/^[A-Za-z0-9_.-]+\.(list|sources)$/.test(n)) await tryRead(join(aptDir, 'sources.list.d', n));
  }
  return files;
}

/**
 * Resolves the Debian mirror: an explicit override (profile `debian.mirror` or `--mirror`) wins;
 * otherwise the host's apt sources. Throws NoDebianMirrorError with the fix when nothing is found.
 */
export async function detectDebianMirror(opts: { suite?: string; override?: string; securityOverride?: string; aptDir?: string } = {}): Promise<DebianMirrors> {
  const suite = opts.suite ?? 'bookworm';
  if (opts.override) {
    return {
      mirror: normUri(opts.override),
      ...(opts.securityOverride ? { securityMirror: normUri(opts.securityOverride) } : {}),
      origin: 'override',
    };
  }
  const files = await readAptSourceFiles(opts.aptDir);
  const picked = pickDebianMirror(parseAptSources(files), suite);
  if (!picked) throw new NoDebianMirrorError(`looked for suite ${suite} with component main in ${files.map((f) => f.path).join(', ') || 'no files'}`);
  const securityMirror = opts.securityOverride ? normUri(opts.securityOverride) : picked.securityMirror;
  return { mirror: picked.mirror, ...(securityMirror ? { securityMirror } : {}), origin: picked.file ?? 'apt sources' };
}

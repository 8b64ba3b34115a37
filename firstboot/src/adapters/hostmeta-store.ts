import { mkdirSync, readFileSync, renameSync } from 'node:fs';
import { join } from 'node:path';
import { HOSTMETA_FILE, parseHostMeta, type HostMeta } from '../core/hostmeta.ts';
import { writeFileAtomic } from './atomic-file.ts';
import type { Logger } from './output.ts';

export function hostmetaPath(stateDir: string): string {
  return join(stateDir, HOSTMETA_FILE);
}

/**
 * Loads hostmeta.json. An unreadable record (only possible through disk corruption, since writes are
 * atomic) is moved aside to hostmeta.json.corrupt for inspection and the node starts a new record.
 */
export function loadHostMeta(stateDir: string, log: Logger): HostMeta | undefined {
  const path = hostmetaPath(stateDir);
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
  const parsed = parseHostMeta(text);
  if (parsed.ok) return parsed.meta;
  const aside = `${path}.corrupt`;
  renameSync(path, aside);
  log.event('error', 'hostmeta-corrupt', { path, movedTo: aside, reason: parsed.reason });
  return undefined;
}

export function storeHostMeta(stateDir: string, meta: HostMeta): string {
  mkdirSync(stateDir, { recursive: true, mode: 0o755 });
  const path = hostmetaPath(stateDir);
  writeFileAtomic(path, `${JSON.stringify(meta, null, 2)}\n`);
  return path;
}

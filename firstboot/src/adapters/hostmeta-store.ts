import { mkdirSync, readFileSync, renameSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { chooseIdentity, HOSTMETA_FILE, parseHostMeta, type HostMeta, type StoredRecord } from '../core/hostmeta.ts';
import { writeFileAtomic } from './atomic-file.ts';
import type { Logger } from './output.ts';

export function hostmetaPath(stateDir: string): string {
  return join(stateDir, HOSTMETA_FILE);
}

/** The copy kept beside the record (core/hostmeta.ts chooseIdentity says when it is used). */
function backupPath(stateDir: string): string {
  return `${hostmetaPath(stateDir)}.bak`;
}

function readRecord(path: string): StoredRecord {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return { kind: 'absent' };
    return { kind: 'unreadable', reason: (e as NodeJS.ErrnoException).code ?? (e as Error).message };
  }
  const parsed = parseHostMeta(text);
  return parsed.ok ? { kind: 'ok', meta: parsed.meta } : { kind: 'unreadable', reason: parsed.reason };
}

/** Present, or not known to be absent: a disk that answers EIO must not pass for an empty one. */
function mayExist(path: string): boolean {
  try {
    statSync(path);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code !== 'ENOENT';
  }
}

/** The agent will not start: its identity is lost on a box that holds the pair's data. */
export class IdentityRefused extends Error {}

/**
 * Loads the node's identity: hostmeta.json, else its backup; undefined for a new box. An unreadable
 * record (only possible through disk corruption, since writes are atomic) is moved aside to
 * hostmeta.json.corrupt for inspection. `pairData` lists the files whose presence means this box
 * holds the pair's data: then a lost identity throws IdentityRefused instead of starting a new one.
 */
export function loadHostMeta(stateDir: string, log: Logger, pairData: readonly string[]): HostMeta | undefined {
  const path = hostmetaPath(stateDir);
  const record = readRecord(path);
  if (record.kind === 'unreadable') {
    const aside = `${path}.corrupt`;
    try {
      renameSync(path, aside);
      log.event('error', 'hostmeta-corrupt', { path, movedTo: aside, reason: record.reason });
    } catch (e) {
      // A disk that will not even rename (read-only, failing): the backup still decides.
      log.event('error', 'hostmeta-corrupt', { path, reason: record.reason, movedTo: null, moveError: (e as Error).message });
    }
  }
  const backup = record.kind === 'ok' ? ({ kind: 'absent' } as const) : readRecord(backupPath(stateDir));
  const choice = chooseIdentity(record, backup, pairData.filter(mayExist));
  switch (choice.kind) {
    case 'continue':
      if (choice.from === 'backup') {
        log.event('warn', 'hostmeta-from-backup', { path: backupPath(stateDir), nodeId: choice.meta.nodeId, term: choice.meta.term });
        storeHostMeta(stateDir, choice.meta);
      }
      return choice.meta;
    case 'new':
      return undefined;
    case 'refuse':
      log.event('error', 'identity-refused', { path, reason: choice.reason });
      throw new IdentityRefused(`${path}: ${choice.reason}`);
  }
}

/**
 * Writes the record, then its backup: a readable record is always the newer of the two. The
 * backup is best-effort: once the record is written the transition has happened, and a failed
 * copy must not make it look as if it had not (the next write tries again).
 */
export function storeHostMeta(stateDir: string, meta: HostMeta): string {
  mkdirSync(stateDir, { recursive: true, mode: 0o755 });
  const path = hostmetaPath(stateDir);
  const text = `${JSON.stringify(meta, null, 2)}\n`;
  writeFileAtomic(path, text);
  try {
    writeFileAtomic(backupPath(stateDir), text);
  } catch {
    // See above: the record stands; its copy is refreshed by the next write.
  }
  return path;
}

/**
 * File helpers for provisioning: OS user lookup, owned directories and directory facts (atomic file
 * writes with owner and mode are adapters/atomic-file.ts).
 */
import { chmodSync, chownSync, existsSync, mkdirSync, readFileSync, readdirSync, renameSync, statSync } from 'node:fs';
import { dirname } from 'node:path';
import { fsyncDir } from '../adapters/atomic-file.ts';

export interface OsUser {
  name: string;
  uid: number;
  gid: number;
}

export function lookupUser(name: string): OsUser {
  const line = readFileSync('/etc/passwd', 'utf8')
    .split('\n')
    .find((l) => l.split(':')[0] === name);
  if (!line) throw new Error(`OS user ${name} does not exist (is the Debian package ${name === 'postgres' ? 'postgresql-15' : name} installed?)`);
  const f = line.split(':');
  return { name, uid: Number(f[2]), gid: Number(f[3]) };
}

/** mkdir -p (missing parents 0755, so other users can traverse them), then force owner and mode on the leaf. */
export function ensureDir(path: string, mode: number, owner?: OsUser): void {
  mkdirSync(path, { recursive: true, mode: 0o755 });
  if (owner) chownSync(path, owner.uid, owner.gid);
  chmodSync(path, mode);
}

export function isEmptyDir(path: string): boolean {
  return readdirSync(path).length === 0;
}

export function pathExists(path: string): boolean {
  return existsSync(path);
}

export function isDir(path: string): boolean {
  try {
    return statSync(path).isDirectory();
  } catch {
    return false;
  }
}

export function renameDurable(from: string, to: string): void {
  renameSync(from, to);
  fsyncDir(dirname(to));
}

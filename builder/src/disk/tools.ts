import { access, constants } from 'node:fs/promises';
import path from 'node:path';

/** Debian package that provides each external tool the disk code uses. */
export const TOOL_PACKAGES: Record<string, string> = {
  sfdisk: 'fdisk',
  'mkfs.vfat': 'dosfstools',
  mcopy: 'mtools',
  mmd: 'mtools',
  mdir: 'mtools',
  mtype: 'mtools',
  'mkfs.ext4': 'e2fsprogs',
  debugfs: 'e2fsprogs',
  dumpe2fs: 'e2fsprogs',
  e2fsck: 'e2fsprogs',
  'grub-mkimage': 'grub-common',
  'grub-editenv': 'grub-common',
  dd: 'coreutils',
  'qemu-system-x86_64': 'qemu-system-x86',
};

export class MissingToolError extends Error {
  constructor(
    readonly tool: string,
    readonly debianPackage: string,
  ) {
    super(`required tool "${tool}" not found (searched PATH, /usr/sbin, /sbin); install the Debian package: apt-get install ${debianPackage}`);
    this.name = 'MissingToolError';
  }
}

const cache = new Map<string, string>();

/**
 * Absolute path of `tool`. Looks in PATH and also /usr/sbin and /sbin, which are not on a
 * non-root user's PATH on Debian (sfdisk, mkfs.*, debugfs live there and work fine on image files).
 */
export async function toolPath(tool: string): Promise<string> {
  const hit = cache.get(tool);
  if (hit) return hit;
  const dirs = [...(process.env.PATH ?? '').split(path.delimiter).filter(Boolean), '/usr/local/sbin', '/usr/sbin', '/sbin'];
  for (const dir of dirs) {
    const candidate = path.join(dir, tool);
    try {
      await access(candidate, constants.X_OK);
      cache.set(tool, candidate);
      return candidate;
    } catch {
      // keep looking
    }
  }
  throw new MissingToolError(tool, TOOL_PACKAGES[tool] ?? tool);
}

/** Resolves all tools up front so a build fails before doing any work, naming every missing package. */
export async function requireTools(tools: readonly string[]): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  const missing: MissingToolError[] = [];
  for (const t of tools) {
    try {
      out[t] = await toolPath(t);
    } catch (e) {
      if (e instanceof MissingToolError) missing.push(e);
      else throw e;
    }
  }
  if (missing.length === 1) throw missing[0]!;
  if (missing.length > 1) {
    const pkgs = [...new Set(missing.map((m) => m.debianPackage))].join(' ');
    throw new Error(`required tools not found: ${missing.map((m) => m.tool).join(', ')}; install the Debian packages: apt-get install ${pkgs}`);
  }
  return out;
}

/** Fails with the Debian package name when a file another package provides is missing. */
export async function requireFile(file: string, debianPackage: string, what: string): Promise<string> {
  try {
    await access(file, constants.R_OK);
    return file;
  } catch {
    throw new Error(`${what} not found at ${file}; install the Debian package: apt-get install ${debianPackage}`);
  }
}

import { readFile } from 'node:fs/promises';
import { join } from 'node:path';

export const SITE_FILE = 'site.yaml';

export type SiteFile = { kind: 'absent'; path: string; reason: string } | { kind: 'present'; path: string; text: string };

/** Reads site.yaml from the (read-only, vfat) OEM partition mounted at `oemDir`. */
export async function readSiteFile(oemDir: string): Promise<SiteFile> {
  const path = join(oemDir, SITE_FILE);
  try {
    return { kind: 'present', path, text: await readFile(path, 'utf8') };
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return { kind: 'absent', path, reason: code };
    throw e;
  }
}

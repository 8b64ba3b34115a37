import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** The repository (or installed package) root: profiles/, hardware/, overlays/ and image/ live here. */
export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');

/** Build cache (rootfs, apt archives, components, step outputs); override with GEMINIK8S_CACHE. */
export function cacheRoot(): string {
  return process.env.GEMINIK8S_CACHE ?? path.join(REPO_ROOT, '.cache');
}

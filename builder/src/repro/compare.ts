/**
 * What differs between two builds' filesystems, for `make repro`: the first differing entry of two
 * tree listings, by path in byte order, so both builds' reports name the same file. Pure.
 */

/** One file, folder, link or special file of a mounted partition, as the comparison sees it. */
export interface TreeEntry {
  /** Relative to the partition's root, '/'-separated; '.' is the root itself. */
  path: string;
  kind: 'file' | 'dir' | 'symlink' | 'other';
  /** Permission and type bits (st_mode). */
  mode: number;
  uid: number;
  gid: number;
  size: number;
  /** Whole seconds. */
  mtime: number;
  /** Symlink target. */
  target?: string;
  /** sha256 of a regular file's content. */
  sha256?: string;
}

export interface TreeDifference {
  path: string;
  /** Human-readable, e.g. "content (sha256 ab12… vs cd34…)" or "only in the first build". */
  what: string[];
}

const ATTRIBUTES = ['kind', 'mode', 'uid', 'gid', 'size', 'mtime', 'target', 'sha256'] as const;

function show(entry: TreeEntry, key: (typeof ATTRIBUTES)[number]): string {
  const v = entry[key];
  if (v === undefined) return '-';
  if (key === 'mode') return `0${(v as number).toString(8)}`;
  if (key === 'mtime') return `${v} (${new Date((v as number) * 1000).toISOString()})`;
  return String(v);
}

/** How two entries of the same path differ; empty when they are the same. */
export function entryDifferences(a: TreeEntry, b: TreeEntry): string[] {
  return ATTRIBUTES.filter((k) => a[k] !== b[k]).map((k) => `${k === 'sha256' ? 'content' : k}: ${show(a, k)} vs ${show(b, k)}`);
}

/** Byte order, not locale order: the same on every host. */
function byPath(x: TreeEntry, y: TreeEntry): number {
  return x.path < y.path ? -1 : x.path > y.path ? 1 : 0;
}

/** The first path (in byte order) whose entry differs or exists in one listing only; undefined when the trees are the same. */
export function firstTreeDifference(first: readonly TreeEntry[], second: readonly TreeEntry[]): TreeDifference | undefined {
  const a = [...first].sort(byPath);
  const b = [...second].sort(byPath);
  let i = 0;
  let j = 0;
  while (i < a.length || j < b.length) {
    const x = a[i];
    const y = b[j];
    if (x && (!y || x.path < y.path)) return { path: x.path, what: ['only in the first build'] };
    if (y && (!x || y.path < x.path)) return { path: y.path, what: ['only in the second build'] };
    const what = entryDifferences(x!, y!);
    if (what.length > 0) return { path: x!.path, what };
    i++;
    j++;
  }
  return undefined;
}

/** Partition as manifest.json's layout lists it. */
export interface LayoutPartition {
  name: string;
  fs: string;
  offsetBytes: number;
  sizeBytes: number;
}

/**
 * The byte ranges to compare: the GPT and gaps around the partitions as their own regions, so a
 * difference outside every partition is still named.
 */
export function diskRegions(
  partitions: readonly LayoutPartition[],
  totalBytes: number,
): { name: string; fs: string; offsetBytes: number; sizeBytes: number }[] {
  const sorted = [...partitions].sort((x, y) => x.offsetBytes - y.offsetBytes);
  const regions: { name: string; fs: string; offsetBytes: number; sizeBytes: number }[] = [];
  let at = 0;
  for (const p of sorted) {
    if (p.offsetBytes > at)
      regions.push({ name: at === 0 ? 'partition table' : `gap before ${p.name}`, fs: 'none', offsetBytes: at, sizeBytes: p.offsetBytes - at });
    regions.push({ name: p.name, fs: p.fs, offsetBytes: p.offsetBytes, sizeBytes: p.sizeBytes });
    at = p.offsetBytes + p.sizeBytes;
  }
  if (totalBytes > at) regions.push({ name: 'backup partition table', fs: 'none', offsetBytes: at, sizeBytes: totalBytes - at });
  return regions;
}

/**
 * Filesystem images made in regular files, without loop devices or mounting:
 * ext4 via `mkfs.ext4 -d`, vfat via `mkfs.vfat -C` + `mcopy`. Output is deterministic for
 * identical inputs (fixed UUIDs/volume ids, clamped timestamps).
 */
import { lstat, readdir, rm, utimes, lutimes } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import { run } from '../util/exec.ts';
import { toolPath } from './tools.ts';

/** image/mke2fs.conf: pins the ext4 feature set independent of the build host. */
export const MKE2FS_CONFIG = fileURLToPath(new URL('../../../image/mke2fs.conf', import.meta.url));

export interface TreeUsage {
  /** Data bytes as ext4 would store them (4 KiB blocks; fast symlinks and empty files use none). */
  blockBytes: number;
  /** Number of inodes (hard links counted once), including the top directory. */
  inodes: number;
}

/** Walks `dir` (without following symlinks) and estimates what an ext4 copy of it needs. */
export async function measureTree(dir: string): Promise<TreeUsage> {
  const seen = new Set<string>();
  let blockBytes = 0;
  let inodes = 0;
  const block = 4096;
  const walk = async (p: string): Promise<void> => {
    const st = await lstat(p, { bigint: true });
    const key = `${st.dev}:${st.ino}`;
    if (!seen.has(key)) {
      seen.add(key);
      inodes++;
      const size = Number(st.size);
      if (st.isFile()) blockBytes += Math.ceil(size / block) * block;
      else if (st.isDirectory()) blockBytes += Math.max(1, Math.ceil(size / block)) * block;
      else if (st.isSymbolicLink() && size >= 60) blockBytes += block;
    }
    if (st.isDirectory()) {
      const entries = await readdir(p);
      // Bounded parallelism: one directory at a time, its entries concurrently.
      await Promise.all(entries.map((e) => walk(path.join(p, e))));
    }
  };
  await walk(dir);
  return { blockBytes, inodes };
}

/**
 * Dates everything under `dir` (and `dir` itself) no later than `epoch`: a later access or
 * modification time becomes `epoch`, an earlier one stays (a package's files keep theirs), as
 * `tar --clamp-mtime` does. Files written while building are later than SOURCE_DATE_EPOCH (the
 * commit's time), so they all get it.
 */
export async function clampTreeTimes(dir: string, epoch: number): Promise<void> {
  const walk = async (p: string): Promise<void> => {
    const st = await lstat(p);
    if (st.isDirectory()) {
      for (const e of await readdir(p)) await walk(path.join(p, e));
    }
    if (st.mtimeMs <= epoch * 1000 && st.atimeMs <= epoch * 1000) return;
    const atime = Math.min(st.atimeMs / 1000, epoch);
    const mtime = Math.min(st.mtimeMs / 1000, epoch);
    if (st.isSymbolicLink()) await lutimes(p, atime, mtime);
    else await utimes(p, atime, mtime);
  };
  await walk(dir);
}

export interface Ext4Options {
  file: string;
  sizeBytes: number;
  label: string;
  uuid: string;
  /** Directory-index hash seed (a UUID); fixed for reproducibility. */
  hashSeed: string;
  /** Populate from this directory (`mkfs.ext4 -d`). */
  sourceDir?: string;
  journal: boolean;
  /** Inode count (-N); default: mke2fs's bytes-per-inode ratio. */
  inodes?: number;
  /** Percentage reserved for root (-m). */
  reservedPercent: number;
  sourceDateEpoch: number;
}

export async function makeExt4(o: Ext4Options): Promise<void> {
  if (o.sizeBytes % 4096 !== 0) throw new Error(`ext4 size must be a multiple of 4096, got ${o.sizeBytes}`);
  await rm(o.file, { force: true });
  const args = [
    '-q',
    '-F',
    '-t',
    'ext4',
    '-b',
    '4096',
    '-L',
    o.label,
    '-U',
    o.uuid.toLowerCase(),
    '-m',
    String(o.reservedPercent),
    '-E',
    `hash_seed=${o.hashSeed.toLowerCase()},lazy_itable_init=0,lazy_journal_init=0,nodiscard`,
  ];
  if (!o.journal) args.push('-O', '^has_journal');
  if (o.inodes !== undefined) args.push('-N', String(o.inodes));
  if (o.sourceDir !== undefined) args.push('-d', o.sourceDir);
  args.push(o.file, `${o.sizeBytes / 1024}k`);
  const env = {
    MKE2FS_CONFIG,
    // Superblock times, crtime and the times of inodes mke2fs creates itself.
    E2FSPROGS_FAKE_TIME: String(o.sourceDateEpoch),
    SOURCE_DATE_EPOCH: String(o.sourceDateEpoch),
  };
  await run(await toolPath('mkfs.ext4'), args, { env });
  await clampExt4InodeTimes(o.file, o.sourceDateEpoch, env);
}

/**
 * `mkfs.ext4 -d` (e2fsprogs 1.47.0) copies atime and ctime from the source files; atime changes
 * whenever the tree is read and ctime cannot be set from user space, so both are rewritten to
 * SOURCE_DATE_EPOCH with debugfs. mtime (which tools such as Python compare) is kept.
 * A fresh `mkfs -d` allocates inodes contiguously, so the used inodes are 2 (root) and
 * first_ino (lost+found) .. (inode count - free inodes).
 */
async function clampExt4InodeTimes(file: string, epoch: number, env: Record<string, string>): Promise<void> {
  const header = await run(await toolPath('dumpe2fs'), ['-h', file], { env });
  const field = (name: string): number => {
    const m = new RegExp(`^${name}:\\s+(\\d+)`, 'm').exec(header);
    if (!m) throw new Error(`dumpe2fs -h ${file}: no "${name}" field`);
    return Number(m[1]);
  };
  const used = field('Inode count') - field('Free inodes');
  const firstIno = field('First inode');
  const cmds: string[] = [];
  const at = `@${epoch}`;
  // Inode first_ino is lost+found; everything mkfs -d copied follows it.
  for (const ino of [2, ...Array.from({ length: Math.max(0, used - firstIno + 1) }, (_, i) => firstIno + i)]) {
    cmds.push(`sif <${ino}> atime ${at}`, `sif <${ino}> ctime ${at}`);
  }
  await run(await toolPath('debugfs'), ['-w', '-f', '-', file], { env, input: `${cmds.join('\n')}\n` });
}

export interface VfatOptions {
  file: string;
  sizeBytes: number;
  label: string;
  /** 8 hex digits. */
  volumeId: string;
  fatSize: 16 | 32;
  /** Copy the contents of this directory into the root of the filesystem. */
  tree?: string;
  sourceDateEpoch: number;
}

export const MTOOLS_ENV = { MTOOLS_SKIP_CHECK: '1' } as const;

export async function makeVfat(o: VfatOptions): Promise<void> {
  if (o.sizeBytes % 1024 !== 0) throw new Error(`vfat size must be a multiple of 1024, got ${o.sizeBytes}`);
  if (!/^[0-9a-fA-F]{8}$/.test(o.volumeId)) throw new Error(`bad FAT volume id ${o.volumeId}`);
  await rm(o.file, { force: true });
  // --invariant fixes mkfs's own timestamps; the -i after it then sets our volume id.
  await run(await toolPath('mkfs.vfat'), ['-C', '-F', String(o.fatSize), '-n', o.label, '--invariant', '-i', o.volumeId, o.file, String(o.sizeBytes / 1024)], {
    env: { SOURCE_DATE_EPOCH: String(o.sourceDateEpoch) },
  });
  if (o.tree !== undefined) {
    await clampTreeTimes(o.tree, o.sourceDateEpoch);
    const entries = (await readdir(o.tree)).sort();
    if (entries.length > 0) {
      // -s recursive, -m keep the (clamped) mtimes so the result is reproducible.
      await run(await toolPath('mcopy'), ['-s', '-m', '-i', o.file, ...entries.map((e) => path.join(o.tree!, e)), '::/'], { env: { ...MTOOLS_ENV } });
    }
  }
}

/** Copies `src` into `image` at `offsetBytes` without truncating it, leaving all-zero blocks as holes. */
export async function writeAt(image: string, src: string, offsetBytes: number): Promise<void> {
  const MiB = 1024 * 1024;
  if (offsetBytes % MiB !== 0) throw new Error(`offset ${offsetBytes} is not MiB-aligned`);
  await run(await toolPath('dd'), [`if=${src}`, `of=${image}`, 'bs=1M', `seek=${offsetBytes / MiB}`, 'conv=notrunc,sparse', 'status=none']);
}

/**
 * `make repro`: builds the current commit twice, each from its own clone with its own build cache,
 * and compares what came out: the sha256 of both raw images and of every artifact, and, when the
 * raw images differ, the first differing file of each partition that differs (both partitions
 * mounted read-only; `diffoscope` shows that file's difference when it is installed).
 *
 *   node --import tsx builder/src/repro/repro.ts                      build twice, compare
 *   node --import tsx builder/src/repro/repro.ts compare <dir> <dir>  compare two artifact folders
 *                                                                     (e.g. a published one and your own build)
 *
 * PROFILE and HARDWARE pick the image (make's defaults); KEEP=1 keeps the work folder.
 * Exit 0 when the raw images are identical, 1 when they differ.
 */
import { lstat, mkdir, mkdtemp, readFile, readdir, readlink, utimes } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { REPO_ROOT } from '../cli/paths.ts';
import { MTOOLS_ENV } from '../disk/fs.ts';
import { ARTIFACT_FILES } from '../pipeline/artifacts.ts';
import { fileDigest, sha256File } from '../util/digest.ts';
import { hasCommand, run, runForAnswer, runStreaming } from '../util/exec.ts';
import { removeMountedTree } from '../util/mounts.ts';
import { diskRegions, firstTreeDifference, type LayoutPartition, type TreeEntry } from './compare.ts';

interface Manifest {
  name: string;
  sourceDateEpoch: number;
  steps: Record<string, string>;
  image: { rawSha256: string };
  layout: { partitions: LayoutPartition[]; totalBytes: number };
}

/** One build's results: its artifact folder and its raw image. */
interface Side {
  label: string;
  artifactDir: string;
  raw: string;
  manifest: Manifest;
}

const say = (line: string): void => void process.stderr.write(`repro: ${line}\n`);

async function readManifest(artifactDir: string): Promise<Manifest> {
  return JSON.parse(await readFile(path.join(artifactDir, ARTIFACT_FILES.manifest), 'utf8')) as Manifest;
}

/** Clones the commit, installs its npm dependencies and builds it with a cache of its own. */
async function buildInClone(work: string, label: string, commit: string, profile: string, hardware: string): Promise<Side & { seconds: number }> {
  const started = performance.now();
  const dir = path.join(work, label);
  const src = path.join(dir, 'src');
  const cache = path.join(dir, 'cache');
  await mkdir(dir, { recursive: true });
  await run('git', ['clone', '--quiet', '--no-local', REPO_ROOT, src]);
  await run('git', ['-C', src, 'checkout', '--quiet', '--detach', commit]);
  say(`${label}: npm ci in ${src}`);
  await run('npm', ['ci', '--no-audit', '--no-fund', '--prefer-offline'], { cwd: src });
  say(`${label}: building ${profile} for ${hardware} with the cache ${cache}`);
  let artifactDir = '';
  await runStreaming('node', ['bin/geminik8s.js', 'build', '--profile', profile, '--hardware', hardware, '--out', path.join(dir, 'dist'), '--json'], {
    cwd: src,
    env: { ...(process.env as Record<string, string>), GEMINIK8S_CACHE: cache },
    onLine: (text) => {
      if (!text.startsWith('{')) return;
      const e = JSON.parse(text) as { event: string; id?: string; cached?: boolean; seconds?: number; artifactDir?: string };
      if (e.event === 'step-done') say(`${label}: ${e.id} ${e.cached ? 'cached' : `built in ${Math.round(e.seconds ?? 0)} s`}`);
      if (e.event === 'done' && e.artifactDir) artifactDir = e.artifactDir;
    },
  }).catch((e: unknown) => {
    throw new Error(`${label}: the build failed: ${(e as Error).message}`);
  });
  if (!artifactDir) throw new Error(`${label}: the build ended without naming its artifact folder`);
  const manifest = await readManifest(artifactDir);
  const disk = manifest.steps.disk;
  if (!disk) throw new Error(`${label}: manifest.json names no disk step`);
  return { label, artifactDir, raw: path.join(cache, 'steps', 'disk', disk, 'image.raw'), manifest, seconds: (performance.now() - started) / 1000 };
}

/** A published or built artifact folder; its image is decompressed into `work`. */
async function unpackArtifacts(work: string, label: string, artifactDir: string): Promise<Side> {
  const raw = path.join(work, `${label}.raw`);
  await run('zstd', ['-q', '-d', '-f', path.join(artifactDir, ARTIFACT_FILES.image), '-o', raw]);
  return { label, artifactDir, raw, manifest: await readManifest(artifactDir) };
}

/** Every entry under `root`, regular files with their content's sha256. */
async function listTree(root: string): Promise<TreeEntry[]> {
  const entries: TreeEntry[] = [];
  const walk = async (rel: string): Promise<void> => {
    const p = path.join(root, rel);
    const st = await lstat(p);
    const kind = st.isFile() ? 'file' : st.isDirectory() ? 'dir' : st.isSymbolicLink() ? 'symlink' : 'other';
    const entry: TreeEntry = { path: rel, kind, mode: st.mode, uid: st.uid, gid: st.gid, size: st.size, mtime: Math.floor(st.mtimeMs / 1000) };
    if (kind === 'symlink') entry.target = await readlink(p);
    if (kind === 'file') entry.sha256 = await sha256File(p);
    entries.push(entry);
    if (kind === 'dir') for (const name of await readdir(p)) await walk(rel === '.' ? name : `${rel}/${name}`);
  };
  await walk('.');
  return entries;
}

/** The first offset at which two byte ranges differ (cmp's answer), relative to the range. */
async function firstDifferingByte(a: string, b: string, offset: number, size: number): Promise<number | undefined> {
  const r = await runForAnswer('cmp', ['-n', String(size), '-i', `${offset}:${offset}`, a, b]);
  const m = /byte (\d+)/.exec(String(r.stdout));
  return m ? Number(m[1]) - 1 : undefined;
}

/**
 * Makes a partition's files readable at `at`: ext4 mounted read-only (its journal not replayed),
 * vfat copied out with mtools (hosts without the vfat module cannot mount it; FAT has no owners or
 * modes to lose, and mcopy -m keeps the times).
 */
async function openPartition(raw: string, p: { fs: string; offsetBytes: number; sizeBytes: number }, at: string): Promise<void> {
  await mkdir(at, { recursive: true });
  if (p.fs === 'ext4') {
    await run('mount', ['-t', 'ext4', '-o', `ro,loop,noload,offset=${p.offsetBytes},sizelimit=${p.sizeBytes}`, raw, at]);
    return;
  }
  const names = await run('mdir', ['-b', '-i', `${raw}@@${p.offsetBytes}`, '::/'], { env: { ...process.env, ...MTOOLS_ENV } });
  if (names.trim() !== '') await run('mcopy', ['-s', '-m', '-n', '-i', `${raw}@@${p.offsetBytes}`, '::*', at], { env: { ...process.env, ...MTOOLS_ENV } });
  // The copy's top folder is ours, not the filesystem's: give both sides the same time.
  await utimes(at, 0, 0);
}

/** Names, for each partition that differs, its first differing file (or byte, where there is no filesystem). */
async function explainDifferences(work: string, a: Side, b: Side): Promise<void> {
  const regionsB = diskRegions(b.manifest.layout.partitions, b.manifest.layout.totalBytes);
  for (const ra of diskRegions(a.manifest.layout.partitions, a.manifest.layout.totalBytes)) {
    const rb = regionsB.find((r) => r.name === ra.name);
    if (!rb) {
      say(`  ${ra.name}: only in the first image`);
      continue;
    }
    const [ha, hb] = await Promise.all([
      fileDigest(a.raw, 'sha256', 'hex', { start: ra.offsetBytes, end: ra.offsetBytes + ra.sizeBytes - 1 }),
      fileDigest(b.raw, 'sha256', 'hex', { start: rb.offsetBytes, end: rb.offsetBytes + rb.sizeBytes - 1 }),
    ]);
    if (ha === hb) {
      say(`  ${ra.name}: identical`);
      continue;
    }
    const where =
      ra.offsetBytes === rb.offsetBytes && ra.sizeBytes === rb.sizeBytes
        ? `first at byte ${await firstDifferingByte(a.raw, b.raw, ra.offsetBytes, ra.sizeBytes)}`
        : `placed differently: ${ra.sizeBytes} bytes at ${ra.offsetBytes} vs ${rb.sizeBytes} bytes at ${rb.offsetBytes}`;
    say(`  ${ra.name}: DIFFERS (${ha.slice(0, 16)}… vs ${hb.slice(0, 16)}…), ${where}`);
    if (ra.fs !== 'ext4' && ra.fs !== 'vfat') continue;
    const open = { a: path.join(work, 'open', `${a.label}-${ra.name}`), b: path.join(work, 'open', `${b.label}-${rb.name}`) };
    try {
      await openPartition(a.raw, ra, open.a);
      await openPartition(b.raw, rb, open.b);
      const diff = firstTreeDifference(await listTree(open.a), await listTree(open.b));
      if (!diff) {
        say(`    same files, modes, owners, times and contents: the filesystem's own structures differ`);
        continue;
      }
      say(`    first differing file: /${diff.path === '.' ? '' : diff.path}: ${diff.what.join('; ')}`);
      const fa = path.join(open.a, diff.path);
      const fb = path.join(open.b, diff.path);
      const bothFiles = (await lstat(fa).catch(() => undefined))?.isFile() && (await lstat(fb).catch(() => undefined))?.isFile();
      if (bothFiles && diff.what.some((w) => w.startsWith('content')) && (await hasCommand('diffoscope'))) {
        const d = await runForAnswer('diffoscope', ['--text', '-', '--max-text-report-size', '8000', fa, fb]);
        process.stderr.write(`${String(d.stdout)}\n`);
      }
    } finally {
      await removeMountedTree(path.join(work, 'open'));
    }
  }
}

/** Compares two builds: prints every artifact's sha256 side by side; true when the raw images are identical. */
async function compare(work: string, a: Side, b: Side): Promise<boolean> {
  const [rawA, rawB] = await Promise.all([sha256File(a.raw), sha256File(b.raw)]);
  process.stdout.write(`raw image sha256  ${a.label}: ${rawA}\n                   ${b.label}: ${rawB}\n`);
  for (const f of Object.values(ARTIFACT_FILES)) {
    const [fa, fb] = await Promise.all([sha256File(path.join(a.artifactDir, f)), sha256File(path.join(b.artifactDir, f))]);
    process.stdout.write(`${f.padEnd(15)}   ${fa === fb ? 'identical' : `DIFFERS ${fa} vs ${fb}`}\n`);
  }
  if (rawA === rawB) return true;
  say(`the raw images differ; per partition:`);
  await explainDifferences(work, a, b);
  return false;
}

async function main(): Promise<number> {
  const [mode, ...rest] = process.argv.slice(2);
  const work = await mkdtemp(path.join(os.tmpdir(), 'gk8s-repro-'));
  try {
    if (mode === 'compare') {
      const [dirA, dirB] = rest;
      if (!dirA || !dirB) throw new Error('usage: repro.ts compare <artifact folder> <artifact folder>');
      return (await compare(work, await unpackArtifacts(work, 'first', dirA), await unpackArtifacts(work, 'second', dirB))) ? 0 : 1;
    }
    if (mode !== undefined) throw new Error(`unknown mode ${mode}: give none (build twice) or "compare"`);
    const commit = await run('git', ['-C', REPO_ROOT, 'rev-parse', 'HEAD']);
    if ((await run('git', ['-C', REPO_ROOT, 'status', '--porcelain', '--untracked-files=no'])) !== '')
      say('uncommitted changes are not built: both builds are of the commit');
    const profile = process.env.PROFILE ?? 'edge-standard';
    const hardware = process.env.HARDWARE ?? 'generic-x86_64-uefi';
    say(`building ${commit} twice under ${work}, one build after the other`);
    const a = await buildInClone(work, 'a', commit, profile, hardware);
    const b = await buildInClone(work, 'b', commit, profile, hardware);
    say(`build a took ${Math.round(a.seconds)} s, build b ${Math.round(b.seconds)} s`);
    const same = await compare(work, a, b);
    process.stdout.write(
      same ? `reproducible: ${commit} (${profile}, ${hardware}) gives the same raw image twice\n` : `NOT reproducible: see the differences above\n`,
    );
    return same ? 0 : 1;
  } finally {
    if (process.env.KEEP === '1') say(`kept ${work}`);
    else await removeMountedTree(work);
  }
}

process.exitCode = await main();

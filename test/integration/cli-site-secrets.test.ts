/**
 * Issue 10, points 5–7 through the real CLI: the site file (and its pair secret) never lands in the
 * step cache or in a world-readable file, `stamp` writes only geminik8s images, and a site file with
 * an impossible address plan is refused before anything is written.
 *
 * The build runs the real `geminik8s build --site` against a cache whose steps before the disk are
 * small stand-ins (a fake root tree, component records) at the keys `--dry-run` reports, so only
 * the steps that carry the site (disk, artifacts) really run, in seconds.
 */
import test from 'ava';
import { createReadStream } from 'node:fs';
import { chmod, mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parse } from 'yaml';
import { readSiteFromImage, requireTools } from '../../builder/src/disk/index.ts';
import { sha256File } from '../../builder/src/util/digest.ts';
import { run } from '../../builder/src/util/exec.ts';
import { events, geminik8s } from '../helpers/cli.ts';
import { fakeRootfs, lookalikeDisk, SMALL_LAYOUT } from '../helpers/fake-disk.ts';

let dir: string;

test.before(async () => {
  await requireTools(['sfdisk', 'mcopy', 'mkfs.vfat', 'zstd']);
  dir = await mkdtemp(path.join(tmpdir(), 'gk8s-secrets-'));
});

test.after.always(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

/** Whether `file` holds `needle` anywhere (streamed; a match across two chunks is found too). */
async function fileContains(file: string, needle: string): Promise<boolean> {
  const n = Buffer.from(needle);
  let tail = Buffer.alloc(0);
  for await (const chunk of createReadStream(file, { highWaterMark: 4 * 2 ** 20 })) {
    const joined = Buffer.concat([tail, chunk as Buffer]);
    if (joined.includes(n)) return true;
    tail = joined.subarray(Math.max(0, joined.length - n.length + 1));
  }
  return false;
}

/** Every regular file under `root` with its mode. */
async function filesUnder(root: string): Promise<{ file: string; mode: number }[]> {
  const out: { file: string; mode: number }[] = [];
  for (const e of await readdir(root, { withFileTypes: true, recursive: true })) {
    const file = path.join(e.parentPath, e.name);
    if (e.isFile()) out.push({ file, mode: (await stat(file)).mode & 0o777 });
  }
  return out;
}

/** A fresh site file written by the real `init`, and its pair secret. */
async function newSite(name: string, extra: string[] = []): Promise<{ file: string; secret: string }> {
  const file = path.join(dir, `${name}.yaml`);
  const r = await geminik8s(['init', '--out', file, '--site-id', name, '--vip', '192.0.2.10/24', '--gateway', '192.0.2.1', ...extra]);
  if (r.exitCode !== 0) throw new Error(r.stderr);
  return { file, secret: (parse(await readFile(file, 'utf8')) as { pair: { secret: string } }).pair.secret };
}

test.serial('build --site: the secret is in the image, never in the cache, the output or a world-readable file (10.5)', async (t) => {
  const cache = path.join(dir, 'cache');
  const out = path.join(dir, 'dist');
  const env = { GEMINIK8S_CACHE: cache };
  const site = await newSite('secret-build');
  // A mirror that cannot answer: if a step before the disk were not taken from the stand-ins, it fails fast.
  const args = [
    'build',
    '--profile',
    'edge-datastore',
    '--site',
    site.file,
    '--mirror',
    'file:///nonexistent-test-mirror',
    '--out',
    out,
    '--compression',
    '1',
    '--json',
  ];

  const dry = await geminik8s([...args, '--dry-run'], { env });
  t.is(dry.exitCode, 0, dry.stderr);
  const plan = events(dry.stdout).find((e) => e.event === 'plan') as { artifactName: string; steps: { id: string; key: string; cached: boolean }[] };
  for (const step of plan.steps.filter((s) => s.id !== 'disk' && s.id !== 'artifacts')) {
    const stepDir = path.join(cache, 'steps', step.id, step.key);
    await mkdir(stepDir, { recursive: true });
    if (step.id === 'kine' || step.id === 'agent')
      await writeFile(path.join(stepDir, 'component.json'), JSON.stringify({ name: step.id, version: '0', sha256: '0'.repeat(64), source: 'test' }));
    if (step.id === 'rootTree') await fakeRootfs(path.join(stepDir, 'tree'));
    await writeFile(path.join(stepDir, '.complete'), 'stand-in\n');
  }

  const built = await geminik8s(args, { env });
  t.is(built.exitCode, 0, built.stderr.slice(-3000));
  const done = Object.fromEntries(
    events(built.stdout)
      .filter((e) => e.event === 'step-done')
      .map((e) => [e.id, e.cached]),
  );
  t.deepEqual(
    done,
    { rootfs: true, kine: true, agent: true, overlays: true, rootTree: true, disk: false, artifacts: false },
    'only the steps that carry the site ran',
  );
  t.false(`${dry.stdout}${dry.stderr}${built.stdout}${built.stderr}`.includes(site.secret), 'the secret is not in the output');

  // The cache: nothing holds the secret (the site-carrying steps ran in a private folder, now gone).
  const cached = await filesUnder(cache);
  t.true(cached.length > 0);
  for (const { file } of cached) t.false(await fileContains(file, site.secret), `${path.relative(cache, file)} holds the secret`);
  t.deepEqual(await readdir(path.join(cache, 'steps', 'disk')).catch(() => []), [], 'no disk image with the site in the cache');
  await t.throwsAsync(stat(path.join(cache, 'private')), undefined, 'the private folder is gone');

  // dist: the per-site artifact set is root's only.
  const artifactDir = path.join(out, plan.artifactName);
  t.is((await stat(artifactDir)).mode & 0o777, 0o700);
  const published = await filesUnder(artifactDir);
  t.deepEqual(published.map((f) => path.basename(f.file)).sort(), ['SHA256SUMS', 'image.bmap', 'image.raw.zst', 'manifest.json']);
  for (const { file, mode } of published) t.is(mode, 0o600, `${path.basename(file)} mode`);

  // And the site really is in the image (which also shows the search above can find the secret).
  const raw = path.join(dir, 'built.raw');
  await run('zstd', ['-q', '-d', path.join(artifactDir, 'image.raw.zst'), '-o', raw]);
  t.is(await readSiteFromImage(raw), await readFile(site.file, 'utf8'));
  t.true(await fileContains(raw, site.secret));

  // stamp on that image: the image file becomes 0600 before the secret goes in, and the output has no secret.
  const other = await newSite('secret-stamp');
  await chmod(raw, 0o644);
  const stamped = await geminik8s(['stamp', '--site', other.file, raw, '--json']);
  t.is(stamped.exitCode, 0, stamped.stderr);
  t.false(`${stamped.stdout}${stamped.stderr}`.includes(other.secret));
  t.is((await stat(raw)).mode & 0o777, 0o600);
  t.is(await readSiteFromImage(raw), await readFile(other.file, 'utf8'));
  await rm(raw);
});

test('stamp refuses a disk with a partition named oem that geminik8s did not partition: exit 2, byte-identical (10.6)', async (t) => {
  const site = await newSite('foreign-disk');
  const disk = path.join(dir, 'foreign.raw');
  const oem = SMALL_LAYOUT.partitions.find((p) => p.name === 'oem')!;
  await lookalikeDisk(disk, `label: gpt\nstart=2048, size=${oem.sizeSectors}, type=${oem.typeGuid}, name="oem"\n`);
  const before = await sha256File(disk);
  const r = await geminik8s(['stamp', '--site', site.file, disk]);
  t.is(r.exitCode, 2, r.stderr);
  t.regex(
    r.stderr,
    /^not a geminik8s image: .*foreign\.raw has a partition table geminik8s build did not write \(found 1 "oem"\); nothing was written:\n {2}expected 5 partitions, found 1\n {2}partition 1: expected the name "esp", found "oem"\n/,
  );
  t.notRegex(r.stderr, /\n\s+at /, 'no stack trace for bad input');
  t.false(r.stderr.includes(site.secret));
  t.is(await sha256File(disk), before, 'the disk is byte-identical');
  await rm(disk);
});

test('a site file whose addresses cannot work is refused by stamp and init with file:line:column, and nothing is written (10.7)', async (t) => {
  const site = await newSite('bad-plan');
  const text = await readFile(site.file, 'utf8');
  t.true(text.includes('gateway: 192.0.2.1\n'));
  await writeFile(site.file, text.replace('gateway: 192.0.2.1\n', 'gateway: 192.0.2.10\n'));
  const line = text.split('\n').findIndex((l) => l.includes('gateway:')) + 1;
  const image = path.join(dir, 'untouched.raw');
  await writeFile(image, Buffer.alloc(1024 * 1024, 1));
  const before = await sha256File(image);
  const stamp = await geminik8s(['stamp', '--site', site.file, image]);
  t.is(stamp.exitCode, 2, stamp.stderr);
  t.regex(
    stamp.stderr,
    new RegExp(`bad-plan\\.yaml:${line}:\\d+: network\\.gateway: the gateway 192\\.0\\.2\\.10 is also the VIP; found "192\\.0\\.2\\.10"; expected `),
  );
  t.is(await sha256File(image), before, 'the image is untouched');

  const out = path.join(dir, 'never-written.yaml');
  const init = await geminik8s([
    'init',
    '--out',
    out,
    '--site-id',
    'bad-plan',
    '--vip',
    '192.0.2.10/24',
    '--node',
    'a=192.0.2.11/24',
    '--node',
    'b=192.0.3.12/24',
  ]);
  t.is(init.exitCode, 2, init.stderr);
  t.regex(init.stderr, /--node: network\.nodes\[1\]\.address: 192\.0\.3\.12 is outside the VIP's subnet 192\.0\.2\.0\/24/);
  await t.throwsAsync(stat(out), undefined, 'init wrote nothing');
});

/**
 * bench/build: cold build (warm apt package cache), unchanged rebuild, rebuild after one overlay
 * change, compressed image size and stamp time. Uses its own cache folder so the developer's
 * cache stays as it was; the apt archives are shared (hard links) as the target assumes.
 */
import { execa } from 'execa';
import { appendFile, cp, mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { printReport } from './report.ts';

const repo = fileURLToPath(new URL('..', import.meta.url));
const mainCache = process.env.GEMINIK8S_CACHE ?? path.join(repo, '.cache');
const benchCache = path.join(mainCache, 'bench');
const out = await mkdtemp(path.join(os.tmpdir(), 'gk8s-bench-'));
const env = { ...process.env, GEMINIK8S_CACHE: benchCache };
const args = [
  'bin/geminik8s.js',
  'build',
  '--profile',
  process.env.PROFILE ?? 'edge-datastore',
  '--hardware',
  process.env.HARDWARE ?? 'generic-x86_64-uefi',
  '--out',
  out,
  '--json',
];

async function timedBuild(label: string): Promise<number> {
  process.stderr.write(`bench: ${label} ...\n`);
  const t0 = performance.now();
  const r = await execa('node', args, { cwd: repo, env, reject: false });
  if (r.exitCode !== 0) throw new Error(`${label} failed:\n${String(r.stderr).slice(-3000)}`);
  return (performance.now() - t0) / 1000;
}

const overlayFile = path.join(repo, 'overlays/base/etc/systemd/journald.conf.d/geminik8s.conf');
const overlayOriginal = await readFile(overlayFile, 'utf8');
try {
  await rm(benchCache, { recursive: true, force: true });
  await mkdir(benchCache, { recursive: true });
  for (const shared of ['apt-archives', 'node']) {
    await cp(path.join(mainCache, shared), path.join(benchCache, shared), { recursive: true }).catch(() => undefined);
  }
  const cold = await timedBuild('cold build (warm apt cache)');
  const unchanged = await timedBuild('unchanged rebuild');
  await appendFile(overlayFile, `# bench ${Date.now()}\n`);
  const overlay = await timedBuild('rebuild after one overlay change');
  await writeFile(overlayFile, overlayOriginal);

  const artifact = (await execa('sh', ['-c', `ls -d ${out}/*/`])).stdout.trim();
  const zst = path.join(artifact, 'image.raw.zst');
  const imageBytes = (await stat(zst)).size;
  const raw = path.join(out, 'disk.raw');
  await execa('zstd', ['-q', '-d', zst, '-o', raw]);
  const site = path.join(out, 'site.yaml');
  await execa('node', ['bin/geminik8s.js', 'init', '--out', site, '--site-id', 'bench', '--vip', '192.0.2.10/24'], { cwd: repo });
  const t0 = performance.now();
  await execa('node', ['bin/geminik8s.js', 'stamp', '--site', site, raw], { cwd: repo });
  const stampSeconds = (performance.now() - t0) / 1000;

  printReport('build', [
    { metric: 'cold build (warm apt cache)', value: cold, unit: 's', target: '<= 300 s' },
    { metric: 'unchanged rebuild', value: unchanged, unit: 's' },
    { metric: 'rebuild after one overlay change', value: overlay, unit: 's', target: '<= 30 s' },
    { metric: 'compressed image size', value: imageBytes / 1024 ** 2, unit: 'MiB', target: '<= 350 MB' },
    { metric: 'stamp (incl. CLI start)', value: stampSeconds, unit: 's', target: '<= 2 s' },
  ]);
} finally {
  await writeFile(overlayFile, overlayOriginal);
  await rm(out, { recursive: true, force: true });
}

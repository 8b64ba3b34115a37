/**
 * bench/build: cold build (warm apt package cache), unchanged rebuild, rebuild after one overlay
 * change, compressed image size and stamp time; then the arm64 image's cold build and size beside
 * them, and the Raspberry Pi 4 image (ARM64=0 leaves both out: they run their roots under qemu-user, about 15 min each on 2 cores).
 * Uses its own cache folder so the developer's cache stays as it was; the apt archives are shared
 * as the target assumes. The arm64 boot figure comes from `GEMINIK8S_FIGURES=f make test-arm64`.
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
const profile = process.env.PROFILE ?? 'edge-datastore';
const hardware = process.env.HARDWARE ?? 'generic-x86_64-uefi';
/** The arm64 image's cold build beside the x86_64 one (issue 13's goal: at most twice its time); ARM64=0 leaves it out. */
const arm64 = process.env.ARM64 !== '0' && hardware === 'generic-x86_64-uefi';
const buildArgs = (hw: string, dir: string): string[] => ['bin/geminik8s.js', 'build', '--profile', profile, '--hardware', hw, '--out', dir, '--json'];

async function timedBuild(label: string, args = buildArgs(hardware, out)): Promise<number> {
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

  const armRows: { metric: string; value: number; unit: string; target?: string }[] = [];
  if (arm64) {
    // Same cache: its apt archives hold arm64 packages only if the main cache had them (an earlier
    // arm64 build); on a fresh machine this build downloads them too.
    const armOut = path.join(out, 'arm64');
    const armCold = await timedBuild('arm64 cold build (root under qemu-user)', buildArgs('generic-arm64-uefi', armOut));
    const armImage = (await execa('sh', ['-c', `ls -d ${armOut}/*/`])).stdout.trim();
    armRows.push(
      { metric: 'arm64 cold build (apt cache as the main one had it)', value: armCold, unit: 's' },
      { metric: 'arm64 / x86_64 cold build', value: armCold / cold, unit: 'x', target: '<= 2' },
      { metric: 'arm64 compressed image size', value: (await stat(path.join(armImage, 'image.raw.zst'))).size / 1024 ** 2, unit: 'MiB' },
    );
    // The Raspberry Pi 4 image: another arm64 root (raspi-firmware instead of grub), the same Kine and agent.
    const piOut = path.join(out, 'rpi4');
    const piBuild = await timedBuild(
      'raspberrypi4 build (its own root under qemu-user; Kine and agent from the arm64 build)',
      buildArgs('raspberrypi4', piOut),
    );
    const piImage = (await execa('sh', ['-c', `ls -d ${piOut}/*/`])).stdout.trim();
    armRows.push(
      { metric: 'raspberrypi4 build (Kine and agent cached)', value: piBuild, unit: 's' },
      { metric: 'raspberrypi4 compressed SD image size', value: (await stat(path.join(piImage, 'image.raw.zst'))).size / 1024 ** 2, unit: 'MiB' },
    );
  }

  printReport('build', [
    { metric: 'cold build (warm apt cache)', value: cold, unit: 's', target: '<= 300 s' },
    { metric: 'unchanged rebuild', value: unchanged, unit: 's' },
    { metric: 'rebuild after one overlay change', value: overlay, unit: 's', target: '<= 30 s' },
    { metric: 'compressed image size', value: imageBytes / 1024 ** 2, unit: 'MiB', target: '<= 350 MB' },
    { metric: 'stamp (incl. CLI start)', value: stampSeconds, unit: 's', target: '<= 2 s' },
    ...armRows,
  ]);
} finally {
  await writeFile(overlayFile, overlayOriginal);
  await rm(out, { recursive: true, force: true });
}

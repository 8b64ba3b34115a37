/**
 * The first boot of a stamped image, as the x86_64 and arm64 boot tests both check it: the agent
 * reads the site, grows the data partition into a disk bigger than the image, and sshd makes its
 * host keys on the data partition; the pair secret never reaches the console.
 */
import type { ExecutionContext } from 'ava';
import { execa } from 'execa';
import { mkdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { geminik8s } from './cli.ts';
import { bootImage } from './qemu.ts';

/** What the console shows on a first boot, in any order. */
export const FIRST_BOOT_LINES: readonly RegExp[] = [
  /GEMINIK8S-AGENT: data-partition grown \d+ -> \d+/,
  /GEMINIK8S-AGENT: started/,
  /GEMINIK8S-AGENT: data grown \d+ -> \d+/,
  /GEMINIK8S-AGENT: hostmeta written/,
  /GEMINIK8S-AGENT: ready/,
  // services that write state work on the read-only root: sshd made its host keys on data
  /Started ssh\.service|Started .*OpenBSD Secure Shell server/,
];

/** The disk the image boots from: 4 GiB, bigger than the image, so the agent must grow the data partition. */
export const BOOT_DISK_BYTES = 4 * 1024 ** 3;

export interface SiteOptions {
  /** The site's VIP (with prefix) and gateway; by default a documentation subnet no VM reaches. */
  vip?: string;
  gateway?: string;
  /** Makes an operator SSH key pair in `work` and lists its public half in the site (the agent installs it for root). */
  operatorKey?: boolean;
  /** failover.timeScale (README "Failover pace"). */
  timeScale?: number;
}

/** `geminik8s init` of a new site `siteId` into `work/site.yaml`; `operatorKey` is the private key's path when one was asked for. */
export async function writeSite(work: string, siteId: string, o: SiteOptions = {}): Promise<{ site: string; operatorKey?: string }> {
  const site = path.join(work, 'site.yaml');
  const operatorKey = o.operatorKey ? path.join(work, 'operator_ed25519') : undefined;
  if (operatorKey) await execa('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', `${siteId}-operator`, '-f', operatorKey]);
  const init = await geminik8s([
    'init',
    '--out',
    site,
    '--site-id',
    siteId,
    '--vip',
    o.vip ?? '192.0.2.10/24',
    '--gateway',
    o.gateway ?? '192.0.2.1',
    ...(operatorKey ? ['--ssh-key', `${operatorKey}.pub`] : []),
    ...(o.timeScale !== undefined ? ['--failover-time-scale', String(o.timeScale)] : []),
  ]);
  if (init.exitCode !== 0) throw new Error(`geminik8s init exited ${init.exitCode}: ${init.stderr}`);
  return { site, ...(operatorKey ? { operatorKey } : {}) };
}

/** Decompresses an artifact's image to `raw` and stamps `site` into it (checking the stamp names `siteId`). */
async function stampInto(t: ExecutionContext, artifactDir: string, raw: string, site: string, siteId: string): Promise<void> {
  await execa('zstd', ['-q', '-f', '-d', path.join(artifactDir, 'image.raw.zst'), '-o', raw]);
  const stamp = await geminik8s(['stamp', '--site', site, raw, '--json']);
  t.is(stamp.exitCode, 0, stamp.stderr);
  t.is(JSON.parse(stamp.stdout).siteId, siteId);
}

/** Decompresses an artifact's image into `work`, stamps a new site `siteId` into it, and grows the file to BOOT_DISK_BYTES. */
export async function stampedDisk(
  t: ExecutionContext,
  artifactDir: string,
  work: string,
  siteId: string,
  o: SiteOptions = {},
): Promise<{ raw: string; site: string; operatorKey?: string }> {
  const raw = path.join(work, 'disk.raw');
  const written = await writeSite(work, siteId, o);
  await stampInto(t, artifactDir, raw, written.site, siteId);
  await execa('truncate', ['-s', String(BOOT_DISK_BYTES), raw]);
  return { raw, ...written };
}

/**
 * Two disks for a pair: one site `siteId` with an operator key, stamped into one copy of the
 * image, which is then copied (sparse) and both grown to `diskBytes` (default BOOT_DISK_BYTES).
 */
export async function stampedPair(
  t: ExecutionContext,
  artifactDir: string,
  work: string,
  siteId: string,
  o: Omit<SiteOptions, 'operatorKey'> & { diskBytes?: number },
): Promise<{ raws: [string, string]; site: string; operatorKey: string }> {
  const { site, operatorKey } = await writeSite(work, siteId, { ...o, operatorKey: true });
  if (!operatorKey) throw new Error('writeSite made no operator key');
  const raws: [string, string] = [path.join(work, 'disk-0.raw'), path.join(work, 'disk-1.raw')];
  await stampInto(t, artifactDir, raws[0], site, siteId);
  await execa('cp', ['--sparse=always', raws[0], raws[1]]);
  for (const raw of raws) await execa('truncate', ['-s', String(o.diskBytes ?? BOOT_DISK_BYTES), raw]);
  return { raws, site, operatorKey };
}

/** Boots `raw` (x86_64) until every pattern is on the console (6 min at most), then stops the VM; the console text. */
export async function bootAndWait(raw: string, dir: string, patterns: readonly RegExp[]): Promise<string> {
  await mkdir(dir, { recursive: true });
  const vm = await bootImage(raw, dir);
  try {
    return await vm.waitFor([...patterns], 6 * 60_000);
  } finally {
    await vm.stop();
  }
}

/** The first boot's console grew the data filesystem over the rest of the disk and kept the site's secret off it. */
export async function checkFirstBoot(t: ExecutionContext, console: string, artifactDir: string, site: string): Promise<void> {
  const grown = /GEMINIK8S-AGENT: data grown (\d+) -> (\d+)/.exec(console);
  t.truthy(grown);
  const manifest = JSON.parse(await readFile(path.join(artifactDir, 'manifest.json'), 'utf8')) as {
    layout: { partitions: { name: string; offsetBytes: number }[] };
  };
  const dataOffset = manifest.layout.partitions.find((p) => p.name === 'data')?.offsetBytes ?? Number.POSITIVE_INFINITY;
  const room = BOOT_DISK_BYTES - dataOffset;
  t.true(Number(grown?.[2]) > 0.9 * room, `data filesystem fills the rest of the disk (${room} bytes): ${grown?.[0]}`);
  const secret = /secret: (\S+)/.exec(await readFile(site, 'utf8'))?.[1] ?? 'missing';
  t.false(console.includes(secret), 'the pair secret never reaches the console');
}

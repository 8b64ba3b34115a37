/**
 * Site stamping: write/read site.yaml in the OEM partition of a raw image file or a flashed
 * block device, without mounting (sfdisk --json for the offset, mtools with image@@offset).
 * Only a disk whose partition table geminik8s build wrote is touched (layoutMismatches).
 */
import { mkdtemp, open, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { layoutMismatches } from '../../../image/src/layout.ts';
import { CommandError, run } from '../util/exec.ts';
import { MTOOLS_ENV } from './fs.ts';
import { requireTools, toolPath } from './tools.ts';

export const SITE_FILE_NAME = 'site.yaml';

/** The target is missing or not a geminik8s image: refused before anything was written. */
export class ImageRefusedError extends Error {}

export interface GptPartitionInfo {
  index: number;
  name: string;
  startSector: number;
  sizeSectors: number;
  offsetBytes: number;
  sizeBytes: number;
  typeGuid: string;
  uuid: string;
}

export interface GptInfo {
  diskGuid: string;
  sectorSize: number;
  partitions: GptPartitionInfo[];
}

interface SfdiskJson {
  partitiontable?: {
    label?: string;
    id?: string;
    sectorsize?: number;
    partitions?: Array<{ node: string; start: number; size: number; type: string; uuid?: string; name?: string }>;
  };
}

/** Reads the GPT of an image file or block device with `sfdisk --json`. */
export async function readGpt(image: string): Promise<GptInfo> {
  await stat(image).catch(() => {
    throw new ImageRefusedError(`${image}: no such file or device`);
  });
  let out: string;
  try {
    out = await run(await toolPath('sfdisk'), ['--json', image]);
  } catch (e) {
    if (e instanceof CommandError) throw new ImageRefusedError(`not a geminik8s image: ${image} has no readable partition table (${e.stderrTail.trim()})`);
    throw e;
  }
  const table = (JSON.parse(out) as SfdiskJson).partitiontable;
  if (table?.label !== 'gpt') throw new ImageRefusedError(`not a geminik8s image: ${image} has no GPT partition table (found ${table?.label ?? 'none'})`);
  const sectorSize = table.sectorsize ?? 512;
  const partitions = (table.partitions ?? []).map((p) => {
    const m = /(\d+)$/.exec(p.node);
    return {
      index: m ? Number(m[1]) : 0,
      name: p.name ?? '',
      startSector: p.start,
      sizeSectors: p.size,
      offsetBytes: p.start * sectorSize,
      sizeBytes: p.size * sectorSize,
      typeGuid: p.type,
      uuid: p.uuid ?? '',
    };
  });
  return { diskGuid: table.id ?? '', sectorSize, partitions };
}

/** The mtools target of the OEM filesystem; refuses any disk whose partition table geminik8s build did not write. */
async function oemTarget(image: string): Promise<string> {
  const gpt = await readGpt(image);
  const problems = layoutMismatches(gpt.diskGuid, gpt.partitions);
  const oem = gpt.partitions.find((p) => p.name === 'oem');
  if (problems.length > 0 || !oem) {
    const found = gpt.partitions.map((p) => `${p.index} "${p.name}"`).join(', ') || 'no partitions';
    throw new ImageRefusedError(
      `not a geminik8s image: ${image} has a partition table geminik8s build did not write (found ${found}); nothing was written:\n  ${problems.join('\n  ')}\n` +
        'stamp an image made by `geminik8s build` (image.raw.zst decompressed) or the disk it was flashed to',
    );
  }
  return `${image}@@${oem.offsetBytes}`;
}

/**
 * Writes `siteFile` as /site.yaml into the OEM partition of `image` (raw image file or block
 * device), replacing any previous one, and flushes it to the medium. Validation is the caller's job.
 */
export async function stampSite(image: string, siteFile: string): Promise<void> {
  await requireTools(['sfdisk', 'mcopy']);
  const st = await stat(siteFile).catch(() => undefined);
  if (!st?.isFile()) throw new Error(`site file ${siteFile} does not exist or is not a regular file`);
  const target = await oemTarget(image);
  const fh = await open(image, 'r+');
  try {
    // The image is about to hold the pair secret: an image file becomes private to its owner first.
    const imageStat = await fh.stat();
    if (imageStat.isFile() && (imageStat.mode & 0o077) !== 0) await fh.chmod(imageStat.mode & 0o700);
    await run(await toolPath('mcopy'), ['-o', '-i', target, siteFile, `::${SITE_FILE_NAME}`], { env: { ...MTOOLS_ENV } });
    // mtools leaves the data in the page cache; on a USB stick that is about to be unplugged, flush it.
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** Returns the OEM partition's site.yaml, or undefined when the image has not been stamped. */
export async function readSiteFromImage(image: string): Promise<string | undefined> {
  await requireTools(['sfdisk', 'mcopy']);
  const target = await oemTarget(image);
  // mcopy into a scratch file (not mtype to stdout) so the content comes back byte-exact.
  const dir = await mkdtemp(path.join(tmpdir(), 'gk8s-site-'));
  try {
    const local = path.join(dir, SITE_FILE_NAME);
    try {
      await run(await toolPath('mcopy'), ['-n', '-i', target, `::${SITE_FILE_NAME}`, local], { env: { ...MTOOLS_ENV } });
    } catch (e) {
      if (e instanceof CommandError && /not found/i.test(e.stderrTail)) return undefined;
      throw e;
    }
    return await readFile(local, 'utf8');
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

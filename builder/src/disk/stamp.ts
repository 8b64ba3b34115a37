/**
 * Site stamping: write/read site.yaml in the OEM partition of a raw image file or a flashed
 * block device, without mounting (sfdisk --json for the offset, mtools with image@@offset).
 */
import { mkdtemp, open, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { CommandError, run } from '../util/exec.ts';
import { MTOOLS_ENV } from './fs.ts';
import { requireTools, toolPath } from './tools.ts';

export const SITE_FILE_NAME = 'site.yaml';

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
    throw new Error(`${image}: no such file or device`);
  });
  let out: string;
  try {
    out = await run(await toolPath('sfdisk'), ['--json', image]);
  } catch (e) {
    if (e instanceof CommandError) throw new Error(`not a geminik8s image: ${image} has no readable partition table (${e.stderrTail.trim()})`);
    throw e;
  }
  const table = (JSON.parse(out) as SfdiskJson).partitiontable;
  if (!table || table.label !== 'gpt') throw new Error(`not a geminik8s image: ${image} has no GPT partition table (found ${table?.label ?? 'none'})`);
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

async function oemTarget(image: string): Promise<string> {
  const gpt = await readGpt(image);
  const oem = gpt.partitions.find((p) => p.name === 'oem');
  if (!oem) throw new Error(`not a geminik8s image: no GPT partition named oem in ${image}`);
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
  await run(await toolPath('mcopy'), ['-o', '-i', target, siteFile, `::${SITE_FILE_NAME}`], { env: { ...MTOOLS_ENV } });
  // mtools leaves the data in the page cache; on a USB stick that is about to be unplugged, flush it.
  const fh = await open(image, 'r+');
  try {
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

import { randomBytes } from 'node:crypto';
import { mkdir, readdir, rename, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { sha256File } from '../util/digest.ts';
import { run } from '../util/exec.ts';

export const ARTIFACT_FILES = { image: 'image.raw.zst', bmap: 'image.bmap', manifest: 'manifest.json', sums: 'SHA256SUMS' } as const;
/** The signed update bundle, published beside the image when the build has a signing key. */
export const BUNDLE_FILE = 'update.bundle';
/** The compressed root slot in the artifacts step's cache folder, and what the bundle's manifest says of it. */
export const SLOT_FILES = { image: 'root.img.zst', facts: 'slot.json' } as const;

export interface SlotFacts {
  bytes: number;
  sha256: string;
  rawBytes: number;
  rawSha256: string;
}

/**
 * Cuts the root-a partition out of the raw image and compresses it: the slot image an update
 * bundle carries (the inactive slot receives exactly what a fresh image has in root-a).
 */
export async function compressSlot(rawImage: string, part: { offsetBytes: number; sizeBytes: number }, dir: string, level: number): Promise<SlotFacts> {
  const plain = path.join(dir, 'root.img');
  await run('dd', [
    `if=${rawImage}`,
    `of=${plain}`,
    'bs=4M',
    `skip=${part.offsetBytes}`,
    `count=${part.sizeBytes}`,
    'iflag=skip_bytes,count_bytes',
    'conv=sparse',
    'status=none',
  ]);
  const rawBytes = (await stat(plain)).size;
  if (rawBytes !== part.sizeBytes) throw new Error(`internal: cut ${rawBytes} bytes of root-a, the layout says ${part.sizeBytes}`);
  const rawSha256 = await sha256File(plain);
  const out = path.join(dir, SLOT_FILES.image);
  // The box decompresses with plain `zstd -d`: a --long window above 2^27 would need --long there too.
  await run('zstd', ['-q', '-f', `-${level}`, '-T0', '--long=27', plain, '-o', out]);
  await rm(plain);
  const facts: SlotFacts = { bytes: (await stat(out)).size, sha256: await sha256File(out), rawBytes, rawSha256 };
  await writeFile(path.join(dir, SLOT_FILES.facts), `${JSON.stringify(facts)}\n`);
  return facts;
}

/** Compresses the raw image and writes its block map; both into `dir`. */
export async function compressImage(rawImage: string, dir: string, level: number): Promise<{ bytes: number; sha256: string }> {
  const out = path.join(dir, ARTIFACT_FILES.image);
  // --long helps on the large runs of identical blocks; -T0 uses every core.
  await run('zstd', ['-q', '-f', `-${level}`, '-T0', '--long=27', rawImage, '-o', out]);
  await run('bmaptool', ['create', '-o', path.join(dir, ARTIFACT_FILES.bmap), rawImage]);
  return { bytes: (await stat(out)).size, sha256: await sha256File(out) };
}

/** Writes SHA256SUMS (sha256sum format) for every file in `dir` but `except`. */
export async function writeChecksums(dir: string, except: string[] = []): Promise<void> {
  const files = (await readdir(dir)).filter((f) => f !== ARTIFACT_FILES.sums && !except.includes(f)).sort();
  const lines = await Promise.all(files.map(async (f) => `${await sha256File(path.join(dir, f))}  ${f}`));
  await writeFile(path.join(dir, ARTIFACT_FILES.sums), `${lines.join('\n')}\n`);
}

/**
 * Fills a hidden staging folder and renames it to `<outRoot>/<name>` only when complete, so an
 * interrupted build never leaves a folder that looks like a finished artifact set.
 */
export async function publishArtifacts(outRoot: string, name: string, fill: (staging: string) => Promise<void>): Promise<string> {
  await mkdir(outRoot, { recursive: true });
  for (const e of await readdir(outRoot)) {
    if (e.startsWith(`.${name}.partial-`)) await rm(path.join(outRoot, e), { recursive: true, force: true });
  }
  const staging = path.join(outRoot, `.${name}.partial-${randomBytes(4).toString('hex')}`);
  await mkdir(staging);
  try {
    await fill(staging);
  } catch (err) {
    await rm(staging, { recursive: true, force: true });
    throw err;
  }
  const final = path.join(outRoot, name);
  const old = `${staging}.old`;
  await rename(final, old).catch((err: NodeJS.ErrnoException) => {
    if (err.code !== 'ENOENT') throw err;
  });
  await rename(staging, final);
  await rm(old, { recursive: true, force: true });
  return final;
}

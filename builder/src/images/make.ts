/**
 * The build's `images` step: the baked-in images made from their binaries (builder/src/images/baked.ts)
 * and the profile's extra archives fetched and checked, as <outDir>/<name>.tar plus
 * <outDir>/images.json, the records the root tree installs next to them and the manifest lists.
 */
import { copyFile, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { resolveComponent, type ComponentArch, type ResolvedComponent } from '../components/resolve.ts';
import type { ImageArchive } from '../config/profile.ts';
import { BAKED_IMAGES, IMAGE_REGISTRY, IMAGES_DIR } from './baked.ts';
import { ociImageArchive, readOciIndex, sha256Digest } from './oci.ts';

export const IMAGES_FILE = 'images.json';

/** One image in one archive: what the runtime imports and what the kubelet asks for. */
export interface ImageRecord {
  /** The archive's name: <IMAGES_DIR>/<name>.tar */
  name: string;
  file: string;
  /** sha256 of the archive file. */
  sha256: string;
  /** The full name the runtime gives the image, e.g. geminik8s.local/pause:v1.0.0. */
  reference: string;
  /** The image manifest's digest. */
  digest: string;
  source: 'built' | ResolvedComponent['source'];
  /** Baked images: the binary inside. */
  binary?: { version: string; sha256: string; source: ResolvedComponent['source'] };
}

export interface MakeImagesOptions {
  arch: ComponentArch;
  cacheDir: string;
  repoRoot: string;
  /** The files' times and the images' creation date. */
  sourceDateEpoch: number;
  extra: ImageArchive[];
  outDir: string;
  onProgress?: (line: string) => void;
}

/** Makes every archive into outDir and returns (and writes to images.json) what each holds. */
export async function makeImages(o: MakeImagesOptions): Promise<ImageRecord[]> {
  const records: ImageRecord[] = [];
  const resolveOpts = { arch: o.arch, cacheDir: o.cacheDir, repoRoot: o.repoRoot, ...(o.onProgress ? { onProgress: o.onProgress } : {}) };
  const file = (name: string) => path.posix.join(IMAGES_DIR, `${name}.tar`);

  // The profile's archives first: a missing one or a wrong sha256 fails before any build.
  const seen = new Set<string>();
  for (const extra of o.extra) {
    if (seen.has(extra.name)) throw new Error(`components.kubernetes.images: "${extra.name}" is listed twice`);
    seen.add(extra.name);
    const got = await resolveComponent(
      {
        name: extra.name,
        version: extra.version,
        file: `${extra.name}.tar`,
        sources: extra.sources,
        hint: 'Put the archive there, or give a url with its sha256 (components.kubernetes.images in the profile)',
      },
      resolveOpts,
    );
    const out = path.join(o.outDir, `${extra.name}.tar`);
    await copyFile(got.path, out);
    for (const image of await readOciIndex(out)) {
      if (!image.reference) {
        throw new Error(
          `image archive ${extra.name} (${got.path}): image ${image.digest} has no name (io.containerd.image.name or org.opencontainers.image.ref.name): the runtime would import it by digest only, and no pod could ask for it`,
        );
      }
      records.push({ name: extra.name, file: file(extra.name), sha256: got.sha256, reference: image.reference, digest: image.digest, source: got.source });
    }
  }

  for (const baked of BAKED_IMAGES) {
    const binary = await resolveComponent(baked.component, resolveOpts);
    const image = ociImageArchive({
      repository: `${IMAGE_REGISTRY}/${baked.name}`,
      tag: baked.component.version,
      arch: o.arch,
      files: [{ path: baked.path, mode: 0o755, data: await readFile(binary.path) }],
      entrypoint: [baked.path],
      ...(baked.user ? { user: baked.user } : {}),
      ...(baked.exposedPorts ? { exposedPorts: baked.exposedPorts } : {}),
      created: o.sourceDateEpoch,
      createdBy: `geminik8s builder: ${baked.component.name} ${baked.component.version} (sha256 ${binary.sha256}) at ${baked.path}`,
    });
    const out = path.join(o.outDir, `${baked.name}.tar`);
    await writeFile(out, image.archive);
    records.push({
      name: baked.name,
      file: file(baked.name),
      sha256: sha256Digest(image.archive).slice('sha256:'.length),
      reference: image.reference,
      digest: image.digest,
      source: 'built',
      binary: { version: binary.version, sha256: binary.sha256, source: binary.source },
    });
    o.onProgress?.(`${image.reference}: ${(image.archive.length / 1e6).toFixed(1)} MB, ${image.digest}`);
  }
  await writeFile(path.join(o.outDir, IMAGES_FILE), `${JSON.stringify(records, null, 2)}\n`);
  return records;
}

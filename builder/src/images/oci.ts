/**
 * Single-layer OCI images as image-layout tar archives (what skopeo calls `oci-archive:` and
 * `ctr images import` reads), written here byte for byte: the same files and time give the same
 * archive. Debian 12's umoci (0.4.7) was tried first and wrote layer tars without their end
 * blocks, and no tool in Debian writes the index annotation containerd 1.6 names images by.
 *
 * Everything but readOciIndex is pure: bytes in, bytes out.
 */
import { createHash } from 'node:crypto';
import { open } from 'node:fs/promises';

export const MEDIA_TYPES = {
  index: 'application/vnd.oci.image.index.v1+json',
  manifest: 'application/vnd.oci.image.manifest.v1+json',
  config: 'application/vnd.oci.image.config.v1+json',
  // Uncompressed: gzip output depends on the zlib build, and the image is compressed as a whole anyway.
  layer: 'application/vnd.oci.image.layer.v1.tar',
} as const;

/** The index annotation `ctr images import` (containerd 1.6) takes an image's full name from. */
export const CONTAINERD_NAME_ANNOTATION = 'io.containerd.image.name';
/** The OCI annotation for the tag: what `skopeo … oci-archive:<file>:<tag>` selects by. */
export const OCI_REF_ANNOTATION = 'org.opencontainers.image.ref.name';

const BLOCK = 512;

export interface TarEntry {
  /** Relative path inside the archive, without a leading slash; a directory ends in '/'. */
  path: string;
  mode: number;
  /** File contents; absent for a directory. */
  data?: Buffer;
}

/** A POSIX ustar archive with every owner root and every time `mtime` (seconds since the epoch). */
export function tarArchive(entries: TarEntry[], mtime: number): Buffer {
  const parts: Buffer[] = [];
  for (const e of entries) {
    const size = e.data?.length ?? 0;
    parts.push(tarHeader(e.path, e.mode, size, mtime, e.data ? '0' : '5'));
    if (e.data) {
      parts.push(e.data);
      const pad = (BLOCK - (size % BLOCK)) % BLOCK;
      if (pad) parts.push(Buffer.alloc(pad));
    }
  }
  // Two zero blocks end the archive.
  parts.push(Buffer.alloc(2 * BLOCK));
  return Buffer.concat(parts);
}

function tarHeader(path: string, mode: number, size: number, mtime: number, type: '0' | '5'): Buffer {
  const h = Buffer.alloc(BLOCK);
  // ustar splits a long name at a slash into prefix (155) and name (100).
  let name = path;
  let prefix = '';
  if (Buffer.byteLength(name) > 100) {
    const cut = path.lastIndexOf('/', path.length - 2);
    prefix = path.slice(0, cut);
    name = path.slice(cut + 1);
    if (cut <= 0 || Buffer.byteLength(name) > 100 || Buffer.byteLength(prefix) > 155) throw new Error(`tar: path too long for ustar: ${path}`);
  }
  if (size >= 8 ** 11) throw new Error(`tar: ${path} is too large for ustar (${size} bytes)`);
  const octal = (value: number, width: number) => `${value.toString(8).padStart(width - 1, '0')}\0`;
  h.write(name, 0, 100, 'utf8');
  h.write(octal(mode, 8), 100, 'ascii');
  h.write(octal(0, 8), 108, 'ascii');
  h.write(octal(0, 8), 116, 'ascii');
  h.write(octal(size, 12), 124, 'ascii');
  h.write(octal(mtime, 12), 136, 'ascii');
  h.write(' '.repeat(8), 148, 'ascii');
  h.write(type, 156, 'ascii');
  h.write('ustar\0', 257, 'ascii');
  h.write('00', 263, 'ascii');
  h.write('root', 265, 'ascii');
  h.write('root', 297, 'ascii');
  h.write(prefix, 345, 155, 'utf8');
  let sum = 0;
  for (const b of h) sum += b;
  h.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 'ascii');
  return h;
}

export const sha256Digest = (data: Buffer): string => `sha256:${createHash('sha256').update(data).digest('hex')}`;

export interface OciImageInput {
  /** Repository without the tag, e.g. geminik8s.local/pause. */
  repository: string;
  tag: string;
  arch: 'amd64' | 'arm64';
  /** The layer's files, at absolute paths in the container (e.g. /pause). */
  files: { path: string; mode: number; data: Buffer }[];
  entrypoint: string[];
  /** uid:gid the container runs as unless the pod says otherwise; absent: root. */
  user?: string;
  exposedPorts?: string[];
  /** Seconds since the epoch: the files' times and the image's creation date (SOURCE_DATE_EPOCH). */
  created: number;
  /** What made the layer, for the image's history. */
  createdBy: string;
}

export interface OciImage {
  archive: Buffer;
  /** repository:tag */
  reference: string;
  /** The manifest digest: the image's identity in a runtime. */
  digest: string;
  layerDigest: string;
}

interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
}

// Code-unit order, never the locale's: the archive must not depend on the build host's settings.
const byPath = (a: { path: string }, b: { path: string }): number => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0);
const blob = (mediaType: string, data: Buffer): Descriptor => ({ mediaType, digest: sha256Digest(data), size: data.length });
const json = (value: unknown): Buffer => Buffer.from(JSON.stringify(value));

/** One image in an OCI image layout, as a tar archive: oci-layout, index.json and its three blobs. */
export function ociImageArchive(inp: OciImageInput): OciImage {
  const created = new Date(inp.created * 1000).toISOString().replace(/\.000Z$/, 'Z');
  const reference = `${inp.repository}:${inp.tag}`;
  const layerEntries: TarEntry[] = [];
  const dirs = new Set<string>();
  for (const f of [...inp.files].sort(byPath)) {
    if (!f.path.startsWith('/') || f.path.endsWith('/') || f.path.split('/').some((p) => p === '..' || p === '.')) {
      throw new Error(`image ${reference}: file path must be absolute and plain, got ${JSON.stringify(f.path)}`);
    }
    const rel = f.path.slice(1);
    // Parent directories first, so the runtime never makes them with its own defaults.
    const parents = rel.split('/').slice(0, -1);
    for (let i = 1; i <= parents.length; i++) {
      const dir = `${parents.slice(0, i).join('/')}/`;
      if (!dirs.has(dir)) {
        dirs.add(dir);
        layerEntries.push({ path: dir, mode: 0o755 });
      }
    }
    layerEntries.push({ path: rel, mode: f.mode, data: f.data });
  }
  const layer = tarArchive(layerEntries, inp.created);
  const layerDesc = blob(MEDIA_TYPES.layer, layer);
  const config = json({
    created,
    architecture: inp.arch,
    os: 'linux',
    config: {
      ...(inp.user ? { User: inp.user } : {}),
      ...(inp.exposedPorts?.length ? { ExposedPorts: Object.fromEntries(inp.exposedPorts.map((p) => [p, {}])) } : {}),
      Entrypoint: inp.entrypoint,
    },
    rootfs: { type: 'layers', diff_ids: [layerDesc.digest] },
    history: [{ created, created_by: inp.createdBy }],
  });
  const configDesc = blob(MEDIA_TYPES.config, config);
  const manifest = json({ schemaVersion: 2, mediaType: MEDIA_TYPES.manifest, config: configDesc, layers: [layerDesc] });
  const manifestDesc = blob(MEDIA_TYPES.manifest, manifest);
  const index = json({
    schemaVersion: 2,
    mediaType: MEDIA_TYPES.index,
    manifests: [
      {
        ...manifestDesc,
        platform: { architecture: inp.arch, os: 'linux' },
        annotations: { [CONTAINERD_NAME_ANNOTATION]: reference, [OCI_REF_ANNOTATION]: inp.tag },
      },
    ],
  });
  const blobEntry = (d: Descriptor, data: Buffer): TarEntry => ({ path: `blobs/sha256/${d.digest.slice('sha256:'.length)}`, mode: 0o644, data });
  const archive = tarArchive(
    [
      { path: 'oci-layout', mode: 0o644, data: json({ imageLayoutVersion: '1.0.0' }) },
      { path: 'index.json', mode: 0o644, data: index },
      { path: 'blobs/', mode: 0o755 },
      { path: 'blobs/sha256/', mode: 0o755 },
      ...[blobEntry(layerDesc, layer), blobEntry(configDesc, config), blobEntry(manifestDesc, manifest)].sort(byPath),
    ],
    inp.created,
  );
  return { archive, reference, digest: manifestDesc.digest, layerDigest: layerDesc.digest };
}

export interface OciIndexEntry {
  digest: string;
  /** The name a runtime gives the image: containerd's annotation, else the OCI ref name; absent when the archive names none. */
  reference?: string;
}

/**
 * The images an OCI image-layout archive holds, from its index.json; reads headers and skips
 * contents, so a large archive costs a few reads.
 */
export async function readOciIndex(file: string): Promise<OciIndexEntry[]> {
  const fh = await open(file, 'r');
  try {
    const header = Buffer.alloc(BLOCK);
    let offset = 0;
    for (;;) {
      const { bytesRead } = await fh.read(header, 0, BLOCK, offset);
      if (bytesRead < BLOCK || header.every((b) => b === 0)) break;
      const field = (start: number, len: number) =>
        header
          .subarray(start, start + len)
          .toString('utf8')
          .replace(/\0.*$/s, '');
      const name = [field(345, 155), field(0, 100)].filter(Boolean).join('/').replace(/^\.\//, '');
      const size = Number.parseInt(field(124, 12).trim() || '0', 8);
      if (!Number.isFinite(size)) throw new Error(`${file}: not a tar archive (bad size field at byte ${offset})`);
      const type = field(156, 1);
      if (name === 'index.json' && (type === '0' || type === '')) {
        if (size > 4 << 20) throw new Error(`${file}: index.json is ${size} bytes, too large for an image index`);
        const data = Buffer.alloc(size);
        await fh.read(data, 0, size, offset + BLOCK);
        return parseIndex(file, data);
      }
      offset += BLOCK + Math.ceil(size / BLOCK) * BLOCK;
    }
  } finally {
    await fh.close();
  }
  throw new Error(`${file}: not an OCI image-layout archive (no index.json): make it with \`skopeo copy … oci-archive:<file>:<name>\``);
}

function parseIndex(file: string, data: Buffer): OciIndexEntry[] {
  let index: { manifests?: { digest?: unknown; annotations?: Record<string, unknown> }[] };
  try {
    index = JSON.parse(data.toString('utf8')) as typeof index;
  } catch (e) {
    throw new Error(`${file}: index.json is not JSON: ${(e as Error).message}`);
  }
  const manifests = index.manifests ?? [];
  if (manifests.length === 0) throw new Error(`${file}: index.json lists no image`);
  return manifests.map((m) => {
    if (typeof m.digest !== 'string' || !/^sha256:[0-9a-f]{64}$/.test(m.digest)) throw new Error(`${file}: index.json has a manifest without a sha256 digest`);
    const name = m.annotations?.[CONTAINERD_NAME_ANNOTATION] ?? m.annotations?.[OCI_REF_ANNOTATION];
    return typeof name === 'string' && name ? { digest: m.digest, reference: name } : { digest: m.digest };
  });
}

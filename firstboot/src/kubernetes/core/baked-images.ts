/**
 * The container images the OS image carries, as the builder lists them in images.json next to
 * their archives (builder/src/images/make.ts writes it; builder/src/pipeline/root-tree.ts installs
 * both in its IMAGES_DIR): one entry per image, several when an archive holds several. Pure: the
 * shell (../baked-images.ts) reads the file.
 */

/** Where the list sits on the appliance: IMAGES_DIR/IMAGES_FILE of the builder. */
export const BAKED_IMAGES_FILE = '/usr/lib/geminik8s/images/images.json';

/** One image in one archive: what the runtime imports and what pods name. */
export interface BakedImage {
  /** The archive's name (baked: pause, hello, coredns; else the profile's name for it). */
  name: string;
  /** The archive, an absolute path on the appliance. */
  file: string;
  /** sha256 of the archive, hex. */
  sha256: string;
  /** The full name the runtime gives the image, e.g. geminik8s.local/coredns:v1.15.0. */
  reference: string;
  /** The image manifest's digest, sha256:<hex>. */
  digest: string;
}

const HEX64_RE = /^[0-9a-f]{64}$/;

/** The entries of images.json; throws naming `origin` (the file), the entry and the field on anything else. */
export function parseBakedImages(text: string, origin: string): BakedImage[] {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (e) {
    throw new Error(`${origin}: not JSON: ${(e as Error).message}`);
  }
  if (!Array.isArray(doc)) throw new Error(`${origin}: expected a list of images at the top`);
  return doc.map((entry: unknown, i): BakedImage => {
    if (entry === null || typeof entry !== 'object' || Array.isArray(entry)) throw new Error(`${origin}: entry ${i} is not an object`);
    const e = entry as Record<string, unknown>;
    const field = (key: keyof BakedImage, ok: (v: string) => boolean, expected: string): string => {
      const v = e[key];
      if (typeof v !== 'string' || !ok(v))
        throw new Error(`${origin}: entry ${i}${typeof e.name === 'string' ? ` (${e.name})` : ''}: ${key} ${JSON.stringify(v)} is not ${expected}`);
      return v;
    };
    return {
      name: field('name', (v) => /^[a-z0-9][a-z0-9._-]*$/.test(v), 'an archive name'),
      file: field('file', (v) => v.startsWith('/') && !/[\s\0]/.test(v), 'an absolute path'),
      sha256: field('sha256', (v) => HEX64_RE.test(v), 'a sha256 in hex'),
      reference: field('reference', (v) => v !== '' && !/\s/.test(v), 'an image reference'),
      digest: field('digest', (v) => v.startsWith('sha256:') && HEX64_RE.test(v.slice('sha256:'.length)), 'a sha256:<hex> digest'),
    };
  });
}

/** The reference of the one image of archive `name` (e.g. coredns, pause); throws naming what the list holds instead. */
export function imageReference(list: readonly BakedImage[], name: string): string {
  const found = list.filter((i) => i.name === name);
  if (found.length === 1) return found[0]!.reference;
  if (found.length === 0)
    throw new Error(
      `the OS image carries no image ${JSON.stringify(name)}; it carries: ${list.length > 0 ? list.map((i) => `${i.name} (${i.reference})`).join(', ') : 'none'}`,
    );
  throw new Error(`archive ${JSON.stringify(name)} holds ${found.length} images (${found.map((i) => i.reference).join(', ')}): it names no single one`);
}

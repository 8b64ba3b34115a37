/**
 * What an update bundle is and whether a box may install it. Pure: the bundle reader hands in the
 * manifest's text, the box its running image and slot size; the answers are typed refusals in the
 * "expected X, bundle has Y" form, so the CLI, the agent and the tests say the same thing.
 *
 * A bundle is a POSIX tar of exactly three regular files, in this order:
 *   manifest.json   this schema (JSON)
 *   manifest.sig    the ed25519 signature of manifest.json's bytes (64 bytes, raw)
 *   root.img.zst    the root slot's filesystem image, zstd-compressed
 * The signature covers only the manifest; the manifest pins the slot image by its sha256 and size,
 * both compressed (checked before anything is written) and raw (checked as it is written).
 */
import type { FromSchema } from 'json-schema-to-ts';
import { parseYamlWithSchema, type Parsed } from '../../core/config-file.ts';

export const BUNDLE_FILES = { manifest: 'manifest.json', signature: 'manifest.sig', slot: 'root.img.zst' } as const;
export const BUNDLE_ORDER = [BUNDLE_FILES.manifest, BUNDLE_FILES.signature, BUNDLE_FILES.slot] as const;
/** A manifest is a few hundred bytes; anything much larger is not one. */
export const MAX_MANIFEST_BYTES = 64 * 1024;
export const ED25519_SIGNATURE_BYTES = 64;
export const PRODUCT = 'geminik8s';

const sha256 = { type: 'string', pattern: '^[0-9a-f]{64}$', description: 'a lowercase hex sha256' } as const;
const version = { type: 'string', pattern: '^v?[0-9]+(\\.[0-9]+)*([-+][0-9A-Za-z.+-]+)?$', description: 'a version like 0.2.0' } as const;

export const bundleManifestSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['schemaVersion', 'product', 'version', 'arch', 'hardware', 'profile', 'slot'],
  properties: {
    schemaVersion: { const: 1 },
    product: { const: PRODUCT },
    version,
    /** The oldest version this bundle can upgrade from (absent: any). */
    minFromVersion: version,
    arch: { enum: ['amd64', 'arm64'] },
    hardware: { type: 'string', minLength: 1 },
    profile: { type: 'string', minLength: 1 },
    sourceDateEpoch: { type: 'integer', minimum: 0 },
    buildInputsHash: { type: 'string' },
    slot: {
      type: 'object',
      additionalProperties: false,
      required: ['file', 'fs', 'bytes', 'sha256', 'rawBytes', 'rawSha256'],
      properties: {
        file: { const: BUNDLE_FILES.slot },
        fs: { const: 'ext4' },
        bytes: { type: 'integer', minimum: 1 },
        sha256,
        rawBytes: { type: 'integer', minimum: 1 },
        rawSha256: sha256,
      },
    },
  },
} as const;

export type BundleManifest = FromSchema<typeof bundleManifestSchema>;

export function parseBundleManifest(text: string, file: string): Parsed<BundleManifest> {
  return parseYamlWithSchema<BundleManifest>(text, file, bundleManifestSchema);
}

/**
 * Orders dotted numeric versions ("0.10.0" > "0.9.1"); a pre-release suffix ("1.0.0-rc1") sorts
 * before its release, build metadata ("+b2") and a leading "v" are ignored.
 */
export function compareVersions(a: string, b: string): number {
  const split = (v: string) => {
    const [core = '', pre] = v.replace(/^v/, '').split('+')[0]!.split(/-(.*)/s);
    return { nums: core.split('.').map(Number), pre };
  };
  const x = split(a);
  const y = split(b);
  for (let i = 0; i < Math.max(x.nums.length, y.nums.length); i++) {
    const d = (x.nums[i] ?? 0) - (y.nums[i] ?? 0);
    if (d !== 0) return Math.sign(d);
  }
  if (x.pre === y.pre) return 0;
  if (x.pre === undefined) return 1;
  if (y.pre === undefined) return -1;
  return x.pre < y.pre ? -1 : 1;
}

/** The image a box runs (/etc/geminik8s/image.yaml) and the room its inactive slot has. */
export interface InstallTarget {
  version: string;
  arch: string;
  hardware: string;
  slotBytes: number;
}

export type RefusalCode = 'wrong-hardware' | 'wrong-arch' | 'too-old-to-upgrade' | 'downgrade' | 'same-version' | 'slot-too-small';

export interface Refusal {
  code: RefusalCode;
  expected: string;
  found: string;
  message: string;
}

/** Whether `m` may go into a box running `target`; undefined when it may. */
export function checkCompatibility(m: BundleManifest, target: InstallTarget, o: { allowDowngrade?: boolean } = {}): Refusal | undefined {
  const refuse = (code: RefusalCode, expected: string, found: string, what: string): Refusal => ({
    code,
    expected,
    found,
    message: `${what}: expected ${expected}, bundle has ${found}`,
  });
  if (m.hardware !== target.hardware) return refuse('wrong-hardware', `hardware ${target.hardware}`, `hardware ${m.hardware}`, 'bundle is for other hardware');
  if (m.arch !== target.arch) return refuse('wrong-arch', `arch ${target.arch}`, `arch ${m.arch}`, 'bundle is for another CPU architecture');
  if (m.minFromVersion !== undefined && compareVersions(target.version, m.minFromVersion) < 0)
    return refuse(
      'too-old-to-upgrade',
      `a bundle that accepts ${target.version}`,
      `minFromVersion ${m.minFromVersion}`,
      `this box runs ${target.version}, too old for this bundle (upgrade to ${m.minFromVersion} first)`,
    );
  const order = compareVersions(m.version, target.version);
  if (order === 0 && !o.allowDowngrade)
    return refuse(
      'same-version',
      `a version other than ${target.version}`,
      `version ${m.version}`,
      'this box already runs that version (reinstall with --allow-downgrade)',
    );
  if (order < 0 && !o.allowDowngrade)
    return refuse(
      'downgrade',
      `a version newer than ${target.version}`,
      `version ${m.version}`,
      'refusing a downgrade (allow it explicitly with --allow-downgrade)',
    );
  if (m.slot.rawBytes > target.slotBytes)
    return refuse(
      'slot-too-small',
      `a slot image of at most ${target.slotBytes} bytes`,
      `${m.slot.rawBytes} bytes`,
      'the slot image does not fit the inactive slot',
    );
  return undefined;
}

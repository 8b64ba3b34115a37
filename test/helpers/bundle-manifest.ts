/** A bundle manifest for tests: a v0.2.0 edge-datastore bundle for generic-x86_64-uefi, with the given slot image facts. */
import { createHash } from 'node:crypto';
import type { BundleManifest } from '../../firstboot/src/upgrade/core/manifest.ts';

export const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

export function testManifest(slot: { bytes: number; sha256: string; rawBytes: number; rawSha256: string }, over: Partial<BundleManifest> = {}): BundleManifest {
  return {
    schemaVersion: 1,
    product: 'geminik8s',
    version: '0.2.0',
    arch: 'amd64',
    hardware: 'generic-x86_64-uefi',
    profile: 'edge-datastore',
    slot: { file: 'root.img.zst', fs: 'ext4', ...slot },
    ...over,
  };
}

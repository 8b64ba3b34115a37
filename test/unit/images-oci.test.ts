import test from 'ava';
import { createHash } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import {
  CONTAINERD_NAME_ANNOTATION,
  MEDIA_TYPES,
  OCI_REF_ANNOTATION,
  ociImageArchive,
  readOciIndex,
  tarArchive,
  type OciImageInput,
} from '../../builder/src/images/oci.ts';
import { scratchDirs } from '../helpers/scratch.ts';

const scratch = scratchDirs(test);

const INPUT: OciImageInput = {
  repository: 'geminik8s.local/demo',
  tag: 'v1.2.3',
  arch: 'amd64',
  files: [{ path: '/bin/demo', mode: 0o755, data: Buffer.from('#!demo\n'.repeat(100)) }],
  entrypoint: ['/bin/demo'],
  user: '65532:65532',
  exposedPorts: ['8080/tcp'],
  created: 1_700_000_000,
  createdBy: 'test',
};

interface Entry {
  name: string;
  mode: number;
  size: number;
  mtime: number;
  uid: number;
  type: string;
  data: Buffer;
}

/** A reader written from the ustar layout, independent of the writer under test. */
function untar(archive: Buffer): Entry[] {
  const entries: Entry[] = [];
  for (let off = 0; off + 512 <= archive.length; ) {
    const h = archive.subarray(off, off + 512);
    if (h.every((b) => b === 0)) break;
    const str = (a: number, n: number) =>
      h
        .subarray(a, a + n)
        .toString('utf8')
        .replace(/\0.*$/s, '');
    const num = (a: number, n: number) => Number.parseInt(str(a, n).trim(), 8);
    let sum = 0;
    for (let i = 0; i < 512; i++) sum += i >= 148 && i < 156 ? 32 : h[i]!;
    if (sum !== num(148, 8)) throw new Error(`bad checksum at ${off}`);
    const size = num(124, 12);
    const name = [str(345, 155), str(0, 100)].filter(Boolean).join('/');
    entries.push({
      name,
      mode: num(100, 8),
      size,
      mtime: num(136, 12),
      uid: num(108, 8),
      type: str(156, 1),
      data: archive.subarray(off + 512, off + 512 + size),
    });
    off += 512 + Math.ceil(size / 512) * 512;
  }
  return entries;
}

const sha = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

test('the same files and time give the same archive, byte for byte; another time or file gives another image', (t) => {
  const a = ociImageArchive(INPUT);
  t.deepEqual(ociImageArchive(INPUT).archive, a.archive);
  t.not(ociImageArchive({ ...INPUT, created: INPUT.created + 1 }).digest, a.digest);
  const other = ociImageArchive({ ...INPUT, files: [{ ...INPUT.files[0]!, data: Buffer.from('other') }] });
  t.not(other.layerDigest, a.layerDigest);
  t.is(a.reference, 'geminik8s.local/demo:v1.2.3');
});

test('the archive is an OCI image layout: blobs named by their digests, index -> manifest -> config and layer', (t) => {
  const img = ociImageArchive(INPUT);
  const entries = untar(img.archive);
  t.deepEqual(
    entries.slice(0, 4).map((e) => e.name),
    ['oci-layout', 'index.json', 'blobs/', 'blobs/sha256/'],
  );
  t.true(entries.every((e) => e.mtime === INPUT.created && e.uid === 0));
  const blobs = new Map(entries.filter((e) => e.name.startsWith('blobs/sha256/') && e.type === '0').map((e) => [`sha256:${e.name.slice(13)}`, e.data]));
  for (const [digest, data] of blobs) t.is(sha(data), digest);
  t.deepEqual(JSON.parse(entries[0]!.data.toString()), { imageLayoutVersion: '1.0.0' });

  const index = JSON.parse(entries[1]!.data.toString());
  t.is(index.manifests.length, 1);
  const m = index.manifests[0];
  t.is(m.digest, img.digest);
  t.deepEqual(m.platform, { architecture: 'amd64', os: 'linux' });
  t.deepEqual(m.annotations, { [CONTAINERD_NAME_ANNOTATION]: 'geminik8s.local/demo:v1.2.3', [OCI_REF_ANNOTATION]: 'v1.2.3' });

  const manifest = JSON.parse(blobs.get(img.digest)!.toString());
  t.is(manifest.mediaType, MEDIA_TYPES.manifest);
  t.is(manifest.layers[0].mediaType, MEDIA_TYPES.layer);
  t.is(manifest.layers[0].digest, img.layerDigest);
  const config = JSON.parse(blobs.get(manifest.config.digest)!.toString());
  t.like(config, {
    created: '2023-11-14T22:13:20Z',
    architecture: 'amd64',
    os: 'linux',
    config: { User: '65532:65532', Entrypoint: ['/bin/demo'], ExposedPorts: { '8080/tcp': {} } },
  });
  t.deepEqual(config.rootfs, { type: 'layers', diff_ids: [img.layerDigest] });

  const layer = untar(blobs.get(img.layerDigest)!);
  t.deepEqual(
    layer.map((e) => [e.name, e.mode.toString(8), e.type]),
    [
      ['bin/', '755', '5'],
      ['bin/demo', '755', '0'],
    ],
  );
  t.deepEqual(layer[1]!.data, INPUT.files[0]!.data);
});

test('tar: a long path is split into ustar prefix and name; archives end with two zero blocks', (t) => {
  const long = `${'d'.repeat(120)}/${'f'.repeat(90)}`;
  const archive = tarArchive([{ path: long, mode: 0o644, data: Buffer.from('x') }], 0);
  t.is(archive.length % 512, 0);
  t.true(archive.subarray(-1024).every((b) => b === 0));
  t.is(untar(archive)[0]!.name, long);
  t.throws(() => tarArchive([{ path: 'x'.repeat(101), mode: 0o644, data: Buffer.alloc(0) }], 0), { message: /too long/ });
});

test('image file paths must be absolute and plain', (t) => {
  for (const p of ['demo', '/a/../demo', '/a/./demo', '/dir/']) {
    t.throws(() => ociImageArchive({ ...INPUT, files: [{ path: p, mode: 0o755, data: Buffer.alloc(1) }] }), { message: /absolute and plain/ }, p);
  }
});

test('readOciIndex names the images an archive holds, and refuses what is not an image layout', async (t) => {
  const dir = await scratch('gk8s-oci');
  const img = ociImageArchive(INPUT);
  await writeFile(path.join(dir, 'ours.tar'), img.archive);
  t.deepEqual(await readOciIndex(path.join(dir, 'ours.tar')), [{ digest: img.digest, reference: 'geminik8s.local/demo:v1.2.3' }]);

  // skopeo's way: only the OCI ref name, here a full reference; a second image has no name at all.
  const d = (c: string) => `sha256:${c.repeat(64)}`;
  const index = { schemaVersion: 2, manifests: [{ digest: d('a'), annotations: { [OCI_REF_ANNOTATION]: 'example.invalid/x:1' } }, { digest: d('b') }] };
  await writeFile(path.join(dir, 'theirs.tar'), tarArchive([{ path: './index.json', mode: 0o644, data: Buffer.from(JSON.stringify(index)) }], 0));
  t.deepEqual(await readOciIndex(path.join(dir, 'theirs.tar')), [{ digest: d('a'), reference: 'example.invalid/x:1' }, { digest: d('b') }]);

  await writeFile(path.join(dir, 'not.tar'), tarArchive([{ path: 'manifest.json', mode: 0o644, data: Buffer.from('[]') }], 0));
  await t.throwsAsync(readOciIndex(path.join(dir, 'not.tar')), { message: /not\.tar: not an OCI image-layout archive \(no index\.json\)/ });
});

/**
 * The agent's reading of images.json (firstboot/src/kubernetes/core/baked-images.ts and its shell),
 * against what the builder writes (builder/src/images/make.ts) where it installs it.
 */
import test from 'ava';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { BAKED_IMAGES, bakedImageReference, IMAGES_DIR } from '../../builder/src/images/baked.ts';
import { IMAGES_FILE, type ImageRecord } from '../../builder/src/images/make.ts';
import { readBakedImages } from '../../firstboot/src/kubernetes/baked-images.ts';
import { BAKED_IMAGES_FILE, imageReference, parseBakedImages } from '../../firstboot/src/kubernetes/core/baked-images.ts';

const hex = (c: string): string => c.repeat(64);

/** What the builder writes for the baked images, plus an archive of the profile's holding two images. */
const records: ImageRecord[] = [
  ...BAKED_IMAGES.map(
    (b, i): ImageRecord => ({
      name: b.name,
      file: path.posix.join(IMAGES_DIR, `${b.name}.tar`),
      sha256: hex(String(i)),
      reference: bakedImageReference(b),
      digest: `sha256:${hex('a')}`,
      source: 'built',
      binary: { version: b.component.version, sha256: hex('b'), source: 'go-module' },
    }),
  ),
  {
    name: 'tools',
    file: path.posix.join(IMAGES_DIR, 'tools.tar'),
    sha256: hex('c'),
    reference: 'example.org/curl:8',
    digest: `sha256:${hex('d')}`,
    source: 'url',
  },
  {
    name: 'tools',
    file: path.posix.join(IMAGES_DIR, 'tools.tar'),
    sha256: hex('c'),
    reference: 'example.org/jq:1',
    digest: `sha256:${hex('e')}`,
    source: 'url',
  },
];
const text = `${JSON.stringify(records, null, 2)}\n`;

test('the agent reads the list where the builder installs it', (t) => {
  t.is(BAKED_IMAGES_FILE, path.posix.join(IMAGES_DIR, IMAGES_FILE));
});

test("the builder's records parse into what the runtime imports and pods name", (t) => {
  const list = parseBakedImages(text, 'images.json');
  t.is(list.length, records.length);
  t.deepEqual(list[0], {
    name: 'pause',
    file: '/usr/lib/geminik8s/images/pause.tar',
    sha256: hex('0'),
    reference: 'geminik8s.local/pause:v1.0.0',
    digest: `sha256:${hex('a')}`,
  });
  t.is(imageReference(list, 'coredns'), bakedImageReference(BAKED_IMAGES.find((b) => b.name === 'coredns')!));
  t.regex(imageReference(list, 'coredns'), /^geminik8s\.local\/coredns:v\d+\.\d+\.\d+$/);
  t.is(imageReference(list, 'pause'), 'geminik8s.local/pause:v1.0.0');
});

test('imageReference: a name the list lacks, or an archive of several images, is refused naming what there is', (t) => {
  const list = parseBakedImages(text, 'images.json');
  t.throws(() => imageReference(list, 'busybox'), {
    message:
      /^the OS image carries no image "busybox"; it carries: pause \(geminik8s\.local\/pause:v1\.0\.0\), hello .*coredns .*tools \(example\.org\/curl:8\)/,
  });
  t.throws(() => imageReference([], 'coredns'), { message: /carries: none$/ });
  t.throws(() => imageReference(list, 'tools'), { message: /^archive "tools" holds 2 images \(example\.org\/curl:8, example\.org\/jq:1\)/ });
});

test('a malformed list is refused naming the file, the entry and the field', (t) => {
  t.throws(() => parseBakedImages('{', 'f.json'), { message: /^f\.json: not JSON/ });
  t.throws(() => parseBakedImages('{}', 'f.json'), { message: /^f\.json: expected a list of images/ });
  t.throws(() => parseBakedImages('[null]', 'f.json'), { message: /^f\.json: entry 0 is not an object/ });
  const bad = (i: number, change: Record<string, unknown>): string => JSON.stringify(records.map((r, j) => (j === i ? { ...r, ...change } : r)));
  t.throws(() => parseBakedImages(bad(2, { reference: '' }), 'f.json'), { message: /^f\.json: entry 2 \(coredns\): reference "" is not an image reference/ });
  t.throws(() => parseBakedImages(bad(1, { file: 'hello.tar' }), 'f.json'), {
    message: /^f\.json: entry 1 \(hello\): file "hello\.tar" is not an absolute path/,
  });
  t.throws(() => parseBakedImages(bad(0, { sha256: 'abc' }), 'f.json'), { message: /entry 0 \(pause\): sha256 "abc" is not a sha256 in hex/ });
  t.throws(() => parseBakedImages(bad(0, { digest: hex('a') }), 'f.json'), { message: /entry 0 \(pause\): digest "a+" is not a sha256:<hex> digest/ });
  t.throws(() => parseBakedImages(bad(0, { name: 42 }), 'f.json'), { message: /^f\.json: entry 0: name 42 is not an archive name/ });
});

test('readBakedImages reads and checks a file, and names it when it is missing or wrong', async (t) => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'baked-images-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const file = path.join(dir, IMAGES_FILE);
  t.throws(() => readBakedImages(file), { message: new RegExp(`^${file.replace(/[.\\/]/g, '\\$&')}: cannot read the list of baked container images`) });
  await writeFile(file, text);
  t.is(imageReference(readBakedImages(file), 'pause'), 'geminik8s.local/pause:v1.0.0');
  await writeFile(file, '[{"name":"pause"}]');
  t.throws(() => readBakedImages(file), { message: new RegExp(`^${file.replace(/[.\\/]/g, '\\$&')}: entry 0 \\(pause\\): file undefined`) });
});

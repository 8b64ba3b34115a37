import test from 'ava';
import { diskRegions, firstTreeDifference, type TreeEntry } from '../../builder/src/repro/compare.ts';

const file = (p: string, extra: Partial<TreeEntry> = {}): TreeEntry => ({
  path: p,
  kind: 'file',
  mode: 0o100644,
  uid: 0,
  gid: 0,
  size: 3,
  mtime: 1700000000,
  sha256: 'aa',
  ...extra,
});
const dir = (p: string, extra: Partial<TreeEntry> = {}): TreeEntry => ({
  path: p,
  kind: 'dir',
  mode: 0o40755,
  uid: 0,
  gid: 0,
  size: 4096,
  mtime: 1700000000,
  ...extra,
});

test('the same trees, listed in any order, do not differ', (t) => {
  const a = [dir('.'), dir('etc'), file('etc/hostname'), file('etc/hosts')];
  t.is(firstTreeDifference(a, [...a].reverse()), undefined);
});

test('the first difference is the first path in byte order, with every attribute that differs', (t) => {
  const a = [dir('.'), dir('etc'), file('etc/a', { sha256: 'aa' }), file('etc/b', { mtime: 1700000000 })];
  const b = [dir('.'), dir('etc'), file('etc/a', { sha256: 'bb', size: 4 }), file('etc/b', { mtime: 1800000000 })];
  t.deepEqual(firstTreeDifference(a, b), { path: 'etc/a', what: ['size: 3 vs 4', 'content: aa vs bb'] });
  t.deepEqual(firstTreeDifference(a.slice(0, 2).concat(a[3]!), b.slice(0, 2).concat(b[3]!))?.what, [
    'mtime: 1700000000 (2023-11-14T22:13:20.000Z) vs 1800000000 (2027-01-15T08:00:00.000Z)',
  ]);
  // 'B' (0x42) sorts before 'a' (0x61) on every host, whatever its locale.
  t.is(firstTreeDifference([file('a', { mode: 0o100600 }), file('B', { uid: 1 })], [file('a'), file('B')])?.path, 'B');
});

test('an entry in one tree only is named as such', (t) => {
  t.deepEqual(firstTreeDifference([dir('.'), file('x')], [dir('.')]), { path: 'x', what: ['only in the first build'] });
  t.deepEqual(firstTreeDifference([dir('.')], [dir('.'), dir('y')]), { path: 'y', what: ['only in the second build'] });
  t.deepEqual(firstTreeDifference([{ ...file('l'), kind: 'symlink', target: 'a' }], [{ ...file('l'), kind: 'symlink', target: 'b' }])?.what, [
    'target: a vs b',
  ]);
});

test('disk regions: the partition table, each partition, the gaps and the backup table, in disk order', (t) => {
  const MiB = 1024 * 1024;
  const regions = diskRegions(
    [
      { name: 'root-a', fs: 'ext4', offsetBytes: 65 * MiB, sizeBytes: 100 * MiB },
      { name: 'esp', fs: 'vfat', offsetBytes: 1 * MiB, sizeBytes: 64 * MiB },
      { name: 'data', fs: 'ext4', offsetBytes: 166 * MiB, sizeBytes: 10 * MiB },
    ],
    177 * MiB,
  );
  t.deepEqual(
    regions.map((r) => [r.name, r.offsetBytes / MiB, r.sizeBytes / MiB]),
    [
      ['partition table', 0, 1],
      ['esp', 1, 64],
      ['root-a', 65, 100],
      ['gap before data', 165, 1],
      ['data', 166, 10],
      ['backup partition table', 176, 1],
    ],
  );
});

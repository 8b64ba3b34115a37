import test from 'ava';
import { lastUsableLbaAtDiskEnd, planDataGrowth, type DiskFacts } from '../../firstboot/src/core/grow.ts';
import { formatBytes, markers, summaryLine } from '../../firstboot/src/core/report.ts';

const MiB = 1024 * 1024;

/** A freshly flashed 1 GiB image (data = last partition, 256 MiB) on an 8 GiB disk. */
function flashed(overrides: Partial<DiskFacts> = {}): DiskFacts {
  const target = { start: 1574912, size: 524288, name: 'data' };
  return {
    label: 'gpt',
    sectorSize: 512,
    diskSectors: (8 * 1024 * MiB) / 512,
    lastUsableLba: (1024 * MiB) / 512 - 34,
    partitions: [{ start: 2048, size: 200000, name: 'EFI' }, { start: 1566720, size: 8192, name: 'oem' }, target],
    target,
    fsType: 'ext4',
    fsBytes: 256 * MiB,
    ...overrides,
  };
}

test('backup GPT sits 34 sectors before the end with 512-byte sectors, 6 with 4K sectors', (t) => {
  t.is(lastUsableLbaAtDiskEnd(409600, 512), 409566);
  t.is(lastUsableLbaAtDiskEnd(1000, 4096), 994);
});

test('a flashed image on a bigger disk: before mount, relocate backup GPT and grow the partition to the end only', (t) => {
  const f = flashed();
  t.deepEqual(planDataGrowth(f, 'partition'), {
    action: 'grow',
    relocateBackupGpt: true,
    growPartition: true,
    resizeFilesystem: false,
    partitionBytesBefore: 256 * MiB,
    partitionBytesAfter: (f.diskSectors - 34 - f.target.start + 1) * 512,
    fsBytes: 256 * MiB,
  });
});

test('once mounted the partition table is never touched, even when the partition could grow', (t) => {
  t.like(planDataGrowth(flashed(), 'filesystem'), { action: 'none' });
});

test('after the partition grew, only the filesystem is resized (also after a cut before resize2fs)', (t) => {
  const grownSize = (8 * 1024 * MiB) / 512 - 34 - 1574912;
  const target = { start: 1574912, size: grownSize, name: 'data' };
  const f = flashed({ target, lastUsableLba: (8 * 1024 * MiB) / 512 - 34, partitions: [target] });
  t.like(planDataGrowth(f, 'partition'), { action: 'none' });
  t.like(planDataGrowth(f, 'filesystem'), { action: 'grow', relocateBackupGpt: false, growPartition: false, resizeFilesystem: true });
  t.like(planDataGrowth({ ...f, fsBytes: grownSize * 512 - 3 * MiB }, 'filesystem'), { action: 'none' });
});

test('a disk the size of the image needs nothing', (t) => {
  const f = flashed({ diskSectors: (1024 * MiB) / 512 });
  t.like(planDataGrowth({ ...f, target: { ...f.target, size: f.lastUsableLba - f.target.start + 1 } }, 'partition'), { action: 'none' });
});

test('a partition after data limits growth', (t) => {
  const f = flashed();
  const after = { start: f.target.start + f.target.size + 2048, size: 2048, name: 'other' };
  t.like(planDataGrowth({ ...f, partitions: [...f.partitions, after] }, 'partition'), { action: 'none' });
});

test('refuses anything but an ext4 partition named data on GPT', (t) => {
  t.like(planDataGrowth(flashed({ label: 'dos' }), 'partition'), { action: 'refuse' });
  t.like(planDataGrowth(flashed({ fsType: 'xfs' }), 'filesystem'), { action: 'refuse', reason: 'filesystem is xfs, not ext4' });
  const f = flashed();
  t.like(planDataGrowth({ ...f, target: { ...f.target, name: 'root-a' } }, 'partition'), { action: 'refuse' });
});

test('console markers and summary line are stable', (t) => {
  const grown = { kind: 'grown', device: '/dev/vda5', partitionBytes: 8 * 2 ** 30, fsBytesBefore: 256 * MiB, fsBytesAfter: 8 * 2 ** 30 } as const;
  t.is(markers.data(grown), `GEMINIK8S-AGENT: data grown ${256 * MiB} -> ${8 * 2 ** 30}`);
  t.is(markers.data({ kind: 'already-grown', device: '/dev/vda5', partitionBytes: 1, fsBytes: 42 }), 'GEMINIK8S-AGENT: data already-grown 42');
  t.is(markers.data(grown, 'data-partition'), `GEMINIK8S-AGENT: data-partition grown ${256 * MiB} -> ${8 * 2 ** 30}`);
  t.is(markers.site({ kind: 'absent' }), 'GEMINIK8S-AGENT: no-site');
  t.is(markers.site({ kind: 'valid', siteId: 'shop-1' }), 'GEMINIK8S-AGENT: site shop-1');
  t.is(formatBytes(256 * MiB), '256MiB');
  t.is(formatBytes(8 * 2 ** 30), '8.0GiB');
  t.is(
    summaryLine('0123456789abcdef0123456789abcdef', { kind: 'valid', siteId: 'shop-1' }, grown, '/var/lib/geminik8s/hostmeta.json'),
    'geminik8s-agent: started node=01234567 site=shop-1 data=/dev/vda5 grown 256MiB->8.0GiB hostmeta=/var/lib/geminik8s/hostmeta.json',
  );
});

/**
 * Grows the data partition (before it is mounted) and then its ext4 filesystem (online) to fill
 * the disk, with Debian's util-linux / fdisk / e2fsprogs tools. Facts come from findmnt, lsblk, sysfs, sfdisk and dumpe2fs;
 * the decision is {@link planDataGrowth}. Every step is safe to repeat after a power cut: the plan is
 * recomputed from what is on disk on each boot.
 */
import { readFile } from 'node:fs/promises';
import { planDataGrowth, type DiskFacts, type GrowScope, type PartitionFacts } from '../core/grow.ts';
import type { DataOutcome } from '../core/report.ts';
import { runTool } from './exec.ts';
import type { Logger } from './output.ts';

interface MountedPartition {
  device: string;
  fsType: string;
  kname: string;
  disk: string;
  number: number;
}

async function sysfs(kname: string, attr: string): Promise<number> {
  const text = (await readFile(`/sys/class/block/${kname}/${attr}`, 'utf8')).trim();
  const n = Number(text);
  if (!Number.isSafeInteger(n)) throw new Error(`/sys/class/block/${kname}/${attr}: unexpected ${JSON.stringify(text)}`);
  return n;
}

/** The partition mounted exactly at `dir`; undefined when nothing is mounted there; a reason when it is no partition. */
async function mountedPartition(dir: string): Promise<MountedPartition | { device: string; notPartition: string } | undefined> {
  const mnt = await runTool('findmnt', ['-J', '-n', '-o', 'SOURCE,FSTYPE', '--mountpoint', dir], { okCodes: [0, 1] });
  if (mnt.code === 1) return undefined;
  const fs = (JSON.parse(mnt.stdout) as { filesystems: { source: string; fstype: string }[] }).filesystems[0];
  if (!fs) return undefined;
  const blk = await runTool('lsblk', ['-J', '-n', '-d', '-o', 'KNAME,PKNAME,TYPE', fs.source]);
  const dev = (JSON.parse(blk.stdout) as { blockdevices: { kname: string; pkname: string | null; type: string }[] }).blockdevices[0];
  if (dev?.type !== 'part' || !dev.pkname)
    return { device: fs.source, notPartition: `${fs.source} is a ${dev?.type ?? 'non-block'} device, not a disk partition` };
  return { device: fs.source, fsType: fs.fstype, kname: dev.kname, disk: `/dev/${dev.pkname}`, number: await sysfs(dev.kname, 'partition') };
}

/** A disk's partition table as sfdisk reads it from the disk itself (no udev needed). */
export interface PartitionTable {
  label: string;
  sectorsize?: number;
  lastlba?: number;
  partitions?: { node: string; start: number; size: number; name?: string }[];
}

export async function readPartitionTable(disk: string): Promise<PartitionTable> {
  return (JSON.parse((await runTool('sfdisk', ['--json', disk])).stdout) as { partitiontable: PartitionTable }).partitiontable;
}

async function filesystemBytes(device: string): Promise<number> {
  const out = (await runTool('dumpe2fs', ['-h', device])).stdout;
  const count = /^Block count:\s+(\d+)/m.exec(out)?.[1];
  const size = /^Block size:\s+(\d+)/m.exec(out)?.[1];
  if (!count || !size) throw new Error(`dumpe2fs -h ${device}: no block count/size in its output`);
  return Number(count) * Number(size);
}

async function diskFacts(p: MountedPartition): Promise<DiskFacts> {
  const table = await readPartitionTable(p.disk);
  const sectorSize = table.sectorsize ?? 512;
  // sysfs counts in 512-byte units whatever the logical sector size.
  const per = sectorSize / 512;
  const start = (await sysfs(p.kname, 'start')) / per;
  const diskSectors = (await sysfs(p.disk.slice('/dev/'.length), 'size')) / per;
  const partitions: PartitionFacts[] = (table.partitions ?? []).map((x) => ({
    start: x.start,
    size: x.size,
    ...(x.name !== undefined ? { name: x.name } : {}),
  }));
  const target = partitions.find((x) => x.start === start);
  if (!target) throw new Error(`partition ${p.device} (start ${start}) not found in the partition table of ${p.disk}`);
  return {
    label: table.label,
    sectorSize,
    diskSectors,
    lastUsableLba: table.lastlba ?? diskSectors - 1,
    partitions,
    target,
    fsType: p.fsType,
    fsBytes: await filesystemBytes(p.device),
  };
}

/** The data partition by device path (before it is mounted), e.g. /dev/disk/by-partlabel/data. */
async function partitionAtDevice(device: string): Promise<MountedPartition | { device: string; notPartition: string } | undefined> {
  const blk = await runTool('lsblk', ['-J', '-n', '-d', '-o', 'KNAME,PKNAME,TYPE', device], { okCodes: [0, 32] });
  if (blk.code === 32) return undefined;
  const dev = (JSON.parse(blk.stdout) as { blockdevices: { kname: string; pkname: string | null; type: string }[] }).blockdevices[0];
  if (dev?.type !== 'part' || !dev.pkname) return { device, notPartition: `${device} is a ${dev?.type ?? 'non-block'} device, not a disk partition` };
  // Probe the filesystem directly: udev's database may not be complete this early in boot.
  const fsType = (await runTool('blkid', ['-p', '-o', 'value', '-s', 'TYPE', `/dev/${dev.kname}`], { okCodes: [0, 2] })).stdout.trim();
  return { device: `/dev/${dev.kname}`, fsType, kname: dev.kname, disk: `/dev/${dev.pkname}`, number: await sysfs(dev.kname, 'partition') };
}

/**
 * Before /data is mounted: extends the data partition (GPT name `data`) to the end of its disk.
 * The filesystem is left to {@link growDataFilesystem}. Never throws.
 */
export function growDataPartition(device: string, log: Logger): Promise<DataOutcome> {
  return growData(() => partitionAtDevice(device), device, 'partition', log);
}

/** Once mounted at `dataDir`: grows the ext4 filesystem online into its partition. Never throws. */
export function growDataFilesystem(dataDir: string, log: Logger): Promise<DataOutcome> {
  return growData(() => mountedPartition(dataDir), dataDir, 'filesystem', log);
}

async function growData(
  locate: () => Promise<MountedPartition | { device: string; notPartition: string } | undefined>,
  where: string,
  scope: GrowScope,
  log: Logger,
): Promise<DataOutcome> {
  let part: MountedPartition | undefined;
  let partitionBytes = 0;
  try {
    const found = await locate();
    if (!found) return { kind: 'not-mounted', dataDir: where };
    if ('notPartition' in found) return { kind: 'refused', device: found.device, partitionBytes, reason: found.notPartition };
    part = found;
    const facts = await diskFacts(part);
    partitionBytes = facts.target.size * facts.sectorSize;
    const plan = planDataGrowth(facts, scope);
    log.event('info', 'data-plan', { device: part.device, disk: part.disk, partition: part.number, scope, plan });
    if (plan.action === 'refuse') return { kind: 'refused', device: part.device, partitionBytes, reason: plan.reason };
    if (plan.action === 'none') return { kind: 'already-grown', device: part.device, partitionBytes, fsBytes: plan.fsBytes };

    // Table changes run under an exclusive lock on the whole disk, which makes udev wait until
    // the table is whole before it probes the disk again.
    const disk = part.disk;
    const locked = (tool: string, args: string[], input?: string) =>
      runTool('flock', ['--exclusive', disk, tool, ...args], input === undefined ? {} : { input });
    if (plan.relocateBackupGpt) {
      await locked('sfdisk', ['--no-reread', '--relocate', 'gpt-bak-std', part.disk]);
      log.event('info', 'data-gpt-backup-relocated', { disk: part.disk });
    }
    if (plan.growPartition) {
      // Root (and maybe /oem) are mounted from the same disk: write the table without a whole-disk
      // re-read, then tell the kernel about this one partition.
      await locked('sfdisk', ['--no-reread', '-N', String(part.number), part.disk], ', +\n');
      await locked('partx', ['-u', '-n', String(part.number), part.disk]);
      const kernelBytes = (await sysfs(part.kname, 'size')) * 512;
      if (kernelBytes !== plan.partitionBytesAfter) {
        throw new Error(`kernel still sees ${kernelBytes} bytes for ${part.device} after partx -u (expected ${plan.partitionBytesAfter})`);
      }
      partitionBytes = kernelBytes;
      // Let udev finish with the changed partition so /dev/disk/by-partlabel/data is stable before the mount.
      await runTool('udevadm', ['settle', '--timeout=30']);
      log.event('info', 'data-partition-grown', { device: part.device, from: plan.partitionBytesBefore, to: plan.partitionBytesAfter });
      return { kind: 'grown', device: part.device, partitionBytes, fsBytesBefore: plan.partitionBytesBefore, fsBytesAfter: plan.partitionBytesAfter };
    }
    await runTool('resize2fs', [part.device]);
    const fsBytesAfter = await filesystemBytes(part.device);
    log.event('info', 'data-filesystem-grown', { device: part.device, from: plan.fsBytes, to: fsBytesAfter });
    return { kind: 'grown', device: part.device, partitionBytes, fsBytesBefore: plan.fsBytes, fsBytesAfter };
  } catch (e) {
    const reason = (e as Error).message.replace(/\s+/g, ' ');
    log.event('error', 'data-grow-failed', { where, scope, device: part?.device, reason });
    return { kind: 'failed', device: part?.device ?? where, partitionBytes, reason };
  }
}

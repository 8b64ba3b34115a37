/**
 * Partition math for growing the data partition to fill the disk. Pure: the disk adapter gathers
 * the facts (sfdisk --json, sysfs, dumpe2fs) and executes the plan this module returns.
 */

/** Growth smaller than this is not worth a partition-table write or an online resize. */
export const GROW_THRESHOLD_BYTES = 16 * 1024 * 1024;
/** GPT partition name and filesystem the agent is willing to grow; anything else is refused. */
export const DATA_PARTITION_NAME = 'data';
export const DATA_FS_TYPE = 'ext4';
/** Size of a standard GPT partition-entry array (128 entries of 128 bytes). */
const GPT_ENTRIES_BYTES = 128 * 128;

export interface PartitionFacts {
  /** First sector. */
  start: number;
  /** Length in sectors. */
  size: number;
  /** GPT partition name, when set. */
  name?: string;
}

export interface DiskFacts {
  /** Partition-table label as sfdisk reports it ("gpt", "dos"). */
  label: string;
  sectorSize: number;
  /** Whole disk, in sectors. */
  diskSectors: number;
  /** Last usable LBA recorded in the primary GPT header (stays small until the backup header moves to the disk end). */
  lastUsableLba: number;
  partitions: PartitionFacts[];
  /** The partition mounted at the data dir (one of `partitions`, matched by start). */
  target: PartitionFacts;
  fsType: string;
  /** Current filesystem size (block count x block size). */
  fsBytes: number;
}

export type GrowPlan =
  | { action: 'refuse'; reason: string }
  | { action: 'none'; partitionBytes: number; fsBytes: number }
  | {
      action: 'grow';
      /** Move the backup GPT header to the disk end first (`sfdisk --relocate gpt-bak-std`). */
      relocateBackupGpt: boolean;
      /** Extend the partition to `partitionBytesAfter` (`sfdisk -N`, then `partx -u`). */
      growPartition: boolean;
      /** Resize the filesystem online (`resize2fs`). */
      resizeFilesystem: boolean;
      partitionBytesBefore: number;
      partitionBytesAfter: number;
      fsBytes: number;
    };

/** Last LBA usable for partitions once the backup GPT (entries + header) sits at the very end of the disk. */
export function lastUsableLbaAtDiskEnd(diskSectors: number, sectorSize: number): number {
  return diskSectors - 1 - Math.ceil(GPT_ENTRIES_BYTES / sectorSize) - 1;
}

/**
 * Which half of the growth a run may do. The partition table changes before /data is mounted
 * (`partition`): changing it under a mounted partition makes udev re-announce the device, and
 * systemd stops every mount bound to it. The filesystem then grows online once mounted
 * (`filesystem`), which touches no partition table.
 */
export type GrowScope = 'partition' | 'filesystem';

export function planDataGrowth(f: DiskFacts, scope: GrowScope): GrowPlan {
  if (f.label !== 'gpt') return { action: 'refuse', reason: `disk has a ${f.label} partition table, not gpt` };
  if (f.target.name !== DATA_PARTITION_NAME) {
    return { action: 'refuse', reason: `partition is named ${JSON.stringify(f.target.name ?? '')}, not ${JSON.stringify(DATA_PARTITION_NAME)}` };
  }
  if (f.fsType !== DATA_FS_TYPE) return { action: 'refuse', reason: `filesystem is ${f.fsType}, not ${DATA_FS_TYPE}` };

  const end = f.target.start + f.target.size - 1;
  const nextStart = Math.min(...f.partitions.filter((p) => p.start > f.target.start).map((p) => p.start));
  const limit = Math.min(nextStart - 1, lastUsableLbaAtDiskEnd(f.diskSectors, f.sectorSize));
  const growPartition = scope === 'partition' && (limit - end) * f.sectorSize >= GROW_THRESHOLD_BYTES;
  const partitionBytesBefore = f.target.size * f.sectorSize;
  const partitionBytesAfter = growPartition ? (limit - f.target.start + 1) * f.sectorSize : partitionBytesBefore;
  const resizeFilesystem = scope === 'filesystem' && partitionBytesAfter - f.fsBytes >= GROW_THRESHOLD_BYTES;
  if (!growPartition && !resizeFilesystem) return { action: 'none', partitionBytes: partitionBytesBefore, fsBytes: f.fsBytes };
  return {
    action: 'grow',
    relocateBackupGpt: growPartition && limit > f.lastUsableLba,
    growPartition,
    resizeFilesystem,
    partitionBytesBefore,
    partitionBytesAfter,
    fsBytes: f.fsBytes,
  };
}

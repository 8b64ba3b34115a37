/**
 * geminik8s GPT disk layout — pure partition math, no I/O.
 *
 * The partition NAMES are the contract with the rest of the system (grub.cfg and cmdline.txt boot
 * `root=PARTLABEL=root-<slot>`, `geminik8s stamp` checks the whole table and writes to `oem`, the
 * first-boot agent grows `data`, which must stay the last partition).
 *
 * Two schemes, one per bootloader of the hardware definition:
 * - grub-efi: esp (grub and its grubenv), root-a, root-b, oem, data.
 * - rpi-tryboot (Raspberry Pi 4): autoboot, boot-a, boot-b, root-a, root-b, oem, data. The Pi
 *   bootloader reads autoboot.txt from partition 1 and boots the FAT partition it names: each slot
 *   has its own (firmware, kernel, initrd, device trees, config.txt, a cmdline.txt naming that
 *   slot's root), so a tryboot switches kernel and root together.
 */
import { createHash } from 'node:crypto';

export type Arch = 'amd64' | 'arm64';

export type Bootloader = 'grub-efi' | 'rpi-tryboot';

export const PARTITION_NAMES = ['esp', 'autoboot', 'boot-a', 'boot-b', 'root-a', 'root-b', 'oem', 'data'] as const;
export type PartitionName = (typeof PARTITION_NAMES)[number];

/**
 * The partition that holds the bootloader's A/B state and where the image mounts it (fstab, on
 * demand): grubenv on the ESP, autoboot.txt on the Pi's first partition. The agent's slot backends
 * (firstboot/src/upgrade/slot-backend.ts) read them there.
 */
export const BOOT_STATE_MOUNT: Record<Bootloader, { partition: PartitionName; mountPoint: string }> = {
  'grub-efi': { partition: 'esp', mountPoint: '/boot/efi' },
  'rpi-tryboot': { partition: 'autoboot', mountPoint: '/boot/autoboot' },
};

export const MiB = 1024 * 1024;

/** GPT partition type GUIDs (UEFI spec / Discoverable Partitions Specification). */
export const GPT_TYPE = {
  esp: 'C12A7328-F81F-11D2-BA4B-00A0C93EC93B',
  rootAmd64: '4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709',
  rootArm64: 'B921B045-1DF0-41C3-AF44-4C6F280D3FAE',
  /** "Microsoft basic data": makes Windows/macOS laptops mount the OEM partition. */
  basicData: 'EBD0A0A2-B9E5-4433-87C0-68B6B72699C7',
  linuxData: '0FC63DAF-8483-4772-8E79-3D69D8477DE4',
} as const;

export interface Partition {
  /** 1-based GPT entry number (grub's gptN, Linux's sdX<N>). */
  index: number;
  name: PartitionName;
  typeGuid: string;
  /** Filesystem created in it at build time ('none' = left as sparse holes). */
  fs: 'vfat' | 'ext4' | 'none';
  /** Filesystem label, when there is a filesystem. */
  fsLabel?: string;
  startSector: number;
  sizeSectors: number;
  /** Last sector, inclusive. */
  endSector: number;
  offsetBytes: number;
  sizeBytes: number;
}

export interface Layout {
  arch: Arch;
  bootloader: Bootloader;
  sectorSize: number;
  alignSectors: number;
  partitions: Partition[];
  /** Size of the whole image; a MiB multiple that leaves room for the backup GPT. */
  totalBytes: number;
  totalSectors: number;
}

export interface LayoutInput {
  /** Bytes the root filesystem needs (data blocks + metadata), before headroom. */
  rootBytes: number;
  /** The hardware's bootloader, which sets the scheme (default grub-efi). */
  bootloader?: Bootloader;
  /** grub-efi: the EFI system partition. */
  espMiB?: number;
  /** rpi-tryboot: each slot's boot partition (boot-a, boot-b). */
  bootMiB?: number;
  oemMiB?: number;
  dataMiB?: number;
  sectorSize?: 512 | 4096;
  arch?: Arch;
  /** Fraction added to rootBytes (default 0.15). */
  rootHeadroom?: number;
  /** Lower bound for each root slot (default 256 MiB). */
  minRootMiB?: number;
}

export const LAYOUT_DEFAULTS = {
  espMiB: 64,
  bootMiB: 128,
  /** autoboot.txt is at most 512 bytes; 16 MiB is a FAT16 every tool formats and the firmware reads. */
  autobootMiB: 16,
  oemMiB: 32,
  dataMiB: 256,
  rootHeadroom: 0.15,
  minRootMiB: 256,
  /** Partitions start and end on 1 MiB boundaries. */
  alignBytes: MiB,
} as const;

export const FS_LABEL = {
  esp: 'GK8S-ESP',
  autoboot: 'GK8S-AUTO',
  'boot-a': 'GK8S-BOOTA',
  'boot-b': 'GK8S-BOOTB',
  oem: 'GK8S-OEM',
  data: 'gk8s-data',
} as const;

function positiveInt(name: string, v: number): number {
  if (!Number.isInteger(v) || v <= 0) throw new RangeError(`${name} must be a positive integer, got ${v}`);
  return v;
}

/** Root slot size in MiB for a filesystem needing `rootBytes`: +headroom, rounded up, with a minimum. */
export function rootSlotMiB(rootBytes: number, headroom: number = LAYOUT_DEFAULTS.rootHeadroom, minMiB: number = LAYOUT_DEFAULTS.minRootMiB): number {
  if (!Number.isFinite(rootBytes) || rootBytes < 0) throw new RangeError(`rootBytes must be >= 0, got ${rootBytes}`);
  if (!(headroom >= 0)) throw new RangeError(`rootHeadroom must be >= 0, got ${headroom}`);
  return Math.max(minMiB, Math.ceil((rootBytes * (1 + headroom)) / MiB));
}

export function computeLayout(input: LayoutInput): Layout {
  const sectorSize = input.sectorSize ?? 512;
  if (sectorSize !== 512 && sectorSize !== 4096) throw new RangeError(`sectorSize must be 512 or 4096, got ${sectorSize}`);
  const arch = input.arch ?? 'amd64';
  const bootloader = input.bootloader ?? 'grub-efi';
  const oemMiB = positiveInt('oemMiB', input.oemMiB ?? LAYOUT_DEFAULTS.oemMiB);
  const dataMiB = positiveInt('dataMiB', input.dataMiB ?? LAYOUT_DEFAULTS.dataMiB);
  const rootMiB = rootSlotMiB(input.rootBytes, input.rootHeadroom ?? LAYOUT_DEFAULTS.rootHeadroom, input.minRootMiB ?? LAYOUT_DEFAULTS.minRootMiB);
  if (oemMiB < 8) throw new RangeError(`oemMiB must be >= 8, got ${oemMiB}`);

  const perMiB = MiB / sectorSize;
  const rootType = arch === 'arm64' ? GPT_TYPE.rootArm64 : GPT_TYPE.rootAmd64;
  type Spec = Pick<Partition, 'name' | 'typeGuid' | 'fs' | 'fsLabel'> & { mib: number };
  let bootSpecs: Spec[];
  if (bootloader === 'grub-efi') {
    const espMiB = positiveInt('espMiB', input.espMiB ?? LAYOUT_DEFAULTS.espMiB);
    if (espMiB < 8) throw new RangeError(`espMiB must be >= 8, got ${espMiB}`);
    bootSpecs = [{ name: 'esp', typeGuid: GPT_TYPE.esp, fs: 'vfat', fsLabel: FS_LABEL.esp, mib: espMiB }];
  } else {
    const bootMiB = positiveInt('bootMiB', input.bootMiB ?? LAYOUT_DEFAULTS.bootMiB);
    if (bootMiB < 8) throw new RangeError(`bootMiB must be >= 8, got ${bootMiB}`);
    // "Basic data": the Pi 4 bootloader looks for its FAT partitions among basic-data and EFI-type
    // GPT entries. boot-b stays empty (like root-b) until an upgrade fills it.
    bootSpecs = [
      { name: 'autoboot', typeGuid: GPT_TYPE.basicData, fs: 'vfat', fsLabel: FS_LABEL.autoboot, mib: LAYOUT_DEFAULTS.autobootMiB },
      { name: 'boot-a', typeGuid: GPT_TYPE.basicData, fs: 'vfat', fsLabel: FS_LABEL['boot-a'], mib: bootMiB },
      { name: 'boot-b', typeGuid: GPT_TYPE.basicData, fs: 'none', mib: bootMiB },
    ];
  }
  const specs: Spec[] = [
    ...bootSpecs,
    { name: 'root-a', typeGuid: rootType, fs: 'ext4', fsLabel: 'root-a', mib: rootMiB },
    { name: 'root-b', typeGuid: rootType, fs: 'none', mib: rootMiB },
    { name: 'oem', typeGuid: GPT_TYPE.basicData, fs: 'vfat', fsLabel: FS_LABEL.oem, mib: oemMiB },
    { name: 'data', typeGuid: GPT_TYPE.linuxData, fs: 'ext4', fsLabel: FS_LABEL.data, mib: dataMiB },
  ];

  // The primary GPT (LBA 0..33 at 512 B/sector, 0..5 at 4 KiB) fits in the first MiB.
  let next = perMiB;
  const partitions: Partition[] = specs.map((s, i) => {
    const startSector = next;
    const sizeSectors = s.mib * perMiB;
    next = startSector + sizeSectors;
    const p: Partition = {
      index: i + 1,
      name: s.name,
      typeGuid: s.typeGuid,
      fs: s.fs,
      startSector,
      sizeSectors,
      endSector: startSector + sizeSectors - 1,
      offsetBytes: startSector * sectorSize,
      sizeBytes: sizeSectors * sectorSize,
    };
    if (s.fsLabel !== undefined) p.fsLabel = s.fsLabel;
    return p;
  });
  // One trailing MiB holds the backup GPT (33 sectors at 512 B, 5 at 4 KiB) and keeps the size aligned.
  const totalSectors = next + perMiB;
  return { arch, bootloader, sectorSize, alignSectors: perMiB, partitions, totalSectors, totalBytes: totalSectors * sectorSize };
}

/** FAT32 needs >= 65525 clusters (~33 MiB at 512-byte clusters); smaller partitions get FAT16, which UEFI and the Pi firmware read too. */
export function fatSizeFor(mib: number): 16 | 32 {
  return mib >= 40 ? 32 : 16;
}

export function partitionByName(layout: Layout, name: PartitionName): Partition {
  const p = layout.partitions.find((x) => x.name === name);
  if (!p) throw new Error(`layout has no partition named ${name}`);
  return p;
}

/**
 * Deterministic RFC 4122-shaped UUID (version 4 bits, RFC variant) derived from a seed and a purpose,
 * so identical build inputs give identical disk/partition/filesystem identifiers.
 */
export function deriveUuid(seed: string, purpose: string): string {
  const h = createHash('sha256').update(`geminik8s\0${seed}\0${purpose}`).digest();
  h[6] = (h[6]! & 0x0f) | 0x40;
  h[8] = (h[8]! & 0x3f) | 0x80;
  const x = h.subarray(0, 16).toString('hex');
  return `${x.slice(0, 8)}-${x.slice(8, 12)}-${x.slice(12, 16)}-${x.slice(16, 20)}-${x.slice(20, 32)}`.toUpperCase();
}

/** Deterministic 32-bit FAT volume id (8 hex digits) derived from a seed and a purpose. */
export function deriveVolumeId(seed: string, purpose: string): string {
  return createHash('sha256').update(`geminik8s-volid\0${seed}\0${purpose}`).digest().subarray(0, 4).toString('hex');
}

export interface DiskIds {
  diskGuid: string;
  /** Partition UUIDs keyed by partition name. */
  partUuids: Record<PartitionName, string>;
}

const GUID_RE = /^[0-9A-F]{8}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{12}$/i;

export function deriveDiskIds(seed: string): DiskIds {
  const diskGuid = deriveUuid(seed, 'gpt-disk');
  return { diskGuid, partUuids: Object.fromEntries(PARTITION_NAMES.map((n) => [n, partUuidFor(diskGuid, n)])) as Record<PartitionName, string> };
}

/**
 * The mark of a disk this builder partitioned: each partition's UUID is derived from the disk GUID
 * and the partition's name. It lives in the partition table itself, so it survives flashing (dd and
 * bmaptool copy the table), growing the data partition (`sfdisk -N` keeps the UUID) and stamping,
 * needs no filesystem to be read, and a table written by anything else carries it only by a 2^-122
 * chance per partition. `geminik8s stamp` refuses a disk without it (see {@link layoutMismatches}).
 */
export function partUuidFor(diskGuid: string, name: PartitionName): string {
  return deriveUuid(`disk:${diskGuid.toUpperCase()}`, `part:${name}`);
}

/** A partition as read back from a disk (sfdisk --json), for {@link layoutMismatches}. */
export interface FoundPartition {
  index: number;
  name: string;
  typeGuid: string;
  uuid: string;
}

/**
 * Why a partition table is not one this builder wrote: one line per difference (expected, then
 * found), empty when it is. Checked: the partitions of {@link computeLayout} in order, with their names
 * and type GUIDs (amd64 or arm64 root slots; the grub-efi or rpi-tryboot scheme, told by the first
 * partition's name), and the UUIDs of {@link partUuidFor}. Sizes are not: the hardware definition
 * sets them and the agent grows data on first boot.
 */
export function layoutMismatches(diskGuid: string, found: FoundPartition[]): string[] {
  const arch: Arch = found.find((p) => p.name === 'root-a')?.typeGuid.toUpperCase() === GPT_TYPE.rootArm64 ? 'arm64' : 'amd64';
  const bootloader: Bootloader = found.find((p) => p.index === 1)?.name === 'autoboot' ? 'rpi-tryboot' : 'grub-efi';
  const expected = computeLayout({ rootBytes: 0, arch, bootloader }).partitions;
  const problems: string[] = [];
  if (found.length !== expected.length) problems.push(`expected ${expected.length} partitions, found ${found.length}`);
  const unmarked: string[] = [];
  for (const e of expected) {
    const f = found.find((p) => p.index === e.index);
    if (!f) {
      problems.push(`partition ${e.index}: expected "${e.name}", found none`);
      continue;
    }
    if (f.name !== e.name) {
      problems.push(`partition ${e.index}: expected the name "${e.name}", found "${f.name}"`);
      continue;
    }
    if (f.typeGuid.toUpperCase() !== e.typeGuid) problems.push(`partition ${e.index} (${e.name}): expected the type ${e.typeGuid}, found ${f.typeGuid || 'none'}`);
    if (!GUID_RE.test(diskGuid) || f.uuid.toUpperCase() !== partUuidFor(diskGuid, e.name)) unmarked.push(e.name);
  }
  if (unmarked.length > 0) {
    problems.push(`expected partition UUIDs derived from the disk GUID (the mark geminik8s build writes), found other UUIDs on ${unmarked.join(', ')} (disk GUID ${diskGuid || 'none'})`);
  }
  return problems;
}

/** sfdisk(8) script that writes `layout` as a GPT (feed it on stdin: `sfdisk --wipe never <image>`). */
export function sfdiskScript(layout: Layout, ids: DiskIds): string {
  const check = (what: string, g: string | undefined): string => {
    if (g === undefined || !GUID_RE.test(g)) throw new Error(`${what}: not a GUID: ${String(g)}`);
    return g.toUpperCase();
  };
  const lines = [
    'label: gpt',
    `label-id: ${check('diskGuid', ids.diskGuid)}`,
    'unit: sectors',
    `first-lba: ${layout.alignSectors}`,
    `sector-size: ${layout.sectorSize}`,
    '',
  ];
  for (const p of layout.partitions) {
    lines.push(
      `start=${p.startSector}, size=${p.sizeSectors}, type=${p.typeGuid}, uuid=${check(`partUuids.${p.name}`, ids.partUuids[p.name])}, name="${p.name}"`,
    );
  }
  return lines.join('\n') + '\n';
}

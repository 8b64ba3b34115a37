/**
 * Assembles the raw geminik8s GPT disk image from a rootfs directory — no loop devices, no
 * mounting: each filesystem is made in a regular file and copied (sparse) to its offset.
 */
import { mkdir, mkdtemp, open, rename, rm, stat, writeFile, copyFile, realpath, readFile, lstat } from 'node:fs/promises';
import path from 'node:path';
import { parseRpiBootRecipe, RPI_BOOT_RECIPE, rpiBootPartition } from '../../../firstboot/src/upgrade/core/rpi-boot.ts';
import { renderAutoboot } from '../../../firstboot/src/upgrade/core/slots.ts';
import { run } from '../util/exec.ts';
import { hostDebianArch } from '../rootfs/foreign-arch.ts';
import {
  FS_LABEL,
  MiB,
  computeLayout,
  fatSizeFor,
  type Bootloader,
  deriveDiskIds,
  deriveUuid,
  deriveVolumeId,
  partitionByName,
  sfdiskScript,
  type Arch,
  type Layout,
  type Partition,
} from '../../../image/src/layout.ts';
import { GRUB_TARGETS, grubModules, loadGrubTemplates, renderEarlyCfg, renderGrubCfg } from '../../../image/src/grub.ts';
import { makeExt4, makeVfat, measureTree, writeAt } from './fs.ts';
import { requireFile, requireTools, toolPath } from './tools.ts';

export interface AssembleOptions {
  arch: Arch;
  /** The finished root filesystem (kernel and initrd under /boot, /vmlinuz and /initrd.img links). */
  rootfsDir: string;
  /** Skeleton copied into the data filesystem (e.g. .var/upper, .var/work, geminik8s/). */
  dataSkeletonDir?: string;
  /** Written as site.yaml into the OEM partition (normally left empty and stamped later). */
  siteFile?: string;
  outFile: string;
  /** Scratch space for the filesystem images (about rootfs size + 100 MiB). */
  workDir: string;
  /** Derives the disk GUID, partition UUIDs, filesystem UUIDs and volume ids. */
  seed: string;
  sourceDateEpoch: number;
  kernelCmdlineExtra?: string[];
  /** Partition sizes from the hardware definition; minDiskGiB makes the build fail if the image would not fit. */
  disk?: { espMiB?: number; bootMiB?: number; oemMiB?: number; dataMiB?: number; minDiskGiB?: number };
  /** The hardware's bootloader, which sets the disk scheme (default grub-efi). */
  bootloader?: Bootloader;
  /** Primary kernel/grub serial console, e.g. "ttyS0,115200" (default per arch); it goes last, after tty0, so it is /dev/console. */
  console?: string;
  /** Default 1 s. */
  grubTimeout?: number;
}

export interface AssembleResult {
  outFile: string;
  layout: Layout;
}

/** Bump when this module's output changes for identical inputs (part of the build cache key). */
export const DISK_RECIPE_VERSION = 'disk-1';

/** The tools every image needs, then those of each bootloader. */
export const DISK_TOOLS = ['sfdisk', 'mkfs.vfat', 'mcopy', 'mkfs.ext4', 'debugfs', 'dumpe2fs', 'dd'] as const;
const BOOTLOADER_TOOLS: Record<Bootloader, readonly string[]> = { 'grub-efi': ['grub-mkimage', 'grub-editenv'], 'rpi-tryboot': [] };

/** Inode-table bytes per inode, plus fixed ext4 metadata (superblocks, descriptors, bitmaps, resize reserve). */
const INODE_BYTES = 256;
const EXT4_FIXED_OVERHEAD = 8 * 1024 * 1024;

async function assertKernelLinks(rootfsDir: string): Promise<void> {
  for (const link of ['vmlinuz', 'initrd.img']) {
    const p = path.join(rootfsDir, link);
    let target: string;
    try {
      target = await realpath(p);
    } catch {
      throw new Error(
        `rootfs ${rootfsDir} has no usable /${link} (grub boots /${link} from the root slot; Debian creates it when a linux-image package is installed)`,
      );
    }
    // An absolute symlink resolves against the build host; check it exists inside the rootfs instead.
    const rootReal = await realpath(rootfsDir);
    if (!target.startsWith(rootReal + path.sep)) {
      const { readlink } = await import('node:fs/promises');
      const raw = await readlink(p).catch(() => '');
      const inside = path.join(rootfsDir, raw.startsWith('/') ? raw : path.join('/', raw));
      await stat(inside).catch(() => {
        throw new Error(`rootfs /${link} points outside the rootfs (${raw}) and ${inside} does not exist`);
      });
    }
  }
}

/** grub's serial terminal for a kernel console: ttyS<N>[,speed] maps to grub serial unit N; others (ttyAMA0 …) use unit 0. */
export function grubSerialFor(console: string): { unit: number; speed: number } {
  const m = /^tty[A-Za-z]+?(\d+)(?:,(\d+))?/.exec(console);
  const unit = console.startsWith('ttyS') && m ? Number(m[1]) : 0;
  return { unit, speed: m?.[2] ? Number(m[2]) : 115200 };
}

/**
 * Builds the EFI binary: grub core with every module grub.cfg needs and an embedded early config.
 * The modules come from the build host for its own arch, else from the image's root tree: Debian
 * ships grub-efi-arm64-bin for arm64 only, so an x86_64 host cannot install it, but the arm64 root
 * can (the hardware definition lists it); the host's grub-mkimage builds for any platform.
 */
async function buildGrubEfi(arch: Arch, rootfsDir: string, workDir: string, outFile: string): Promise<void> {
  const target = GRUB_TARGETS[arch];
  const native = hostDebianArch() === arch;
  const moduleDir = native ? `/usr/lib/grub/${target.platform}` : path.join(rootfsDir, 'usr/lib/grub', target.platform);
  if (native) await requireFile(path.join(moduleDir, 'linux.mod'), target.debianPackage, `grub ${target.platform} modules`);
  else
    await stat(path.join(moduleDir, 'linux.mod')).catch(() => {
      throw new Error(
        `grub ${target.platform} modules not found at ${moduleDir}: list ${target.debianPackage} in the hardware definition's packages (Debian ships it for ${arch} only, so an image for another arch than the host's takes them from its own root)`,
      );
    });
  const early = path.join(workDir, 'early.cfg');
  await writeFile(early, renderEarlyCfg(loadGrubTemplates().earlyCfg, arch));
  // grub-mkimage rather than grub-mkstandalone: with all modules built in there is no memdisk, and
  // grub-mkstandalone's memdisk tar carries the current time (not reproducible with grub 2.06).
  await run(await toolPath('grub-mkimage'), ['-O', target.platform, '-d', moduleDir, '-o', outFile, '-p', '/grub', '-c', early, ...grubModules(arch)]);
}

/** A filesystem made in a file, for a partition. */
interface PartitionImage {
  partition: Partition;
  file: string;
}

/** UEFI: the ESP with grub's EFI binary, the rendered grub.cfg and a 1024-byte grubenv. */
async function grubBootPartitions(opts: AssembleOptions, layout: Layout, work: string): Promise<PartitionImage[]> {
  const espTree = path.join(work, 'esp');
  const target = GRUB_TARGETS[opts.arch];
  await mkdir(path.join(espTree, 'EFI', 'BOOT'), { recursive: true });
  await mkdir(path.join(espTree, 'grub'), { recursive: true });
  await buildGrubEfi(opts.arch, opts.rootfsDir, work, path.join(espTree, 'EFI', 'BOOT', target.efiName));
  const cfgValues: Parameters<typeof renderGrubCfg>[1] = { arch: opts.arch };
  if (opts.kernelCmdlineExtra) cfgValues.cmdlineExtra = opts.kernelCmdlineExtra;
  if (opts.grubTimeout !== undefined) cfgValues.timeout = opts.grubTimeout;
  if (opts.console !== undefined) {
    cfgValues.consoles = ['tty0', opts.console];
    cfgValues.serial = grubSerialFor(opts.console);
  }
  await writeFile(path.join(espTree, 'grub', 'grub.cfg'), renderGrubCfg(loadGrubTemplates().grubCfg, cfgValues));
  const env = path.join(espTree, 'grub', 'grubenv');
  const editenv = await toolPath('grub-editenv');
  await run(editenv, [env, 'create']);
  await run(editenv, [env, 'set', 'slot=a', 'try_slot=', 'boot_tries=0']);
  const esp = partitionByName(layout, 'esp');
  return [await fatImage(opts, esp, espTree, path.join(work, 'esp.vfat'))];
}

/**
 * Raspberry Pi: autoboot.txt on partition 1 (slot a committed, no trial), and boot-a built from
 * the boot recipe in root-a's tree, as an upgrade builds the other slot's from its new root.
 * boot-b stays empty like root-b.
 */
async function rpiBootPartitions(opts: AssembleOptions, layout: Layout, work: string): Promise<PartitionImage[]> {
  const autoboot = partitionByName(layout, 'autoboot');
  const bootA = partitionByName(layout, 'boot-a');
  const bootB = partitionByName(layout, 'boot-b');
  const autobootTree = path.join(work, 'autoboot');
  await mkdir(autobootTree);
  await writeFile(path.join(autobootTree, 'autoboot.txt'), renderAutoboot({ committed: 'a', trying: null }, { a: bootA.index, b: bootB.index }));

  const recipeFile = path.join(opts.rootfsDir, RPI_BOOT_RECIPE);
  const recipe = parseRpiBootRecipe(
    await readFile(recipeFile, 'utf8').catch((e: NodeJS.ErrnoException) => {
      throw new Error(
        `${recipeFile}: cannot read the root's Raspberry Pi boot recipe (${e.code ?? e.message}); the root tree step writes it for bootloader rpi-tryboot`,
      );
    }),
  );
  const bootTree = path.join(work, 'boot-a');
  await mkdir(bootTree);
  const content = rpiBootPartition(recipe, 'a');
  for (const c of content.copies) {
    const from = path.join(opts.rootfsDir, c.from);
    // A link in the root would be followed on the build host: the recipe names real files.
    if (!(await lstat(from).catch(() => undefined))?.isFile()) throw new Error(`${recipeFile}: ${c.from} is not a regular file in the root`);
    await copyFile(from, path.join(bootTree, c.to));
  }
  for (const w of content.written) await writeFile(path.join(bootTree, w.name), w.content);
  return Promise.all([
    fatImage(opts, autoboot, autobootTree, path.join(work, 'autoboot.vfat')),
    fatImage(opts, bootA, bootTree, path.join(work, 'boot-a.vfat')),
  ]);
}

/** A FAT filesystem the size of `partition` holding `tree`, labelled and numbered from the seed. */
async function fatImage(opts: AssembleOptions, partition: Partition, tree: string, file: string): Promise<PartitionImage> {
  const label = partition.fsLabel;
  if (label === undefined) throw new Error(`internal: partition ${partition.name} has no filesystem label`);
  await makeVfat({
    file,
    sizeBytes: partition.sizeBytes,
    label,
    volumeId: deriveVolumeId(opts.seed, partition.name),
    fatSize: fatSizeFor(partition.sizeBytes / MiB),
    tree,
    sourceDateEpoch: opts.sourceDateEpoch,
  });
  return { partition, file };
}

export async function assembleDiskImage(opts: AssembleOptions): Promise<AssembleResult> {
  const bootloader = opts.bootloader ?? 'grub-efi';
  await requireTools([...DISK_TOOLS, ...BOOTLOADER_TOOLS[bootloader]]);
  const epoch = opts.sourceDateEpoch;
  if (!Number.isInteger(epoch) || epoch < 0) throw new Error(`sourceDateEpoch must be a non-negative integer, got ${epoch}`);
  if (!opts.seed) throw new Error('seed must be a non-empty string');
  const rootStat = await stat(opts.rootfsDir).catch(() => undefined);
  if (!rootStat?.isDirectory()) throw new Error(`rootfs directory ${opts.rootfsDir} does not exist`);
  await assertKernelLinks(opts.rootfsDir);
  if (opts.dataSkeletonDir !== undefined && !(await stat(opts.dataSkeletonDir).catch(() => undefined))?.isDirectory()) {
    throw new Error(`data skeleton directory ${opts.dataSkeletonDir} does not exist`);
  }
  if (opts.siteFile !== undefined)
    await stat(opts.siteFile).catch(() => {
      throw new Error(`site file ${opts.siteFile} does not exist`);
    });

  const usage = await measureTree(opts.rootfsDir);
  const rootInodes = Math.ceil(usage.inodes * 1.25) + 1024;
  const rootBytes = usage.blockBytes + rootInodes * INODE_BYTES + EXT4_FIXED_OVERHEAD;
  const layoutInput: Parameters<typeof computeLayout>[0] = { rootBytes, arch: opts.arch, bootloader };
  if (opts.disk?.espMiB !== undefined) layoutInput.espMiB = opts.disk.espMiB;
  if (opts.disk?.bootMiB !== undefined) layoutInput.bootMiB = opts.disk.bootMiB;
  if (opts.disk?.oemMiB !== undefined) layoutInput.oemMiB = opts.disk.oemMiB;
  if (opts.disk?.dataMiB !== undefined) layoutInput.dataMiB = opts.disk.dataMiB;
  const layout = computeLayout(layoutInput);
  const minDiskGiB = opts.disk?.minDiskGiB;
  if (minDiskGiB !== undefined && layout.totalBytes > minDiskGiB * 1024 * MiB) {
    throw new Error(`the image needs ${Math.ceil(layout.totalBytes / MiB)} MiB but the hardware's smallest disk is ${minDiskGiB} GiB (rootfs too large?)`);
  }
  const ids = deriveDiskIds(opts.seed);

  await mkdir(opts.workDir, { recursive: true });
  const work = await mkdtemp(path.join(opts.workDir, 'disk-'));
  const tmpOut = `${opts.outFile}.tmp-${process.pid}`;
  try {
    const oemTree = path.join(work, 'oem');
    await mkdir(oemTree);
    if (opts.siteFile !== undefined) await copyFile(opts.siteFile, path.join(oemTree, 'site.yaml'));
    // From here on, work runs concurrently; nothing is awaited until Promise.allSettled below.
    const bootDone = bootloader === 'grub-efi' ? grubBootPartitions(opts, layout, work) : rpiBootPartitions(opts, layout, work);

    // --- OEM: empty unless a site file is given (normally stamped later) ------------------------
    const oem = partitionByName(layout, 'oem');
    const oemImg = path.join(work, 'oem.vfat');
    const oemDone = makeVfat({
      file: oemImg,
      sizeBytes: oem.sizeBytes,
      label: FS_LABEL.oem,
      volumeId: deriveVolumeId(opts.seed, 'oem'),
      fatSize: 16,
      tree: oemTree,
      sourceDateEpoch: epoch,
    });

    // --- root-a: read-only slot, no journal ---------------------------------------------------
    const rootA = partitionByName(layout, 'root-a');
    const rootImg = path.join(work, 'root-a.ext4');
    const rootDone = makeExt4({
      file: rootImg,
      sizeBytes: rootA.sizeBytes,
      label: 'root-a',
      uuid: deriveUuid(opts.seed, 'fs:root-a'),
      hashSeed: deriveUuid(opts.seed, 'hash:root-a'),
      sourceDir: opts.rootfsDir,
      journal: false,
      inodes: rootInodes,
      reservedPercent: 0,
      sourceDateEpoch: epoch,
    });

    // --- data: small now, grown to the whole disk on first boot -------------------------------
    const data = partitionByName(layout, 'data');
    const dataImg = path.join(work, 'data.ext4');
    const dataOpts: Parameters<typeof makeExt4>[0] = {
      file: dataImg,
      sizeBytes: data.sizeBytes,
      label: FS_LABEL.data,
      uuid: deriveUuid(opts.seed, 'fs:data'),
      hashSeed: deriveUuid(opts.seed, 'hash:data'),
      journal: true,
      reservedPercent: 1,
      sourceDateEpoch: epoch,
    };
    if (opts.dataSkeletonDir !== undefined) dataOpts.sourceDir = opts.dataSkeletonDir;
    const dataDone = makeExt4(dataOpts);

    // --- the disk: sparse file, GPT, then each filesystem at its offset -----------------------
    const diskDone = (async () => {
      await mkdir(path.dirname(path.resolve(opts.outFile)), { recursive: true });
      await rm(tmpOut, { force: true });
      const fh = await open(tmpOut, 'w');
      try {
        await fh.truncate(layout.totalBytes);
      } finally {
        await fh.close();
      }
      await run(await toolPath('sfdisk'), ['--quiet', '--wipe', 'never', '--wipe-partitions', 'never', '--no-reread', '--no-tell-kernel', tmpOut], {
        input: sfdiskScript(layout, ids),
      });
    })();

    // Wait for everything (no work left running when we clean up), then report the first failure.
    const settled = await Promise.allSettled([bootDone, oemDone, rootDone, dataDone, diskDone]);
    const failed = settled.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) throw failed.reason;
    for (const b of await bootDone) await writeAt(tmpOut, b.file, b.partition.offsetBytes);
    await writeAt(tmpOut, rootImg, rootA.offsetBytes);
    await writeAt(tmpOut, oemImg, oem.offsetBytes);
    await writeAt(tmpOut, dataImg, data.offsetBytes);
    const size = (await stat(tmpOut)).size;
    if (size !== layout.totalBytes) throw new Error(`internal error: image is ${size} bytes, layout says ${layout.totalBytes}`);
    const out = await open(tmpOut, 'r+');
    try {
      await out.sync();
    } finally {
      await out.close();
    }
    await rename(tmpOut, opts.outFile);
    return { outFile: opts.outFile, layout };
  } catch (e) {
    await rm(tmpOut, { force: true });
    throw e;
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

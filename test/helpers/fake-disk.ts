/** Small stand-ins for the disk tests: a root tree that assembles in seconds, and disks partitioned by someone else. */
import { access, mkdir, rm, symlink, truncate, writeFile } from 'node:fs/promises';
import { makeVfat, writeAt } from '../../builder/src/disk/fs.ts';
import { computeLayout, readGpt, toolPath } from '../../builder/src/disk/index.ts';
import { run } from '../../builder/src/util/exec.ts';
import { RPI_BOOT_RECIPE } from '../../firstboot/src/upgrade/core/rpi-boot.ts';
import { RPI_DEVICE_TREES, RPI_FIRMWARE_FILES, rpiBootRecipe } from '../../image/src/rpi.ts';

/** A root tree with what assembleDiskImage needs (kernel and initrd links), not a bootable system. */
export async function fakeRootfs(root: string): Promise<void> {
  await mkdir(`${root}/boot`, { recursive: true });
  await mkdir(`${root}/etc`, { recursive: true });
  await mkdir(`${root}/usr/bin`, { recursive: true });
  await writeFile(`${root}/boot/vmlinuz-6.1.0-99-amd64`, 'not really a kernel\n');
  await writeFile(`${root}/boot/initrd.img-6.1.0-99-amd64`, 'not really an initrd\n');
  await symlink('boot/vmlinuz-6.1.0-99-amd64', `${root}/vmlinuz`);
  await symlink('boot/initrd.img-6.1.0-99-amd64', `${root}/initrd.img`);
  await writeFile(`${root}/etc/hostname`, 'geminik8s\n');
  await writeFile(`${root}/etc/os-release`, 'ID=debian\nVERSION_ID="12"\n');
  await writeFile(`${root}/usr/bin/tool`, Buffer.alloc(300_000, 7), { mode: 0o755 });
}

/**
 * {@link fakeRootfs} with what a Raspberry Pi root adds: raspi-firmware's files, the Pi 4 device
 * tree, and the boot recipe the root tree step writes (serial console ttyS1). Returns the recipe.
 */
export async function fakePiRootfs(root: string): Promise<ReturnType<typeof rpiBootRecipe>> {
  await fakeRootfs(root);
  const deviceTreeDir = 'usr/lib/linux-image-6.1.0-99-arm64';
  await mkdir(`${root}/${deviceTreeDir}/broadcom`, { recursive: true });
  await mkdir(`${root}/usr/lib/raspi-firmware`, { recursive: true });
  for (const f of RPI_FIRMWARE_FILES) await writeFile(`${root}/usr/lib/raspi-firmware/${f}`, `firmware ${f}\n`);
  await writeFile(`${root}/${deviceTreeDir}/broadcom/${RPI_DEVICE_TREES.pi4}`, 'dtb\n');
  const recipe = rpiBootRecipe(
    {
      kernel: 'boot/vmlinuz-6.1.0-99-amd64',
      initrd: 'boot/initrd.img-6.1.0-99-amd64',
      deviceTreeDir,
      deviceTrees: [RPI_DEVICE_TREES.pi4],
      firmware: [...RPI_FIRMWARE_FILES],
    },
    { consoles: ['tty0', 'ttyS1,115200'], cmdlineExtra: [] },
  );
  await mkdir(`${root}/usr/lib/geminik8s`, { recursive: true });
  await writeFile(`${root}/${RPI_BOOT_RECIPE}`, JSON.stringify(recipe));
  return recipe;
}

/** Small partition sizes for look-alike disks (oem keeps its real 32 MiB: FAT16 needs the room). */
export const SMALL_LAYOUT = computeLayout({ rootBytes: 0, espMiB: 8, dataMiB: 8, minRootMiB: 8 });

/** A disk partitioned by `sfdiskScript` (not by geminik8s build) with a FAT filesystem in its partition named oem. */
export async function lookalikeDisk(file: string, sfdiskScript: string): Promise<void> {
  await writeFile(file, '');
  await truncate(file, SMALL_LAYOUT.totalBytes);
  await run(await toolPath('sfdisk'), ['--quiet', file], { input: sfdiskScript });
  const oem = (await readGpt(file)).partitions.find((p) => p.name === 'oem');
  if (!oem) throw new Error('lookalikeDisk: the table needs a partition named oem');
  const fat = `${file}.oem`;
  await makeVfat({ file: fat, sizeBytes: oem.sizeBytes, label: 'OTHER', volumeId: '12345678', fatSize: 16, sourceDateEpoch: 1_700_000_000 });
  await writeAt(file, fat, oem.offsetBytes);
  await rm(fat);
}

/** Attaches a disk image as a loop device with a node per partition (`<loop>p<N>`); returns the loop device. */
export async function attachLoop(image: string): Promise<string> {
  const loop = (await run('losetup', ['--show', '-f', '--partscan', image])).trim();
  // Some kernels (and containers without udev) attach no partition nodes: add them from userspace.
  if (
    !(await access(`${loop}p1`).then(
      () => true,
      () => false,
    ))
  )
    await run('partx', ['-a', loop]);
  return loop;
}

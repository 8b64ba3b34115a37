/** Small stand-ins for the disk tests: a root tree that assembles in seconds, and disks partitioned by someone else. */
import { mkdir, rm, symlink, truncate, writeFile } from 'node:fs/promises';
import { makeVfat, writeAt } from '../../builder/src/disk/fs.ts';
import { computeLayout, readGpt, toolPath } from '../../builder/src/disk/index.ts';
import { run } from '../../builder/src/util/exec.ts';

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

import { access, chmod, copyFile, mkdir, readlink, symlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { RPI_BOOT_RECIPE } from '../../../firstboot/src/upgrade/core/rpi-boot.ts';
import { BOOT_STATE_MOUNT, type Bootloader } from '../../../image/src/layout.ts';
import { RPI_DEVICE_TREES, RPI_FIRMWARE_DIR, RPI_FIRMWARE_FILES, rpiBootRecipe } from '../../../image/src/rpi.ts';
import { clampTreeTimes } from '../disk/fs.ts';
import { IMAGES_DIR } from '../images/baked.ts';
import { ROOTFS_SOURCE_DATE_EPOCH } from '../rootfs/epoch.ts';
import { run } from '../util/exec.ts';

/** Where binaries land inside the image. Units and the agent refer to these paths. */
export const INSTALL_PATHS = {
  agent: '/usr/lib/geminik8s/geminik8s-agent',
  kine: '/usr/lib/geminik8s/bin/kine',
  /** Upstream Kubernetes, one binary for all its programs (components/kubernetes); links name each program. */
  kubernetes: '/usr/lib/geminik8s/bin/kubernetes',
  k3s: '/usr/local/bin/k3s',
} as const;

/** Which installed binary each Kubernetes distribution is. */
export const KUBERNETES_BINARY = { upstream: 'kubernetes', k3s: 'k3s' } as const;

/** The upstream programs the multi-call binary dispatches to by the name it is called by. */
export const KUBERNETES_PROGRAMS = ['kube-apiserver', 'kube-controller-manager', 'kube-scheduler', 'kubelet', 'kube-proxy'] as const;

/** Mount points on the read-only root that fstab needs (and the bootloader's, BOOT_STATE_MOUNT); the root cannot grow them at run time. */
const MOUNT_POINTS = ['data', 'oem'];

const ENABLED_UNITS = [
  'systemd-networkd.service',
  'systemd-resolved.service',
  'geminik8s-grow-data.service',
  'geminik8s-agent.service',
  'geminik8s-upgrade-deadline.timer',
];

/** Where the public keys that sign update bundles go; the agent trusts every `*.pem` in it. */
export const UPDATE_KEYS_DIR = 'etc/geminik8s/update-keys';

export interface RootTreeInputs {
  rootfsDir: string;
  binaries: { name: keyof typeof INSTALL_PATHS; file: string }[];
  /** Container image archives and their images.json, installed in IMAGES_DIR for the runtime to import at boot. */
  imageFiles: string[];
  overlayDir: string;
  outDir: string;
  /** Dates the system users' shadow entries and is the latest file time in the tree, so the tree stays reproducible. */
  sourceDateEpoch: number;
  /** Public keys (SPKI PEM) whose bundles the box accepts, each named by its key id. */
  updateKeys: { id: string; pem: string }[];
  /** The hardware's bootloader; rpi-tryboot roots carry the recipe of their boot partition (image/src/rpi.ts). */
  bootloader: Bootloader;
  /** The kernel's consoles (the last is /dev/console) and extra command line words, for a Pi's cmdline.txt. */
  kernel: { consoles: string[]; cmdlineExtra: string[] };
}

/** Layers the cached Debian rootfs, the binaries and the rendered overlays into one tree for mkfs. */
export async function composeRootTree(inp: RootTreeInputs): Promise<void> {
  // --reflink=auto makes this nearly free on CoW filesystems and a plain copy elsewhere.
  await run('cp', ['-a', '--reflink=auto', `${inp.rootfsDir}/.`, inp.outDir]);
  // The cached rootfs carries the time it was built on whatever its maintainer scripts wrote: it takes
  // the rootfs's own date instead, so the image does not depend on when (or for which commit) it was built.
  await clampTreeTimes(inp.outDir, ROOTFS_SOURCE_DATE_EPOCH);
  for (const b of inp.binaries) {
    const target = path.join(inp.outDir, INSTALL_PATHS[b.name]);
    await mkdir(path.dirname(target), { recursive: true });
    await copyFile(b.file, target);
    await chmod(target, 0o755);
    if (b.name === 'kubernetes') {
      for (const program of KUBERNETES_PROGRAMS) await symlink('kubernetes', path.join(path.dirname(target), program));
    }
  }
  if (inp.imageFiles.length > 0) {
    const dir = path.join(inp.outDir, IMAGES_DIR);
    await mkdir(dir, { recursive: true });
    for (const f of inp.imageFiles) {
      const target = path.join(dir, path.basename(f));
      await copyFile(f, target);
      await chmod(target, 0o644);
    }
  }
  await run('cp', ['-a', `${inp.overlayDir}/.`, inp.outDir]);
  const keysDir = path.join(inp.outDir, UPDATE_KEYS_DIR);
  await mkdir(keysDir, { recursive: true });
  for (const k of inp.updateKeys) await writeFile(path.join(keysDir, `${k.id}.pem`), k.pem, { mode: 0o644 });
  // Our system users (overlays/base/usr/lib/sysusers.d) are made here: /etc is read-only on the box.
  // Only our file: the Debian packages already made theirs.
  await run('systemd-sysusers', ['--root', inp.outDir, path.join(inp.outDir, 'usr/lib/sysusers.d/geminik8s.conf')], {
    env: { ...process.env, SOURCE_DATE_EPOCH: String(inp.sourceDateEpoch) },
  });
  for (const m of [...MOUNT_POINTS, BOOT_STATE_MOUNT[inp.bootloader].mountPoint]) await mkdir(path.join(inp.outDir, m), { recursive: true });
  if (inp.bootloader === 'rpi-tryboot') await writeRpiBootRecipe(inp.outDir, inp.kernel);
  await run('systemctl', ['--root', inp.outDir, 'enable', ...ENABLED_UNITS]);
  // Nothing on the appliance waits for "network online"; without this, a box with no cable stalls boot.
  await run('systemctl', ['--root', inp.outDir, 'mask', 'systemd-networkd-wait-online.service']);
  // Everything written above is dated now; the image must not depend on when it was built.
  await clampTreeTimes(inp.outDir, inp.sourceDateEpoch);
}

/** Writes the root's Raspberry Pi boot recipe from what the root holds: its kernel, initrd, device trees and firmware. */
async function writeRpiBootRecipe(root: string, kernel: RootTreeInputs['kernel']): Promise<void> {
  // /vmlinuz and /initrd.img are Debian's links to the installed kernel (boot/vmlinuz-<version>).
  const target = async (link: string) => path.posix.normalize((await readlink(path.join(root, link))).replace(/^\/+/, ''));
  const kernelFile = await target('vmlinuz').catch(() => {
    throw new Error(`${root}: no /vmlinuz link to a kernel (the hardware definition's kernel package makes it)`);
  });
  const version = path.basename(kernelFile).replace(/^vmlinuz-/, '');
  const deviceTreeDir = `usr/lib/linux-image-${version}`;
  const present = async (dir: string, names: readonly string[]) =>
    (
      await Promise.all(
        names.map(async (n) =>
          (await access(path.join(root, dir, n)).then(
            () => true,
            () => false,
          ))
            ? n
            : undefined,
        ),
      )
    ).filter((n): n is string => n !== undefined);
  const recipe = rpiBootRecipe(
    {
      kernel: kernelFile,
      initrd: await target('initrd.img'),
      deviceTreeDir,
      deviceTrees: await present(`${deviceTreeDir}/broadcom`, Object.values(RPI_DEVICE_TREES)),
      firmware: await present(RPI_FIRMWARE_DIR, RPI_FIRMWARE_FILES),
    },
    kernel,
  );
  await writeFile(path.join(root, RPI_BOOT_RECIPE), `${JSON.stringify(recipe, null, 2)}\n`, { mode: 0o644 });
}

/** Folders the data partition starts with: the writable layer of /var (see overlays/base/etc/fstab.hbs), dated `sourceDateEpoch`. */
export async function makeDataSkeleton(dir: string, sourceDateEpoch: number): Promise<void> {
  await mkdir(path.join(dir, 'var', 'upper'), { recursive: true });
  await mkdir(path.join(dir, 'var', 'work'), { recursive: true });
  await clampTreeTimes(dir, sourceDateEpoch);
}

import { chmod, copyFile, mkdir } from 'node:fs/promises';
import path from 'node:path';
import { run } from '../util/exec.ts';

/** Where binaries land inside the image. Units and the agent refer to these paths. */
export const INSTALL_PATHS = {
  agent: '/usr/lib/geminik8s/geminik8s-agent',
  kine: '/usr/lib/geminik8s/bin/kine',
  k3s: '/usr/local/bin/k3s',
} as const;

/** Mount points on the read-only root that fstab needs; the root cannot grow them at run time. */
const MOUNT_POINTS = ['data', 'oem', 'boot/efi'];

const ENABLED_UNITS = ['systemd-networkd.service', 'systemd-resolved.service', 'geminik8s-grow-data.service', 'geminik8s-agent.service'];

export interface RootTreeInputs {
  rootfsDir: string;
  binaries: { name: keyof typeof INSTALL_PATHS; file: string }[];
  overlayDir: string;
  outDir: string;
  /** Dates the system users' shadow entries, so the tree stays reproducible. */
  sourceDateEpoch: number;
}

/** Layers the cached Debian rootfs, the binaries and the rendered overlays into one tree for mkfs. */
export async function composeRootTree(inp: RootTreeInputs): Promise<void> {
  // --reflink=auto makes this nearly free on CoW filesystems and a plain copy elsewhere.
  await run('cp', ['-a', '--reflink=auto', `${inp.rootfsDir}/.`, inp.outDir]);
  for (const b of inp.binaries) {
    const target = path.join(inp.outDir, INSTALL_PATHS[b.name]);
    await mkdir(path.dirname(target), { recursive: true });
    await copyFile(b.file, target);
    await chmod(target, 0o755);
  }
  await run('cp', ['-a', `${inp.overlayDir}/.`, inp.outDir]);
  // Our system users (overlays/base/usr/lib/sysusers.d) are made here: /etc is read-only on the box.
  // Only our file: the Debian packages already made theirs.
  await run('systemd-sysusers', ['--root', inp.outDir, path.join(inp.outDir, 'usr/lib/sysusers.d/geminik8s.conf')], {
    env: { ...process.env, SOURCE_DATE_EPOCH: String(inp.sourceDateEpoch) },
  });
  for (const m of MOUNT_POINTS) await mkdir(path.join(inp.outDir, m), { recursive: true });
  await run('systemctl', ['--root', inp.outDir, 'enable', ...ENABLED_UNITS]);
  // Nothing on the appliance waits for "network online"; without this, a box with no cable stalls boot.
  await run('systemctl', ['--root', inp.outDir, 'mask', 'systemd-networkd-wait-online.service']);
}

/** Folders the data partition starts with: the writable layer of /var (see overlays/base/etc/fstab). */
export async function makeDataSkeleton(dir: string): Promise<void> {
  await mkdir(path.join(dir, 'var', 'upper'), { recursive: true });
  await mkdir(path.join(dir, 'var', 'work'), { recursive: true });
}

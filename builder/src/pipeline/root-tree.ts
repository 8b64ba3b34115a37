import { chmod, copyFile, mkdir, symlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
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

/** Mount points on the read-only root that fstab needs; the root cannot grow them at run time. */
const MOUNT_POINTS = ['data', 'oem', 'boot/efi'];

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
  for (const m of MOUNT_POINTS) await mkdir(path.join(inp.outDir, m), { recursive: true });
  await run('systemctl', ['--root', inp.outDir, 'enable', ...ENABLED_UNITS]);
  // Nothing on the appliance waits for "network online"; without this, a box with no cable stalls boot.
  await run('systemctl', ['--root', inp.outDir, 'mask', 'systemd-networkd-wait-online.service']);
  // Everything written above is dated now; the image must not depend on when it was built.
  await clampTreeTimes(inp.outDir, inp.sourceDateEpoch);
}

/** Folders the data partition starts with: the writable layer of /var (see overlays/base/etc/fstab), dated `sourceDateEpoch`. */
export async function makeDataSkeleton(dir: string, sourceDateEpoch: number): Promise<void> {
  await mkdir(path.join(dir, 'var', 'upper'), { recursive: true });
  await mkdir(path.join(dir, 'var', 'work'), { recursive: true });
  await clampTreeTimes(dir, sourceDateEpoch);
}

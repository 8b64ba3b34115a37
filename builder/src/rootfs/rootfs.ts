/**
 * Debian rootfs via mmdebstrap (DESIGN "Build pipeline" step 3).
 *
 * Layout on disk (paths chosen by the caller, typically under .cache/):
 *   <outDir>/                      the rootfs (inside the step cache's fresh folder, published by it)
 *   <outDir>.packages.json         installed packages [{name,version,arch}] + build facts
 *   <aptCacheDir>/*.deb            persistent apt archive cache shared by all builds (sync-in/sync-out)
 */
import { mkdir, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { run, runStreaming } from '../util/exec.ts';
import { ensureForeignArchSupport, type DebianArch } from './foreign-arch.ts';

/** Bump whenever the mmdebstrap options or hooks/customize.sh change: it is part of the rootfs cache key. */
export const ROOTFS_HOOK_VERSION = 'rootfs-hooks-8';

export const CUSTOMIZE_HOOK = fileURLToPath(new URL('./hooks/customize.sh', import.meta.url));

/**
 * dpkg path filters: no docs (except copyright), man pages, info or translations in the image; of
 * the container stack (upstream Kubernetes' worker), only what the appliance runs: the CNI plugins
 * of its pod network (firstboot/src/kubernetes/core/worker.ts: bridge, host-local; the runtime
 * adds loopback) and containerd's runc v2 shim, not the legacy v1 shims (~50 MB together).
 */
export const DPKG_EXCLUDES: readonly string[] = [
  'path-exclude=/usr/share/doc/*',
  'path-include=/usr/share/doc/*/copyright',
  'path-exclude=/usr/share/man/*',
  'path-exclude=/usr/share/info/*',
  'path-exclude=/usr/share/locale/*',
  'path-include=/usr/share/locale/locale.alias',
  'path-exclude=/usr/share/lintian/*',
  'path-exclude=/usr/lib/cni/*',
  ...['bridge', 'host-local', 'loopback'].map((plugin) => `path-include=/usr/lib/cni/${plugin}`),
  'path-exclude=/usr/bin/containerd-shim',
  'path-exclude=/usr/bin/containerd-shim-runc-v1',
];

/**
 * PostgreSQL's optional LLVM JIT drags in libLLVM + libz3 (~130 MB). The appliance's workload
 * (Kine's small OLTP queries) never benefits; without the provider library PostgreSQL simply runs
 * without JIT (documented behaviour of jit_provider). customize.sh refuses the build if any other
 * package needs LLVM.
 */
export const DPKG_EXCLUDES_NO_JIT: readonly string[] = [
  'path-exclude=/usr/lib/*/libLLVM-*',
  'path-exclude=/usr/lib/*/libz3.so*',
  'path-exclude=/usr/lib/postgresql/*/lib/llvmjit*',
  'path-exclude=/usr/lib/postgresql/*/lib/bitcode/*',
];

export interface RootfsPackage {
  name: string;
  version: string;
  arch: string;
}

export interface BuildRootfsOptions {
  arch: DebianArch;
  suite: 'bookworm';
  mirror: string;
  securityMirror?: string;
  packages: string[];
  outDir: string;
  aptCacheDir: string;
  sourceDateEpoch?: number;
  /** The hardware definition's `kernel.initrdModules`: MODULES=list with these; undefined: MODULES=most. */
  initrdModules?: string[];
  /** Optional kernel module trimming (the hardware definition's `kernel.excludeModules`). */
  excludeModules?: string[];
  onProgress?: (line: string) => void;
}

export interface RootfsResult {
  outDir: string;
  packages: RootfsPackage[];
}

/** Single-quotes a string for sh. */
export function shq(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

/** The apt source lines handed to mmdebstrap. */
export function aptSourceLines(o: { suite: string; mirror: string; securityMirror?: string }): string[] {
  // non-free-firmware: firmware a hardware definition or profile may list (the Raspberry Pi's
  // raspi-firmware, CPU microcode, NIC firmware); nothing from it is installed unless listed.
  const comps = 'main non-free-firmware';
  const m = o.mirror.replace(/\/+$/, '');
  const lines = [`deb ${m} ${o.suite} ${comps}`, `deb ${m} ${o.suite}-updates ${comps}`];
  if (o.securityMirror) lines.push(`deb ${o.securityMirror.replace(/\/+$/, '')} ${o.suite}-security ${comps}`);
  return lines;
}

/** What every image's initrd holds, whatever MODULES says: the root's filesystems and the disks it boots from. */
export const INITRD_BASE_MODULES: readonly string[] = [
  'ext4',
  'squashfs',
  'overlay',
  'virtio_blk',
  'virtio_scsi',
  'virtio_pci',
  'nvme',
  'ahci',
  'sd_mod',
  'usb_storage',
  'uas',
  'xhci_pci',
  'ehci_pci',
];

/**
 * initramfs-tools' configuration: MODULES=most (every storage, bus and input driver of the kernel)
 * unless the hardware lists its modules. Under qemu-user (an arm64 root built here) MODULES=most
 * copies a few thousand modules at about one a second; a list keeps the initrd small too.
 */
function initramfsConf(listed: boolean): string {
  return `# geminik8s: the initrd must find root=PARTLABEL=root-a on any of the supported disks
MODULES=${listed ? 'list' : 'most'}
COMPRESS=zstd
`;
}

function initramfsHook(extra: readonly string[]): string {
  return `#!/bin/sh
# geminik8s: the modules the appliance root needs (the hardware definition adds its own)
PREREQ=""
prereqs() { echo "$PREREQ"; }
case "$1" in prereqs) prereqs; exit 0 ;; esac
. /usr/share/initramfs-tools/hook-functions
for m in ${[...INITRD_BASE_MODULES, ...extra].join(' ')}; do
  manual_add_modules "$m"
done
`;
}

const UPDATE_INITRAMFS = '/usr/sbin/update-initramfs';

/** The mmdebstrap command line (exported for --dry-run display and tests). */
export function mmdebstrapArgs(o: BuildRootfsOptions, target: string, excludesFile?: string): string[] {
  const essentialHook = [
    'mkdir -p "$1/etc/postgresql-common" "$1/etc/initramfs-tools/conf.d" "$1/etc/initramfs-tools/hooks"',
    `printf '%s\\n' '# geminik8s: the appliance agent creates and manages PostgreSQL clusters' 'create_main_cluster = false' > "$1/etc/postgresql-common/createcluster.conf"`,
    `printf '%s' ${shq(initramfsConf(o.initrdModules !== undefined))} > "$1/etc/initramfs-tools/conf.d/geminik8s.conf"`,
    `printf '%s' ${shq(initramfsHook(o.initrdModules ?? []))} > "$1/etc/initramfs-tools/hooks/geminik8s"`,
    'chmod 0755 "$1/etc/initramfs-tools/hooks/geminik8s"',
    // The kernel's postinst and initramfs-tools' trigger would each build an initrd that
    // customize.sh throws away after trimming modules: under qemu-user (a foreign-arch root) one
    // mkinitramfs takes minutes. update-initramfs is diverted to true until customize.sh builds
    // the one initrd the image keeps.
    `chroot "$1" dpkg-divert --quiet --local --rename --divert ${UPDATE_INITRAMFS}.geminik8s --add ${UPDATE_INITRAMFS}`,
    `ln -s /bin/true "$1${UPDATE_INITRAMFS}"`,
  ].join(' && ');
  const args = [
    '--mode=root',
    '--variant=minbase',
    `--architectures=${o.arch}`,
    `--include=${[...new Set(o.packages)].join(',')}`,
    '--aptopt=APT::Keep-Downloaded-Packages "true"',
    '--aptopt=APT::Install-Recommends "false"',
    '--aptopt=Acquire::Languages "none"',
    ...[...DPKG_EXCLUDES, ...DPKG_EXCLUDES_NO_JIT].map((x) => `--dpkgopt=${x}`),
    // keep the essential .debs so sync-out can save them to the shared cache
    '--skip=essential/unlink',
    `--setup-hook=mkdir -p ${shq(o.aptCacheDir)} "$1/var/cache/apt/archives/"`,
    `--setup-hook=sync-in ${shq(o.aptCacheDir)} /var/cache/apt/archives/`,
    `--essential-hook=${essentialHook}`,
    // after this, mmdebstrap's cleanup step removes the .debs from the rootfs itself
    `--customize-hook=sync-out /var/cache/apt/archives ${shq(o.aptCacheDir)}`,
    `--customize-hook=sh ${shq(CUSTOMIZE_HOOK)} "$1" ${shq('geminik8s')} ${shq(excludesFile ?? '')} no-jit`,
    o.suite,
    target,
    ...aptSourceLines(o),
  ];
  return args;
}

/** Installed packages of a rootfs, from its dpkg database (works for foreign-arch roots). */
export async function listRootfsPackages(rootfs: string): Promise<RootfsPackage[]> {
  const out = await run('dpkg-query', [
    `--admindir=${join(rootfs, 'var/lib/dpkg')}`,
    '-W',
    // biome-ignore lint/suspicious/noTemplateCurlyInString: dpkg-query's own ${field} format, not a JS template
    '-f=${db:Status-Abbrev}\t${Package}\t${Version}\t${Architecture}\n',
  ]);
  return out
    .split('\n')
    .map((l) => l.split('\t'))
    .filter((f) => f.length === 4 && f[0]!.startsWith('ii'))
    .map(([, name, version, arch]) => ({ name: name!, version: version!, arch: arch! }))
    .sort((a, b) => a.name.localeCompare(b.name));
}

export function packagesJsonPath(outDir: string): string {
  return `${outDir.replace(/\/+$/, '')}.packages.json`;
}

/** Reads a cached build's package list; undefined when the rootfs is not complete. */
export async function readCachedRootfs(outDir: string): Promise<RootfsResult | undefined> {
  try {
    const j = JSON.parse(await readFile(packagesJsonPath(outDir), 'utf8')) as { packages: RootfsPackage[] };
    await readdir(outDir);
    return { outDir, packages: j.packages };
  } catch {
    return undefined;
  }
}

/**
 * Builds a Debian rootfs directory with mmdebstrap into `outDir`, which must not exist yet, and
 * writes `<outDir>.packages.json`. A plain producer: the step cache gives it a fresh folder and
 * owns publishing, locking and the cleanup of an interrupted build (pipeline/step-cache.ts).
 * Needs root (mmdebstrap --mode=root).
 */
export async function buildRootfs(opts: BuildRootfsOptions): Promise<RootfsResult> {
  const outDir = opts.outDir.replace(/\/+$/, '');
  if (process.getuid?.() !== 0) throw new Error('building the rootfs needs root (mmdebstrap --mode=root)');
  await ensureForeignArchSupport(opts.arch);
  await mkdir(opts.aptCacheDir, { recursive: true });
  let excludesFile: string | undefined;
  if (opts.excludeModules?.length) {
    excludesFile = `${outDir}.exclude-modules`;
    await writeFile(excludesFile, `${opts.excludeModules.join('\n')}\n`);
  }
  const env: Record<string, string> = {
    ...(process.env as Record<string, string>),
    LC_ALL: 'C.UTF-8',
    ...(opts.sourceDateEpoch !== undefined ? { SOURCE_DATE_EPOCH: String(opts.sourceDateEpoch) } : {}),
  };
  await runStreaming('mmdebstrap', mmdebstrapArgs(opts, outDir, excludesFile), { env, onLine: opts.onProgress ?? (() => undefined) });
  if (excludesFile) await rm(excludesFile, { force: true });
  const packages = await listRootfsPackages(outDir);
  await writeFile(
    packagesJsonPath(outDir),
    `${JSON.stringify({ suite: opts.suite, arch: opts.arch, sourceDateEpoch: opts.sourceDateEpoch ?? null, hookVersion: ROOTFS_HOOK_VERSION, packages }, null, 2)}\n`,
  );
  return { outDir, packages };
}

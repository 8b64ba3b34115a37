import { readFile, readdir } from 'node:fs/promises';
import path from 'node:path';
import { hardwareSchema, type Hardware } from './hardware.ts';
import { profileSchema, type Profile } from './profile.ts';
import { ConfigError, parseYamlWithSchema, type ConfigIssue } from '../../../firstboot/src/core/config-file.ts';

/** Packages every appliance needs regardless of profile: the agent's tools and PostgreSQL. */
export const APPLIANCE_PACKAGES = [
  'systemd',
  'systemd-sysv',
  'systemd-resolved',
  'udev',
  'dbus',
  'kmod',
  'initramfs-tools',
  // the agent grows the data partition and reads the OEM partition
  'util-linux',
  'fdisk',
  'e2fsprogs',
  'dosfstools',
  // VIP handling (ip addr + gratuitous ARP) and health checks
  'iproute2',
  'arping',
  'iputils-ping',
  'ca-certificates',
  'procps',
  'postgresql-15',
  // TLS material for PostgreSQL replication; etcdctl, for an operator on the box
  'openssl',
  'etcd-client',
  // the host firewall: /etc/nftables.conf at boot, then the agent's table (firstboot/src/net/firewall.ts)
  'nftables',
  // A/B upgrades: the slot image in a bundle is zstd-compressed (firstboot/src/upgrade/service.ts)
  'zstd',
] as const;

/**
 * What an upstream-Kubernetes box needs beside the multi-call binary to be a worker: the container
 * runtime (containerd 1.6 with runc; the kubelet is told the cgroup driver, firstboot/src/kubernetes/core/worker.ts)
 * and the CNI plugins of the pod network (bridge, host-local, portmap). K3s brings its own.
 */
export const UPSTREAM_WORKER_PACKAGES = ['containerd', 'runc', 'containernetworking-plugins'] as const;

export interface ResolvedConfig {
  profile: Profile;
  hardware: Hardware;
  files: { profile: string; hardware: string };
  /** Sorted, de-duplicated package set for the rootfs (appliance + hardware + profile). */
  packages: string[];
}

export interface ResolveOptions {
  /** A profile name under profiles/ or a path to a YAML file. */
  profile: string;
  /** A hardware name under hardware/ or a path to a YAML file. */
  hardware: string;
  repoRoot: string;
}

/** Loads and validates the profile and hardware files; throws ConfigError listing every problem. */
export async function resolveConfig(opts: ResolveOptions): Promise<ResolvedConfig> {
  const [profile, hardware] = await Promise.all([
    loadDefinition<Profile>(opts.repoRoot, 'profiles', opts.profile, profileSchema),
    loadDefinition<Hardware>(opts.repoRoot, 'hardware', opts.hardware, hardwareSchema),
  ]);
  const issues = [...profile.issues, ...hardware.issues];
  if (issues.length > 0 || !profile.value || !hardware.value) throw new ConfigError(issues);
  const worker = profile.value.components.kubernetes?.distribution === 'upstream' ? UPSTREAM_WORKER_PACKAGES : [];
  const packages = [
    ...new Set([...APPLIANCE_PACKAGES, ...worker, hardware.value.kernel.package, ...(hardware.value.packages ?? []), ...(profile.value.debian.packages ?? [])]),
  ].sort();
  return { profile: profile.value, hardware: hardware.value, files: { profile: profile.file, hardware: hardware.file }, packages };
}

interface Loaded<T> {
  file: string;
  value?: T;
  issues: ConfigIssue[];
}

async function loadDefinition<T>(repoRoot: string, folder: string, ref: string, schema: object): Promise<Loaded<T>> {
  const isPath = ref.includes('/') || ref.endsWith('.yaml') || ref.endsWith('.yml');
  const file = isPath ? ref : path.join(folder, `${ref}.yaml`);
  const absolute = path.resolve(isPath ? process.cwd() : repoRoot, file);
  let text: string;
  try {
    text = await readFile(absolute, 'utf8');
  } catch (err) {
    const known = await listNames(path.join(repoRoot, folder));
    const kind = folder === 'profiles' ? 'profile' : 'hardware definition';
    return {
      file,
      issues: [
        {
          file,
          line: 0,
          column: 0,
          field: '(file)',
          found: (err as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : String((err as Error).message),
          allowed: `expected a ${kind}: one of ${known.join(', ') || '(none found)'}, or a path to a YAML file`,
        },
      ],
    };
  }
  const parsed = parseYamlWithSchema<T>(text, file, schema);
  return parsed.ok ? { file, value: parsed.value, issues: [] } : { file, issues: parsed.issues };
}

async function listNames(dir: string): Promise<string[]> {
  try {
    return (await readdir(dir))
      .filter((f) => f.endsWith('.yaml'))
      .map((f) => f.slice(0, -'.yaml'.length))
      .sort();
  } catch {
    return [];
  }
}

import { createHash } from 'node:crypto';
import type { ResolvedConfig } from '../config/resolve.ts';
import { BAKED_IMAGES } from '../images/baked.ts';

/**
 * The build as a list of steps, each keyed by a content hash of its own inputs and of the keys
 * of the steps it consumes. Pure: the shell hashes files and passes the digests in, so what
 * rebuilds after a change can be reasoned about (and tested) without touching a disk.
 */
export type StepId = 'rootfs' | 'kine' | 'kubernetes' | 'images' | 'agent' | 'overlays' | 'rootTree' | 'disk' | 'artifacts';

export interface PlannedStep {
  id: StepId;
  title: string;
  key: string;
  dependsOn: StepId[];
  /** Human-readable inputs, shown by --dry-run. */
  inputs: Record<string, string>;
  /**
   * The output holds the site file stamped at build time, and with it the pair secret: the step
   * runs in a private folder and is never cached, so no secret outlives the build in the cache.
   */
  holdsSecrets: boolean;
}

export interface PlanInputs {
  config: ResolvedConfig;
  mirror: string;
  securityMirror?: string;
  /** Digest of the rootfs hook scripts' behaviour (bumped when they change). */
  rootfsRecipe: string;
  /** The rootfs's own date (rootfs/epoch.ts), not the commit's: it dates what the rootfs build writes. */
  rootfsSourceDateEpoch: number;
  /** Digest of firstboot sources, lockfile and pinned Node version. */
  agentSource: string;
  /** Digest of the overlays tree. */
  overlayTree: string;
  /** Digest of the image/ templates and the disk code's recipe. */
  diskRecipe: string;
  /** Digest of each `components/<name>` source tree a goMain component builds from. */
  componentTrees?: Record<string, string>;
  /** Digest of the code that writes the image archives (builder/src/images). */
  imagesRecipe?: string;
  /** Digest of the site file when one is stamped at build time. */
  site?: string;
  /** Ids of the public keys baked in as trusted update signers (cli keygen: sha256 of the key). */
  updateKeys?: string[];
  sourceDateEpoch: number;
}

export function digest(...parts: unknown[]): string {
  const h = createHash('sha256');
  for (const p of parts) h.update(JSON.stringify(p ?? null)).update('\0');
  return h.digest('hex').slice(0, 20);
}

export function planBuild(inp: PlanInputs): PlannedStep[] {
  const { profile, hardware, packages } = inp.config;
  const arch = hardware.arch;
  const steps: PlannedStep[] = [];
  const keyOf = (id: StepId): string => {
    const s = steps.find((x) => x.id === id);
    if (!s) throw new Error(`plan: step ${id} used before it is planned`);
    return s.key;
  };
  const add = (id: StepId, title: string, dependsOn: StepId[], inputs: Record<string, string>) => {
    const key = digest(id, inputs, dependsOn.map(keyOf));
    const holdsSecrets = Boolean(inputs.site) || steps.some((s) => dependsOn.includes(s.id) && s.holdsSecrets);
    steps.push({ id, title, key, dependsOn, inputs, holdsSecrets });
  };

  // The steps that fetch, verify or render what the profile names run before the rootfs step's
  // minutes, Kubernetes first of all: a distribution with no source or a wrong pinned sha256 then
  // fails before anything is built.
  const kubernetes = profile.components.kubernetes;
  if (kubernetes) {
    const trees = kubernetes.sources.flatMap((s) => (s.goMain !== undefined ? [`${s.goMain}=${inp.componentTrees?.[s.goMain] ?? ''}`] : []));
    add('kubernetes', `Kubernetes ${kubernetes.version} (${kubernetes.distribution}, ${arch})`, [], {
      distribution: kubernetes.distribution,
      version: kubernetes.version,
      arch,
      sources: JSON.stringify(kubernetes.sources),
      trees: trees.join(' '),
    });
  }
  const kine = profile.components.kine;
  add('kine', `Kine ${kine.version} (${arch})`, [], { version: kine.version, arch, sources: JSON.stringify(kine.sources) });
  // Upstream Kubernetes has no registry at the site: its pause, workload and DNS images are baked
  // in (K3s brings its own). The images carry SOURCE_DATE_EPOCH as their dates, so it is an input.
  const images = kubernetes?.distribution === 'upstream';
  if (images) {
    const baked = BAKED_IMAGES.map(({ component, ...image }) => ({ ...image, version: component.version, sources: component.sources }));
    const trees = baked.flatMap((b) => b.sources.flatMap((s) => ('goMain' in s ? [`${s.goMain}=${inp.componentTrees?.[s.goMain] ?? ''}`] : [])));
    add('images', `container images (${[...baked.map((b) => b.name), ...(kubernetes.images ?? []).map((i) => i.name)].join(', ')}; ${arch})`, [], {
      arch,
      recipe: inp.imagesRecipe ?? '',
      sourceDateEpoch: String(inp.sourceDateEpoch),
      baked: JSON.stringify(baked),
      trees: trees.join(' '),
      extra: JSON.stringify(kubernetes.images ?? []),
    });
  }
  add('agent', `firstboot agent (${arch})`, [], { arch, source: inp.agentSource });
  // The image's own description (etc/geminik8s/image.yaml) carries SOURCE_DATE_EPOCH.
  add('overlays', 'overlays rendered from the profile', [], {
    tree: inp.overlayTree,
    profile: JSON.stringify(profile),
    hardware: JSON.stringify(hardware),
    sourceDateEpoch: String(inp.sourceDateEpoch),
  });
  add('rootfs', `Debian ${profile.debian.suite} ${arch} rootfs`, [], {
    suite: profile.debian.suite,
    arch,
    mirror: inp.mirror,
    securityMirror: inp.securityMirror ?? '',
    packages: packages.join(' '),
    recipe: inp.rootfsRecipe,
    sourceDateEpoch: String(inp.rootfsSourceDateEpoch),
    excludeModules: (hardware.kernel.excludeModules ?? []).join(' '),
    initrdModules: hardware.kernel.initrdModules ? `list: ${hardware.kernel.initrdModules.join(' ')}` : 'most',
  });
  const components: StepId[] = kubernetes ? ['kine', 'kubernetes', ...(images ? ['images' as const] : [])] : ['kine'];
  // A key hashes the keys of dependsOn in the order listed here, not in the run order above: the
  // run order can change without invalidating a cached root tree.
  // The tree's file times are clamped to SOURCE_DATE_EPOCH (pipeline/root-tree.ts).
  add('rootTree', `root filesystem tree (rootfs + components${images ? ' + images' : ''} + agent + overlays)`, ['rootfs', ...components, 'agent', 'overlays'], {
    sourceDateEpoch: String(inp.sourceDateEpoch),
    // No keys is the key of every earlier build: an unsigned build keeps its cache.
    ...(inp.updateKeys?.length ? { updateKeys: [...inp.updateKeys].sort().join(' ') } : {}),
  });
  add('disk', `GPT disk image (${hardware.bootloader}, ${hardware.firmware})`, ['rootTree'], {
    recipe: inp.diskRecipe,
    disk: JSON.stringify(hardware.disk),
    bootloader: hardware.bootloader,
    console: hardware.console,
    cmdline: [...(hardware.kernel.cmdline ?? []), ...(profile.kernel?.cmdline ?? [])].join(' '),
    site: inp.site ?? '',
    sourceDateEpoch: String(inp.sourceDateEpoch),
  });
  add('artifacts', 'compressed image, bmap, manifest, checksums, compressed root slot', ['disk'], { version: profile.version, slot: 'zstd-1' });
  return steps;
}

/** The artifact folder name: dist/<profile>-<hardware>-<version>. */
export function artifactName(config: ResolvedConfig): string {
  return `${config.profile.name}-${config.hardware.name}-${config.profile.version}`;
}

import { rmSync } from 'node:fs';
import { createPublicKey, type KeyObject } from 'node:crypto';
import { chmod, copyFile, link, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { agentSourceHash, buildAgentExecutable } from '../../../firstboot/build.ts';
import type { Layout } from '../../../image/src/layout.ts';
import { keyId, writeBundle } from '../../../firstboot/src/upgrade/bundle.ts';
import { BUNDLE_FILES, type BundleManifest, PRODUCT } from '../../../firstboot/src/upgrade/core/manifest.ts';
import { assembleDiskImage, DISK_RECIPE_VERSION } from '../disk/assemble.ts';
import { executableArchMismatch } from '../components/elf.ts';
import { componentUnavailableForArch, resolveComponent, type ComponentSpec } from '../components/resolve.ts';
import type { ResolvedConfig } from '../config/resolve.ts';
import { bakedGoMains } from '../images/baked.ts';
import { IMAGES_FILE, makeImages, type ImageRecord } from '../images/make.ts';
import { overlayLayers, renderOverlays } from '../overlays/render.ts';
import { artifactName, planBuild, type PlannedStep, type StepId } from '../plan/plan.ts';
import { hashFiles, hashTree } from '../plan/tree-hash.ts';
import { detectDebianMirror } from '../rootfs/apt-sources.ts';
import { ROOTFS_SOURCE_DATE_EPOCH } from '../rootfs/epoch.ts';
import { buildRootfs, readCachedRootfs, ROOTFS_HOOK_VERSION, type RootfsPackage } from '../rootfs/rootfs.ts';
import { sha256File } from '../util/digest.ts';
import { ARTIFACT_FILES, BUNDLE_FILE, compressImage, compressSlot, publishArtifacts, SLOT_FILES, type SlotFacts, writeChecksums } from './artifacts.ts';
import type { Reporter } from './events.ts';
import { acquireBuildLock } from './lock.ts';
import { composeRootTree, type INSTALL_PATHS, KUBERNETES_BINARY, makeDataSkeleton } from './root-tree.ts';
import { StepCache } from './step-cache.ts';

export interface BuildOptions {
  config: ResolvedConfig;
  repoRoot: string;
  cacheRoot: string;
  outRoot: string;
  /** A validated site file to stamp into the OEM partition at build time. */
  siteFile?: string;
  mirror?: string;
  sourceDateEpoch: number;
  /** zstd level for image.raw.zst: 19 for releases, lower for quick iterations. */
  compressionLevel: number;
  /** Signs update.bundle (ed25519); its public key is baked into the image. Without it, no bundle. */
  signingKey?: KeyObject;
  /** More public keys whose bundles the image accepts (a next signing key, a second signer). */
  updateKeys?: KeyObject[];
  dryRun: boolean;
  report: Reporter;
}

export interface BuildResult {
  plan: PlannedStep[];
  artifactDir?: string;
}

interface ComponentRecord {
  name: string;
  version: string;
  /** The Debian arch the binary runs on; its step key holds the arch, and resolveComponent checked the ELF header. */
  arch: string;
  sha256: string;
  source: string;
}

/** Runs the plan step by step; every step is skipped when its key is already in the cache. */
export async function build(opts: BuildOptions): Promise<BuildResult> {
  const t0 = performance.now();
  const { config, repoRoot } = opts;
  const { profile, hardware } = config;
  const arch = hardware.arch;
  /** Kernel command line words after the console ones (grub.cfg on UEFI, cmdline.txt on a Pi). */
  const cmdlineExtra = [...(hardware.kernel.cmdline ?? []), ...(profile.kernel?.cmdline ?? [])];
  const componentSpecs: { kine: ComponentSpec; kubernetes?: ComponentSpec } = {
    kine: { name: 'kine', ...profile.components.kine },
    ...(profile.components.kubernetes
      ? {
          kubernetes: {
            name: KUBERNETES_BINARY[profile.components.kubernetes.distribution],
            version: profile.components.kubernetes.version,
            sources: profile.components.kubernetes.sources,
          },
        }
      : {}),
  };
  const mirrors = await detectDebianMirror({
    suite: profile.debian.suite,
    override: opts.mirror ?? profile.debian.mirror,
    securityOverride: profile.debian.securityMirror,
  });
  const overlaysRoot = path.join(repoRoot, 'overlays');
  const kubernetes = profile.components.kubernetes;
  const goMains = [
    ...(kubernetes?.sources ?? []).flatMap((s) => (s.goMain !== undefined ? [s.goMain] : [])),
    ...(kubernetes?.distribution === 'upstream' ? bakedGoMains() : []),
  ];
  // Trusted update keys: the signing key's public half first, each once.
  const trusted = new Map<string, string>();
  for (const k of [...(opts.signingKey ? [createPublicKey(opts.signingKey)] : []), ...(opts.updateKeys ?? [])]) {
    trusted.set(keyId(k), k.export({ type: 'spki', format: 'pem' }).toString());
  }
  const updateKeys = [...trusted].map(([id, pem]) => ({ id, pem }));
  const plan = planBuild({
    config,
    mirror: mirrors.mirror,
    securityMirror: mirrors.securityMirror,
    rootfsRecipe: ROOTFS_HOOK_VERSION,
    rootfsSourceDateEpoch: ROOTFS_SOURCE_DATE_EPOCH,
    agentSource: await agentSourceHash(),
    overlayTree: await hashTree(overlaysRoot),
    componentTrees: Object.fromEntries(await Promise.all(goMains.map(async (dir) => [dir, await hashTree(path.join(repoRoot, dir))] as const))),
    imagesRecipe: await hashTree(path.join(repoRoot, 'builder', 'src', 'images')),
    diskRecipe: `${DISK_RECIPE_VERSION}:${await hashTree(path.join(repoRoot, 'image'))}`,
    site: opts.siteFile ? await hashFiles([opts.siteFile]) : undefined,
    updateKeys: updateKeys.map((k) => k.id),
    sourceDateEpoch: opts.sourceDateEpoch,
  });
  const name = artifactName(config);
  const cache = new StepCache(path.join(opts.cacheRoot, 'steps'));
  const steps = await Promise.all(
    plan.map(async ({ id, title, key, dependsOn, holdsSecrets }) => ({ id, title, key, dependsOn, cached: !holdsSecrets && (await cache.has(id, key)) })),
  );
  opts.report({ event: 'plan', artifactName: name, dryRun: opts.dryRun, steps });
  // Before any work: a component with no source for this arch fails the build now, naming it.
  for (const step of ['kine', 'kubernetes'] as const) {
    const spec = componentSpecs[step];
    // A cached step has its file already: whether its source still could give it does not matter.
    if (spec === undefined || steps.find((s) => s.id === step)?.cached) continue;
    const unavailable = await componentUnavailableForArch(spec, { arch, repoRoot });
    if (unavailable === undefined) continue;
    opts.report({ event: 'error', step, message: unavailable });
    throw new Error(unavailable);
  }
  if (opts.dryRun) return { plan };

  const release = await acquireBuildLock(opts.cacheRoot, {
    waitMs: 60 * 60_000,
    onWait: (pid) => opts.report({ event: 'waiting', message: `another build (pid ${pid}) is using the cache; waiting for it to finish` }),
  });
  // Steps whose output holds the site file run here, private to root, and the folder goes with the
  // build: removed when it ends (also on Ctrl-C, through process.exit), and by the next build after a kill.
  const privateRoot = path.join(opts.cacheRoot, 'private');
  const removePrivate = () => rmSync(privateRoot, { recursive: true, force: true });
  removePrivate();
  process.on('exit', removePrivate);
  try {
    const outputs = new Map<StepId, string>();
    const components: ComponentRecord[] = [];
    let images: ImageRecord[] = [];
    let packages: RootfsPackage[] = [];
    const aptCacheDir = path.join(opts.cacheRoot, 'apt-archives');
    const log = (id: StepId) => (line: string) => opts.report({ event: 'step-log', id, line });

    const producers: Record<StepId, (tmp: string, step: PlannedStep) => Promise<void>> = {
      rootfs: async (tmp) => {
        await buildRootfs({
          arch,
          suite: profile.debian.suite,
          mirror: mirrors.mirror,
          securityMirror: mirrors.securityMirror,
          packages: config.packages,
          outDir: path.join(tmp, 'rootfs'),
          aptCacheDir,
          ...(hardware.kernel.excludeModules ? { excludeModules: hardware.kernel.excludeModules } : {}),
          ...(hardware.kernel.initrdModules ? { initrdModules: [...hardware.kernel.initrdModules] } : {}),
          sourceDateEpoch: ROOTFS_SOURCE_DATE_EPOCH,
          onProgress: log('rootfs'),
        });
      },
      kine: async (tmp) => fetchComponent('kine', componentSpecs.kine, tmp),
      kubernetes: async (tmp) => {
        if (!componentSpecs.kubernetes) throw new Error('internal: kubernetes step planned without components.kubernetes');
        await fetchComponent('kubernetes', componentSpecs.kubernetes, tmp);
      },
      images: async (tmp) => {
        if (kubernetes?.distribution !== 'upstream') throw new Error('internal: images step planned without upstream Kubernetes');
        await makeImages({
          arch,
          cacheDir: opts.cacheRoot,
          repoRoot,
          sourceDateEpoch: opts.sourceDateEpoch,
          extra: kubernetes.images ?? [],
          outDir: tmp,
          onProgress: log('images'),
        });
      },
      agent: async (tmp) => {
        const built = await buildAgentExecutable({
          arch,
          outFile: path.join(tmp, 'geminik8s-agent'),
          cacheDir: path.join(opts.cacheRoot, 'node'),
          log: log('agent'),
        });
        const wrongArch = await executableArchMismatch(path.join(tmp, 'geminik8s-agent'), arch);
        if (wrongArch !== undefined) throw new Error(`the firstboot agent for ${arch}: ${wrongArch}`);
        const record: ComponentRecord = {
          name: 'geminik8s-agent',
          version: `${profile.version}+node${built.nodeVersion}`,
          arch,
          sha256: built.sha256,
          source: 'firstboot/',
        };
        await writeFile(path.join(tmp, 'component.json'), JSON.stringify(record));
      },
      overlays: async (tmp) => {
        // In a folder of its own: the step folder also holds the cache's completion marker, which is no file of the image.
        const tree = path.join(tmp, 'tree');
        await mkdir(tree);
        await renderOverlays(
          overlaysRoot,
          overlayLayers(config),
          {
            profile: { ...profile, cluster: { preferredLeader: '', ...profile.cluster } },
            hardware,
            image: { name, version: profile.version, sourceDateEpoch: opts.sourceDateEpoch },
          },
          tree,
        );
      },
      rootTree: async (tmp) => {
        const binaries: { name: keyof typeof INSTALL_PATHS; file: string }[] = [
          { name: 'agent', file: path.join(need('agent'), 'geminik8s-agent') },
          { name: 'kine', file: path.join(need('kine'), 'kine') },
        ];
        const k = profile.components.kubernetes;
        if (k) binaries.push({ name: KUBERNETES_BINARY[k.distribution], file: path.join(need('kubernetes'), 'kubernetes') });
        const tree = path.join(tmp, 'tree');
        await mkdir(tree);
        const imageFiles = outputs.has('images')
          ? [IMAGES_FILE, ...new Set(images.map((i) => path.basename(i.file)))].map((f) => path.join(need('images'), f))
          : [];
        await composeRootTree({
          rootfsDir: path.join(need('rootfs'), 'rootfs'),
          binaries,
          imageFiles,
          overlayDir: path.join(need('overlays'), 'tree'),
          outDir: tree,
          sourceDateEpoch: opts.sourceDateEpoch,
          updateKeys,
          bootloader: hardware.bootloader,
          kernel: { consoles: ['tty0', hardware.console], cmdlineExtra },
        });
      },
      disk: async (tmp) => {
        const skeleton = path.join(tmp, 'data-skeleton');
        await makeDataSkeleton(skeleton, opts.sourceDateEpoch);
        const result = await assembleDiskImage({
          arch,
          rootfsDir: path.join(need('rootTree'), 'tree'),
          dataSkeletonDir: skeleton,
          siteFile: opts.siteFile,
          outFile: path.join(tmp, 'image.raw'),
          workDir: path.join(tmp, 'work'),
          seed: plan.find((s) => s.id === 'disk')?.key ?? name,
          sourceDateEpoch: opts.sourceDateEpoch,
          disk: hardware.disk,
          bootloader: hardware.bootloader,
          console: hardware.console,
          kernelCmdlineExtra: cmdlineExtra,
        });
        await writeFile(path.join(tmp, 'layout.json'), JSON.stringify(result.layout, null, 2));
      },
      artifacts: async (tmp) => {
        const raw = path.join(need('disk'), 'image.raw');
        const image = await compressImage(raw, tmp, opts.compressionLevel);
        const layout = JSON.parse(await readFile(path.join(need('disk'), 'layout.json'), 'utf8')) as Layout;
        const rootA = layout.partitions.find((p) => p.name === 'root-a');
        if (!rootA) throw new Error('internal: the layout has no root-a partition');
        await compressSlot(raw, rootA, tmp, opts.compressionLevel);
        const manifest = {
          schemaVersion: 1,
          name,
          profile: profile.name,
          hardware: hardware.name,
          arch,
          version: profile.version,
          sourceDateEpoch: opts.sourceDateEpoch,
          buildInputsHash: plan.at(-1)?.key,
          steps: Object.fromEntries(plan.map((s) => [s.id, s.key])),
          image: { file: ARTIFACT_FILES.image, bytes: image.bytes, sha256: image.sha256, rawBytes: layout.totalBytes, rawSha256: await sha256File(raw) },
          layout,
          components,
          images,
          packages: await packagesWithChecksums(packages, aptCacheDir),
          mirror: mirrors.origin === 'override' ? 'profile/flag' : 'build host apt sources',
        };
        await writeFile(path.join(tmp, ARTIFACT_FILES.manifest), `${JSON.stringify(manifest, null, 2)}\n`);
        await writeChecksums(tmp, Object.values(SLOT_FILES));
      },
    };

    async function producePrivately(step: PlannedStep): Promise<{ dir: string; cached: false }> {
      await mkdir(privateRoot, { mode: 0o700, recursive: true });
      await chmod(privateRoot, 0o700);
      const dir = path.join(privateRoot, step.id);
      await mkdir(dir, { mode: 0o700 });
      await producers[step.id](dir, step);
      return { dir, cached: false };
    }

    function need(id: StepId): string {
      const dir = outputs.get(id);
      if (!dir) throw new Error(`internal: step output ${id} missing`);
      return dir;
    }

    /** Resolves a component into its step's folder, as a file named after the step. */
    async function fetchComponent(step: 'kine' | 'kubernetes', spec: ComponentSpec, tmp: string): Promise<void> {
      const got = await resolveComponent(spec, { arch, cacheDir: opts.cacheRoot, repoRoot, onProgress: log(step) });
      await copyFile(got.path, path.join(tmp, step));
      const record: ComponentRecord = { name: got.name, version: got.version, arch: got.arch, sha256: got.sha256, source: got.source };
      await writeFile(path.join(tmp, 'component.json'), JSON.stringify(record));
    }

    for (const [i, step] of plan.entries()) {
      opts.report({ event: 'step-start', id: step.id, title: step.title, key: step.key, index: i + 1, total: plan.length });
      const started = performance.now();
      let result: { dir: string; cached: boolean };
      try {
        result = step.holdsSecrets ? await producePrivately(step) : await cache.obtain(step.id, step.key, (tmp) => producers[step.id](tmp, step));
      } catch (err) {
        opts.report({ event: 'error', step: step.id, message: (err as Error).message });
        throw err;
      }
      outputs.set(step.id, result.dir);
      if (step.id === 'rootfs') packages = (await readCachedRootfs(path.join(result.dir, 'rootfs')))?.packages ?? [];
      if (step.id === 'images') images = JSON.parse(await readFile(path.join(result.dir, IMAGES_FILE), 'utf8')) as ImageRecord[];
      if (['kine', 'kubernetes', 'agent'].includes(step.id)) {
        // A record cached before components carried their arch is of this build's arch: the arch is in the step key.
        components.push({
          arch,
          ...(JSON.parse(await readFile(path.join(result.dir, 'component.json'), 'utf8')) as Partial<ComponentRecord>),
        } as ComponentRecord);
      }
      opts.report({ event: 'step-done', id: step.id, cached: result.cached, seconds: (performance.now() - started) / 1000 });
    }

    const holdsSecrets = plan.some((s) => s.id === 'artifacts' && s.holdsSecrets);
    const artifactDir = await publishArtifacts(opts.outRoot, name, async (staging) => {
      // An image with the site stamped in is for root only: the folder before anything is put in it, then each file.
      if (holdsSecrets) await chmod(staging, 0o700);
      const from = need('artifacts');
      for (const f of Object.values(ARTIFACT_FILES)) {
        // A hard link when dist/ shares the cache's filesystem: the image is not written twice.
        await link(path.join(from, f), path.join(staging, f)).catch(() => copyFile(path.join(from, f), path.join(staging, f)));
        if (holdsSecrets) await chmod(path.join(staging, f), 0o600);
      }
      if (opts.signingKey) {
        const slot = JSON.parse(await readFile(path.join(from, SLOT_FILES.facts), 'utf8')) as SlotFacts;
        const manifest: BundleManifest = {
          schemaVersion: 1,
          product: PRODUCT,
          version: profile.version,
          arch,
          hardware: hardware.name,
          profile: profile.name,
          sourceDateEpoch: opts.sourceDateEpoch,
          ...(plan.at(-1)?.key ? { buildInputsHash: plan.at(-1)!.key } : {}),
          slot: { file: BUNDLE_FILES.slot, fs: 'ext4', ...slot },
        };
        await writeBundle(path.join(staging, BUNDLE_FILE), {
          manifest,
          slotFile: path.join(from, SLOT_FILES.image),
          signingKey: opts.signingKey,
          mtime: opts.sourceDateEpoch,
        });
        // SHA256SUMS is a link into the cache: replaced, never rewritten in place.
        await rm(path.join(staging, ARTIFACT_FILES.sums));
        await writeChecksums(staging);
        if (holdsSecrets) await chmod(path.join(staging, ARTIFACT_FILES.sums), 0o600);
      }
    });
    // Image archives, root trees and disk images are large: keep only the ones this build used (private steps are not in the cache).
    for (const id of ['images', 'rootTree', 'disk', 'artifacts'] as const) {
      const step = plan.find((s) => s.id === id);
      // A step this plan has not (images for K3s) leaves other profiles' outputs alone.
      if (step && !step.holdsSecrets) await cache.prune(id, step.key);
    }
    const files: string[] = [...Object.values(ARTIFACT_FILES), ...(opts.signingKey ? [BUNDLE_FILE] : [])];
    opts.report({ event: 'done', artifactDir, seconds: (performance.now() - t0) / 1000, files });
    return { plan, artifactDir };
  } finally {
    removePrivate();
    process.off('exit', removePrivate);
    await release();
  }
}

async function packagesWithChecksums(packages: RootfsPackage[], aptCacheDir: string): Promise<(RootfsPackage & { sha256?: string })[]> {
  return Promise.all(
    packages.map(async (p) => {
      // apt names archives <name>_<version with ':' as %3a>_<arch>.deb
      const deb = path.join(aptCacheDir, `${p.name}_${p.version.replace(':', '%3a')}_${p.arch}.deb`);
      const sha256 = await sha256File(deb).catch(() => undefined);
      return sha256 ? { ...p, sha256 } : p;
    }),
  );
}

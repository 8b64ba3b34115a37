/**
 * Component binaries (K3s, Kine, K3s air-gap images…) — DESIGN "Build pipeline" step 4.
 *
 * One mechanism: a spec lists sources tried in order; the first that yields a verified file wins.
 *   artifactDir  offline path: <dir>/<name>/<version>/<arch>/<file>  (used in place)
 *   url          production path: pinned URL + sha256 per arch; downloaded once into the cache
 *   goModule     `go install <module>@<version>` cross-compiled with GOARCH; built once into the cache
 *   goMain       `go build` of a main package of this repository (components/<name>) whose go.mod pins
 *                the upstream module at the profile's version; built once per source tree into the cache
 *
 * Cache layout (shared across builds):
 *   <cacheDir>/components/<name>/<version>/<arch>/<file>          the binary
 *   <cacheDir>/components/<name>/<version>/<arch>/<file>.sha256   "<hex>  <file>\n" (sha256sum format)
 *   <cacheDir>/components/<name>/<version>/<arch>/source.json     which source produced it
 */
import { createHash } from 'node:crypto';
import { createWriteStream, type Dirent } from 'node:fs';
import { chmod, mkdir, mkdtemp, readFile, readdir, rename, rm, stat, writeFile } from 'node:fs/promises';
import { basename, isAbsolute, join, resolve } from 'node:path';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { hashTree } from '../plan/tree-hash.ts';
import { executableArchMismatch } from './elf.ts';
import { sha256File } from '../util/digest.ts';
import { run } from '../util/exec.ts';

export type ComponentArch = 'amd64' | 'arm64';
export type PerArch<T> = Partial<Record<ComponentArch, T>>;

export type ComponentSource =
  | { artifactDir: string; sha256?: PerArch<string> }
  | { url: string | PerArch<string>; sha256: PerArch<string> }
  | { goModule: string; ldflags?: string[]; env?: Record<string, string> }
  | { goMain: string };

/**
 * How a main package of this repository is built. `pins` is the upstream module its go.mod must
 * require at exactly the profile's version (so the version the image reports is the code it
 * runs); a program of this project's own pins none, its version is the one the builder gives it.
 * Tags and -ldflags are those of the upstream release build. {version}, {major} and {minor} are
 * substituted.
 */
export interface GoMainRecipe {
  pins?: string;
  tags: string[];
  ldflags: string[];
  /** Shown before a cold build: what it costs. */
  note?: string;
}

/** Kubernetes' release version stamp, for both packages that carry one (hack/lib/version.sh). */
const kubernetesVersionFlags = ['k8s.io/component-base/version', 'k8s.io/client-go/pkg/version'].flatMap((p) => [
  `-X ${p}.gitVersion={version}`,
  `-X ${p}.gitMajor={major}`,
  `-X ${p}.gitMinor={minor}`,
  `-X ${p}.gitTreeState=clean`,
]);

export const GO_MAIN_RECIPES: Record<string, GoMainRecipe> = {
  'components/kubernetes': {
    pins: 'k8s.io/kubernetes',
    // selinux: volume relabelling support; notest and grpcnotrace: what upstream's release build sets.
    tags: ['selinux', 'notest', 'grpcnotrace'],
    ldflags: kubernetesVersionFlags,
    note: 'a cold build takes about 10 min on 2 cores and 3 GiB of memory; later builds reuse the cache',
  },
  // The pod sandbox and the workload baked in as container images (builder/src/images).
  'components/pause': { tags: [], ldflags: ['-X main.version={version}'] },
  'components/hello': { tags: [], ldflags: ['-X main.version={version}'] },
};

/**
 * Extra -ldflags for Go modules we know (so a profile's plain `goModule:` source still stamps the
 * version into the binary). {version} is substituted.
 */
export const KNOWN_GO_LDFLAGS: Record<string, string[]> = {
  'github.com/k3s-io/kine': ['-X github.com/k3s-io/kine/pkg/version.Version={version}', '-X github.com/k3s-io/kine/pkg/version.GitCommit=gomodule'],
  // CoreDNS carries its version in the source; only the commit is left for the release build to stamp.
  'github.com/coredns/coredns': ['-X github.com/coredns/coredns/coremain.GitCommit=gomodule'],
};

export interface ComponentSpec {
  name: string;
  version: string;
  /** File name when it differs from `name` (e.g. an air-gap image tarball). Default: name. */
  file?: string;
  /** Mark the file executable (default true unless `file` ends in an archive extension). */
  executable?: boolean;
  sources: ComponentSource[];
  /** Appended to the "no source available" error, e.g. "see README 'K3s'". */
  hint?: string;
}

export interface ResolvedComponent {
  name: string;
  version: string;
  arch: ComponentArch;
  sha256: string;
  path: string;
  size: number;
  source: 'artifact-dir' | 'url' | 'go-module';
}

export interface ResolveOptions {
  arch: ComponentArch;
  cacheDir: string;
  /** Relative artifact dirs are resolved against this (default: process.cwd()). */
  repoRoot?: string;
  /** Download timeout per URL (default 10 min). */
  downloadTimeoutMs?: number;
  onProgress?: (line: string) => void;
}

export class ComponentUnavailableError extends Error {
  constructor(
    readonly component: string,
    readonly attempts: { source: string; reason: string }[],
    message: string,
  ) {
    super(message);
    this.name = 'ComponentUnavailableError';
  }
}

/** Kine from its Go module: pure Go (modernc sqlite), so CGO_ENABLED=0 cross-compiles cleanly. */
export function kineSpec(version: string, extra: ComponentSource[] = []): ComponentSpec {
  return {
    name: 'kine',
    version,
    sources: [{ artifactDir: 'artifacts' }, ...extra, { goModule: 'github.com/k3s-io/kine' }],
  };
}

/** CoreDNS, the cluster DNS of upstream Kubernetes, from its Go module: pure Go, so CGO_ENABLED=0 cross-compiles it too. */
export function corednsSpec(version: string, extra: ComponentSource[] = []): ComponentSpec {
  return {
    name: 'coredns',
    version,
    sources: [{ artifactDir: 'artifacts' }, ...extra, { goModule: 'github.com/coredns/coredns' }],
  };
}

/** Upstream Kubernetes (kube-apiserver, controller-manager, scheduler, kubelet, kube-proxy in one binary) from this repository's wrapper module. */
export function kubernetesSpec(version: string, extra: ComponentSource[] = []): ComponentSpec {
  return {
    name: 'kubernetes',
    version,
    sources: [{ artifactDir: 'artifacts' }, ...extra, { goMain: 'components/kubernetes' }],
  };
}

const fileName = (spec: ComponentSpec): string => spec.file ?? spec.name;
const expand = (s: string, spec: ComponentSpec, arch: ComponentArch): string => {
  const [major = '', minor = ''] = spec.version.replace(/^v/, '').split('.');
  return s
    .replaceAll('{arch}', arch)
    .replaceAll('{version}', spec.version)
    .replaceAll('{name}', spec.name)
    .replaceAll('{major}', major)
    .replaceAll('{minor}', minor);
};

/** Where a component lives in the cache. */
export function componentCachePath(cacheDir: string, spec: ComponentSpec, arch: ComponentArch): string {
  for (const part of [spec.name, spec.version, fileName(spec)]) {
    if (!part || part.includes('/') || part === '..' || part === '.') throw new Error(`component ${spec.name}: invalid path element ${JSON.stringify(part)}`);
  }
  return join(cacheDir, 'components', spec.name, spec.version, arch, fileName(spec));
}

const isExecutable = (spec: ComponentSpec): boolean => spec.executable ?? !/\.(tar|tgz|zst|gz|xz|zip|json|yaml)$/.test(fileName(spec));

/** Atomically installs `tmp` as the cached file plus its .sha256 and source.json. */
async function commitToCache(tmp: string, dest: string, sha: string, spec: ComponentSpec, source: object): Promise<void> {
  const dir = resolve(dest, '..');
  await mkdir(dir, { recursive: true });
  if (isExecutable(spec)) await chmod(tmp, 0o755);
  await writeFile(`${dest}.sha256.tmp`, `${sha}  ${basename(dest)}\n`);
  await writeFile(join(dir, 'source.json.tmp'), `${JSON.stringify({ ...source, name: spec.name, version: spec.version }, null, 2)}\n`);
  // the binary is renamed last and read back against .sha256, so a crash never yields a trusted bad file
  await rename(`${dest}.sha256.tmp`, `${dest}.sha256`);
  await rename(join(dir, 'source.json.tmp'), join(dir, 'source.json'));
  await rename(tmp, dest);
}

/** A cached file is trusted only when it hashes to its recorded (and, if given, pinned) sha256. */
async function fromCache(dest: string, pinned?: string): Promise<{ sha: string; size: number } | undefined> {
  try {
    const recorded = (await readFile(`${dest}.sha256`, 'utf8')).split(/\s+/)[0]?.toLowerCase();
    const st = await stat(dest);
    const actual = await sha256File(dest);
    if (actual !== recorded) return undefined;
    if (pinned && actual !== pinned.toLowerCase()) return undefined;
    return { sha: actual, size: st.size };
  } catch {
    return undefined;
  }
}

type Attempt = { ok: ResolvedComponent } | { reason: string; label: string };

/** Where an artifact dir source keeps `spec` for `arch`: the path read, and the one shown. */
function artifactPath(src: { artifactDir: string }, spec: ComponentSpec, o: Pick<ResolveOptions, 'arch' | 'repoRoot'>): { path: string; label: string } {
  const dir = isAbsolute(src.artifactDir) ? src.artifactDir : resolve(o.repoRoot ?? process.cwd(), src.artifactDir);
  return {
    path: join(dir, spec.name, spec.version, o.arch, fileName(spec)),
    label: `artifact dir ${join(src.artifactDir, spec.name, spec.version, o.arch, fileName(spec))}`,
  };
}

async function tryArtifactDir(src: { artifactDir: string; sha256?: PerArch<string> }, spec: ComponentSpec, o: ResolveOptions): Promise<Attempt> {
  const { path, label } = artifactPath(src, spec, o);
  let st: Awaited<ReturnType<typeof stat>>;
  try {
    st = await stat(path);
  } catch {
    return { label, reason: 'not found' };
  }
  if (!st.isFile()) return { label, reason: 'not a regular file' };
  if (st.size === 0) return { label, reason: 'empty file' };
  const sha = await sha256File(path);
  let pinned = src.sha256?.[o.arch];
  if (!pinned) {
    // optional sidecar "<file>.sha256" next to the artifact
    pinned = await readFile(`${path}.sha256`, 'utf8').then(
      (t) => t.split(/\s+/)[0],
      () => undefined,
    );
  }
  if (pinned && pinned.toLowerCase() !== sha) return { label, reason: `sha256 mismatch (expected ${pinned}, got ${sha})` };
  return { ok: { name: spec.name, version: spec.version, arch: o.arch, sha256: sha, path, size: st.size, source: 'artifact-dir' } };
}

/** The URL and pinned sha256 a url source has for `arch`, or why it has none (no I/O: the preflight asks it too). */
function urlFor(
  src: { url: string | PerArch<string>; sha256: PerArch<string> },
  spec: ComponentSpec,
  arch: ComponentArch,
): { url: string; pinned: string } | { label: string; reason: string } {
  const rawUrl = typeof src.url === 'string' ? src.url : src.url[arch];
  if (!rawUrl) return { label: 'url', reason: `none configured for ${arch}` };
  const url = expand(rawUrl, spec, arch);
  const pinned = src.sha256?.[arch]?.toLowerCase();
  if (!pinned || !/^[0-9a-f]{64}$/.test(pinned)) return { label: `url ${url}`, reason: `no valid sha256 pinned for ${arch} (refusing an unverified download)` };
  return { url, pinned };
}

async function tryUrl(src: { url: string | PerArch<string>; sha256: PerArch<string> }, spec: ComponentSpec, o: ResolveOptions): Promise<Attempt> {
  const found = urlFor(src, spec, o.arch);
  if ('reason' in found) return found;
  const { url, pinned } = found;
  const label = `url ${url}`;
  const dest = componentCachePath(o.cacheDir, spec, o.arch);
  const cached = await fromCache(dest, pinned);
  if (cached) return { ok: { name: spec.name, version: spec.version, arch: o.arch, sha256: cached.sha, path: dest, size: cached.size, source: 'url' } };

  await mkdir(resolve(dest, '..'), { recursive: true });
  const tmp = `${dest}.${process.pid}.download`;
  try {
    o.onProgress?.(`${spec.name}: downloading ${url}`);
    const res = await fetch(url, { redirect: 'follow', signal: AbortSignal.timeout(o.downloadTimeoutMs ?? 600_000) });
    if (!res.ok || !res.body) return { label, reason: `HTTP ${res.status} ${res.statusText}` };
    const h = createHash('sha256');
    const hasher = new Transform({
      transform(chunk: Buffer, _enc, cb) {
        h.update(chunk);
        cb(null, chunk);
      },
    });
    await pipeline(Readable.fromWeb(res.body as import('node:stream/web').ReadableStream), hasher, createWriteStream(tmp));
    const sha = h.digest('hex');
    if (sha !== pinned) return { label, reason: `sha256 mismatch (expected ${pinned}, got ${sha}); download discarded` };
    const size = (await stat(tmp)).size;
    await commitToCache(tmp, dest, sha, spec, { source: 'url', url });
    return { ok: { name: spec.name, version: spec.version, arch: o.arch, sha256: sha, path: dest, size, source: 'url' } };
  } catch (e) {
    return { label, reason: `download failed: ${(e as Error).message}` };
  } finally {
    await rm(tmp, { force: true });
  }
}

async function findFile(dir: string, name: string): Promise<string | undefined> {
  let entries: Dirent[];
  try {
    entries = await readdir(dir, { withFileTypes: true });
  } catch {
    return undefined;
  }
  for (const e of entries) {
    const p = join(dir, e.name);
    if (e.isFile() && e.name === name) return p;
    if (e.isDirectory()) {
      const f = await findFile(p, name);
      if (f) return f;
    }
  }
  return undefined;
}

async function tryGoModule(
  src: { goModule: string; ldflags?: string[]; env?: Record<string, string> },
  spec: ComponentSpec,
  o: ResolveOptions,
): Promise<Attempt> {
  const label = `go module ${src.goModule}@${spec.version}`;
  const dest = componentCachePath(o.cacheDir, spec, o.arch);
  const cached = await fromCache(dest);
  if (cached) return { ok: { name: spec.name, version: spec.version, arch: o.arch, sha256: cached.sha, path: dest, size: cached.size, source: 'go-module' } };

  let gomodcache: string;
  try {
    gomodcache = (await run('go', ['env', 'GOMODCACHE'])).trim();
  } catch (e) {
    return { label, reason: `go toolchain not usable: ${(e as Error).message.split('\n')[0]}` };
  }
  await mkdir(resolve(dest, '..'), { recursive: true });
  // A private GOPATH per build: with GOBIN unset, `go install` puts a cross-compiled binary in
  // $GOPATH/bin/linux_<arch>/ (and refuses cross installs when GOBIN is set). Module and build
  // caches stay the user's, so repeated builds are fast.
  const gopath = await mkdtemp(join(o.cacheDir, 'components', '.gopath-'));
  try {
    const ldflags = ['-s', '-w', ...(src.ldflags ?? KNOWN_GO_LDFLAGS[src.goModule] ?? []).map((f) => expand(f, spec, o.arch))].join(' ');
    o.onProgress?.(`${spec.name}: go install ${src.goModule}@${spec.version} (GOARCH=${o.arch})`);
    const env: Record<string, string | undefined> = {
      ...process.env,
      GOPATH: gopath,
      GOBIN: undefined,
      GOMODCACHE: gomodcache,
      CGO_ENABLED: '0',
      GOOS: 'linux',
      GOARCH: o.arch,
      GOFLAGS: '-trimpath -buildvcs=false',
      ...src.env,
    };
    try {
      await run('go', ['install', `-ldflags=${ldflags}`, `${src.goModule}@${spec.version}`], { env, timeoutMs: 30 * 60_000 });
    } catch (e) {
      return { label, reason: `go install failed: ${(e as Error).message.split('\n').slice(0, 6).join(' | ')}` };
    }
    const binName = src.goModule
      .split('/')
      .filter((p) => !/^v\d+$/.test(p))
      .pop()!;
    const built = await findFile(join(gopath, 'bin'), binName);
    if (!built) return { label, reason: `go install succeeded but ${binName} was not found under GOPATH/bin` };
    const tmp = `${dest}.${process.pid}.build`;
    await rename(built, tmp);
    const sha = await sha256File(tmp);
    const size = (await stat(tmp)).size;
    await commitToCache(tmp, dest, sha, spec, {
      source: 'go-module',
      module: src.goModule,
      ldflags,
      goVersion: (await run('go', ['env', 'GOVERSION'])).trim(),
    });
    return { ok: { name: spec.name, version: spec.version, arch: o.arch, sha256: sha, path: dest, size, source: 'go-module' } };
  } finally {
    // module cache files are read-only; GOPATH here holds only bin/ (GOMODCACHE points elsewhere)
    await rm(gopath, { recursive: true, force: true });
  }
}

/** The version of `module` that a go.mod requires, if any. */
export function requiredVersion(goMod: string, module: string): string | undefined {
  const escaped = module.replace(/[.]/g, '\\.');
  return new RegExp(`^\\s*(?:require\\s+)?${escaped}\\s+(v\\S+)`, 'm').exec(goMod)?.[1];
}

async function tryGoMain(src: { goMain: string }, spec: ComponentSpec, o: ResolveOptions): Promise<Attempt> {
  const label = `go main ${src.goMain}`;
  const recipe = GO_MAIN_RECIPES[src.goMain];
  if (!recipe) return { label, reason: `no build recipe for ${src.goMain} (known: ${Object.keys(GO_MAIN_RECIPES).join(', ')})` };
  const dir = resolve(o.repoRoot ?? process.cwd(), src.goMain);
  const goMod = await readFile(join(dir, 'go.mod'), 'utf8').catch(() => undefined);
  if (goMod === undefined) return { label, reason: `${join(src.goMain, 'go.mod')} not found` };
  if (recipe.pins) {
    const pinned = requiredVersion(goMod, recipe.pins);
    if (pinned !== spec.version) {
      return {
        label,
        reason: `${join(src.goMain, 'go.mod')} requires ${recipe.pins} ${pinned ?? '(not at all)'}, the profile asks for ${spec.version}: change one to match`,
      };
    }
  }
  // The binary is what this source tree builds: a cached one from another tree is rebuilt.
  const tree = await hashTree(dir);
  const dest = componentCachePath(o.cacheDir, spec, o.arch);
  const recorded = await readFile(join(dest, '..', 'source.json'), 'utf8').then(
    (t) => (JSON.parse(t) as { tree?: string }).tree,
    () => undefined,
  );
  const cached = recorded === tree ? await fromCache(dest) : undefined;
  if (cached) return { ok: { name: spec.name, version: spec.version, arch: o.arch, sha256: cached.sha, path: dest, size: cached.size, source: 'go-module' } };

  await mkdir(resolve(dest, '..'), { recursive: true });
  const tmp = `${dest}.${process.pid}.build`;
  const ldflags = ['-s', '-w', ...recipe.ldflags.map((f) => expand(f, spec, o.arch))].join(' ');
  o.onProgress?.(
    `${spec.name}: go build ${src.goMain} (${recipe.pins ? `${recipe.pins} ` : ''}${spec.version}, GOARCH=${o.arch})${recipe.note ? `: ${recipe.note}` : ''}`,
  );
  try {
    await run('go', ['build', '-trimpath', '-buildvcs=false', '-mod=readonly', `-tags=${recipe.tags.join(',')}`, `-ldflags=${ldflags}`, '-o', tmp, '.'], {
      cwd: dir,
      env: { ...process.env, CGO_ENABLED: '0', GOOS: 'linux', GOARCH: o.arch, GOFLAGS: undefined },
      timeoutMs: 60 * 60_000,
    });
  } catch (e) {
    await rm(tmp, { force: true });
    return { label, reason: `go build failed: ${(e as Error).message.split('\n').slice(0, 6).join(' | ')}` };
  }
  const sha = await sha256File(tmp);
  const size = (await stat(tmp)).size;
  await commitToCache(tmp, dest, sha, spec, {
    source: 'go-main',
    dir: src.goMain,
    tree,
    ldflags,
    tags: recipe.tags,
    goVersion: (await run('go', ['env', 'GOVERSION'])).trim(),
  });
  return { ok: { name: spec.name, version: spec.version, arch: o.arch, sha256: sha, path: dest, size, source: 'go-module' } };
}

/**
 * Why no source of `spec` can give it for `arch`, or undefined when one may. Asked before any
 * work: an image whose profile pins, say, a K3s URL for amd64 only fails for arm64 at once, naming
 * the component, not after the rootfs. Go sources build for every arch; an artifact dir must hold
 * the file.
 */
export async function componentUnavailableForArch(spec: ComponentSpec, o: Pick<ResolveOptions, 'arch' | 'repoRoot'>): Promise<string | undefined> {
  const reasons: string[] = [];
  for (const src of spec.sources) {
    if ('goModule' in src || 'goMain' in src) return undefined;
    if ('url' in src) {
      const found = urlFor(src, spec, o.arch);
      if (!('reason' in found)) return undefined;
      reasons.push(`${found.label}: ${found.reason}`);
    } else if ('artifactDir' in src) {
      const { path, label } = artifactPath(src, spec, o);
      if (
        await stat(path).then(
          (st) => st.isFile(),
          () => false,
        )
      )
        return undefined;
      reasons.push(`${label}: not found`);
    }
  }
  return unavailableMessage(spec, o.arch, reasons);
}

/** "<name> <version> for <arch>: no source available — <each source: why>. <where to read on>" */
function unavailableMessage(spec: ComponentSpec, arch: ComponentArch, reasons: string[]): string {
  const readme = spec.name.charAt(0).toUpperCase() + spec.name.slice(1);
  const hint = spec.hint ?? `Put the ${spec.file ? 'file' : 'binary'} there or see README '${readme}'`;
  return `${spec.name} ${spec.version} for ${arch}: no source available — ${reasons.join('; ')}. ${hint}`;
}

/**
 * Resolves a component for one arch, trying its sources in order. Throws
 * ComponentUnavailableError listing every source tried and why it failed.
 */
export async function resolveComponent(spec: ComponentSpec, o: ResolveOptions): Promise<ResolvedComponent> {
  if (!spec.version)
    throw new ComponentUnavailableError(spec.name, [], `${spec.name} for ${o.arch}: no version set (components.${spec.name}.version in the profile)`);
  const attempts: { source: string; reason: string }[] = [];
  const kinds = { artifactDir: false, url: false, goModule: false, goMain: false };
  for (const src of spec.sources) {
    let r: Attempt;
    if ('artifactDir' in src) {
      kinds.artifactDir = true;
      r = await tryArtifactDir(src, spec, o);
    } else if ('url' in src) {
      kinds.url = true;
      r = await tryUrl(src, spec, o);
    } else if ('goModule' in src) {
      kinds.goModule = true;
      r = await tryGoModule(src, spec, o);
    } else if ('goMain' in src) {
      kinds.goMain = true;
      r = await tryGoMain(src, spec, o);
    } else {
      r = { label: 'unknown source', reason: `unsupported source ${JSON.stringify(src)}` };
    }
    if ('ok' in r) {
      const wrongArch = isExecutable(spec) ? await executableArchMismatch(r.ok.path, o.arch) : undefined;
      if (wrongArch === undefined) return r.ok;
      r = { label: `${r.ok.source} ${r.ok.path}`, reason: wrongArch };
    }
    attempts.push({ source: r.label, reason: r.reason });
  }
  if (!kinds.url) attempts.push({ source: 'url', reason: 'none configured' });
  throw new ComponentUnavailableError(
    spec.name,
    attempts,
    unavailableMessage(
      spec,
      o.arch,
      attempts.map((a) => `${a.source}: ${a.reason}`),
    ),
  );
}

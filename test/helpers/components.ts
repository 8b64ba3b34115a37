/**
 * The component binaries the pair tests run (Kine, upstream Kubernetes), from the repository's
 * component cache (<repo>/.cache, as test/helpers/pair-agents.ts has always used for Kine).
 *
 * A cold Kubernetes build takes 10–25 min, 3 GiB and both cores, so it must happen once, up front
 * (test/run-suite.mjs runs this file's command line before the ava groups), never inside an ava
 * timeout and never twice at once:
 *  - a resolve that may build takes a lock file next to the cache entry, and first waits for a build
 *    of the same entry already running (the builder's `<file>.<pid>.build` temp file with a live
 *    pid, whoever started it);
 *  - the tests ask with `build: false`: a cache miss fails at once, naming the command that builds it.
 *
 * Command line (progress on stderr, one line per resolved component on stdout, exit 1 naming what failed):
 *   node --import tsx test/helpers/components.ts kine kubernetes
 */
import { readFile, readdir, rm, stat, writeFile, mkdir } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  componentCachePath,
  kineSpec,
  kubernetesSpec,
  requiredVersion,
  resolveComponent,
  type ComponentSpec,
  type ResolvedComponent,
} from '../../builder/src/components/resolve.ts';
import { hashTree } from '../../builder/src/plan/tree-hash.ts';
import { sha256File } from '../../builder/src/util/digest.ts';
import { isAlive } from '../../builder/src/util/process.ts';

const SELF = fileURLToPath(import.meta.url);
export const REPO = fileURLToPath(new URL('../..', import.meta.url));
export const CACHE_DIR = path.join(REPO, '.cache');
export const TEST_ARCH = 'amd64' as const;
export const KINE_VERSION = 'v0.17.5';
const KUBERNETES_MAIN = 'components/kubernetes';
export const RESOLVE_COMMAND = 'node --import tsx test/helpers/components.ts kine kubernetes';

export type TestComponent = 'kine' | 'kubernetes';
export const TEST_COMPONENTS: readonly TestComponent[] = ['kine', 'kubernetes'];
export const isTestComponent = (s: string): s is TestComponent => (TEST_COMPONENTS as readonly string[]).includes(s);

/** The Kubernetes version the tests run: the one components/kubernetes/go.mod pins (what the build checks the profile against). */
export async function kubernetesVersion(): Promise<string> {
  const goMod = await readFile(path.join(REPO, KUBERNETES_MAIN, 'go.mod'), 'utf8');
  const v = requiredVersion(goMod, 'k8s.io/kubernetes');
  if (!v) throw new Error(`${KUBERNETES_MAIN}/go.mod requires no k8s.io/kubernetes version`);
  return v;
}

export async function testComponentSpec(name: TestComponent): Promise<ComponentSpec> {
  return name === 'kine' ? kineSpec(KINE_VERSION) : kubernetesSpec(await kubernetesVersion());
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/**
 * Pids of builds of this cache entry running now, whoever started them: the resolver builds into
 * `<file>.<pid>.build` (or downloads into `.download`), a temp file that only appears when `go build`
 * links, so running processes whose command line names it count too.
 */
async function buildsInProgress(dest: string): Promise<number[]> {
  const re = new RegExp(`^${path.basename(dest).replace(/[.]/g, '\\.')}\\.(\\d+)\\.(build|download)$`);
  const pids = new Set<number>();
  for (const n of await readdir(path.dirname(dest)).catch(() => [] as string[])) {
    const m = re.exec(n);
    if (m && isAlive(Number(m[1]))) pids.add(Number(m[1]));
  }
  const inArgv = new RegExp(`${dest.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}\\.(\\d+)\\.(build|download)`);
  for (const p of await readdir('/proc').catch(() => [] as string[])) {
    if (!/^\d+$/.test(p) || Number(p) === process.pid) continue;
    const argv = await readFile(`/proc/${p}/cmdline`, 'utf8').catch(() => '');
    const m = inArgv.exec(argv.replace(/\0/g, ' '));
    // The pid in the name is the resolver's; the go process naming it is the one to wait for.
    if (m) pids.add(Number(p));
  }
  return [...pids];
}

/**
 * A cache hit for the goMain source, checked the way the resolver checks it (source.json records
 * the source tree it was built from; the binary hashes to its .sha256), without ever building.
 */
async function cachedGoMain(spec: ComponentSpec, dest: string): Promise<boolean> {
  const main = spec.sources.find((s): s is { goMain: string } => 'goMain' in s);
  if (!main) return false;
  try {
    const recorded = (JSON.parse(await readFile(path.join(path.dirname(dest), 'source.json'), 'utf8')) as { tree?: string }).tree;
    if (recorded !== (await hashTree(path.join(REPO, main.goMain)))) return false;
    const sha = (await readFile(`${dest}.sha256`, 'utf8')).split(/\s+/)[0];
    return (await stat(dest)).isFile() && sha === (await sha256File(dest));
  } catch {
    return false;
  }
}

export interface ResolveTestOptions {
  /** May build (or download) on a cache miss; false: a miss is an error naming RESOLVE_COMMAND. */
  build: boolean;
  /** How long to wait for a build of the same entry that is already running (build: 90 min, else 2 min). */
  waitMs?: number;
  log?: (line: string) => void;
}

/** Resolves one test component for amd64 from <repo>/.cache (see the file comment). */
export async function resolveTestComponent(name: TestComponent, o: ResolveTestOptions): Promise<ResolvedComponent> {
  const spec = await testComponentSpec(name);
  const what = `${spec.name} ${spec.version} (${TEST_ARCH})`;
  const opts = { arch: TEST_ARCH, cacheDir: CACHE_DIR, repoRoot: REPO, ...(o.log ? { onProgress: o.log } : {}) };
  const dest = componentCachePath(CACHE_DIR, spec, TEST_ARCH);
  const waitMs = o.waitMs ?? (o.build ? 90 * 60_000 : 120_000);
  const deadline = Date.now() + waitMs;
  await mkdir(path.dirname(dest), { recursive: true });
  const lock = `${dest}.test-resolve.lock`;
  let lastSaid = 0;
  const waitedFor = (who: string): void => {
    if (Date.now() - lastSaid < 60_000) return;
    lastSaid = Date.now();
    o.log?.(`${what}: waiting for ${who} to finish (up to ${Math.round((deadline - Date.now()) / 60_000)} min more)`);
  };
  // One resolver at a time per entry; a build somebody else started is waited for, not duplicated.
  for (;;) {
    try {
      await writeFile(lock, `${process.pid}\n`, { flag: 'wx' });
      const running = await buildsInProgress(dest);
      if (running.length === 0) break;
      await rm(lock, { force: true });
      if (Date.now() > deadline)
        throw new Error(
          `${what}: a build (pid ${running.join(', ')}) is still running after ${Math.round(waitMs / 1000)} s of waiting; let it finish, then run again`,
        );
      waitedFor(`the build running as pid ${running.join(', ')}`);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      const holder = Number.parseInt(await readFile(lock, 'utf8').catch(() => ''), 10);
      if (!Number.isInteger(holder) || holder <= 0 || !isAlive(holder)) {
        await rm(lock, { force: true });
        continue;
      }
      if (Date.now() > deadline) throw new Error(`${what}: another resolver (pid ${holder}) still holds ${lock} after ${Math.round(waitMs / 1000)} s`);
      waitedFor(`the resolver pid ${holder}`);
    }
    await sleep(2000);
  }
  try {
    if (!o.build && name === 'kubernetes') {
      const artifact = await resolveComponent({ ...spec, sources: spec.sources.filter((s) => 'artifactDir' in s) }, opts).catch(() => undefined);
      if (artifact) return artifact;
      if (!(await cachedGoMain(spec, dest))) {
        throw new Error(
          `${what} is not built: no artifacts/kubernetes/${spec.version}/${TEST_ARCH}/kubernetes and no cache entry for this ${KUBERNETES_MAIN} tree under ${path.dirname(dest)}. Build it first with \`${RESOLVE_COMMAND}\` (\`make test\` does it before the tests; a cold build takes 10–25 min, 3 GiB of memory and Go)`,
        );
      }
    }
    const started = Date.now();
    const beat = setInterval(() => o.log?.(`${what}: still resolving, ${Math.round((Date.now() - started) / 60_000)} min so far`), 60_000);
    try {
      return await resolveComponent(spec, opts);
    } finally {
      clearInterval(beat);
    }
  } finally {
    await rm(lock, { force: true });
  }
}

// Command line: resolve (building if needed) each component named, in order.
if (process.argv[1] !== undefined && path.resolve(process.argv[1]) === SELF) {
  const names = process.argv.slice(2);
  const bad = names.filter((n) => !isTestComponent(n));
  if (names.length === 0 || bad.length > 0) {
    process.stderr.write(`usage: components.ts ${TEST_COMPONENTS.join(' | ')} ...${bad.length ? ` (unknown: ${bad.join(', ')})` : ''}\n`);
    process.exit(2);
  }
  const failed: string[] = [];
  for (const name of names.filter(isTestComponent)) {
    const t0 = Date.now();
    process.stderr.write(`components: resolving ${name} for ${TEST_ARCH} ...\n`);
    try {
      const r = await resolveTestComponent(name, { build: true, log: (l) => process.stderr.write(`components: ${l}\n`) });
      process.stdout.write(
        `${r.name} ${r.version} ${r.arch} ${r.path} (${(r.size / 1e6).toFixed(0)} MB, ${r.source}, ${((Date.now() - t0) / 1000).toFixed(1)} s)\n`,
      );
    } catch (e) {
      const msg = (e as Error).message;
      failed.push(name);
      process.stderr.write(`components: ${name} FAILED: ${msg}\n`);
    }
  }
  if (failed.length > 0) {
    process.stderr.write(`components: could not resolve ${failed.join(', ')}\n`);
    process.exit(1);
  }
}

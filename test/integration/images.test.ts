/**
 * The container images baked into upstream-Kubernetes images (builder/src/images): built from their
 * programs into OCI archives that skopeo reads, each one static binary in one layer; the same inputs
 * give the same bytes; and the programs inside do what pods need of them, run here on loopback.
 */
import test, { type ExecutionContext } from 'ava';
import { execa, type ResultPromise } from 'execa';
import { mkdir, mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { BAKED_IMAGES, bakedImageReference, IMAGES_DIR } from '../../builder/src/images/baked.ts';
import { IMAGES_FILE, makeImages, type ImageRecord } from '../../builder/src/images/make.ts';
import { hasCommand } from '../../builder/src/util/exec.ts';

const REPO = fileURLToPath(new URL('../..', import.meta.url));
const CACHE_DIR = process.env.GEMINIK8S_CACHE ?? path.join(REPO, '.cache');
const EPOCH = 1_700_000_000;

const PREREQUISITES: [command: string, why: string][] = [
  ['go', 'the Go toolchain that builds pause, hello and CoreDNS is not on PATH: install Go >= 1.26 and put `go` on PATH; `make deps` checks for it'],
  ['skopeo', '`skopeo` is missing (it reads the archives as a third party would): apt-get install skopeo (`make deps` installs it)'],
  ['file', '`file` is missing (it shows the binaries are statically linked): apt-get install file'],
  ['tar', '`tar` is missing (it unpacks the archives independently of the writer): apt-get install tar'],
  ['unshare', '`unshare` is missing (pause runs as PID 1 of its own PID namespace): apt-get install util-linux'],
  ['nsenter', "`nsenter` is missing (it leaves an orphan in pause's PID namespace): apt-get install util-linux"],
];

async function missingPrerequisite(): Promise<string | undefined> {
  for (const [command, why] of PREREQUISITES) if (!(await hasCommand(command))) return why;
  return undefined;
}

/** Made once by the first test; the others read them. */
let first: { dir: string; records: ImageRecord[] } | undefined;
/** Where each image's binary was unpacked from its layer. */
const binaries = new Map<string, string>();
const scratch: string[] = [];

test.after.always(async () => {
  for (const dir of scratch) await rm(dir, { recursive: true, force: true });
});

async function tmp(prefix: string): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), prefix));
  scratch.push(dir);
  return dir;
}

test.serial('pause, hello and coredns are built (or taken from the component cache) into OCI archives with their records', async (t) => {
  const missing = await missingPrerequisite();
  if (missing) return t.fail(missing);
  const dir = await tmp('gk8s-images-a-');
  const started = Date.now();
  const records = await makeImages({
    arch: 'amd64',
    cacheDir: CACHE_DIR,
    repoRoot: REPO,
    sourceDateEpoch: EPOCH,
    extra: [],
    outDir: dir,
    onProgress: (l) => t.log(l),
  });
  t.log(`made in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  t.deepEqual(
    records.map((r) => r.name),
    ['pause', 'hello', 'coredns'],
  );
  for (const [i, baked] of BAKED_IMAGES.entries()) {
    t.like(records[i], { reference: bakedImageReference(baked), file: `${IMAGES_DIR}/${baked.name}.tar`, source: 'built' });
  }
  t.is(bakedImageReference(BAKED_IMAGES[0]!), 'geminik8s.local/pause:v1.0.0');
  t.deepEqual(JSON.parse(await readFile(path.join(dir, IMAGES_FILE), 'utf8')), records);
  t.deepEqual((await readdir(dir)).sort(), ['coredns.tar', 'hello.tar', IMAGES_FILE, 'pause.tar']);
  first = { dir, records };
});

test.serial('each archive is an image skopeo reads, one layer holding one static binary at its path', async (t) => {
  if (!first) return t.fail('the images were not made (see the first test)');
  for (const baked of BAKED_IMAGES) {
    const record = first.records.find((r) => r.name === baked.name)!;
    const archive = path.join(first.dir, `${baked.name}.tar`);
    const inspect = JSON.parse((await execa('skopeo', ['inspect', `oci-archive:${archive}`])).stdout) as {
      Digest: string;
      Architecture: string;
      Os: string;
      Layers: string[];
      Created: string;
    };
    t.like(inspect, { Digest: record.digest, Architecture: 'amd64', Os: 'linux', Created: '2023-11-14T22:13:20Z' }, baked.name);
    t.is(inspect.Layers.length, 1, baked.name);
    const config = JSON.parse((await execa('skopeo', ['inspect', '--config', `oci-archive:${archive}`])).stdout) as {
      config: { Entrypoint: string[]; User?: string };
    };
    t.deepEqual(config.config.Entrypoint, [baked.path], baked.name);
    t.is(config.config.User, baked.user, baked.name);
    // skopeo selects the image by the tag the index names.
    const tag = baked.component.version;
    t.is(JSON.parse((await execa('skopeo', ['inspect', `oci-archive:${archive}:${tag}`])).stdout).Digest, record.digest);

    // The layer, unpacked with tar rather than with our own reader.
    const unpacked = await tmp(`gk8s-images-${baked.name}-`);
    await execa('tar', ['-xf', archive, '-C', unpacked]);
    const layerFile = path.join(unpacked, 'blobs', 'sha256', inspect.Layers[0]!.slice('sha256:'.length));
    const listing = (await execa('tar', ['-tvf', layerFile, '--numeric-owner'])).stdout.split('\n');
    t.is(listing.length, 1, listing.join('\n'));
    t.regex(listing[0]!, new RegExp(`^-rwxr-xr-x 0/0 .* 2023-11-14 22:13 ${baked.path.slice(1)}$`));
    const root = path.join(unpacked, 'rootfs');
    await execa('mkdir', [root]);
    await execa('tar', ['-xf', layerFile, '-C', root]);
    const binary = path.join(root, baked.path);
    t.regex((await execa('file', ['-b', binary])).stdout, /ELF 64-bit .* x86-64.* statically linked/, baked.name);
    binaries.set(baked.name, binary);
    t.log(`${record.reference}: archive ${((await readFile(archive)).length / 1e6).toFixed(1)} MB, ${record.digest}`);
  }
  const coredns = await execa(binaries.get('coredns')!, ['-version']);
  t.regex(coredns.stdout, /^CoreDNS-1\.15\.0\nlinux\/amd64, go1\.\d+/);
});

/** The lines a child prints, as they come; and a wait for one that matches. */
function lines(child: ResultPromise): { all: string[]; waitFor: (re: RegExp, ms: number) => Promise<RegExpExecArray> } {
  const all: string[] = [];
  let waiting: (() => void) | undefined;
  let rest = '';
  child.stdout!.on('data', (chunk: Buffer) => {
    const parts = (rest + chunk.toString()).split('\n');
    rest = parts.pop()!;
    all.push(...parts);
    waiting?.();
  });
  const waitFor = (re: RegExp, ms: number) =>
    new Promise<RegExpExecArray>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no line matching ${re} within ${ms} ms; got: ${all.join(' | ')}`)), ms);
      const check = () => {
        for (const l of all) {
          const m = re.exec(l);
          if (m) {
            clearTimeout(timer);
            waiting = undefined;
            resolve(m);
            return;
          }
        }
      };
      waiting = check;
      check();
    });
  return { all, waitFor };
}

function stopOnTeardown(t: ExecutionContext, child: ResultPromise): void {
  t.teardown(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
}

test.serial('hello answers with its host name and a counter, logs one line per request, fetches with -get and stops on SIGTERM', async (t) => {
  const hello = binaries.get('hello');
  if (!hello) return t.fail('hello was not unpacked (see the tests before)');
  const server = execa(hello, ['-listen', '127.0.0.1:0'], { reject: false, timeout: 30_000 });
  stopOnTeardown(t, server);
  const out = lines(server);
  const [, port] = await out.waitFor(/^hello v1\.0\.0 on .* listening on 127\.0\.0\.1:(\d+)$/, 5000);
  const url = `http://127.0.0.1:${port}/`;
  for (const count of [1, 2]) {
    const res = await fetch(url, { signal: AbortSignal.timeout(5000) });
    t.is(res.status, 200);
    t.deepEqual(await res.json(), { hostname: os.hostname(), count, version: 'v1.0.0' });
  }
  const client = await execa(hello, ['-get', `${url}via-client`, '-timeout', '5s']);
  t.deepEqual(JSON.parse(client.stdout), { hostname: os.hostname(), count: 3, version: 'v1.0.0' });
  await out.waitFor(/^request 3 /, 2000);
  t.deepEqual(
    out.all.filter((l) => l.startsWith('request ')).map((l) => l.replace(/from 127\.0\.0\.1:\d+/, 'from LOOPBACK')),
    ['request 1 from LOOPBACK: GET /', 'request 2 from LOOPBACK: GET /', 'request 3 from LOOPBACK: GET /via-client'],
  );
  const refused = await execa(hello, ['-get', 'http://127.0.0.1:1/', '-timeout', '2s'], { reject: false });
  t.is(refused.exitCode, 1, 'a failed GET is a failed pod');

  server.kill('SIGTERM');
  const done = await server;
  t.is(done.exitCode, 0, `hello exits 0 on SIGTERM: ${done.stderr}`);
});

/** Host pids of the processes whose parent is `pid`, with their states. */
async function childrenOf(pid: number): Promise<{ pid: number; state: string }[]> {
  const found: { pid: number; state: string }[] = [];
  for (const p of (await readdir('/proc')).filter((x) => /^\d+$/.test(x))) {
    const stat = await readFile(`/proc/${p}/stat`, 'utf8').catch(() => '');
    const [state, ppid] = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    if (Number(ppid) === pid) found.push({ pid: Number(p), state: state ?? '?' });
  }
  return found;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

test.serial('pause blocks, reaps the orphans it inherits as PID 1, and exits 0 on SIGTERM or SIGINT', async (t) => {
  const pause = binaries.get('pause');
  if (!pause) return t.fail('pause was not unpacked (see the tests before)');
  if (process.getuid?.() !== 0) return t.fail('pause as PID 1 needs a PID namespace of its own: run the test as root');
  t.is((await execa(pause, ['-version'])).stdout, 'v1.0.0');

  // PID 1 of a new PID namespace, as in a pod sandbox.
  const ns = execa('unshare', ['--pid', '--fork', '--kill-child', pause], { reject: false, timeout: 30_000 });
  stopOnTeardown(t, ns);
  let pid1: number | undefined;
  for (let i = 0; i < 50 && !pid1; i++) {
    await sleep(100);
    pid1 = (await childrenOf(ns.pid!))[0]?.pid;
  }
  if (!pid1) return t.fail('pause did not start under unshare');
  // An orphan: its parent shell exits at once, so the sleep is handed to the namespace's PID 1.
  // (Its output goes nowhere, or nsenter would wait for it through the pipe.)
  await execa('nsenter', ['--target', String(pid1), '--pid', '--', 'sh', '-c', 'sleep 1 </dev/null >/dev/null 2>&1 & exit 0'], { timeout: 5000 });
  t.is((await childrenOf(pid1)).length, 1, "the orphan is pause's child now");
  await sleep(2000);
  t.deepEqual(await childrenOf(pid1), [], 'the orphan has exited and pause reaped it (no zombie left)');
  t.is(ns.exitCode, null, 'pause still blocks');
  process.kill(pid1, 'SIGTERM');
  t.is((await ns).exitCode, 0);

  const plain = execa(pause, [], { reject: false, timeout: 10_000 });
  stopOnTeardown(t, plain);
  await sleep(500);
  t.is(plain.exitCode, null);
  plain.kill('SIGINT');
  t.is((await plain).exitCode, 0);
});

test.serial('a second build takes the binaries from the cache and writes the same archives byte for byte', async (t) => {
  if (!first) return t.fail('the images were not made (see the first test)');
  const dir = await tmp('gk8s-images-b-');
  const started = Date.now();
  const again = await makeImages({ arch: 'amd64', cacheDir: CACHE_DIR, repoRoot: REPO, sourceDateEpoch: EPOCH, extra: [], outDir: dir });
  const seconds = (Date.now() - started) / 1000;
  t.log(`second build in ${seconds.toFixed(1)} s`);
  t.true(seconds < 60, `a cache hit, not a rebuild (${seconds.toFixed(1)} s)`);
  t.deepEqual(again, first.records);
  for (const name of ['pause.tar', 'hello.tar', 'coredns.tar', IMAGES_FILE]) {
    t.true((await readFile(path.join(dir, name))).equals(await readFile(path.join(first.dir, name))), `${name} is byte-identical`);
  }
});

test.serial("a profile's extra archive comes from its artifact dir as it is, named as its index names it; a wrong sha256 names both hashes", async (t) => {
  if (!first) return t.fail('the images were not made (see the first test)');
  const artifacts = await tmp('gk8s-images-artifacts-');
  const folder = path.join(artifacts, 'extra', 'v2.0.0', 'amd64');
  await mkdir(folder, { recursive: true });
  // Made by another tool, as a site's own archive would be: skopeo names it by the OCI ref alone.
  await execa('skopeo', [
    'copy',
    '--quiet',
    `oci-archive:${path.join(first.dir, 'hello.tar')}`,
    `oci-archive:${path.join(folder, 'extra.tar')}:geminik8s.local/extra:v2.0.0`,
  ]);
  const sha256 = (await execa('sha256sum', [path.join(folder, 'extra.tar')])).stdout.split(' ')[0]!;
  const dir = await tmp('gk8s-images-extra-');
  const make = (pinned?: string) =>
    makeImages({
      arch: 'amd64',
      cacheDir: CACHE_DIR,
      repoRoot: REPO,
      sourceDateEpoch: EPOCH,
      outDir: dir,
      extra: [{ name: 'extra', version: 'v2.0.0', sources: [{ artifactDir: artifacts, ...(pinned ? { sha256: { amd64: pinned } } : {}) }] }],
    });
  const records = await make(sha256);
  t.like(records[0], { name: 'extra', file: `${IMAGES_DIR}/extra.tar`, sha256, reference: 'geminik8s.local/extra:v2.0.0', source: 'artifact-dir' });
  t.deepEqual(
    records.slice(1).map((r) => r.name),
    ['pause', 'hello', 'coredns'],
  );
  t.true((await readFile(path.join(dir, 'extra.tar'))).equals(await readFile(path.join(folder, 'extra.tar'))), 'installed as it was given');

  const wrong = 'f'.repeat(64);
  const err = await t.throwsAsync(make(wrong));
  t.true(err.message.includes(`sha256 mismatch (expected ${wrong}, got ${sha256})`), err.message);
});

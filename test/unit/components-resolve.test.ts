import test from 'ava';
import { createHash } from 'node:crypto';
import { mkdir, readFile, stat, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { elfArch, elfArchMismatch } from '../../builder/src/components/elf.ts';
import {
  ComponentUnavailableError,
  componentCachePath,
  componentUnavailableForArch,
  resolveComponent,
  type ComponentSpec,
} from '../../builder/src/components/resolve.ts';
import { scratchDirs } from '../helpers/scratch.ts';

const scratch = scratchDirs(test);

const sha = (b: Buffer | string): string => createHash('sha256').update(b).digest('hex');
const tmp = (): Promise<string> => scratch('components');

const BODY = Buffer.from('#!/bin/sh\necho fake k3s\n');
const BODY_SHA = sha(BODY);

/** A tiny HTTP server on 127.0.0.1 serving /k3s-{arch}; counts requests. */
async function server(t: { teardown: (fn: () => void) => void }): Promise<{ base: string; hits: () => number }> {
  let hits = 0;
  const s: Server = createServer((req, res) => {
    hits++;
    if (req.url === '/k3s-amd64' || req.url === '/k3s-arm64') {
      res.writeHead(200, { 'content-type': 'application/octet-stream' });
      res.end(BODY);
    } else {
      res.writeHead(404);
      res.end('nope');
    }
  });
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  t.teardown(() => s.close());
  return { base: `http://127.0.0.1:${(s.address() as AddressInfo).port}`, hits: () => hits };
}

test('artifact dir wins when present and is used in place', async (t) => {
  const root = await tmp();
  const p = join(root, 'artifacts', 'k3s', 'v1.33.1+k3s1', 'amd64');
  await mkdir(p, { recursive: true });
  await writeFile(join(p, 'k3s'), BODY);
  const spec: ComponentSpec = {
    name: 'k3s',
    version: 'v1.33.1+k3s1',
    sources: [{ artifactDir: 'artifacts' }, { url: 'http://127.0.0.1:1/never', sha256: { amd64: BODY_SHA } }],
  };
  const r = await resolveComponent(spec, { arch: 'amd64', cacheDir: join(root, 'cache'), repoRoot: root });
  t.is(r.source, 'artifact-dir');
  t.is(r.path, join(p, 'k3s'));
  t.is(r.sha256, BODY_SHA);
  t.is(r.size, BODY.length);
});

test('artifact dir sha256 sidecar mismatch is rejected', async (t) => {
  const root = await tmp();
  const p = join(root, 'art', 'kine', 'v0.17.5', 'arm64');
  await mkdir(p, { recursive: true });
  await writeFile(join(p, 'kine'), BODY);
  await writeFile(join(p, 'kine.sha256'), `${'0'.repeat(64)}  kine\n`);
  const e = await t.throwsAsync(
    resolveComponent({ name: 'kine', version: 'v0.17.5', sources: [{ artifactDir: join(root, 'art') }] }, { arch: 'arm64', cacheDir: join(root, 'cache') }),
  );
  t.regex(e!.message, /sha256 mismatch/);
});

test('no source: error lists every source tried and why, with the hint', async (t) => {
  const root = await tmp();
  const spec: ComponentSpec = { name: 'k3s', version: 'v1.33.1+k3s1', sources: [{ artifactDir: 'artifacts' }] };
  const e = await t.throwsAsync(resolveComponent(spec, { arch: 'amd64', cacheDir: join(root, 'cache'), repoRoot: root }), {
    instanceOf: ComponentUnavailableError,
  });
  t.is(
    e!.message,
    "k3s v1.33.1+k3s1 for amd64: no source available — artifact dir artifacts/k3s/v1.33.1+k3s1/amd64/k3s: not found; url: none configured. Put the binary there or see README 'K3s'",
  );
  t.deepEqual(
    (e as ComponentUnavailableError).attempts.map((a) => a.source),
    ['artifact dir artifacts/k3s/v1.33.1+k3s1/amd64/k3s', 'url'],
  );
});

test('url: downloads once, verifies sha256, caches with a .sha256 file', async (t) => {
  const root = await tmp();
  const srv = await server(t);
  const spec: ComponentSpec = {
    name: 'k3s',
    version: 'v1.33.1+k3s1',
    sources: [{ artifactDir: 'artifacts' }, { url: `${srv.base}/k3s-{arch}`, sha256: { amd64: BODY_SHA } }],
  };
  const o = { arch: 'amd64' as const, cacheDir: join(root, 'cache'), repoRoot: root };
  const r = await resolveComponent(spec, o);
  t.is(r.source, 'url');
  t.is(r.path, componentCachePath(o.cacheDir, spec, 'amd64'));
  t.is(r.path, join(root, 'cache', 'components', 'k3s', 'v1.33.1+k3s1', 'amd64', 'k3s'));
  t.deepEqual(await readFile(r.path), BODY);
  t.is((await stat(r.path)).mode & 0o777, 0o755);
  t.is((await readFile(`${r.path}.sha256`, 'utf8')).trim(), `${BODY_SHA}  k3s`);
  t.is(srv.hits(), 1);
  const again = await resolveComponent(spec, o);
  t.is(again.sha256, BODY_SHA);
  t.is(srv.hits(), 1, 'second resolve is served from the cache');
});

test('url: sha256 mismatch is rejected and nothing is cached; missing pin refused; 404 reported', async (t) => {
  const root = await tmp();
  const srv = await server(t);
  const o = { arch: 'amd64' as const, cacheDir: join(root, 'cache') };
  const bad = 'f'.repeat(64);
  const e = await t.throwsAsync(resolveComponent({ name: 'k3s', version: 'v1', sources: [{ url: `${srv.base}/k3s-{arch}`, sha256: { amd64: bad } }] }, o));
  t.regex(e!.message, new RegExp(`sha256 mismatch \\(expected ${bad}, got ${BODY_SHA}\\)`));
  await t.throwsAsync(stat(join(root, 'cache', 'components', 'k3s', 'v1', 'amd64', 'k3s')));

  const e2 = await t.throwsAsync(
    resolveComponent({ name: 'k3s', version: 'v1', sources: [{ url: `${srv.base}/k3s-{arch}`, sha256: { amd64: BODY_SHA } }] }, { ...o, arch: 'arm64' }),
  );
  t.regex(e2!.message, /no valid sha256 pinned for arm64/);

  const e3 = await t.throwsAsync(resolveComponent({ name: 'k3s', version: 'v1', sources: [{ url: `${srv.base}/missing`, sha256: { amd64: BODY_SHA } }] }, o));
  t.regex(e3!.message, /HTTP 404/);
});

test('sources are tried in order: a failing url falls through to the next source', async (t) => {
  const root = await tmp();
  const srv = await server(t);
  const art = join(root, 'late', 'k3s', 'v2', 'amd64');
  await mkdir(art, { recursive: true });
  await writeFile(join(art, 'k3s'), 'other');
  const r = await resolveComponent(
    { name: 'k3s', version: 'v2', sources: [{ url: `${srv.base}/missing`, sha256: { amd64: BODY_SHA } }, { artifactDir: join(root, 'late') }] },
    { arch: 'amd64', cacheDir: join(root, 'cache') },
  );
  t.is(r.source, 'artifact-dir');
  t.is(r.sha256, sha('other'));
});

test('go-module: a verified cache entry is reused without running go; a corrupt one is not trusted', async (t) => {
  const root = await tmp();
  const spec: ComponentSpec = { name: 'fakebin', version: 'v0.0.1', sources: [{ goModule: 'example.invalid/nonexistent/fakebin', env: { GOPROXY: 'off' } }] }; // GOPROXY=off: no network
  const o = { arch: 'arm64' as const, cacheDir: join(root, 'cache') };
  const dest = componentCachePath(o.cacheDir, spec, 'arm64');
  await mkdir(join(dest, '..'), { recursive: true });
  await writeFile(dest, BODY);
  await writeFile(`${dest}.sha256`, `${BODY_SHA}  fakebin\n`);
  const r = await resolveComponent(spec, o);
  t.is(r.source, 'go-module');
  t.is(r.sha256, BODY_SHA);

  await writeFile(dest, 'tampered');
  const e = await t.throwsAsync(resolveComponent(spec, { ...o }), { instanceOf: ComponentUnavailableError });
  t.regex(e!.message, /go module example\.invalid\/nonexistent\/fakebin@v0\.0\.1: go install failed/);
});

test('empty version is a clear error', async (t) => {
  const e = await t.throwsAsync(resolveComponent({ name: 'k3s', version: '', sources: [{ artifactDir: 'x' }] }, { arch: 'amd64', cacheDir: await tmp() }));
  t.regex(e!.message, /k3s for amd64: no version set/);
});

/** The first bytes of a little-endian 64-bit ELF executable for `machine` (e_machine). */
const elfHeader = (machine: number): Buffer => {
  const b = Buffer.alloc(64);
  b.set([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1], 0);
  b.writeUInt16LE(2, 16);
  b.writeUInt16LE(machine, 18);
  return b;
};

test('the ELF header names the arch an executable is built for', (t) => {
  t.is(elfArch(elfHeader(0x3e)), 'amd64');
  t.is(elfArch(elfHeader(0xb7)), 'arm64');
  t.is(elfArch(elfHeader(0x28)), 'arm (32-bit)');
  t.is(elfArch(BODY), undefined, 'a script is no ELF');
  const bigEndian = elfHeader(0);
  bigEndian[5] = 2;
  bigEndian.writeUInt16BE(0xb7, 18);
  t.is(elfArch(bigEndian), 'arm64 (big-endian)');
  t.is(elfArchMismatch(bigEndian, 'arm64'), 'expected an arm64 executable, the file is built for arm64 (big-endian)');
  t.is(elfArchMismatch(elfHeader(0xb7), 'arm64'), undefined);
  t.is(elfArchMismatch(BODY, 'arm64'), undefined);
  t.is(elfArchMismatch(elfHeader(0x3e), 'arm64'), 'expected an arm64 executable, the file is built for amd64');
});

test('an amd64 binary in the arm64 artifact folder is refused, and the next source is tried', async (t) => {
  const root = await tmp();
  const p = join(root, 'artifacts', 'kine', 'v0.17.5', 'arm64');
  await mkdir(p, { recursive: true });
  await writeFile(join(p, 'kine'), elfHeader(0x3e));
  const e = await t.throwsAsync(
    resolveComponent(
      { name: 'kine', version: 'v0.17.5', sources: [{ artifactDir: 'artifacts' }] },
      { arch: 'arm64', cacheDir: join(root, 'cache'), repoRoot: root },
    ),
    { instanceOf: ComponentUnavailableError },
  );
  t.regex(e?.message ?? '', /expected an arm64 executable, the file is built for amd64/);
  await writeFile(join(p, 'kine'), elfHeader(0xb7));
  const r = await resolveComponent(
    { name: 'kine', version: 'v0.17.5', sources: [{ artifactDir: 'artifacts' }] },
    { arch: 'arm64', cacheDir: join(root, 'cache'), repoRoot: root },
  );
  t.is(r.arch, 'arm64');
});

test('a component with no source for an arch is named before any work; Go sources serve every arch', async (t) => {
  const root = await tmp();
  const k3s: ComponentSpec = {
    name: 'k3s',
    version: 'v1.33.1+k3s1',
    sources: [{ artifactDir: 'artifacts' }, { url: { amd64: 'https://example.invalid/k3s' }, sha256: { amd64: BODY_SHA } }],
  };
  t.is(await componentUnavailableForArch(k3s, { arch: 'amd64', repoRoot: root }), undefined);
  t.is(
    await componentUnavailableForArch(k3s, { arch: 'arm64', repoRoot: root }),
    "k3s v1.33.1+k3s1 for arm64: no source available — artifact dir artifacts/k3s/v1.33.1+k3s1/arm64/k3s: not found; url: none configured for arm64. Put the binary there or see README 'K3s'",
  );
  const pinnedForAmd64Only: ComponentSpec = { ...k3s, sources: [{ url: 'https://example.invalid/k3s-{arch}', sha256: { amd64: BODY_SHA } }] };
  t.regex((await componentUnavailableForArch(pinnedForAmd64Only, { arch: 'arm64', repoRoot: root })) ?? '', /no valid sha256 pinned for arm64/);
  const p = join(root, 'artifacts', 'k3s', 'v1.33.1+k3s1', 'arm64');
  await mkdir(p, { recursive: true });
  await writeFile(join(p, 'k3s'), BODY);
  t.is(await componentUnavailableForArch(k3s, { arch: 'arm64', repoRoot: root }), undefined, 'an artifact put in place serves');
  t.is(
    await componentUnavailableForArch({ name: 'kine', version: 'v0.17.5', sources: [{ goModule: 'github.com/k3s-io/kine' }] }, { arch: 'arm64' }),
    undefined,
  );
});

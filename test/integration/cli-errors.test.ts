import test from 'ava';
import { createHash } from 'node:crypto';
import { access, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { parse, stringify } from 'yaml';
import { componentCachePath } from '../../builder/src/components/resolve.ts';
import { hasCommand, run } from '../../builder/src/util/exec.ts';
import { events, geminik8s } from '../helpers/cli.ts';

const PROFILE = await readFile(new URL('../../profiles/edge-datastore.yaml', import.meta.url), 'utf8');

/** A scratch folder, removed after the test (the builds below leave a cache in theirs). */
async function scratch(t: import('ava').ExecutionContext): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'gk8s-cli-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

/** Runs a build that must be refused: exit 2, the expected message, and no artifact at all. */
async function refusedBuild(t: import('ava').ExecutionContext, args: string[], message: RegExp): Promise<void> {
  const dir = await scratch(t);
  const out = path.join(dir, 'dist');
  const r = await geminik8s(['build', '--out', out, ...args], { cwd: dir });
  t.is(r.exitCode, 2, r.stderr);
  t.regex(r.stderr, message);
  t.notRegex(r.stderr, /\n\s+at /, 'no stack trace for bad input');
  t.deepEqual(await readdir(out).catch(() => []), [], 'nothing written to --out');
}

async function profileFile(dir: string, text: string): Promise<string> {
  const file = path.join(dir, 'bad.yaml');
  await writeFile(file, text);
  return file;
}

test('bad YAML in a profile', async (t) => {
  const file = await profileFile(await scratch(t), PROFILE.replace('  suite: bookworm', '  suite: [bookworm'));
  await refusedBuild(t, ['--profile', file], /bad\.yaml:\d+:\d+: \(document\): found invalid YAML/);
});

test('unknown field in a profile', async (t) => {
  const file = await profileFile(await scratch(t), PROFILE.replace('network:\n', 'networks: {}\nnetwork:\n'));
  await refusedBuild(t, ['--profile', file], /bad\.yaml:\d+:1: networks: found unknown field "networks"; allowed fields here: apiVersion, kind/);
});

test('wrong type in a profile', async (t) => {
  const file = await profileFile(await scratch(t), PROFILE.replace('replication: physical', 'replication: sometimes'));
  await refusedBuild(t, ['--profile', file], /bad\.yaml:\d+:\d+: postgresql\.replication: found string "sometimes"; allowed: "physical", "logical"/);
});

test('missing profile file', async (t) => {
  await refusedBuild(
    t,
    ['--profile', 'does-not-exist'],
    /profiles\/does-not-exist\.yaml: \(file\): found no such file; expected a profile: one of edge-datastore, edge-standard, edge-static/,
  );
});

test('unknown hardware', async (t) => {
  await refusedBuild(
    t,
    ['--hardware', 'pdp-11'],
    /hardware\/pdp-11\.yaml: \(file\): found no such file; expected a hardware definition: one of generic-arm64-uefi, generic-x86_64-uefi, raspberrypi4,/,
  );
});

test('site file without a secret, at build and at stamp', async (t) => {
  const dir = await scratch(t);
  const site = path.join(dir, 'site.yaml');
  await writeFile(site, 'apiVersion: geminik8s/v1\nkind: Site\nsite:\n  id: store-1\nnetwork:\n  vip: 192.0.2.10/24\n  addressing: dhcp\n');
  await refusedBuild(
    t,
    ['--site', site],
    /site\.yaml:1:1: pair: found nothing; "pair" is required \(it holds the pair secret: run `geminik8s init` to generate one\)/,
  );
  const image = path.join(dir, 'image.raw');
  await writeFile(image, Buffer.alloc(4096));
  const before = await readFile(image);
  const r = await geminik8s(['stamp', '--site', site, image], { cwd: dir });
  t.is(r.exitCode, 2);
  t.regex(r.stderr, /"pair" is required \(it holds the pair secret/);
  t.deepEqual(await readFile(image), before, 'the image is untouched');
});

test('--help teaches the flow and the exit codes', async (t) => {
  const r = await geminik8s(['--help']);
  t.is(r.exitCode, 0);
  t.regex(r.stdout, /Typical flow:/);
  t.regex(r.stdout, /Exit codes: 0 ok, 1 a step failed, 2 invalid input/);
  const v = await geminik8s(['version', '--json']);
  t.is(v.exitCode, 0);
  t.regex(JSON.parse(v.stdout).version as string, /^\d+\.\d+\.\d+/);
});

test('--help teaches each profile in one line, and a build without --profile builds the one `make image` builds', async (t) => {
  const help = await geminik8s(['--help']);
  t.is(help.exitCode, 0);
  const profiles = (await readdir(new URL('../../profiles/', import.meta.url))).filter((f) => f.endsWith('.yaml')).map((f) => f.slice(0, -'.yaml'.length));
  t.true(profiles.length >= 3, `profiles/ holds ${profiles.join(', ')}`);
  for (const name of profiles) t.regex(help.stdout, new RegExp(`^  ${name} +\\S.*$`, 'm'), `${name} has its line`);
  const makeDefault = /^PROFILE\s*\?=\s*(\S+)$/m.exec(await readFile(new URL('../../Makefile', import.meta.url), 'utf8'))?.[1];
  t.is(makeDefault, 'edge-standard');
  t.regex(help.stdout, /^ {2}edge-standard +the default/m);
  const dir = await scratch(t);
  const plan = await geminik8s(['build', '--dry-run', '--json'], { cwd: dir, env: { GEMINIK8S_CACHE: path.join(dir, 'cache') } });
  t.is(plan.exitCode, 0, plan.stderr);
  t.regex(String(events(plan.stdout).find((e) => e.event === 'plan')?.artifactName), new RegExp(`^${makeDefault}-`));
});

const K3S_VERSION = 'v1.36.4+k3s1';

/** The K3s profile (edge-static) with its Kubernetes sources replaced. */
async function k3sProfile(t: import('ava').ExecutionContext, dir: string, sources: unknown[]): Promise<string> {
  const profile = parse(await readFile(new URL('../../profiles/edge-static.yaml', import.meta.url), 'utf8')) as {
    components: { kubernetes: { distribution: string; version: string; sources: unknown[] } };
  };
  t.is(profile.components.kubernetes.distribution, 'k3s');
  t.is(profile.components.kubernetes.version, K3S_VERSION);
  profile.components.kubernetes.sources = sources;
  const file = path.join(dir, 'k3s-profile.yaml');
  await writeFile(file, stringify(profile));
  return file;
}

/**
 * A real build (root and the build tools, as `make image`), in a scratch cache and --out so the
 * shared .cache is never touched, that must stop at the Kubernetes component: before any step when
 * no source can serve the arch (`started: []`), or in its own step, the first. Returns the error it
 * printed and the one its --json events carry.
 */
async function buildStoppedAtKubernetes(
  t: import('ava').ExecutionContext,
  dir: string,
  profile: string,
  o: { env?: Record<string, string>; started: string[]; hardware?: string },
): Promise<{ stderr: string; message: string; cache: string }> {
  const cache = path.join(dir, 'cache');
  const out = path.join(dir, 'dist');
  const r = await geminik8s(['build', '--json', '--profile', profile, '--hardware', o.hardware ?? 'generic-x86_64-uefi', '--out', out], {
    cwd: dir,
    env: { GEMINIK8S_CACHE: cache, ...o.env },
  });
  t.is(r.exitCode, 1, `exit 1 (a step failed); stderr:\n${r.stderr}`);
  const ev = events(r.stdout);
  const planned = (ev.find((e) => e.event === 'plan')?.steps as { id: string }[] | undefined)?.map((s) => s.id) ?? [];
  // The rootfs and Kine are in the plan, so their absence from what started below means they never did.
  t.true(planned.includes('rootfs') && planned.includes('kine'), `planned: ${planned.join(', ')}`);
  t.deepEqual(
    ev.filter((e) => e.event === 'step-start').map((e) => e.id),
    o.started,
    o.started.length ? 'only the Kubernetes component started' : 'no step started',
  );
  const error = ev.find((e) => e.event === 'error');
  t.is(error?.step, 'kubernetes');
  t.deepEqual(await readdir(out).catch(() => []), [], 'nothing written to --out');
  await t.throwsAsync(access(path.join(cache, 'steps', 'rootfs')), undefined, 'no rootfs in the cache');
  t.notRegex(r.stderr, /\n\s+at /, 'no stack trace');
  return { stderr: r.stderr, message: String(error?.message), cache };
}

test('a K3s profile whose only source is an empty artifact dir fails before any work, naming the exact path it tried', async (t) => {
  const dir = await scratch(t);
  const artifacts = path.join(dir, 'artifacts');
  await mkdir(artifacts);
  const { stderr, message } = await buildStoppedAtKubernetes(t, dir, await k3sProfile(t, dir, [{ artifactDir: artifacts }]), { started: [] });
  const tried = path.join(artifacts, 'k3s', K3S_VERSION, 'amd64', 'k3s');
  t.true(stderr.includes(`artifact dir ${tried}: not found`), `stderr names ${tried}:\n${stderr}`);
  t.true(message.includes(tried), 'so does the --json error event');
  t.regex(stderr, /README 'K3s'/, 'and says where to read on');
  t.deepEqual(await readdir(artifacts), [], 'the artifact dir was only looked at');
});

/** An HTTPS server on 127.0.0.1 (profiles accept https:// URLs only) with a certificate made here; counts requests. */
async function httpsServer(t: import('ava').ExecutionContext, pathname: string, body: Buffer): Promise<{ origin: string; caFile: string; hits: () => number }> {
  const dir = await scratch(t);
  const key = path.join(dir, 'server.key');
  const cert = path.join(dir, 'server.crt');
  await run('openssl', [
    'req',
    '-x509',
    '-newkey',
    'ec',
    '-pkeyopt',
    'ec_paramgen_curve:P-256',
    '-nodes',
    '-keyout',
    key,
    '-out',
    cert,
    '-days',
    '2',
    '-subj',
    '/CN=127.0.0.1',
    '-addext',
    'subjectAltName=IP:127.0.0.1',
  ]);
  let hits = 0;
  const server = createServer({ key: await readFile(key), cert: await readFile(cert) }, (req, res) => {
    hits++;
    res.writeHead(req.url === pathname ? 200 : 404, { 'content-type': 'application/octet-stream' });
    res.end(req.url === pathname ? body : 'not found');
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => server.close());
  return { origin: `https://127.0.0.1:${(server.address() as AddressInfo).port}`, caFile: cert, hits: () => hits };
}

test('a K3s download whose sha256 is not the pinned one fails naming both hashes, and nothing is cached', async (t) => {
  if (!(await hasCommand('openssl'))) return t.fail("openssl is missing (it makes the test server's certificate): apt-get install openssl");
  const body = Buffer.from('#!/bin/sh\necho this is not the k3s release\n');
  const actual = createHash('sha256').update(body).digest('hex');
  // The hash edge-static pins for the real release, which the served file is not.
  const pinned = '835873f37245fc615f547a2fe2af9402a347875f13fa64a1f136de644955ea3f';
  t.not(actual, pinned);
  const served = await httpsServer(t, `/${K3S_VERSION}/k3s`, body);
  const dir = await scratch(t);
  const profile = await k3sProfile(t, dir, [{ url: { amd64: `${served.origin}/{version}/k3s` }, sha256: { amd64: pinned } }]);
  // The CLI trusts the test server's certificate the way Node trusts any extra CA.
  const { stderr, message, cache } = await buildStoppedAtKubernetes(t, dir, profile, { env: { NODE_EXTRA_CA_CERTS: served.caFile }, started: ['kubernetes'] });
  t.true(served.hits() >= 1, 'the file was downloaded');
  const expected = `url ${served.origin}/${K3S_VERSION}/k3s: sha256 mismatch (expected ${pinned}, got ${actual})`;
  t.true(stderr.includes(expected), `stderr says: ${expected}\n${stderr}`);
  t.true(message.includes(expected), 'so does the --json error event');
  await t.throwsAsync(access(componentCachePath(cache, { name: 'k3s', version: K3S_VERSION, sources: [] }, 'amd64')), undefined, 'the download was discarded');
});

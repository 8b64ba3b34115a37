import test from 'ava';
import { mkdtemp, readdir, readFile, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { geminik8s } from '../helpers/cli.ts';

const PROFILE = await readFile(new URL('../../profiles/edge-datastore.yaml', import.meta.url), 'utf8');

async function scratch(): Promise<string> {
  return mkdtemp(path.join(os.tmpdir(), 'gk8s-cli-'));
}

/** Runs a build that must be refused: exit 2, the expected message, and no artifact at all. */
async function refusedBuild(t: import('ava').ExecutionContext, args: string[], message: RegExp): Promise<void> {
  const dir = await scratch();
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
  const file = await profileFile(await scratch(), PROFILE.replace('  suite: bookworm', '  suite: [bookworm'));
  await refusedBuild(t, ['--profile', file], /bad\.yaml:\d+:\d+: \(document\): found invalid YAML/);
});

test('unknown field in a profile', async (t) => {
  const file = await profileFile(await scratch(), PROFILE.replace('network:\n', 'networks: {}\nnetwork:\n'));
  await refusedBuild(t, ['--profile', file], /bad\.yaml:\d+:1: networks: found unknown field "networks"; allowed fields here: apiVersion, kind/);
});

test('wrong type in a profile', async (t) => {
  const file = await profileFile(await scratch(), PROFILE.replace('synchronous: true', 'synchronous: sometimes'));
  await refusedBuild(t, ['--profile', file], /bad\.yaml:\d+:\d+: postgresql\.synchronous: found string "sometimes"; expected boolean/);
});

test('missing profile file', async (t) => {
  await refusedBuild(t, ['--profile', 'does-not-exist'], /profiles\/does-not-exist\.yaml: \(file\): found no such file; expected a profile: one of edge-datastore, edge-standard, edge-static/);
});

test('unknown hardware', async (t) => {
  await refusedBuild(t, ['--hardware', 'pdp-11'], /hardware\/pdp-11\.yaml: \(file\): found no such file; expected a hardware definition: one of generic-x86_64-uefi/);
});

test('site file without a secret, at build and at stamp', async (t) => {
  const dir = await scratch();
  const site = path.join(dir, 'site.yaml');
  await writeFile(site, 'apiVersion: geminik8s/v1\nkind: Site\nsite:\n  id: store-1\nnetwork:\n  vip: 192.0.2.10/24\n  addressing: dhcp\n');
  await refusedBuild(t, ['--site', site], /site\.yaml:1:1: pair: site file has no pair\.secret: run `geminik8s init` to generate one/);
  const image = path.join(dir, 'image.raw');
  await writeFile(image, Buffer.alloc(4096));
  const before = await readFile(image);
  const r = await geminik8s(['stamp', '--site', site, image], { cwd: dir });
  t.is(r.exitCode, 2);
  t.regex(r.stderr, /no pair\.secret/);
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

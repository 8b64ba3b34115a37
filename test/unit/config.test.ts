import test from 'ava';
import { mkdtemp, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { resolveConfig } from '../../builder/src/config/resolve.ts';
import { ConfigError, formatIssue, parseYamlWithSchema } from '../../builder/src/config/validate.ts';
import { profileSchema } from '../../builder/src/config/profile.ts';
import { REPO_ROOT } from '../../builder/src/cli/paths.ts';

const HW = 'generic-x86_64-uefi';

test('every shipped profile resolves against the shipped hardware', async (t) => {
  for (const profile of ['edge-standard', 'edge-static', 'edge-datastore']) {
    const r = await resolveConfig({ profile, hardware: HW, repoRoot: REPO_ROOT });
    t.is(r.profile.name, profile);
    t.true(r.packages.includes('postgresql-15'));
    t.true(r.packages.includes('linux-image-amd64'));
    t.deepEqual(r.packages, [...r.packages].sort(), 'package set is sorted so the rootfs key is stable');
  }
});

async function issuesFor(yaml: string): Promise<string[]> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'gk8s-cfg-'));
  const file = path.join(dir, 'p.yaml');
  await writeFile(file, yaml);
  const err = await resolveConfig({ profile: file, hardware: HW, repoRoot: REPO_ROOT }).then(() => undefined, (e: unknown) => e);
  if (!(err instanceof ConfigError)) throw new Error(`expected a ConfigError, got ${String(err)}`);
  return err.issues.map((i) => formatIssue({ ...i, file: 'p.yaml' }));
}

const VALID = `apiVersion: geminik8s/v1
kind: Profile
name: p
description: d
version: 1.0.0
debian:
  suite: bookworm
network:
  addressing: dhcp
postgresql: {version: 15, replication: physical, synchronous: true}
components:
  kine: {version: v0.17.5, sources: [{goModule: github.com/k3s-io/kine}]}
`;

test('a valid profile file outside profiles/ is accepted by path', async (t) => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'gk8s-cfg-'));
  const file = path.join(dir, 'p.yaml');
  await writeFile(file, VALID);
  const r = await resolveConfig({ profile: file, hardware: HW, repoRoot: REPO_ROOT });
  t.is(r.profile.name, 'p');
});

test('bad YAML names the line and column', async (t) => {
  const issues = await issuesFor(VALID.replace('suite: bookworm', 'suite: [bookworm'));
  t.regex(issues[0] ?? '', /^p\.yaml:\d+:\d+: \(document\): found invalid YAML/);
});

test('an unknown field names itself, its line:column and the allowed fields', async (t) => {
  const issues = await issuesFor(VALID.replace('  suite: bookworm', '  suite: bookworm\n  packagez: [vim]'));
  t.deepEqual(issues, ['p.yaml:8:3: debian.packagez: found unknown field "packagez"; allowed fields here: suite, mirror, securityMirror, packages']);
});

test('a wrong type says what was found and what is expected', async (t) => {
  const issues = await issuesFor(VALID.replace('synchronous: true', 'synchronous: "yes"'));
  t.deepEqual(issues, ['p.yaml:10:63: postgresql.synchronous: found string "yes"; expected boolean']);
});

test('an enum lists the allowed values', async (t) => {
  const issues = await issuesFor(VALID.replace('addressing: dhcp', 'addressing: dhcpx'));
  t.deepEqual(issues, ['p.yaml:9:15: network.addressing: found string "dhcpx"; allowed: "dhcp", "static"']);
});

test('kubernetes without a version or source is reported field by field', async (t) => {
  const issues = await issuesFor(`${VALID}  kubernetes: {distribution: upstream}\n`);
  t.deepEqual(issues, [
    'p.yaml:13:15: components.kubernetes.version: found nothing; "version" is required',
    'p.yaml:13:15: components.kubernetes.sources: found nothing; "sources" is required',
  ]);
});

test('the pod and Service ranges default in the validator', async (t) => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'gk8s-cfg-'));
  const file = path.join(dir, 'p.yaml');
  await writeFile(file, `${VALID}  kubernetes: {distribution: upstream, version: v1.37.2, sources: [{goMain: components/kubernetes}]}\n`);
  const r = await resolveConfig({ profile: file, hardware: HW, repoRoot: REPO_ROOT });
  t.like(r.profile.components.kubernetes, { clusterCidr: '10.42.0.0/16', serviceCidr: '10.43.0.0/16' });
});

test('every problem in a file is reported at once', async (t) => {
  const issues = await issuesFor(VALID.replace('name: p', 'name: Bad Name').replace('version: 1.0.0', 'version: 1'));
  t.is(issues.length, 2);
  t.regex(issues[0] ?? '', /^p\.yaml:3:7: name: found string "Bad Name"; expected lowercase/);
  t.regex(issues[1] ?? '', /^p\.yaml:5:10: version: found number 1; expected string \(a version like/);
});

test('a missing profile or unknown hardware lists what exists', async (t) => {
  const err = await resolveConfig({ profile: 'nope', hardware: 'raspberry-pi-9', repoRoot: REPO_ROOT }).catch((e: unknown) => e);
  t.true(err instanceof ConfigError);
  const text = (err as ConfigError).message;
  t.regex(text, /^profiles\/nope\.yaml: \(file\): found no such file; expected a profile: one of edge-datastore, edge-standard, edge-static/m);
  t.regex(text, /^hardware\/raspberry-pi-9\.yaml: \(file\): found no such file; expected a hardware definition: one of generic-x86_64-uefi/m);
});

test('the schema validator is reusable on any text', (t) => {
  const r = parseYamlWithSchema(VALID.replace('kind: Profile', 'kind: Hardware'), 'x.yaml', profileSchema);
  t.false(r.ok);
  if (!r.ok) t.is(formatIssue(r.issues[0]!), 'x.yaml:2:7: kind: found string "Hardware"; expected "Profile"');
});

import test from 'ava';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { resolveConfig } from '../../builder/src/config/resolve.ts';
import { ConfigError, formatIssue, parseYamlWithSchema } from '../../firstboot/src/core/config-file.ts';
import { profileSchema } from '../../builder/src/config/profile.ts';
import { hardwareSchema } from '../../builder/src/config/hardware.ts';
import { readFile } from 'node:fs/promises';
import { REPO_ROOT } from '../../builder/src/cli/paths.ts';
import { scratchDirs } from '../helpers/scratch.ts';

const scratch = scratchDirs(test);

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
  const dir = await scratch('gk8s-cfg');
  const file = path.join(dir, 'p.yaml');
  await writeFile(file, yaml);
  const err = await resolveConfig({ profile: file, hardware: HW, repoRoot: REPO_ROOT }).then(
    () => undefined,
    (e: unknown) => e,
  );
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
postgresql: {version: 15, replication: physical}
components:
  kine: {version: v0.17.5, sources: [{goModule: github.com/k3s-io/kine}]}
`;

test('a valid profile file outside profiles/ is accepted by path', async (t) => {
  const dir = await scratch('gk8s-cfg');
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
  t.deepEqual(issues, [
    'p.yaml:8:3: debian.packagez: found unknown field "packagez"; allowed fields here: suite, mirror, securityMirror, packages (did you mean "packages"?)',
  ]);
});

test('a wrong type says what was found and what is expected', async (t) => {
  const issues = await issuesFor(VALID.replace('description: d', 'description: [d]'));
  t.deepEqual(issues, ['p.yaml:4:14: description: found a list of 1; expected string']);
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
  const dir = await scratch('gk8s-cfg');
  const file = path.join(dir, 'p.yaml');
  await writeFile(file, `${VALID}  kubernetes: {distribution: upstream, version: v1.37.2, sources: [{goMain: components/kubernetes}]}\n`);
  const r = await resolveConfig({ profile: file, hardware: HW, repoRoot: REPO_ROOT });
  t.like(r.profile.components.kubernetes, { clusterCidr: '10.42.0.0/16', serviceCidr: '10.43.0.0/16' });
});

const UPSTREAM = `${VALID}  kubernetes:\n    distribution: upstream\n    version: v1.37.2\n    sources: [{goMain: components/kubernetes}]\n`;

test('upstream Kubernetes may list more image archives, from an artifact dir or a url with its sha256', async (t) => {
  const dir = await scratch('gk8s-cfg');
  const file = path.join(dir, 'p.yaml');
  const sha = 'a'.repeat(64);
  await writeFile(
    file,
    `${UPSTREAM}    images:\n      - {name: nginx, version: v1.27.0, sources: [{artifactDir: artifacts}, {url: 'https://example.invalid/nginx-{arch}.tar', sha256: {amd64: ${sha}}}]}\n`,
  );
  const r = await resolveConfig({ profile: file, hardware: HW, repoRoot: REPO_ROOT });
  t.deepEqual(r.profile.components.kubernetes?.images, [
    { name: 'nginx', version: 'v1.27.0', sources: [{ artifactDir: 'artifacts' }, { url: 'https://example.invalid/nginx-{arch}.tar', sha256: { amd64: sha } }] },
  ]);
});

test("an image archive cannot take a baked-in image's name, be built from Go, or lack a version", async (t) => {
  const issues = await issuesFor(`${UPSTREAM}    images:\n      - {name: pause, sources: [{goModule: github.com/example/pause}]}\n`);
  t.true(
    issues.includes(
      'p.yaml:18:16: components.kubernetes.images[0].name: found string "pause"; expected the archive\'s name (lowercase letters, digits, dashes, underscores), other than pause, hello, coredns, kine, kubernetes, k3s',
    ),
    issues.join('\n'),
  );
  t.true(
    issues.includes(
      'p.yaml:18:34: components.kubernetes.images[0].sources[0].goModule: found unknown field "goModule"; allowed fields here: artifactDir, url, sha256',
    ),
    issues.join('\n'),
  );
  t.true(issues.includes('p.yaml:18:9: components.kubernetes.images[0].version: found nothing; "version" is required'), issues.join('\n'));
});

test('K3s takes no image list (it imports its own tarballs), and says so', async (t) => {
  const issues = await issuesFor(
    `${VALID}  kubernetes:\n    distribution: k3s\n    version: v1.36.4+k3s1\n    sources: [{artifactDir: artifacts}]\n    images: [{name: nginx, version: v1.27.0, sources: [{artifactDir: artifacts}]}]\n`,
  );
  t.deepEqual(issues, [
    'p.yaml:17:13: components.kubernetes.images: found a list of 1; expected null (no images list with distribution k3s, which imports the tarballs in its own images folder)',
  ]);
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
  t.regex(
    text,
    /^hardware\/raspberry-pi-9\.yaml: \(file\): found no such file; expected a hardware definition: one of generic-arm64-uefi, generic-x86_64-uefi, raspberrypi4, or a path/m,
  );
});

test('the schema validator is reusable on any text', (t) => {
  const r = parseYamlWithSchema(VALID.replace('kind: Profile', 'kind: Hardware'), 'x.yaml', profileSchema);
  t.false(r.ok);
  if (!r.ok) t.is(formatIssue(r.issues[0]!), 'x.yaml:2:7: kind: found string "Hardware"; expected "Profile"');
});

test("a hardware definition's disk sizes follow its bootloader: bootMiB for rpi-tryboot, espMiB for grub-efi, each refused on the other", async (t) => {
  const pi = await readFile(path.join(REPO_ROOT, 'hardware/raspberrypi4.yaml'), 'utf8');
  const uefi = await readFile(path.join(REPO_ROOT, 'hardware/generic-arm64-uefi.yaml'), 'utf8');
  const issues = (text: string) => {
    const r = parseYamlWithSchema(text, 'h.yaml', hardwareSchema);
    return r.ok ? [] : r.issues.map(formatIssue);
  };
  t.deepEqual(issues(pi), []);
  t.deepEqual(issues(uefi), []);
  t.true(
    issues(pi.replace('  bootMiB: 128', '  espMiB: 64')).some((i) =>
      /disk: found .*; expected .*bootMiB|disk\.espMiB: .*no espMiB with bootloader rpi-tryboot/.test(i),
    ),
    issues(pi.replace('  bootMiB: 128', '  espMiB: 64')).join(' | '),
  );
  t.true(issues(pi.replace('  bootMiB: 128', '  bootMiB: 128\n  espMiB: 64')).some((i) => /disk\.espMiB: .*no espMiB with bootloader rpi-tryboot/.test(i)));
  t.true(issues(uefi.replace('  espMiB: 64', '  espMiB: 64\n  bootMiB: 128')).some((i) => /disk\.bootMiB: .*no bootMiB with bootloader grub-efi/.test(i)));
  t.true(issues(pi.replace('firmware: rpi', 'firmware: uefi')).some((i) => /^h\.yaml:\d+:\d+: firmware: .*expected "rpi"/.test(i)));
});

import test from 'ava';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { detectDebianMirror, NoDebianMirrorError, parseAptSources, pickDebianMirror } from '../../builder/src/rootfs/apt-sources.ts';
import { scratchDirs } from '../helpers/scratch.ts';

const scratch = scratchDirs(test);

// Local file: mirrors stand in for repositories: the parser treats every URI scheme alike.
const DEB822 = `Types: deb
# a comment inside the stanza
URIs: file:///srv/mirror/debian
Suites: bookworm bookworm-updates
Components: main contrib
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: file:///srv/security/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb-src
URIs: file:///srv/src/debian
Suites: bookworm
Components: main

Enabled: no
Types: deb
URIs: file:///srv/disabled/debian
Suites: bookworm
Components: main
`;

test('deb822: stanzas, comments, deb-src and Enabled: no', (t) => {
  const e = parseAptSources([{ path: '/etc/apt/sources.list.d/debian.sources', text: DEB822 }]);
  t.deepEqual(
    e.map(({ uri, suites, components }) => ({ uri, suites, components })),
    [
      { uri: 'file:///srv/mirror/debian', suites: ['bookworm', 'bookworm-updates'], components: ['main', 'contrib'] },
      { uri: 'file:///srv/security/debian-security', suites: ['bookworm-security'], components: ['main'] },
    ],
  );
});

test('deb822: multi-line field values and multiple URIs', (t) => {
  const text = 'Types: deb deb-src\nURIs: file:///srv/a/debian/\n  file:///srv/b/debian\nSuites: bookworm\nComponents: main\n';
  const e = parseAptSources([{ path: 'x.sources', text }]);
  t.deepEqual(
    e.map((x) => x.uri),
    ['file:///srv/a/debian', 'file:///srv/b/debian'],
  );
});

test('one-line format: options, comments, deb-src', (t) => {
  const text = `# deb file:///srv/commented/debian bookworm main
deb [arch=amd64 signed-by=/usr/share/keyrings/x.gpg] file:///srv/mirror/debian/ bookworm main non-free-firmware
deb-src file:///srv/mirror/debian bookworm main
deb [ arch=amd64 ] file:///srv/security/debian-security bookworm-security main # trailing
deb file:///srv/vendor/apt cloud-sdk-bookworm main
`;
  const e = parseAptSources([{ path: '/etc/apt/sources.list', text }]);
  t.deepEqual(
    e.map(({ uri, suites, components }) => ({ uri, suites, components })),
    [
      { uri: 'file:///srv/mirror/debian', suites: ['bookworm'], components: ['main', 'non-free-firmware'] },
      { uri: 'file:///srv/security/debian-security', suites: ['bookworm-security'], components: ['main'] },
      { uri: 'file:///srv/vendor/apt', suites: ['cloud-sdk-bookworm'], components: ['main'] },
    ],
  );
});

test('pick: main archive, security archive; vendor and updates-only repos ignored', (t) => {
  const e = parseAptSources([
    { path: 'vendor.list', text: 'deb file:///srv/vendor/apt cloud-sdk-bookworm main\n' },
    { path: 'node.sources', text: 'Types: deb\nURIs: file:///srv/node/node_20.x\nSuites: nodistro\nComponents: main\n' },
    { path: 'updates.list', text: 'deb file:///srv/updates-only/debian bookworm-updates main\n' },
    { path: 'debian.sources', text: DEB822 },
  ]);
  t.deepEqual(pickDebianMirror(e), {
    mirror: 'file:///srv/mirror/debian',
    securityMirror: 'file:///srv/security/debian-security',
    file: 'debian.sources',
  });
});

test('pick: old-style bookworm/updates security suite, no main archive → undefined', (t) => {
  const onlySec = parseAptSources([{ path: 'a.list', text: 'deb file:///srv/security/debian-security bookworm/updates main\n' }]);
  t.is(pickDebianMirror(onlySec), undefined);
  const noMain = parseAptSources([{ path: 'a.list', text: 'deb file:///srv/m/debian bookworm contrib\n' }]);
  t.is(pickDebianMirror(noMain), undefined);
  const wrongSuite = parseAptSources([{ path: 'a.list', text: 'deb file:///srv/m/debian trixie main\n' }]);
  t.is(pickDebianMirror(wrongSuite), undefined);
  t.is(pickDebianMirror(wrongSuite, 'trixie')?.mirror, 'file:///srv/m/debian');
});

test('detect: reads sources.list + sources.list.d, skips *.disabled files; override wins; clear error', async (t) => {
  const apt = await scratch('aptsrc');
  await mkdir(join(apt, 'sources.list.d'));
  await writeFile(join(apt, 'sources.list.d', 'old.list.disabled-by-admin'), 'deb file:///srv/disabled/debian bookworm main\n');
  await writeFile(join(apt, 'sources.list.d', 'old.sources.save'), 'Types: deb\nURIs: file:///srv/save/debian\nSuites: bookworm\nComponents: main\n');
  await t.throwsAsync(detectDebianMirror({ aptDir: apt }), {
    instanceOf: NoDebianMirrorError,
    message: /no Debian mirror in the build host's apt sources; set `debian.mirror` in the profile or pass --mirror/,
  });
  await writeFile(join(apt, 'sources.list.d', 'debian.sources'), DEB822);
  t.deepEqual(await detectDebianMirror({ aptDir: apt }), {
    mirror: 'file:///srv/mirror/debian',
    securityMirror: 'file:///srv/security/debian-security',
    origin: join(apt, 'sources.list.d', 'debian.sources'),
  });
  t.deepEqual(await detectDebianMirror({ aptDir: apt, override: 'file:///srv/override/debian/' }), {
    mirror: 'file:///srv/override/debian',
    origin: 'override',
  });
});

test('detect: the build host has a usable Debian mirror', async (t) => {
  // this repository's build hosts are Debian 12 machines (DESIGN); skip gracefully elsewhere
  try {
    const m = await detectDebianMirror();
    t.regex(m.mirror, /^(https?|file):\/\//);
  } catch (e) {
    t.true(e instanceof NoDebianMirrorError);
  }
});

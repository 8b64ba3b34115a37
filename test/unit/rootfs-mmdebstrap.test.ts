import test from 'ava';
import { aptSourceLines, mmdebstrapArgs, shq } from '../../builder/src/rootfs/rootfs.ts';

test('apt source lines: main, updates and security', (t) => {
  t.deepEqual(aptSourceLines({ suite: 'bookworm', mirror: 'file:///srv/m/debian/', securityMirror: 'file:///srv/s/debian-security' }), [
    'deb file:///srv/m/debian bookworm main',
    'deb file:///srv/m/debian bookworm-updates main',
    'deb file:///srv/s/debian-security bookworm-security main',
  ]);
});

test('mmdebstrap args: cache hooks, keep debs, no default PG cluster, excludes', (t) => {
  const args = mmdebstrapArgs(
    {
      arch: 'arm64',
      suite: 'bookworm',
      mirror: 'file:///srv/m/debian',
      packages: ['systemd', 'postgresql-15'],
      outDir: '/x/rootfs',
      aptCacheDir: "/c/apt it's",
    },
    '/x/rootfs.1.partial',
  );
  t.true(args.includes('--architectures=arm64'));
  t.true(args.includes('--include=systemd,postgresql-15'));
  t.true(args.includes('--aptopt=APT::Keep-Downloaded-Packages "true"'));
  t.true(args.includes('--skip=essential/unlink'));
  t.true(args.includes(`--setup-hook=sync-in ${shq("/c/apt it's")} /var/cache/apt/archives/`));
  t.true(args.includes(`--customize-hook=sync-out /var/cache/apt/archives ${shq("/c/apt it's")}`));
  t.true(args.some((a) => a.startsWith('--essential-hook=') && a.includes('create_main_cluster = false')));
  t.true(args.includes('--dpkgopt=path-exclude=/usr/share/doc/*'));
  t.true(args.includes('--dpkgopt=path-include=/usr/share/doc/*/copyright'));
  // sync-out must run before the customize script (which is last) and the suite/target/sources close the line
  t.deepEqual(args.slice(-4, -2), ['bookworm', '/x/rootfs.1.partial']);
  t.is(shq("a'b"), `'a'\\''b'`);
});

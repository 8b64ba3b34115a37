import test from 'ava';
import { aptSourceLines, INITRD_BASE_MODULES, mmdebstrapArgs, shq } from '../../builder/src/rootfs/rootfs.ts';

test('apt source lines: main, updates and security, each with non-free-firmware (a Pi lists raspi-firmware from it)', (t) => {
  t.deepEqual(aptSourceLines({ suite: 'bookworm', mirror: 'file:///srv/m/debian/', securityMirror: 'file:///srv/s/debian-security' }), [
    'deb file:///srv/m/debian bookworm main non-free-firmware',
    'deb file:///srv/m/debian bookworm-updates main non-free-firmware',
    'deb file:///srv/s/debian-security bookworm-security main non-free-firmware',
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

test("the initrd: MODULES=most unless the hardware lists its modules, the root's own modules always, and one build of it", (t) => {
  const base: Parameters<typeof mmdebstrapArgs>[0] = {
    arch: 'arm64',
    suite: 'bookworm',
    mirror: 'file:///srv/m/debian',
    packages: ['systemd'],
    outDir: '/x/rootfs',
    aptCacheDir: '/c',
  };
  const essential = (o: Partial<Parameters<typeof mmdebstrapArgs>[0]>): string =>
    mmdebstrapArgs({ ...base, ...o }, '/x/r').find((a) => a.startsWith('--essential-hook=')) ?? '';
  t.regex(essential({}), /MODULES=most/);
  const listed = essential({ initrdModules: ['dwc3', 'sdhci_iproc'] });
  t.regex(listed, /MODULES=list/);
  t.regex(listed, new RegExp(`for m in ${[...INITRD_BASE_MODULES, 'dwc3', 'sdhci_iproc'].join(' ')}; do`));
  // update-initramfs is a no-op while packages install; customize.sh restores it and builds the initrd once
  t.regex(essential({}), /dpkg-divert --quiet --local --rename --divert \/usr\/sbin\/update-initramfs\.geminik8s --add \/usr\/sbin\/update-initramfs/);
  t.regex(essential({}), /ln -s \/bin\/true "\$1\/usr\/sbin\/update-initramfs"/);
});

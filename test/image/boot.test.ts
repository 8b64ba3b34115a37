/**
 * The image end to end, as a user runs it: build (cold, then unchanged), a build killed midway
 * and resumed, checksums, `init` + `stamp`, and a UEFI boot under QEMU whose serial console
 * must show the agent reading the stamped site and growing the data partition.
 */
import test from 'ava';
import { execa } from 'execa';
import { access, mkdtemp, readdir, readFile, readlink, rm, stat } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { cacheRoot } from '../../builder/src/cli/paths.ts';
import { run } from '../../builder/src/util/exec.ts';
import { bootAndWait, checkFirstBoot, FIRST_BOOT_LINES, stampedDisk } from '../helpers/first-boot.ts';
import { events, geminik8s } from '../helpers/cli.ts';

const ARTIFACT = 'edge-datastore-generic-x86_64-uefi-0.1.0';
const work = await mkdtemp(path.join(os.tmpdir(), 'gk8s-image-'));
const out = path.join(work, 'dist');
const BUILD = ['build', '--profile', 'edge-datastore', '--hardware', 'generic-x86_64-uefi', '--out', out, '--json'];

test.after.always(async () => {
  await rm(work, { recursive: true, force: true });
});

let rootfsKey = '';

function stepResults(stdout: string): Record<string, boolean> {
  return Object.fromEntries(
    events(stdout)
      .filter((e) => e.event === 'step-done')
      .map((e) => [e.id as string, e.cached as boolean]),
  );
}

test.serial('build produces the artifacts, and an unchanged rebuild reuses every step', async (t) => {
  const first = await geminik8s(BUILD);
  t.is(first.exitCode, 0, first.stderr.slice(-3000));
  const plan = events(first.stdout).find((e) => e.event === 'plan') as { steps: { id: string; key: string }[] } | undefined;
  rootfsKey = plan?.steps.find((s) => s.id === 'rootfs')?.key ?? '';
  t.deepEqual((await readdir(path.join(out, ARTIFACT))).sort(), ['SHA256SUMS', 'image.bmap', 'image.raw.zst', 'manifest.json']);
  const sums = await execa('sha256sum', ['-c', 'SHA256SUMS'], { cwd: path.join(out, ARTIFACT), reject: false });
  t.is(sums.exitCode, 0, sums.stdout + sums.stderr);

  const manifest = JSON.parse(await readFile(path.join(out, ARTIFACT, 'manifest.json'), 'utf8')) as {
    components: { name: string; version: string; sha256: string }[];
    packages: { name: string; version: string }[];
  };
  t.deepEqual(manifest.components.map((c) => c.name).sort(), ['geminik8s-agent', 'kine']);
  for (const c of manifest.components) t.regex(c.sha256, /^[0-9a-f]{64}$/, c.name);
  t.true(manifest.packages.some((p) => p.name === 'postgresql-15'));

  const second = await geminik8s(BUILD);
  t.is(second.exitCode, 0, second.stderr.slice(-3000));
  const cached = stepResults(second.stdout);
  t.true(Object.keys(cached).length >= 7);
  t.true(Object.values(cached).every(Boolean), `every step cached: ${JSON.stringify(cached)}`);
});

test.serial('the rootfs follows the appliance policy and its initrd can find root by PARTLABEL', async (t) => {
  t.truthy(rootfsKey, 'the build reported its plan');
  const outDir = path.join(cacheRoot(), 'steps', 'rootfs', rootfsKey, 'rootfs');
  const f = (p: string): string => path.join(outDir, p);
  t.is((await stat(f('etc/machine-id'))).size, 0);
  t.is((await readFile(f('etc/hostname'), 'utf8')).trim(), 'geminik8s');
  t.regex(await readFile(f('etc/hosts'), 'utf8'), /127\.0\.1\.1\tgeminik8s/);
  t.regex(await readFile(f('etc/postgresql-common/createcluster.conf'), 'utf8'), /^create_main_cluster = false$/m);
  t.deepEqual(await readdir(f('etc/postgresql')).catch(() => []), [], 'no default cluster');
  t.is(await readlink(f('etc/systemd/system/postgresql.service')), '/dev/null');
  t.deepEqual(
    (await readdir(f('etc/ssh'))).filter((n) => n.startsWith('ssh_host_')),
    [],
  );
  t.deepEqual(await readdir(f('var/cache/apt/archives')).then((a) => a.filter((n) => n.endsWith('.deb'))), [], 'debs cleaned from the rootfs');
  t.true(
    (await readdir(path.join(cacheRoot(), 'apt-archives'))).some((n) => n.startsWith('postgresql-15_')),
    'debs kept in the shared cache',
  );
  // dpkg path-excludes: no man pages or docs (only dangling alternatives symlinks remain), copyright kept
  t.is(await run('find', [f('usr/share/man'), f('usr/share/locale'), '-type', 'f']), '');
  t.is(await run('find', [f('usr/share/doc'), '-type', 'f', '!', '-name', 'copyright']), '');
  await access(f('usr/share/doc/postgresql-15/copyright'));
  // PostgreSQL JIT (libLLVM) dropped by default
  t.is(await run('find', [f('usr/lib'), '-name', 'libLLVM*']), '');

  const kernels = (await readdir(f('boot'))).filter((n) => n.startsWith('vmlinuz-'));
  t.is(kernels.length, 1);
  const ver = kernels[0]!.slice('vmlinuz-'.length);
  const initrd = await run('chroot', [outDir, 'lsinitramfs', `/boot/initrd.img-${ver}`]);
  for (const needed of [
    'usr/sbin/blkid',
    'systemd-udevd',
    '60-persistent-storage.rules',
    '/ext4.ko',
    '/squashfs.ko',
    '/virtio_blk.ko',
    '/nvme.ko',
    '/ahci.ko',
    '/usb-storage.ko',
    '/uas.ko',
  ]) {
    t.true(initrd.includes(needed), `initrd contains ${needed}`);
  }
  // initramfs-tools resolves root=PARTLABEL=… through blkid
  t.regex(await readFile(f('usr/share/initramfs-tools/scripts/functions'), 'utf8'), /PARTLABEL=\*/);
});

test.serial('a build killed midway leaves nothing that looks complete, and the next run finishes', async (t) => {
  const site = path.join(work, 'killed-site.yaml');
  t.is((await geminik8s(['init', '--out', site, '--site-id', 'kill-test', '--vip', '192.0.2.10/24'])).exitCode, 0);
  const killedOut = path.join(work, 'killed');
  // A new site changes the disk step's key, so the disk step really runs and can be interrupted.
  const child = execa('node', ['bin/geminik8s.js', ...BUILD.map((a) => (a === out ? killedOut : a)), '--site', site], { reject: false });
  let buffer = '';
  await new Promise<void>((resolve) => {
    child.stdout?.on('data', (d: Buffer) => {
      buffer += d.toString();
      if (/"event":"step-start","id":"disk"/.test(buffer)) {
        setTimeout(() => {
          child.kill('SIGKILL');
          resolve();
        }, 1500);
      }
    });
    void child.then(() => resolve());
  });
  await child;
  const left = await readdir(killedOut).catch(() => [] as string[]);
  t.deepEqual(
    left.filter((f) => !f.startsWith('.')),
    [],
    `no visible artifact folder after the kill: ${left.join(', ')}`,
  );

  const resumed = await geminik8s([...BUILD.map((a) => (a === out ? killedOut : a)), '--site', site]);
  t.is(resumed.exitCode, 0, resumed.stderr.slice(-3000));
  const cached = stepResults(resumed.stdout);
  t.true(cached.rootfs && cached.agent && cached.kine, 'steps finished before the kill are reused');
  t.deepEqual(
    (await readdir(killedOut)).filter((f) => !f.startsWith('.')),
    [ARTIFACT],
  );
});

test.serial('a stamped image boots under UEFI and the agent reads the site and grows the data partition', async (t) => {
  const artifact = path.join(out, ARTIFACT);
  const { raw, site } = await stampedDisk(t, artifact, work, 'boot-test-7');
  const first = await bootAndWait(raw, path.join(work, 'boot-1'), [...FIRST_BOOT_LINES, /GEMINIK8S-AGENT: site boot-test-7/]);
  await checkFirstBoot(t, first, artifact, site);

  // Second boot: every first-boot step is idempotent, and the node keeps its identity.
  const second = await bootAndWait(raw, path.join(work, 'boot-2'), [
    /GEMINIK8S-AGENT: data-partition already-grown \d+/,
    /GEMINIK8S-AGENT: data already-grown \d+/,
    /GEMINIK8S-AGENT: ready/,
  ]);
  const nodeId = (text: string) => /geminik8s-agent: started node=([0-9a-f]+)/.exec(text)?.[1];
  t.truthy(nodeId(first));
  t.is(nodeId(second), nodeId(first));
});

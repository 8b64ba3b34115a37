/**
 * The arm64 UEFI image, built on this x86_64 machine (the root under qemu-user, Go and Node
 * components cross-built), stamped and booted under qemu-system-aarch64 (virt, TCG) with Debian's
 * AAVMF firmware: the same first-boot assertions as the x86_64 image (test/image/boot.test.ts).
 * Too slow for `make test` on 2 cores: `make test-arm64`.
 */
import test from 'ava';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { elfArch } from '../../builder/src/components/elf.ts';
import { cacheRoot } from '../../builder/src/cli/paths.ts';
import { INSTALL_PATHS } from '../../builder/src/pipeline/root-tree.ts';
import { events, geminik8s } from '../helpers/cli.ts';
import { recordFigure } from '../helpers/figures.ts';
import { bootImage } from '../helpers/qemu.ts';
import { checkFirstBoot, FIRST_BOOT_LINES, stampedDisk } from '../helpers/first-boot.ts';

const work = await mkdtemp(path.join(os.tmpdir(), 'gk8s-arm64-'));
const out = path.join(work, 'dist');

test.after.always(async () => {
  await rm(work, { recursive: true, force: true });
});

let artifact = '';

test.serial('the arm64 image builds on this x86_64 host, and its manifest records arm64 for every component and package', async (t) => {
  t.timeout(90 * 60_000, 'a cold arm64 build runs its root under qemu-user');
  const started = performance.now();
  const r = await geminik8s(['build', '--profile', 'edge-datastore', '--hardware', 'generic-arm64-uefi', '--out', out, '--json']);
  t.is(r.exitCode, 0, r.stderr.slice(-3000));
  const ev = events(r.stdout);
  const cold = ev.filter((e) => e.event === 'step-done').every((e) => e.cached === false);
  if (cold) await recordFigure('arm64 cold build', (performance.now() - started) / 1000, 's');
  artifact = String(ev.find((e) => e.event === 'done')?.artifactDir);
  t.is(path.basename(artifact), 'edge-datastore-generic-arm64-uefi-0.1.0');
  const manifest = JSON.parse(await readFile(path.join(artifact, 'manifest.json'), 'utf8')) as {
    components: { name: string; arch: string }[];
    packages: { name: string; arch: string }[];
  };
  t.deepEqual(manifest.components.map((c) => `${c.name}:${c.arch}`).sort(), ['geminik8s-agent:arm64', 'kine:arm64']);
  t.deepEqual(
    manifest.packages.filter((p) => p.arch !== 'arm64' && p.arch !== 'all').map((p) => `${p.name}:${p.arch}`),
    [],
    'every Debian package is arm64 or arch-independent',
  );
  for (const needed of ['linux-image-arm64', 'grub-efi-arm64-bin'])
    t.true(
      manifest.packages.some((p) => p.name === needed),
      needed,
    );
  // The binaries themselves, as the image's root holds them (the root tree step's output).
  const rootTreeKey = (ev.find((e) => e.event === 'plan')?.steps as { id: string; key: string }[] | undefined)?.find((s) => s.id === 'rootTree')?.key;
  const tree = path.join(cacheRoot(), 'steps', 'rootTree', String(rootTreeKey), 'tree');
  for (const file of [INSTALL_PATHS.agent, INSTALL_PATHS.kine]) {
    const header = (await readFile(path.join(tree, file))).subarray(0, 20);
    t.is(elfArch(header), 'arm64', file);
  }
});

test.serial('a stamped arm64 image boots in qemu-system-aarch64 under UEFI, and the agent reads the site and grows the data partition', async (t) => {
  t.timeout(45 * 60_000, 'an arm64 boot under TCG');
  t.truthy(artifact, 'the build published its artifact');
  const { raw, site } = await stampedDisk(t, artifact, work, 'arm64-boot-1');
  const started = performance.now();
  const vm = await bootImage(raw, work, { arch: 'arm64' });
  try {
    await vm.waitFor([/GEMINIK8S-AGENT: /], 20 * 60_000);
    await recordFigure('arm64 power-on to the agent first console line (TCG)', (performance.now() - started) / 1000, 's');
    const console = await vm.waitFor([...FIRST_BOOT_LINES, /GEMINIK8S-AGENT: site arm64-boot-1/], 20 * 60_000);
    await checkFirstBoot(t, console, artifact, site);
    t.regex(console, /Linux version \S+-arm64/, 'the arm64 kernel booted');
  } finally {
    await vm.stop();
  }
});

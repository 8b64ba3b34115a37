/**
 * An upgrade on a Raspberry Pi fills the new slot's boot partition from the root it has just
 * written, on a real disk: a Pi image assembled from a stand-in root, attached as a loop device,
 * root-a copied into root-b with a changed boot recipe (as a new version would bring), and the
 * agent's filler run against root-b and boot-b. Needs root and loop devices.
 */
import test from 'ava';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { assembleDiskImage, readGpt, requireTools, toolPath } from '../../builder/src/disk/index.ts';
import { run } from '../../builder/src/util/exec.ts';
import { parseRpiBootRecipe, RPI_BOOT_RECIPE } from '../../firstboot/src/upgrade/core/rpi-boot.ts';
import { fillRpiBootPartition } from '../../firstboot/src/upgrade/rpi-boot-partition.ts';
import { partitionOnDisk } from '../../firstboot/src/upgrade/slot-backend.ts';
import { attachLoop, fakePiRootfs } from '../helpers/fake-disk.ts';

const mtools = { env: { MTOOLS_SKIP_CHECK: '1' } };

test('the agent finds each slot by its GPT name and number; the new root in slot b fills boot-b: a fresh FAT with its own recipe, a cmdline.txt naming root-b; a root without a recipe leaves boot-b alone', async (t) => {
  if (process.getuid?.() !== 0) return t.fail('this test needs root (loop devices, mount)');
  await requireTools(['losetup', 'mount', 'umount', 'mkfs.vfat', 'mkfs.ext4', 'debugfs', 'mcopy', 'mdir', 'dd', 'partx']);
  const dir = await mkdtemp(path.join(tmpdir(), 'gk8s-rpi-boot-'));
  const cleanups: (() => Promise<unknown>)[] = [() => rm(dir, { recursive: true, force: true })];
  t.teardown(async () => {
    for (const c of cleanups.reverse()) await c().catch(() => undefined);
  });
  const recipe = await fakePiRootfs(path.join(dir, 'root'));
  const img = path.join(dir, 'pi.raw');
  await assembleDiskImage({
    arch: 'arm64',
    bootloader: 'rpi-tryboot',
    rootfsDir: path.join(dir, 'root'),
    outFile: img,
    workDir: path.join(dir, 'work'),
    seed: 'pi-upgrade',
    sourceDateEpoch: 1_700_000_000,
    disk: { bootMiB: 48, dataMiB: 16 },
  });
  const gpt = await readGpt(img);
  const part = (name: string) => gpt.partitions.find((p) => p.name === name)!;
  const loop = await attachLoop(img);
  cleanups.push(() => run('losetup', ['-d', loop]));
  const dev = (name: string) => `${loop}p${part(name).index}`;
  // How the agent finds a slot's partitions on the booted disk (lsblk by GPT name, the number from sysfs).
  for (const name of ['boot-a', 'boot-b', 'root-b'])
    t.deepEqual(await partitionOnDisk(loop, name), { path: dev(name), bytes: part(name).sizeBytes, number: part(name).index }, name);
  await t.throwsAsync(partitionOnDisk(loop, 'esp'), { message: `${loop} has no partition named esp` });

  // The new version: root-a's filesystem in root-b, with another config.txt in its recipe.
  await run('dd', [`if=${dev('root-a')}`, `of=${dev('root-b')}`, 'bs=1M', 'status=none', 'conv=fsync']);
  const newRecipe = { ...recipe, configTxt: `${recipe.configTxt}# version 2\n` };
  await writeFile(path.join(dir, 'recipe-v2.json'), JSON.stringify(newRecipe));
  await writeFile(
    path.join(dir, 'debugfs.cmds'),
    `cd /${path.dirname(RPI_BOOT_RECIPE)}\nrm ${path.basename(RPI_BOOT_RECIPE)}\nwrite ${path.join(dir, 'recipe-v2.json')} ${path.basename(RPI_BOOT_RECIPE)}\n`,
  );
  await run(await toolPath('debugfs'), ['-w', '-f', path.join(dir, 'debugfs.cmds'), dev('root-b')]);
  // Whatever boot-b held before (an older kernel) must not survive.
  await run('mkfs.vfat', ['-n', 'OLD', dev('boot-b')]);
  await writeFile(path.join(dir, 'stale'), 'old kernel\n');
  await run(await toolPath('mcopy'), ['-i', dev('boot-b'), path.join(dir, 'stale'), '::/vmlinuz-old'], mtools);

  const written = await fillRpiBootPartition({
    slot: 'b',
    rootDevice: dev('root-b'),
    bootDevice: dev('boot-b'),
    bootBytes: part('boot-b').sizeBytes,
    scratch: dir,
  });
  t.deepEqual(written, [...recipe.files.map((f) => f.to), 'config.txt', 'cmdline.txt']);
  const names = (await run(await toolPath('mdir'), ['-b', '-i', dev('boot-b'), '::/'], mtools))
    .split('\n')
    .filter(Boolean)
    .map((f) => f.replace(/^::\//, ''))
    .sort();
  t.deepEqual(names, [...written].sort(), 'exactly the recipe: nothing left of the old content');
  const read = async (name: string) => {
    const out = path.join(dir, `b-${name}`);
    await run(await toolPath('mcopy'), ['-n', '-i', dev('boot-b'), `::/${name}`, out], mtools);
    return readFile(out, 'utf8');
  };
  t.is(await read('cmdline.txt'), 'root=PARTLABEL=root-b ro rootwait panic=10 console=tty0 console=ttyS1,115200\n');
  t.is(await read('config.txt'), newRecipe.configTxt, "the new root's config.txt, not the running one's");
  t.is(await read('vmlinuz'), 'not really a kernel\n');
  t.regex(await run(await toolPath('mdir'), ['-i', dev('boot-b'), '::/'], mtools), /GK8S-BOOTB/);
  t.deepEqual(parseRpiBootRecipe(JSON.stringify(newRecipe)), newRecipe);

  // A root that is not a Pi root: refused before boot-b is touched.
  await run('mkfs.ext4', ['-q', '-F', dev('root-b')]);
  await t.throwsAsync(
    fillRpiBootPartition({ slot: 'b', rootDevice: dev('root-b'), bootDevice: dev('boot-b'), bootBytes: part('boot-b').sizeBytes, scratch: dir }),
    {
      message: /the new root in slot b has no \/usr\/lib\/geminik8s\/rpi-boot\.json .*: it was not built for a Raspberry Pi/,
    },
  );
  t.is(await read('cmdline.txt'), 'root=PARTLABEL=root-b ro rootwait panic=10 console=tty0 console=ttyS1,115200\n', 'boot-b untouched');
  t.is((await run('findmnt', ['-n', '-o', 'TARGET', '-S', dev('root-b')]).catch(() => '')).trim(), '', 'nothing left mounted');
});

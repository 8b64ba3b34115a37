import test from 'ava';
import { mkdir, mkdtemp, readFile, rm, stat, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { sha256File } from '../../builder/src/util/digest.ts';
import { run } from '../../builder/src/util/exec.ts';
import { fakePiRootfs, fakeRootfs, lookalikeDisk, SMALL_LAYOUT } from '../helpers/fake-disk.ts';
import { parseAutoboot } from '../../firstboot/src/upgrade/core/slots.ts';
import { RPI_DEVICE_TREES, RPI_FIRMWARE_FILES } from '../../image/src/rpi.ts';
import {
  assembleDiskImage,
  deriveDiskIds,
  ImageRefusedError,
  readGpt,
  readSiteFromImage,
  requireTools,
  sfdiskScript,
  stampSite,
  toolPath,
} from '../../builder/src/disk/index.ts';

const EPOCH = 1_700_000_000;
let dir: string;

test.before(async () => {
  // Tools this test uses beyond assembleDiskImage's own (which checks its set itself).
  await requireTools(['sfdisk', 'mdir', 'mcopy', 'debugfs', 'grub-editenv', 'e2fsck', 'mkfs.vfat']);
  dir = await mkdtemp(path.join(tmpdir(), 'gk8s-disk-'));
  await fakeRootfs(path.join(dir, 'rootfs'));
  for (const d of ['.var/upper', '.var/work', 'geminik8s']) await mkdir(path.join(dir, 'skel', d), { recursive: true });
});

test.after.always(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

const assemble = (outFile: string) =>
  assembleDiskImage({
    arch: 'amd64',
    rootfsDir: path.join(dir, 'rootfs'),
    dataSkeletonDir: path.join(dir, 'skel'),
    outFile,
    workDir: path.join(dir, 'work'),
    seed: 'unit-test-seed',
    sourceDateEpoch: EPOCH,
    kernelCmdlineExtra: ['gk8s.test=1'],
  });

test.serial('assembles a GPT image with the expected partitions and filesystems; stamps site.yaml', async (t) => {
  const img = path.join(dir, 'a.raw');
  const started = Date.now();
  const { layout } = await assemble(img);
  t.log(`assemble: ${Date.now() - started} ms, ${layout.totalBytes / 2 ** 20} MiB`);
  t.is((await stat(img)).size, layout.totalBytes);
  t.true((await stat(img)).blocks * 512 < 64 * 2 ** 20, 'image file is sparse');

  const gpt = await readGpt(img);
  t.deepEqual(
    gpt.partitions.map((p) => p.name),
    ['esp', 'root-a', 'root-b', 'oem', 'data'],
  );
  for (const p of layout.partitions) {
    const g = gpt.partitions.find((x) => x.name === p.name)!;
    t.is(g.startSector, p.startSector, `${p.name} start`);
    t.is(g.sizeSectors, p.sizeSectors, `${p.name} size`);
  }
  const off = (name: string) => gpt.partitions.find((p) => p.name === name)!.offsetBytes;

  // ESP: EFI binary, grub.cfg, grubenv with slot=a.
  const mdir = await toolPath('mdir');
  const efiBoot = await run(mdir, ['-b', '-i', `${img}@@${off('esp')}`, '::/EFI/BOOT'], { env: { MTOOLS_SKIP_CHECK: '1' } });
  t.regex(efiBoot, /EFI\/BOOT\/BOOTX64\.EFI/);
  const grubDir = await run(mdir, ['-b', '-i', `${img}@@${off('esp')}`, '::/grub'], { env: { MTOOLS_SKIP_CHECK: '1' } });
  t.regex(grubDir, /grub\.cfg/);
  t.regex(grubDir, /grubenv/);
  const envFile = path.join(dir, 'grubenv');
  await run(await toolPath('mcopy'), ['-n', '-i', `${img}@@${off('esp')}`, '::/grub/grubenv', envFile], { env: { MTOOLS_SKIP_CHECK: '1' } });
  t.is((await stat(envFile)).size, 1024);
  const env = await run(await toolPath('grub-editenv'), [envFile, 'list']);
  t.regex(env, /^slot=a$/m);
  t.regex(env, /^boot_tries=0$/m);
  const cfgFile = path.join(dir, 'grub.cfg');
  await run(await toolPath('mcopy'), ['-n', '-i', `${img}@@${off('esp')}`, '::/grub/grub.cfg', cfgFile], { env: { MTOOLS_SKIP_CHECK: '1' } });
  t.regex(await readFile(cfgFile, 'utf8'), /console=tty0 console=ttyS0,115200 gk8s\.test=1/);
  const label = await run(await toolPath('mdir'), ['-i', `${img}@@${off('esp')}`, '::/'], { env: { MTOOLS_SKIP_CHECK: '1' } });
  t.regex(label, /GK8S-ESP/);

  // root-a: ext4 with the rootfs content, clean, no journal.
  const debugfs = await toolPath('debugfs');
  const rootDev = `${img}?offset=${off('root-a')}`;
  const ls = await run(debugfs, ['-R', 'ls -l /', rootDev]);
  for (const f of ['vmlinuz', 'initrd.img', 'boot', 'etc', 'usr']) t.regex(ls, new RegExp(`\\s${f.replace('.', '\\.')}\\s*$`, 'm'), f);
  t.is(await run(debugfs, ['-R', 'cat /etc/hostname', rootDev]), 'geminik8s');
  const stats = await run(debugfs, ['-R', 'stats', rootDev]);
  t.regex(stats, /Filesystem volume name:\s+root-a$/m);
  t.notRegex(stats, /has_journal/);
  const fsckRoot = await run(await toolPath('e2fsck'), ['-fn', rootDev]);
  t.regex(fsckRoot, /files/);

  // data: ext4 with the skeleton.
  const dataDev = `${img}?offset=${off('data')}`;
  const dataLs = await run(debugfs, ['-R', 'ls /.var', dataDev]);
  t.regex(dataLs, /upper/);
  t.regex(dataLs, /work/);
  t.regex(await run(debugfs, ['-R', 'stats', dataDev]), /Filesystem volume name:\s+gk8s-data$/m);

  // root-b is left as holes.
  const rootB = gpt.partitions.find((p) => p.name === 'root-b')!;
  const fh = await (await import('node:fs/promises')).open(img, 'r');
  try {
    const buf = Buffer.alloc(1024 * 1024);
    await fh.read(buf, 0, buf.length, rootB.offsetBytes);
    t.true(
      buf.every((b) => b === 0),
      'root-b is empty',
    );
  } finally {
    await fh.close();
  }

  // OEM: empty until stamped; stamp, read back, re-stamp (overwrite).
  t.is(await readSiteFromImage(img), undefined);
  const site = path.join(dir, 'site.yaml');
  await writeFile(site, 'apiVersion: geminik8s/v1\nkind: Site\nname: shop-0042\n');
  const s0 = Date.now();
  await stampSite(img, site);
  t.log(`stamp: ${Date.now() - s0} ms`);
  t.is(await readSiteFromImage(img), 'apiVersion: geminik8s/v1\nkind: Site\nname: shop-0042\n');
  await writeFile(site, 'apiVersion: geminik8s/v1\nkind: Site\nname: shop-0043\n');
  await stampSite(img, site);
  t.is(await readSiteFromImage(img), 'apiVersion: geminik8s/v1\nkind: Site\nname: shop-0043\n');
  t.regex(await run(mdir, ['-i', `${img}@@${off('oem')}`, '::/'], { env: { MTOOLS_SKIP_CHECK: '1' } }), /GK8S-OEM/);
  // The rest of the image is untouched by stamping.
  t.regex(await run(debugfs, ['-R', 'cat /etc/hostname', rootDev]), /geminik8s/);
});

test.serial('two assemblies with identical inputs are byte-identical', async (t) => {
  const a = path.join(dir, 'same1.raw');
  const b = path.join(dir, 'same2.raw');
  await assemble(a);
  await new Promise((r) => setTimeout(r, 2100)); // a different wall-clock second (FAT has 2 s resolution)
  await assemble(b);
  t.is(await sha256File(a), await sha256File(b));
  await rm(a);
  await rm(b);
});

test.serial('site file baked in at build time', async (t) => {
  const site = path.join(dir, 'baked.yaml');
  await writeFile(site, 'name: baked\n');
  const img = path.join(dir, 'baked.raw');
  await assembleDiskImage({
    arch: 'amd64',
    rootfsDir: path.join(dir, 'rootfs'),
    siteFile: site,
    outFile: img,
    workDir: path.join(dir, 'work'),
    seed: 's',
    sourceDateEpoch: EPOCH,
  });
  t.is(await readSiteFromImage(img), 'name: baked\n');
  await rm(img);
});

test('stamping something that is not a geminik8s image fails clearly', async (t) => {
  const site = path.join(dir, 'x.yaml');
  await writeFile(site, 'name: x\n');
  // A GPT without an oem partition.
  const noOem = path.join(dir, 'no-oem.raw');
  await writeFile(noOem, '');
  await truncate(noOem, 8 * 2 ** 20);
  await run(await toolPath('sfdisk'), ['--quiet', noOem], { input: 'label: gpt\nstart=2048, size=4096, name="esp"\n' });
  await t.throwsAsync(stampSite(noOem, site), {
    message:
      /not a geminik8s image: .* \(found 1 "esp"\); nothing was written:\n {2}expected 5 partitions, found 1\n[\s\S]*\n {2}partition 2: expected "root-a", found none/,
  });
  await t.throwsAsync(readSiteFromImage(noOem), { message: /partition 4: expected "oem", found none/ });
  // No partition table at all.
  const blank = path.join(dir, 'blank.raw');
  await writeFile(blank, Buffer.alloc(1024 * 1024));
  await t.throwsAsync(stampSite(blank, site), { message: /not a geminik8s image/ });
  // Missing image, missing site file.
  await t.throwsAsync(stampSite(path.join(dir, 'nope.raw'), site), { message: /no such file/ });
  await t.throwsAsync(stampSite(noOem, path.join(dir, 'nope.yaml')), { message: /site file .* does not exist/ });
});

test('stamp refuses a GPT with an oem partition that geminik8s build did not write, and leaves it byte-identical', async (t) => {
  const site = path.join(dir, 'lookalike-site.yaml');
  await writeFile(site, 'name: x\n');
  const layout = SMALL_LAYOUT;
  // Any GPT with a FAT partition named oem (what the old check accepted) ...
  const justOem = path.join(dir, 'just-oem.raw');
  await lookalikeDisk(justOem, `label: gpt\nstart=2048, size=${layout.partitions[3]!.sizeSectors}, type=${layout.partitions[3]!.typeGuid}, name="oem"\n`);
  // ... and a table with our names and type GUIDs in our order whose UUIDs are someone else's.
  const ours = deriveDiskIds('not-ours');
  const foreignIds = { diskGuid: ours.diskGuid, partUuids: { ...deriveDiskIds('other-tool').partUuids } };
  const sameShape = path.join(dir, 'same-shape.raw');
  await lookalikeDisk(sameShape, sfdiskScript(layout, foreignIds));
  for (const [image, found] of [
    [justOem, /found 1 "oem"/],
    [sameShape, /partition UUIDs derived from the disk GUID .* found other UUIDs on esp, root-a, root-b, oem, data/],
  ] as const) {
    const before = await sha256File(image);
    const err = await t.throwsAsync(stampSite(image, site), { instanceOf: ImageRefusedError });
    t.regex(err?.message ?? '', /^not a geminik8s image: /);
    t.regex(err?.message ?? '', found);
    t.is(await sha256File(image), before, `${path.basename(image)} is byte-identical`);
  }
  // The same shape with our UUIDs is accepted: the mark, not the shape, is what is checked.
  const marked = path.join(dir, 'marked.raw');
  await lookalikeDisk(marked, sfdiskScript(layout, ours));
  await stampSite(marked, site);
  t.is(await readSiteFromImage(marked), 'name: x\n');
  for (const f of [justOem, sameShape, marked]) await rm(f);
});

test('assembling a rootfs without /vmlinuz fails before doing any work', async (t) => {
  const root = path.join(dir, 'nokernel');
  await mkdir(path.join(root, 'etc'), { recursive: true });
  await t.throwsAsync(
    assembleDiskImage({
      arch: 'amd64',
      rootfsDir: root,
      outFile: path.join(dir, 'nk.raw'),
      workDir: path.join(dir, 'work'),
      seed: 's',
      sourceDateEpoch: EPOCH,
    }),
    { message: /has no usable \/vmlinuz/ },
  );
});

test.serial(
  "a Raspberry Pi image: autoboot.txt on partition 1 boots boot-a, which holds root-a's recipe: firmware, kernel, initrd, device trees, config.txt, a cmdline.txt naming root-a; stamping works the same",
  async (t) => {
    const root = path.join(dir, 'pi-root');
    const recipe = await fakePiRootfs(root);
    const img = path.join(dir, 'pi.raw');
    const { layout } = await assembleDiskImage({
      arch: 'arm64',
      bootloader: 'rpi-tryboot',
      rootfsDir: root,
      outFile: img,
      workDir: path.join(dir, 'work'),
      seed: 'pi-seed',
      sourceDateEpoch: EPOCH,
      disk: { bootMiB: 16, dataMiB: 16 },
    });
    const gpt = await readGpt(img);
    t.deepEqual(
      gpt.partitions.map((p) => p.name),
      ['autoboot', 'boot-a', 'boot-b', 'root-a', 'root-b', 'oem', 'data'],
    );
    t.is(layout.bootloader, 'rpi-tryboot');
    const off = (name: string) => gpt.partitions.find((p) => p.name === name)!.offsetBytes;
    const mtools = { env: { MTOOLS_SKIP_CHECK: '1' } };
    const read = async (part: string, file: string) => {
      const out = path.join(dir, `pi-${part}-${file}`);
      await run(await toolPath('mcopy'), ['-n', '-i', `${img}@@${off(part)}`, `::/${file}`, out], mtools);
      return readFile(out, 'utf8');
    };
    const parts = parseAutoboot(await read('autoboot', 'autoboot.txt'));
    t.deepEqual(parts, { all: 2, tryboot: 2 }, 'boot-a (partition 2) normally and on a stray tryboot');
    const files = (await run(await toolPath('mdir'), ['-b', '-i', `${img}@@${off('boot-a')}`, '::/'], mtools))
      .split('\n')
      .filter(Boolean)
      .map((f) => f.replace(/^::\//, ''))
      .sort();
    t.deepEqual(files, [...RPI_FIRMWARE_FILES, RPI_DEVICE_TREES.pi4, 'cmdline.txt', 'config.txt', 'initrd.img', 'vmlinuz'].sort());
    t.is(await read('boot-a', 'vmlinuz'), 'not really a kernel\n');
    t.is(await read('boot-a', 'cmdline.txt'), 'root=PARTLABEL=root-a ro rootwait panic=10 console=tty0 console=ttyS1,115200\n');
    t.is(await read('boot-a', 'config.txt'), recipe.configTxt);
    t.regex(await run(await toolPath('mdir'), ['-i', `${img}@@${off('boot-a')}`, '::/'], mtools), /GK8S-BOOTA/);

    const site = path.join(dir, 'pi-site.yaml');
    await writeFile(site, 'apiVersion: geminik8s/v1\nkind: Site\nname: shop-pi\n');
    await stampSite(img, site);
    t.is(await readSiteFromImage(img), 'apiVersion: geminik8s/v1\nkind: Site\nname: shop-pi\n');
  },
);

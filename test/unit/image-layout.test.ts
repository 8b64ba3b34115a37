import test from 'ava';
import {
  computeLayout,
  deriveDiskIds,
  deriveUuid,
  deriveVolumeId,
  fatSizeFor,
  GPT_TYPE,
  layoutMismatches,
  MiB,
  rootSlotMiB,
  sfdiskScript,
} from '../../image/src/layout.ts';
import { kernelCmdline, loadGrubTemplates, renderEarlyCfg, renderGrubCfg } from '../../image/src/grub.ts';

const NAMES = ['esp', 'root-a', 'root-b', 'oem', 'data'];

for (const sectorSize of [512, 4096] as const) {
  test(`layout (${sectorSize}-byte sectors): order, 1 MiB alignment, no overlaps, data last, backup GPT room`, (t) => {
    const l = computeLayout({ rootBytes: 700 * MiB, espMiB: 64, oemMiB: 32, dataMiB: 256, sectorSize });
    t.deepEqual(
      l.partitions.map((p) => p.name),
      NAMES,
    );
    t.deepEqual(
      l.partitions.map((p) => p.index),
      [1, 2, 3, 4, 5],
    );
    const align = MiB / sectorSize;
    t.is(l.alignSectors, align);
    // The primary GPT lives before the first partition.
    t.is(l.partitions[0]!.startSector, align);
    let prevEnd = -1;
    for (const p of l.partitions) {
      t.is(p.startSector % align, 0, `${p.name} start aligned`);
      t.is(p.sizeSectors % align, 0, `${p.name} size aligned`);
      t.true(p.startSector > prevEnd, `${p.name} does not overlap its predecessor`);
      t.is(p.endSector, p.startSector + p.sizeSectors - 1);
      t.is(p.offsetBytes, p.startSector * sectorSize);
      t.is(p.sizeBytes, p.sizeSectors * sectorSize);
      prevEnd = p.endSector;
    }
    const [esp, a, b, oem, data] = l.partitions;
    t.is(esp!.sizeBytes, 64 * MiB);
    t.is(oem!.sizeBytes, 32 * MiB);
    t.is(data!.sizeBytes, 256 * MiB);
    t.is(a!.sizeSectors, b!.sizeSectors, 'root-b is the same size as root-a');
    t.is(a!.typeGuid, GPT_TYPE.rootAmd64);
    t.is(esp!.typeGuid, GPT_TYPE.esp);
    t.is(oem!.typeGuid, GPT_TYPE.basicData);
    t.is(data!.name, 'data');
    t.is(Math.max(...l.partitions.map((p) => p.endSector)), data!.endSector, 'data is last');
    // Backup GPT: header + 128*128-byte entries must fit after the last partition.
    const backupSectors = 1 + Math.ceil((128 * 128) / sectorSize);
    t.true(l.totalSectors - 1 - data!.endSector >= backupSectors);
    t.is(l.totalBytes, l.totalSectors * sectorSize);
    t.is(l.totalBytes % MiB, 0);
  });
}

test('root slot = rootfs + 15% headroom rounded up to MiB, with a minimum', (t) => {
  t.is(rootSlotMiB(700 * MiB), Math.ceil(700 * 1.15));
  t.is(rootSlotMiB(1000 * MiB), 1150);
  t.is(rootSlotMiB(1000 * MiB + 1), 1151);
  t.is(rootSlotMiB(10 * MiB), 256, 'minimum');
  t.is(rootSlotMiB(0), 256);
  t.is(rootSlotMiB(100 * MiB, 0.15, 64), 115);
  const l = computeLayout({ rootBytes: 1000 * MiB });
  t.is(l.partitions[1]!.sizeBytes, 1150 * MiB);
  t.throws(() => rootSlotMiB(-1));
});

test('defaults, arm64 root type and argument checks', (t) => {
  const l = computeLayout({ rootBytes: 0, arch: 'arm64' });
  t.is(l.arch, 'arm64');
  t.is(l.partitions[1]!.typeGuid, GPT_TYPE.rootArm64);
  t.is(l.partitions[0]!.sizeBytes, 64 * MiB);
  t.is(l.partitions[3]!.sizeBytes, 32 * MiB);
  t.is(l.partitions[4]!.sizeBytes, 256 * MiB);
  t.throws(() => computeLayout({ rootBytes: 0, dataMiB: 0 }), { instanceOf: RangeError });
  t.throws(() => computeLayout({ rootBytes: 0, espMiB: 1.5 }), { instanceOf: RangeError });
  t.throws(() => computeLayout({ rootBytes: 0, sectorSize: 1024 as 512 }), { instanceOf: RangeError });
  t.is(fatSizeFor(64), 32);
  t.is(fatSizeFor(32), 16);
});

test('derived identifiers are stable, distinct per purpose and well-formed', (t) => {
  const ids = deriveDiskIds('seed-1');
  t.deepEqual(deriveDiskIds('seed-1'), ids);
  t.notDeepEqual(deriveDiskIds('seed-2'), ids);
  const all = [ids.diskGuid, ...Object.values(ids.partUuids)];
  t.is(new Set(all).size, all.length);
  for (const g of all) t.regex(g, /^[0-9A-F]{8}-[0-9A-F]{4}-4[0-9A-F]{3}-[89AB][0-9A-F]{3}-[0-9A-F]{12}$/);
  t.is(deriveUuid('x', 'y'), deriveUuid('x', 'y'));
  t.regex(deriveVolumeId('x', 'esp'), /^[0-9a-f]{8}$/);
  t.not(deriveVolumeId('x', 'esp'), deriveVolumeId('x', 'oem'));
});

test('a table is ours only with our names, types and the UUIDs derived from its disk GUID', (t) => {
  const ids = deriveDiskIds('seed-1');
  const table = (arch: 'amd64' | 'arm64') =>
    computeLayout({ rootBytes: 0, arch }).partitions.map((p) => ({
      index: p.index,
      name: p.name as string,
      typeGuid: p.typeGuid,
      uuid: ids.partUuids[p.name].toLowerCase(),
    }));
  t.deepEqual(layoutMismatches(ids.diskGuid, table('amd64')), []);
  t.deepEqual(layoutMismatches(ids.diskGuid.toLowerCase(), table('arm64')), [], 'either arch, any case');
  const cases: [string, ReturnType<typeof table>, string, RegExp][] = [
    ['another disk GUID', table('amd64'), deriveDiskIds('seed-2').diskGuid, /found other UUIDs on esp, root-a, root-b, oem, data/],
    ['no disk GUID', table('amd64'), '', /disk GUID none/],
    [
      'a renamed partition',
      table('amd64').map((p) => (p.index === 4 ? { ...p, name: 'OEM' } : p)),
      ids.diskGuid,
      /^partition 4: expected the name "oem", found "OEM"$/,
    ],
    [
      'a wrong type',
      table('amd64').map((p) => (p.index === 4 ? { ...p, typeGuid: GPT_TYPE.linuxData } : p)),
      ids.diskGuid,
      /^partition 4 \(oem\): expected the type EBD0A0A2-.*, found 0FC63DAF-/,
    ],
    ['a missing partition', table('amd64').slice(0, 4), ids.diskGuid, /^partition 5: expected "data", found none$/],
    [
      'an extra partition',
      [...table('amd64'), { index: 6, name: 'x', typeGuid: GPT_TYPE.linuxData, uuid: '' }],
      ids.diskGuid,
      /^expected 5 partitions, found 6$/,
    ],
  ];
  for (const [what, found, diskGuid, expected] of cases) {
    const problems = layoutMismatches(diskGuid, found);
    t.true(
      problems.some((p) => expected.test(p)),
      `${what}: ${problems.join(' | ')}`,
    );
  }
});

test('sfdisk script text', (t) => {
  const l = computeLayout({ rootBytes: 300 * MiB, espMiB: 64, oemMiB: 32, dataMiB: 256 });
  const ids = deriveDiskIds('s');
  const script = sfdiskScript(l, ids);
  const lines = script.trimEnd().split('\n');
  t.deepEqual(lines.slice(0, 5), ['label: gpt', `label-id: ${ids.diskGuid}`, 'unit: sectors', 'first-lba: 2048', 'sector-size: 512']);
  const parts = lines.slice(6);
  t.is(parts.length, 5);
  t.is(parts[0], `start=2048, size=131072, type=${GPT_TYPE.esp}, uuid=${ids.partUuids.esp}, name="esp"`);
  const rootSectors = Math.ceil(300 * 1.15) * 2048;
  t.is(parts[1], `start=133120, size=${rootSectors}, type=${GPT_TYPE.rootAmd64}, uuid=${ids.partUuids['root-a']}, name="root-a"`);
  t.is(parts[2], `start=${133120 + rootSectors}, size=${rootSectors}, type=${GPT_TYPE.rootAmd64}, uuid=${ids.partUuids['root-b']}, name="root-b"`);
  t.regex(parts[3]!, /name="oem"$/);
  t.regex(parts[4]!, /^start=\d+, size=524288, .*name="data"$/);
  t.true(script.endsWith('\n'));
  t.throws(() => sfdiskScript(l, { ...ids, diskGuid: 'nope' }), { message: /diskGuid: not a GUID/ });
});

test('grub.cfg: slot selection chain, cmdline, serial, env whitelist', (t) => {
  const { grubCfg, earlyCfg } = loadGrubTemplates();
  const cfg = renderGrubCfg(grubCfg, { arch: 'amd64', cmdlineExtra: ['quiet', 'gk8s.debug=1'], maxTries: 3 });
  t.regex(cfg, /^set timeout=1$/m);
  t.regex(cfg, /serial --unit=0 --speed=115200/);
  t.regex(cfg, /terminal_input serial console/);
  t.regex(cfg, /load_env --file "\$gk8s_env" slot try_slot boot_tries/);
  t.regex(cfg, /linux \/vmlinuz root=PARTLABEL=\$gk8s_label ro rootwait panic=10 console=tty0 console=ttyS0,115200 quiet gk8s\.debug=1$/m);
  t.regex(cfg, /initrd \/initrd\.img/);
  t.regex(cfg, /set root="\$gk8s_disk,gpt2"\n\s+set gk8s_label="root-a"/);
  t.regex(cfg, /set root="\$gk8s_disk,gpt3"\n\s+set gk8s_label="root-b"/);
  // 3 -> 2 -> 1 -> 0 as an if-chain, then exhaustion clears try_slot.
  t.regex(cfg, /if \[ "\$boot_tries" = "3" \]; then\n\s+set boot_tries=2/);
  t.regex(cfg, /elif \[ "\$boot_tries" = "2" \]; then\n\s+set boot_tries=1/);
  t.regex(cfg, /elif \[ "\$boot_tries" = "1" \]; then\n\s+set boot_tries=0/);
  t.notRegex(cfg, /"\$boot_tries" = "4"/);
  t.regex(cfg, /else\n.*\n\s+set try_slot=\n\s+set boot_tries=0\n\s+fi\n\s+save_env --file "\$gk8s_env" try_slot boot_tries/);
  t.regex(cfg, /set fallback=1/);
  t.notRegex(cfg, /\{\{|\}\}/, 'no unrendered handlebars');
  const noSerial = renderGrubCfg(grubCfg, { arch: 'amd64', serial: null });
  t.notRegex(noSerial, /serial --unit/);
  t.regex(renderGrubCfg(grubCfg, { arch: 'arm64' }), /console=tty0 console=ttyAMA0,115200/);

  const early = renderEarlyCfg(earlyCfg, 'amd64');
  t.notRegex(early, /^\s*#/m, 'comments stripped (rescue parser)');
  t.notRegex(early, /^\s*(if|elif|fi)\b/m, 'rescue parser has no conditionals');
  t.regex(early, /regexp --set=1:gk8s_esp .* "\$cmdpath"/);
  t.regex(early, /configfile "\(\$gk8s_esp\)\/grub\/grub\.cfg"/);
  t.regex(early, /search --no-floppy --label --set=gk8s_esp GK8S-ESP/);
});

test('kernel command line words are checked', (t) => {
  t.is(kernelCmdline({ arch: 'amd64' }), 'ro rootwait panic=10 console=tty0 console=ttyS0,115200');
  t.is(kernelCmdline({ arch: 'amd64', consoles: ['ttyS1,9600'], cmdlineExtra: ['a=b'] }), 'ro rootwait panic=10 console=ttyS1,9600 a=b');
  for (const bad of ['a b', '$x', 'x;reboot', '"q"', '', 'a\nb', '{x}']) {
    t.throws(() => kernelCmdline({ arch: 'amd64', cmdlineExtra: [bad] }), { message: /not allowed/ }, JSON.stringify(bad));
  }
});

test('rpi-tryboot: autoboot first, a FAT boot partition per slot, the root slots, oem, and data last; stamp tells the scheme by partition 1', (t) => {
  const l = computeLayout({ rootBytes: 700 * MiB, arch: 'arm64', bootloader: 'rpi-tryboot', bootMiB: 128 });
  t.is(l.bootloader, 'rpi-tryboot');
  t.deepEqual(
    l.partitions.map((p) => [p.index, p.name, p.fs]),
    [
      [1, 'autoboot', 'vfat'],
      [2, 'boot-a', 'vfat'],
      [3, 'boot-b', 'none'],
      [4, 'root-a', 'ext4'],
      [5, 'root-b', 'none'],
      [6, 'oem', 'vfat'],
      [7, 'data', 'ext4'],
    ],
  );
  // The Pi 4 bootloader finds its FAT partitions among basic-data (or EFI) GPT entries.
  for (const name of ['autoboot', 'boot-a', 'boot-b']) t.is(l.partitions.find((p) => p.name === name)?.typeGuid, GPT_TYPE.basicData, name);
  t.is(l.partitions.find((p) => p.name === 'root-a')?.typeGuid, GPT_TYPE.rootArm64);
  t.is(l.partitions.find((p) => p.name === 'boot-a')?.sizeBytes, 128 * MiB);
  for (const [a, b] of l.partitions.slice(1).map((p, i) => [l.partitions[i]!, p] as const)) t.is(b.startSector, a.endSector + 1);
  t.throws(() => computeLayout({ rootBytes: 0, bootloader: 'rpi-tryboot', bootMiB: 4 }), { message: /bootMiB must be >= 8/ });

  const ids = deriveDiskIds('seed-pi');
  const found = l.partitions.map((p) => ({ index: p.index, name: p.name as string, typeGuid: p.typeGuid, uuid: ids.partUuids[p.name] }));
  t.deepEqual(layoutMismatches(ids.diskGuid, found), []);
  const asGrub = found.map((p) => (p.index === 1 ? { ...p, name: 'esp' } : p));
  t.true(layoutMismatches(ids.diskGuid, asGrub).some((p) => /partition 2: expected the name "root-a", found "boot-a"/.test(p)));
  t.regex(sfdiskScript(l, ids), /name="autoboot"\n.*name="boot-a"\n.*name="boot-b"\n.*name="root-a"/);
});

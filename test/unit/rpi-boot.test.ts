import test from 'ava';
import { cmdlineTxt, parseRpiBootRecipe, RPI_BOOT_RECIPE, rpiBootPartition } from '../../firstboot/src/upgrade/core/rpi-boot.ts';
import { GRUB_PATHS, TRYBOOT_PATHS } from '../../firstboot/src/upgrade/slot-backend.ts';
import { BOOT_STATE_MOUNT } from '../../image/src/layout.ts';
import { RPI_DEVICE_TREES, rpiBootRecipe, rpiConfigTxt } from '../../image/src/rpi.ts';

const FACTS = {
  kernel: 'boot/vmlinuz-6.1.0-40-arm64',
  initrd: 'boot/initrd.img-6.1.0-40-arm64',
  deviceTreeDir: 'usr/lib/linux-image-6.1.0-40-arm64',
  deviceTrees: [RPI_DEVICE_TREES.pi4, RPI_DEVICE_TREES.pi400],
  firmware: ['start4.elf', 'fixup4.dat', 'start.elf', 'fixup.dat'],
};
const KERNEL = { consoles: ['tty0', 'ttyS1,115200'], cmdlineExtra: ['quiet'] };

test("a Pi root's boot recipe: the Pi 4 firmware, the kernel and initrd under fixed names, the board device trees it has, config.txt", (t) => {
  const r = rpiBootRecipe(FACTS, KERNEL);
  t.deepEqual(r.files, [
    { from: 'usr/lib/raspi-firmware/start4.elf', to: 'start4.elf' },
    { from: 'usr/lib/raspi-firmware/fixup4.dat', to: 'fixup4.dat' },
    { from: 'usr/lib/raspi-firmware/start.elf', to: 'start.elf' },
    { from: 'usr/lib/raspi-firmware/fixup.dat', to: 'fixup.dat' },
    { from: 'boot/vmlinuz-6.1.0-40-arm64', to: 'vmlinuz' },
    { from: 'boot/initrd.img-6.1.0-40-arm64', to: 'initrd.img' },
    { from: 'usr/lib/linux-image-6.1.0-40-arm64/broadcom/bcm2711-rpi-4-b.dtb', to: 'bcm2711-rpi-4-b.dtb' },
    { from: 'usr/lib/linux-image-6.1.0-40-arm64/broadcom/bcm2711-rpi-400.dtb', to: 'bcm2711-rpi-400.dtb' },
  ]);
  t.deepEqual(r.cmdline, ['ro', 'rootwait', 'panic=10', 'console=tty0', 'console=ttyS1,115200', 'quiet']);
  t.is(r.configTxt, rpiConfigTxt({ cm4: false }));
  t.notRegex(r.configTxt, /\[cm4\]/, 'no CM4 section without its device tree');
  t.regex(
    rpiBootRecipe({ ...FACTS, deviceTrees: [...FACTS.deviceTrees, RPI_DEVICE_TREES.cm4] }, KERNEL).configTxt,
    /^\[cm4\]\ndevice_tree=bcm2711-rpi-cm4-io\.dtb\n\[all\]$/m,
  );
  // The recipe the builder writes is one the agent accepts.
  t.deepEqual(parseRpiBootRecipe(JSON.stringify(r)), r);
});

test('a root without the firmware or the Pi 4 device tree cannot make a boot recipe, and says which package to list', (t) => {
  t.throws(() => rpiBootRecipe({ ...FACTS, firmware: ['start.elf', 'fixup.dat'] }, KERNEL), {
    message: /no start4\.elf, fixup4\.dat in \/usr\/lib\/raspi-firmware: list raspi-firmware/,
  });
  t.throws(() => rpiBootRecipe({ ...FACTS, deviceTrees: [] }, KERNEL), {
    message: /no bcm2711-rpi-4-b\.dtb in \/usr\/lib\/linux-image-6\.1\.0-40-arm64\/broadcom/,
  });
});

test("config.txt, as the Pi firmware documents it: 64-bit, the kernel and initrd by name (initramfs takes no '='), the cmdline file, the UART", (t) => {
  const lines = rpiConfigTxt({ cm4: false }).split('\n');
  for (const l of ['[all]', 'arm_64bit=1', 'kernel=vmlinuz', 'initramfs initrd.img followkernel', 'cmdline=cmdline.txt', 'enable_uart=1', 'upstream_kernel=1'])
    t.true(lines.includes(l), l);
  for (const l of lines.filter((x) => x !== '' && !x.startsWith('#')))
    t.regex(l, /^(\[[a-z0-9]+\]|[a-z_0-9]+=\S+|initramfs \S+ followkernel)$/, `${l}: a filter, name=value, or the initramfs line`);
});

test("each slot's boot partition names its own root in cmdline.txt, one line; config.txt is the same in both", (t) => {
  const r = rpiBootRecipe(FACTS, KERNEL);
  t.is(cmdlineTxt(r, 'a'), 'root=PARTLABEL=root-a ro rootwait panic=10 console=tty0 console=ttyS1,115200 quiet\n');
  const [a, b] = [rpiBootPartition(r, 'a'), rpiBootPartition(r, 'b')];
  t.deepEqual(a.copies, b.copies);
  t.is(a.written.find((w) => w.name === 'config.txt')?.content, b.written.find((w) => w.name === 'config.txt')?.content);
  t.regex(b.written.find((w) => w.name === 'cmdline.txt')?.content ?? '', /^root=PARTLABEL=root-b [^\n]*\n$/);
});

test('a recipe from a new root is refused when it names files outside the root, paths on the boot partition, a name twice, or a root of its own', (t) => {
  const good = rpiBootRecipe(FACTS, KERNEL);
  const refused = (change: (r: typeof good) => unknown, message: RegExp) =>
    t.throws(() => parseRpiBootRecipe(JSON.stringify(change(structuredClone(good)))), { message }, String(message));
  refused((r) => ({ ...r, files: [{ from: '/etc/shadow', to: 'x' }] }), /files\[0\]\.from: expected a relative path inside the root/);
  refused((r) => ({ ...r, files: [{ from: 'boot/../../etc/shadow', to: 'x' }] }), /files\[0\]\.from/);
  refused((r) => ({ ...r, files: [{ from: 'boot/vmlinuz', to: 'overlays/x' }] }), /files\[0\]\.to: expected a plain file name/);
  refused((r) => ({ ...r, files: [...r.files, { from: 'boot/x', to: 'VMLINUZ' }] }), /VMLINUZ twice \(FAT names ignore case\)/);
  refused((r) => ({ ...r, files: [...r.files, { from: 'boot/x', to: 'cmdline.txt' }] }), /cmdline\.txt is written from the recipe/);
  refused((r) => ({ ...r, cmdline: [...r.cmdline, 'root=/dev/sda2'] }), /without root=/);
  refused((r) => ({ ...r, cmdline: ['a b'] }), /without spaces/);
  refused((r) => ({ ...r, configTxt: '' }), /"configTxt"/);
  t.throws(() => parseRpiBootRecipe('{'), { message: new RegExp(`^${RPI_BOOT_RECIPE}: not JSON`) });
});

test("the agent reads each bootloader's A/B state where the image's fstab mounts its partition", (t) => {
  t.true(GRUB_PATHS.grubenv.startsWith(`${BOOT_STATE_MOUNT['grub-efi'].mountPoint}/`));
  t.true(TRYBOOT_PATHS.autoboot.startsWith(`${BOOT_STATE_MOUNT['rpi-tryboot'].mountPoint}/`));
  t.is(BOOT_STATE_MOUNT['rpi-tryboot'].partition, 'autoboot');
});

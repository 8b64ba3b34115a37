import test from 'ava';
import { mountsUnder } from '../../builder/src/util/mounts.ts';

test('mounts left inside a killed build folder are found deepest first, blanks unescaped', (t) => {
  const procMounts = [
    'proc /tmp/c/.tmp-k/rootfs/proc proc rw 0 0',
    'sysfs /tmp/c/.tmp-k/rootfs/sys sysfs ro 0 0',
    'devpts /tmp/c/.tmp-k/rootfs/dev/pts devpts rw 0 0',
    'tmpfs /tmp/c/.tmp-k2/x tmpfs rw 0 0',
    'tmpfs /tmp/c/.tmp-k/with\\040blank tmpfs rw 0 0',
    'proc /proc proc rw 0 0',
  ].join('\n');
  t.deepEqual(mountsUnder(procMounts, '/tmp/c/.tmp-k'), [
    '/tmp/c/.tmp-k/rootfs/dev/pts',
    '/tmp/c/.tmp-k/rootfs/proc',
    '/tmp/c/.tmp-k/rootfs/sys',
    '/tmp/c/.tmp-k/with blank',
  ]);
});

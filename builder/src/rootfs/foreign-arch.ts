/** Running foreign-architecture chroots (arm64 on an x86_64 host) through qemu-user-static + binfmt_misc. */
import { access, readFile } from 'node:fs/promises';
import { hasCommand, run } from '../util/exec.ts';

export type DebianArch = 'amd64' | 'arm64';

const QEMU_NAME: Record<DebianArch, string> = { amd64: 'x86_64', arm64: 'aarch64' };

export function hostDebianArch(): DebianArch | undefined {
  return process.arch === 'x64' ? 'amd64' : process.arch === 'arm64' ? 'arm64' : undefined;
}

const exists = (p: string): Promise<boolean> =>
  access(p).then(
    () => true,
    () => false,
  );

const BINFMT = '/proc/sys/fs/binfmt_misc';

/**
 * Makes sure binaries of `arch` can run in a chroot on this host. Native: nothing to do.
 * Foreign: needs qemu-user-static (static interpreter, registered with the F flag so it
 * works inside a chroot) — mounts binfmt_misc if needed and enables the qemu handler.
 * Throws an error naming the missing package.
 */
export async function ensureForeignArchSupport(arch: DebianArch): Promise<'native' | 'qemu'> {
  if (hostDebianArch() === arch) return 'native';
  const q = QEMU_NAME[arch];
  if (!(await exists(`/usr/bin/qemu-${q}-static`))) {
    throw new Error(
      `building an ${arch} rootfs on this ${process.arch} host needs qemu-user-static (missing /usr/bin/qemu-${q}-static): apt-get install qemu-user-static binfmt-support`,
    );
  }
  if (!(await exists(`${BINFMT}/status`))) {
    await run('mount', ['-t', 'binfmt_misc', 'binfmt_misc', BINFMT]).catch((e: unknown) => {
      throw new Error(`cannot mount binfmt_misc at ${BINFMT} (needed for ${arch} emulation): ${(e as Error).message}`);
    });
  }
  const handler = `${BINFMT}/qemu-${q}`;
  const enabled = async (): Promise<boolean> => (await exists(handler)) && (await readFile(handler, 'utf8')).startsWith('enabled');
  if (!(await enabled())) {
    if (!(await hasCommand('update-binfmts'))) {
      throw new Error(`binfmt handler qemu-${q} is not registered and update-binfmts is missing: apt-get install binfmt-support qemu-user-static`);
    }
    await run('update-binfmts', ['--enable', `qemu-${q}`]);
    if (!(await enabled())) throw new Error(`update-binfmts --enable qemu-${q} did not register ${handler}; reinstall qemu-user-static`);
  }
  const flags = (await readFile(handler, 'utf8')).match(/^flags:\s*(\S*)/m)?.[1] ?? '';
  if (!flags.includes('F')) {
    throw new Error(
      `binfmt handler qemu-${q} lacks the F (fix-binary) flag, so it cannot run inside a chroot; use the qemu-user-static package's registration`,
    );
  }
  // mmdebstrap refuses a foreign architecture without arch-test ("install arch-test for foreign
  // architecture support", after its setup): asked for here, before mmdebstrap starts. It also proves the
  // emulation end to end.
  if (!(await hasCommand('arch-test'))) throw new Error(`building an ${arch} rootfs on this ${process.arch} host needs arch-test: apt-get install arch-test`);
  const out = await run('arch-test', [arch]).catch((e: unknown) => String((e as Error).message));
  if (!/: ok/.test(out)) throw new Error(`arch-test ${arch} failed after enabling qemu-${q}: ${out}`);
  return 'qemu';
}

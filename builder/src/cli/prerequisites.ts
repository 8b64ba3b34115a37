import { hasCommand } from '../util/exec.ts';
import { CliError, EXIT } from './exit-codes.ts';

/** Host tools a build runs, with the Debian package that provides each. */
const BUILD_TOOLS: [tool: string, pkg: string][] = [
  ['mmdebstrap', 'mmdebstrap'],
  ['sfdisk', 'fdisk'],
  ['mkfs.ext4', 'e2fsprogs'],
  ['mkfs.vfat', 'dosfstools'],
  ['mcopy', 'mtools'],
  ['grub-mkstandalone', 'grub-common grub-efi-amd64-bin'],
  ['grub-editenv', 'grub-common'],
  ['zstd', 'zstd'],
  ['bmaptool', 'bmap-tools'],
  ['go', 'golang (Go >= 1.22)'],
  ['systemctl', 'systemd'],
];

export async function checkBuildHost(): Promise<void> {
  if (process.getuid?.() !== 0) {
    throw new CliError('build must run as root: mmdebstrap installs packages into a chroot (try `sudo make image`)', EXIT.missingPrerequisite);
  }
  const missing: string[] = [];
  for (const [tool, pkg] of BUILD_TOOLS) if (!(await hasCommand(tool))) missing.push(`${tool} (apt-get install ${pkg})`);
  if (missing.length) throw new CliError(`missing build tools:\n  ${missing.join('\n  ')}\n\`make deps\` installs them all`, EXIT.missingPrerequisite);
}

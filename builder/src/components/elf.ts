/**
 * Which architecture an executable is for, from its ELF header: elfArch and elfArchMismatch are
 * pure (the bytes are given), executableArchMismatch reads them from a file. A component that
 * reaches the image is checked against the image's arch, so a binary put in the wrong
 * artifacts/<arch>/ folder fails the build instead of the boot.
 */
import { open } from 'node:fs/promises';
import type { ComponentArch } from './resolve.ts';

/** Bytes of the ELF header this needs: e_ident (16), e_type (2), e_machine (2). */
export const ELF_HEADER_BYTES = 20;

const MACHINES: Record<number, string> = {
  3: 'i386',
  40: 'arm (32-bit)',
  62: 'amd64',
  183: 'arm64',
  243: 'riscv',
};

/** The arch an ELF file is built for (a Debian arch name where we build for it), or undefined when `header` is no ELF. */
export function elfArch(header: Uint8Array): string | undefined {
  if (header.length < ELF_HEADER_BYTES || header[0] !== 0x7f || header[1] !== 0x45 || header[2] !== 0x4c || header[3] !== 0x46) return undefined;
  const littleEndian = header[5] === 1;
  const machine = littleEndian ? header[18]! | (header[19]! << 8) : (header[18]! << 8) | header[19]!;
  const name = MACHINES[machine] ?? `ELF machine 0x${machine.toString(16)}`;
  // Debian's amd64 and arm64 are little-endian: a big-endian aarch64 file is not arm64.
  return littleEndian ? name : `${name} (big-endian)`;
}

/** Why an executable cannot run on `arch`, or undefined when it can (or is no ELF: a script runs anywhere). */
export function elfArchMismatch(header: Uint8Array, arch: ComponentArch): string | undefined {
  const found = elfArch(header);
  return found === undefined || found === arch ? undefined : `expected an ${arch} executable, the file is built for ${found}`;
}

/** elfArchMismatch of a file on disk. */
export async function executableArchMismatch(path: string, arch: ComponentArch): Promise<string | undefined> {
  const file = await open(path, 'r');
  try {
    const header = new Uint8Array(ELF_HEADER_BYTES);
    const { bytesRead } = await file.read(header, 0, ELF_HEADER_BYTES, 0);
    return elfArchMismatch(header.subarray(0, bytesRead), arch);
  } finally {
    await file.close();
  }
}

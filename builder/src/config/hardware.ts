import type { FromSchema } from 'json-schema-to-ts';
import { architectures, debianPackageList, name } from './schema-parts.ts';

export const hardwareSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['apiVersion', 'kind', 'name', 'description', 'arch', 'firmware', 'bootloader', 'console', 'kernel', 'disk'],
  properties: {
    apiVersion: { const: 'geminik8s/v1' },
    kind: { const: 'Hardware' },
    name,
    description: { type: 'string', minLength: 1 },
    arch: { enum: [...architectures] },
    firmware: { enum: ['uefi', 'rpi'], description: 'uefi (any UEFI machine) or rpi (the Raspberry Pi 4 EEPROM bootloader)' },
    bootloader: {
      enum: ['grub-efi', 'rpi-tryboot'],
      description: "grub-efi (UEFI firmware) or rpi-tryboot (a Raspberry Pi's autoboot.txt with tryboot_a_b)",
    },
    console: { type: 'string', pattern: '^tty[A-Za-z]+[0-9]+(,[0-9]+)?$', description: 'a kernel console like "ttyS0,115200"' },
    kernel: {
      type: 'object',
      additionalProperties: false,
      required: ['package'],
      properties: {
        package: { type: 'string', pattern: '^linux-image-[a-z0-9.+-]+$', description: 'a Debian kernel package, e.g. "linux-image-amd64"' },
        cmdline: { type: 'array', items: { type: 'string', pattern: '^[^\\s]+$', description: 'one kernel argument without spaces' } },
        initrdModules: {
          type: 'array',
          description:
            "the initrd's modules (initramfs-tools MODULES=list), besides those every image's root needs (ext4, virtio, NVMe, SATA, USB storage); without it, MODULES=most",
          items: { type: 'string', pattern: '^[a-z0-9_-]+$', description: 'a kernel module name, e.g. "xhci_plat_hcd"' },
        },
        excludeModules: {
          type: 'array',
          items: {
            type: 'string',
            pattern: '^!?[a-z0-9_][a-z0-9_./-]*$',
            description: 'a module folder under lib/modules/<version>/kernel/ to leave out (e.g. "sound"), or "!folder" to keep one inside it',
          },
        },
      },
    },
    packages: debianPackageList,
    disk: {
      type: 'object',
      additionalProperties: false,
      required: ['oemMiB', 'dataMiB', 'minDiskGiB'],
      properties: {
        espMiB: { type: 'integer', minimum: 32, maximum: 1024, description: 'the EFI system partition (grub-efi)' },
        bootMiB: { type: 'integer', minimum: 64, maximum: 1024, description: "each slot's firmware and kernel partition (rpi-tryboot)" },
        oemMiB: { type: 'integer', minimum: 8, maximum: 1024 },
        dataMiB: { type: 'integer', minimum: 64, maximum: 65536 },
        minDiskGiB: { type: 'integer', minimum: 2, maximum: 65536 },
      },
    },
  },
  // Each bootloader has its own disk scheme (image/src/layout.ts): grub-efi an EFI system partition,
  // rpi-tryboot a boot partition per slot. A size for the other scheme's partition would be unused.
  // (A type no size has, so the validator's message carries the description.)
  if: { properties: { bootloader: { const: 'rpi-tryboot' } } },
  // biome-ignore lint/suspicious/noThenProperty: JSON schema's if/then keyword, not a thenable
  then: {
    properties: {
      firmware: { const: 'rpi', description: 'rpi: the Raspberry Pi bootloader is the one that reads autoboot.txt' },
      disk: {
        type: 'object',
        required: ['bootMiB'],
        properties: {
          espMiB: { type: 'null', description: 'no espMiB with bootloader rpi-tryboot, which has no EFI partition (bootMiB sizes its boot partitions)' },
        },
      },
    },
  },
  else: {
    properties: {
      firmware: { const: 'uefi', description: 'uefi: grub-efi is started by UEFI firmware' },
      disk: {
        type: 'object',
        required: ['espMiB'],
        properties: {
          bootMiB: { type: 'null', description: 'no bootMiB with bootloader grub-efi, whose kernels live in the root slots (espMiB sizes its EFI partition)' },
        },
      },
    },
  },
} as const;

/** A hardware definition: how to boot and what the disk looks like on one class of machine. The schema above is its one declaration. */
export type Hardware = FromSchema<typeof hardwareSchema>;

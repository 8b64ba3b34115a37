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
    firmware: { enum: ['uefi'] },
    bootloader: { enum: ['grub-efi'] },
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
      required: ['espMiB', 'oemMiB', 'dataMiB', 'minDiskGiB'],
      properties: {
        espMiB: { type: 'integer', minimum: 32, maximum: 1024 },
        oemMiB: { type: 'integer', minimum: 8, maximum: 1024 },
        dataMiB: { type: 'integer', minimum: 64, maximum: 65536 },
        minDiskGiB: { type: 'integer', minimum: 2, maximum: 65536 },
      },
    },
  },
} as const;

/** A hardware definition: how to boot and what the disk looks like on one class of machine. The schema above is its one declaration. */
export type Hardware = FromSchema<typeof hardwareSchema>;

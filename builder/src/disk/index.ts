export { assembleDiskImage, grubSerialFor, DISK_RECIPE_VERSION, DISK_TOOLS, type AssembleOptions, type AssembleResult } from './assemble.ts';
export { stampSite, readSiteFromImage, readGpt, ImageRefusedError, SITE_FILE_NAME, type GptInfo, type GptPartitionInfo } from './stamp.ts';
export { requireTools, toolPath, MissingToolError, TOOL_PACKAGES } from './tools.ts';
export {
  computeLayout,
  sfdiskScript,
  deriveDiskIds,
  deriveUuid,
  deriveVolumeId,
  partitionByName,
  rootSlotMiB,
  fatSizeFor,
  GPT_TYPE,
  FS_LABEL,
  LAYOUT_DEFAULTS,
  type Layout,
  type LayoutInput,
  type Partition,
  type PartitionName,
  type DiskIds,
  type Arch,
} from '../../../image/src/layout.ts';
export { renderGrubCfg, renderEarlyCfg, kernelCmdline, grubModules, GRUB_TARGETS } from '../../../image/src/grub.ts';

/**
 * The rootfs's own SOURCE_DATE_EPOCH, 2023-06-10 (Debian 12.0), not the commit's: one cached rootfs
 * serves many commits, so nothing in it may depend on which commit built it. mmdebstrap and the
 * packages' maintainer scripts date what they write with it (the initrd's files, shadow's
 * last-change days), and the root tree clamps the rootfs's file times to it (pipeline/root-tree.ts)
 * before the commit's own date is applied. Part of the rootfs step's key.
 */
export const ROOTFS_SOURCE_DATE_EPOCH = 1686355200;

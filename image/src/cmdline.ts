/**
 * Kernel command line words, pure. One rule for every place that writes them (grub.cfg, a Pi's
 * cmdline.txt) and reads them back (the Pi boot recipe an upgrade finds in a new root): a word must
 * survive grub's parser and the Pi firmware's unchanged, so no quoting, no variables, no spaces.
 */
export const CMDLINE_WORD = /^[A-Za-z0-9_.,:=/+@%-]+$/;

export function assertCmdlineWord(word: string): string {
  if (!CMDLINE_WORD.test(word)) {
    throw new Error(`kernel command line word ${JSON.stringify(word)} is not allowed (allowed characters: A-Z a-z 0-9 _ . , : = / + @ % -)`);
  }
  return word;
}

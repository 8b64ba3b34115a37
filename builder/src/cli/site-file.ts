import { readFile } from 'node:fs/promises';
import { formatIssue } from '../../../firstboot/src/core/config-file.ts';
import { parseSiteConfig, type SiteConfig } from '../../../firstboot/src/core/site.ts';
import { CliError, EXIT } from './exit-codes.ts';

/** Reads and validates a site file; a problem becomes a CliError listing every issue by line. */
export async function loadSiteFile(file: string): Promise<SiteConfig> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    throw new CliError(
      `${file}: cannot read the site file (${(err as NodeJS.ErrnoException).code ?? (err as Error).message}); create one with \`geminik8s init --out ${file}\``,
      EXIT.invalidInput,
    );
  }
  const parsed = parseSiteConfig(text, file);
  if (!parsed.ok) throw new CliError(parsed.issues.map(formatIssue).join('\n'), EXIT.invalidInput);
  return parsed.value;
}

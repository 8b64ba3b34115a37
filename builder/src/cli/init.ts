import { randomBytes } from 'node:crypto';
import { open, readFile, rename, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { createInterface } from 'node:readline/promises';
import { stringify } from 'yaml';
import { formatIssue } from '../../../firstboot/src/core/config-file.ts';
import { parseSiteConfig, PAIR_SECRET_MIN_BYTES, type SiteConfig } from '../../../firstboot/src/core/site.ts';
import { looksLikePrivateKey, PRIVATE_KEY_PROBLEM, SSH_KEY_ALLOWED, sshPublicKeyProblem } from '../../../firstboot/src/core/ssh-keys.ts';
import { CliError, EXIT } from './exit-codes.ts';

export interface InitOptions {
  out: string;
  siteId?: string;
  vip?: string;
  addressing?: 'dhcp' | 'static';
  gateway?: string;
  interface?: string;
  witness?: string[];
  node?: string[];
  preferredLeader?: string;
  /** failover.timeScale as typed (a non-number is left for the schema to refuse, naming the flag). */
  failoverTimeScale?: string;
  /** Operator public key files (`.pub`, or authorized_keys with one key per line). */
  sshKey?: string[];
  force?: boolean;
  interactive?: boolean;
}

/** Which flag sets which field: errors name the flag the user typed, not the YAML path. */
const FLAG_FOR_FIELD: [RegExp, string][] = [
  [/^site\.id/, '--site-id'],
  [/^network\.vip/, '--vip'],
  [/^network\.addressing/, '--addressing'],
  [/^network\.gateway/, '--gateway'],
  [/^network\.interface/, '--interface'],
  [/^network\.witnesses/, '--witness'],
  [/^network\.nodes/, '--node'],
  [/^pair\.preferredLeader/, '--preferred-leader'],
  [/^failover\.timeScale/, '--failover-time-scale'],
];

/** Builds the site document from flags (pure apart from the random secret). */
export function siteFromFlags(o: InitOptions, secret: string, authorizedKeys: string[] = []): Record<string, unknown> {
  const nodes = (o.node ?? []).map((spec) => {
    const [name, address] = spec.split('=', 2);
    return { name, address };
  });
  return {
    apiVersion: 'geminik8s/v1',
    kind: 'Site',
    site: { id: o.siteId },
    pair: { secret, ...(o.preferredLeader ? { preferredLeader: o.preferredLeader } : {}) },
    network: {
      vip: o.vip,
      addressing: o.addressing ?? (nodes.length > 0 ? 'static' : 'dhcp'),
      ...(o.interface ? { interface: o.interface } : {}),
      ...(o.gateway ? { gateway: o.gateway } : {}),
      ...(o.witness?.length ? { witnesses: o.witness } : {}),
      ...(nodes.length ? { nodes } : {}),
    },
    ...(o.failoverTimeScale !== undefined ? { failover: { timeScale: numberOrText(o.failoverTimeScale) } } : {}),
    ...(authorizedKeys.length ? { ssh: { authorizedKeys } } : {}),
  };
}

/** A flag's text as a number when it is one; otherwise the text, which the schema then refuses with the flag's name. */
function numberOrText(text: string): number | string {
  const n = Number(text);
  return text.trim() !== '' && Number.isFinite(n) ? n : text;
}

/**
 * The keys in the `--ssh-key` files, each checked here so an error names the file and line. A private
 * key (the file without .pub) is refused as a whole, and no line of it is quoted.
 */
async function readSshKeyFiles(files: readonly string[]): Promise<string[]> {
  const keys: string[] = [];
  for (const file of files) {
    const text = await readFile(file, 'utf8').catch((e: NodeJS.ErrnoException) => {
      throw new CliError(
        `--ssh-key ${file}: cannot read it (${e.code ?? e.message}); pass an OpenSSH public key file such as ~/.ssh/id_ed25519.pub`,
        EXIT.invalidInput,
      );
    });
    const refuse = (line: number, problem: { message: string; found: string }) => {
      throw new CliError(
        formatIssue({ file, line, column: line > 0 ? 1 : 0, field: '--ssh-key', ...problem, allowed: `expected ${SSH_KEY_ALLOWED}` }),
        EXIT.invalidInput,
      );
    };
    if (looksLikePrivateKey(text)) refuse(0, PRIVATE_KEY_PROBLEM);
    const lines = text
      .split('\n')
      .map((l, i) => ({ line: l.trim(), number: i + 1 }))
      .filter((l) => l.line !== '' && !l.line.startsWith('#'));
    if (lines.length === 0) refuse(0, { message: 'no key in it', found: 'no key line' });
    for (const { line, number } of lines) {
      const problem = sshPublicKeyProblem(line);
      if (problem) refuse(number, problem);
      keys.push(line);
    }
  }
  return keys;
}

export function renderSiteYaml(doc: Record<string, unknown>): string {
  return [
    '# geminik8s site file: stamp it into an image or flashed disk with `geminik8s stamp --site <this file> <image>`.',
    '# pair.secret authenticates the two appliances to each other: keep this file private (mode 0600).',
    stringify(doc, { lineWidth: 0 }),
  ].join('\n');
}

async function askMissing(o: InitOptions): Promise<InitOptions> {
  if (!process.stdin.isTTY)
    throw new CliError('--interactive needs a terminal on stdin; pass the values as flags instead (see `geminik8s init --help`)', EXIT.invalidInput);
  const rl = createInterface({ input: process.stdin, output: process.stderr });
  try {
    const ask = async (q: string, current?: string) => (current ?? (await rl.question(q)).trim()) || undefined;
    const siteId = await ask('Site id (lowercase, e.g. store-0042): ', o.siteId);
    const vip = await ask('Virtual IP with prefix (e.g. 192.0.2.10/24): ', o.vip);
    const addressing = ((await ask('Addressing [dhcp/static] (dhcp): ', o.addressing)) ?? 'dhcp') as 'dhcp' | 'static';
    const gateway = await ask('Gateway, also the default witness (empty for none): ', o.gateway);
    let node = o.node;
    if (addressing === 'static' && !node?.length) {
      node = [];
      for (const label of ['first', 'second']) {
        const spec = await ask(`The ${label} box as name=address/prefix (e.g. node-a=192.0.2.11/24): `);
        if (spec) node.push(spec);
      }
    }
    return { ...o, siteId, vip, addressing, gateway, node };
  } finally {
    rl.close();
  }
}

/** `geminik8s init`: a new site file with a fresh pair secret, validated before it is written. */
export async function runInit(opts: InitOptions): Promise<{ file: string; site: Omit<SiteConfig, 'pair'> }> {
  const o = opts.interactive ? await askMissing(opts) : opts;
  const missing = [
    ['--site-id', o.siteId],
    ['--vip', o.vip],
  ]
    .filter(([, v]) => !v)
    .map(([f]) => f);
  if (missing.length) throw new CliError(`init needs ${missing.join(' and ')} (or --interactive)`, EXIT.invalidInput);
  const exists = await stat(o.out).then(
    () => true,
    () => false,
  );
  if (exists && !o.force) throw new CliError(`${o.out} already exists: it holds a pair secret; pass --force to replace it`, EXIT.invalidInput);

  const authorizedKeys = await readSshKeyFiles(o.sshKey ?? []);
  const secret = randomBytes(PAIR_SECRET_MIN_BYTES).toString('base64url');
  const text = renderSiteYaml(siteFromFlags(o, secret, authorizedKeys));
  const parsed = parseSiteConfig(text, o.out);
  if (!parsed.ok) {
    // The file does not exist yet: a problem is located at the flag that set the field.
    throw new CliError(
      parsed.issues
        .map((i) => {
          const flag = FLAG_FOR_FIELD.find(([re]) => re.test(i.field))?.[1];
          return formatIssue(flag ? { ...i, file: flag, line: 0 } : i);
        })
        .join('\n'),
      EXIT.invalidInput,
    );
  }
  await writePrivateFileAtomically(o.out, text);
  const { pair: _secretStaysInTheFile, ...site } = parsed.value;
  return { file: o.out, site };
}

async function writePrivateFileAtomically(file: string, text: string): Promise<void> {
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.${process.pid}.tmp`);
  const fh = await open(tmp, 'w', 0o600);
  try {
    await fh.writeFile(text);
    await fh.sync();
  } finally {
    await fh.close();
  }
  try {
    await rename(tmp, file);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
}

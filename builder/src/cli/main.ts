import { chmod, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { Command, Option } from 'commander';
import { ImageRefusedError, stampSite } from '../disk/stamp.ts';
import { ConfigError } from '../../../firstboot/src/core/config-file.ts';
import { resolveConfig } from '../config/resolve.ts';
import { build } from '../pipeline/build.ts';
import { humanReporter, jsonReporter } from '../pipeline/events.ts';
import { run } from '../util/exec.ts';
import { CliError, EXIT } from './exit-codes.ts';
import { runInit } from './init.ts';
import { cacheRoot, REPO_ROOT } from './paths.ts';
import { checkBuildHost } from './prerequisites.ts';
import { loadSiteFile } from './site-file.ts';
import { BundleRefused, verifyBundle } from '../../../firstboot/src/upgrade/bundle.ts';
import { generateSigningKey, readKey } from './keys.ts';
import { homedir } from 'node:os';
import { type RollingEvent, rollingUpgrade } from '../remote/rolling-upgrade.ts';
import { formatEvent, renderSiteTable } from '../remote/core/site.ts';
import { BackupRefused } from '../remote/backup-file.ts';
import { discoverBoxes } from '../remote/discover.ts';
import {
  backupSite,
  cancelReplacement,
  fetchKubeconfig,
  fetchLogs,
  readSite,
  type ReplaceEvent,
  replaceNode,
  restoreSite,
  SiteCommandRefused,
  type SiteTarget,
  switchover,
  type SwitchoverEvent,
} from '../remote/site-commands.ts';

/** Readable progress for `geminik8s upgrade`: one line per step and per change of what it waits for. */
function humanRollingReporter(): (e: RollingEvent) => void {
  let lastPercent = '';
  const say = (t: string) => process.stderr.write(`${t}\n`);
  const who = (b: { host: string; name?: string; role?: string; version?: string; error?: string }) =>
    `${b.name ?? b.host} ${b.error ? `unreachable (${b.error})` : `${b.role ?? '?'} on ${b.version ?? '?'}`}`;
  return (e) => {
    if (e.event === 'plan') say(`upgrading to ${e.target}: ${e.boxes.map(who).join(', ')}; ${e.steps.length} steps`);
    else if (e.event === 'step-start')
      say(`[${e.index}/${e.total}] ${e.step.kind === 'upgrade' ? `upgrade ${e.step.host}` : `switchover ${e.step.from} -> ${e.step.to}`}`);
    else if (e.event === 'progress') {
      const p = `${e.host} ${e.phase} ${Math.floor((100 * e.doneBytes) / Math.max(1, e.totalBytes) / 25) * 25}%`;
      if (p !== lastPercent) say(`      ${p}`);
      lastPercent = p;
    } else if (e.event === 'waiting') say(`      waiting: ${e.why}`);
    else if (e.event === 'step-done') say(`[${e.index}] done in ${e.seconds.toFixed(0)} s`);
    else if (e.event === 'done') say(`done in ${e.seconds.toFixed(0)} s: ${e.boxes.map(who).join(', ')}`);
    else say(`stopped: ${e.reason}\nnow: ${e.boxes.map(who).join(', ')}`);
  };
}

const collect = (value: string, previous: string[] = []) => [...previous, value];

interface SiteFlags {
  site: string;
  host?: string[];
  identity: string;
  knownHosts: string;
}

/** The options every command against a site takes: the site file, the boxes, the operator's key, the pinned host keys. */
function siteCommand(program: Command, name: string, description: string): Command {
  return program
    .command(name)
    .description(description)
    .requiredOption('--site <file>', 'the site file (static sites name their boxes in it)')
    .option('--host <address>', "a box's address (twice; else a static site's from the site file, else the boxes heard on the LAN)", collect)
    .option('--identity <file>', "the operator's SSH private key (its public key is in the site file)", path.join(homedir(), '.ssh', 'id_ed25519'))
    .option('--known-hosts <file>', 'pinned host keys (added on first contact, checked after)', path.join(homedir(), '.config', 'geminik8s', 'known_hosts'));
}

/** How long the CLI listens for a DHCP site's beacons (each box announces about every second). */
const DISCOVER_MS = 10_000;

/**
 * The two boxes of a site: --host twice, else the static addresses the site file lists, else the
 * boxes heard announcing themselves on the LAN with the site's key (DHCP sites).
 */
async function siteTarget(o: SiteFlags, need: { atLeast: 1 | 2 } = { atLeast: 2 }): Promise<SiteTarget> {
  const site = await loadSiteFile(o.site);
  let hosts = o.host ?? site.network.nodes?.map((n) => n.address.split('/')[0]!) ?? [];
  if (hosts.length === 0) {
    process.stderr.write(`listening for site ${site.site.id}'s boxes on the LAN (up to ${DISCOVER_MS / 1000} s; --host skips this)\n`);
    const heard = await discoverBoxes({ siteId: site.site.id, pairSecret: site.pair.secret, timeoutMs: DISCOVER_MS }).catch((e: Error) => {
      throw new CliError(`could not listen for the site's beacons (${e.message}): pass --host twice`, EXIT.failed);
    });
    hosts = heard.map((b) => b.address);
    if (hosts.length < need.atLeast || hosts.length > 2)
      throw new CliError(
        `heard ${hosts.length} box${hosts.length === 1 ? '' : 'es'} of site ${site.site.id} on this LAN${hosts.length ? ` (${hosts.join(', ')})` : ''}, expected ${need.atLeast === 2 ? '2' : '1 or 2'}: is this machine on the site LAN, and are the boxes up? Or pass --host`,
        EXIT.failed,
      );
  }
  if (hosts.length < need.atLeast || hosts.length > 2)
    throw new CliError(
      `need the ${need.atLeast === 2 ? "two boxes' addresses: --host <a> --host <b>" : "survivor's address (and the other box's): --host <a> [--host <b>]"} (found ${hosts.length})`,
      EXIT.invalidInput,
    );
  return { hosts, identity: { keyFile: o.identity, knownHosts: o.knownHosts } };
}

/** A refused backup file, or a site in no state for the command: invalid input, nothing changed. */
function siteRefusal(e: unknown): never {
  if (e instanceof BackupRefused) throw new CliError(`refused (${e.code}): ${e.message}`, EXIT.invalidInput);
  if (e instanceof SiteCommandRefused) throw new CliError(e.message, EXIT.invalidInput);
  return refuseMismatch(e);
}

/** A host key that does not match its pin is never a plain failure: it is refused input, loudly. */
function refuseMismatch(e: unknown): never {
  if ((e as Error).name === 'HostKeyMismatch') throw new CliError((e as Error).message, EXIT.invalidInput);
  throw e;
}

function positiveInteger(flag: string, min = 1): (v: string) => number {
  return (v) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < min)
      throw new CliError(`${flag}: expected a whole number of at least ${min}, found ${JSON.stringify(v)}`, EXIT.invalidInput);
    return n;
  };
}

async function packageVersion(): Promise<string> {
  const pkg = JSON.parse(await readFile(path.join(REPO_ROOT, 'package.json'), 'utf8')) as { version: string };
  return pkg.version;
}

/** SOURCE_DATE_EPOCH from the environment, else the last commit's time, so rebuilds are reproducible. */
async function sourceDateEpoch(): Promise<number> {
  const env = process.env.SOURCE_DATE_EPOCH;
  if (env !== undefined) {
    if (!/^[0-9]+$/.test(env)) throw new CliError(`SOURCE_DATE_EPOCH must be a whole number of seconds, found ${JSON.stringify(env)}`, EXIT.invalidInput);
    return Number(env);
  }
  const fromGit = await run('git', ['-C', REPO_ROOT, 'log', '-1', '--format=%ct']).catch(() => '');
  return /^[0-9]+$/.test(fromGit) ? Number(fromGit) : 0;
}

function printJson(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value)}\n`);
}

export function makeProgram(): Command {
  const program = new Command('geminik8s')
    .description('Build, stamp and operate geminik8s two-node HA edge appliances (Kubernetes on Kine on replicated PostgreSQL).')
    .addHelpText(
      'after',
      `
Profiles (--profile; profiles/<name>.yaml):
  edge-standard   the default: both boxes run upstream Kubernetes (built here from its Go module), DHCP
  edge-static     K3s from its release binary, pinned by sha256 (an artifact dir or its URL supplies it), static addressing
  edge-datastore  the HA datastore alone (Kine on replicated PostgreSQL) for a Kubernetes that runs elsewhere

Typical flow:
  geminik8s build                                     # dist/edge-standard-generic-x86_64-uefi-<version>/
  geminik8s init --site-id store-0042 --vip 192.0.2.10/24 --gateway 192.0.2.1 --out store-0042.yaml
  zstd -d dist/<artifact>/image.raw.zst -o store-0042.raw
  geminik8s stamp --site store-0042.yaml store-0042.raw   # or the flashed USB stick, e.g. /dev/sdb

Updates (A/B, signed):
  geminik8s keygen --out release                      # release.key (0600) + release.pub
  geminik8s build --signing-key release.key           # also dist/<artifact>/update.bundle; the image trusts release.pub
  geminik8s bundle verify dist/<artifact>/update.bundle --key release.pub
  on a box: geminik8s-agent upgrade apply <bundle>    # verify, write the inactive slot, reboot, gate, commit or roll back

Operating a site (over SSH with the operator key the site file lists; boxes by --host, the site file, or their beacons):
  geminik8s status --site store-0042.yaml [--watch]   # both boxes; exit 0 healthy, 1 not
  geminik8s switchover | kubeconfig --out F | logs | backup --out F | restore F --replace   (each: --site ...)
  geminik8s replace-node --site store-0042.yaml      # a dead box's stand-in joins the survivor as its follower
  http://<box or VIP>:8008/ and /metrics             # read-only status page and Prometheus metrics on the LAN

Exit codes: 0 ok, 1 a step failed, 2 invalid input (nothing written), 3 missing prerequisite, 130 interrupted.`,
    )
    .showHelpAfterError();

  program
    .command('build')
    .description('Build a bootable disk image from a profile and a hardware definition. Steps whose inputs did not change are reused from the cache.')
    .option('--profile <name|file>', 'profile under profiles/ or a YAML file', 'edge-standard')
    .option('--hardware <name|file>', 'hardware definition under hardware/ or a YAML file', 'generic-x86_64-uefi')
    .option('--site <file>', 'site file to stamp into the OEM partition at build time (usually done later with `stamp`)')
    .option('--out <dir>', 'artifact root; the image goes to <dir>/<profile>-<hardware>-<version>/', 'dist')
    .option('--mirror <url>', "Debian mirror (default: the profile's, else the build host's apt sources)")
    .addOption(
      new Option('--compression <level>', 'zstd level of image.raw.zst (19 for release images: ~10% smaller, ~10x slower)')
        .default(3)
        .argParser((v) => Number.parseInt(v, 10)),
    )
    .option('--signing-key <file>', 'ed25519 private key (`geminik8s keygen`): also write a signed update.bundle, and trust its public key in the image')
    .option('--update-key <file.pub>', 'another public key the image accepts bundles from, e.g. the next signing key (repeatable)', collect)
    .option('--dry-run', "print the plan with each step's cache key and whether it is cached; build nothing")
    .option('--json', 'machine-readable progress: one JSON event per line on stdout')
    .option('-v, --verbose', 'show the output of the tools each step runs')
    .action(
      async (o: {
        profile: string;
        hardware: string;
        site?: string;
        out: string;
        mirror?: string;
        compression: number;
        signingKey?: string;
        updateKey?: string[];
        dryRun?: boolean;
        json?: boolean;
        verbose?: boolean;
      }) => {
        const config = await resolveConfig({ profile: o.profile, hardware: o.hardware, repoRoot: REPO_ROOT });
        if (o.site) await loadSiteFile(o.site);
        if (!Number.isInteger(o.compression) || o.compression < 1 || o.compression > 19)
          throw new CliError('--compression must be a zstd level from 1 to 19', EXIT.invalidInput);
        const signingKey = o.signingKey ? await readKey(o.signingKey, 'private') : undefined;
        const updateKeys = await Promise.all((o.updateKey ?? []).map((f) => readKey(f, 'public')));
        if (!o.dryRun) await checkBuildHost();
        const report = o.json ? jsonReporter((l) => process.stdout.write(l)) : humanReporter((t) => process.stderr.write(t), o.verbose ?? false);
        if (!signingKey && !o.json)
          process.stderr.write(
            'no --signing-key: no update.bundle is written (make a key with `geminik8s keygen`; boxes accept bundles signed by the keys baked in)\n',
          );
        await build({
          config,
          repoRoot: REPO_ROOT,
          cacheRoot: cacheRoot(),
          outRoot: path.resolve(o.out),
          siteFile: o.site ? path.resolve(o.site) : undefined,
          mirror: o.mirror,
          sourceDateEpoch: await sourceDateEpoch(),
          compressionLevel: o.compression,
          ...(signingKey ? { signingKey } : {}),
          updateKeys,
          dryRun: o.dryRun ?? false,
          report,
        });
      },
    );

  program
    .command('init')
    .description('Write a new site file: site id, a fresh random pair secret, the VIP and the network. Validated before it is written (mode 0600).')
    .option('--out <file>', 'where to write the site file', 'site.yaml')
    .option('--site-id <id>', 'site identifier, e.g. store-0042')
    .option('--vip <ip/prefix>', 'virtual IP that follows the PostgreSQL primary, e.g. 192.0.2.10/24')
    .addOption(new Option('--addressing <mode>', 'how the boxes get their own addresses').choices(['dhcp', 'static']))
    .option('--gateway <ip>', 'site gateway; also the default failover witness')
    .option('--interface <name>', 'LAN interface name when the box has several')
    .option('--witness <ip>', 'extra witness address (repeatable)', collect)
    .option('--node <name=ip/prefix>', "a box's static address, e.g. node-a=192.0.2.11/24 (repeatable; implies --addressing static)", collect)
    .option('--preferred-leader <name>', 'node that should lead when both start fresh')
    .option(
      '--failover-time-scale <n>',
      'multiply every failover threshold by n (1-10; default 1: a cut-off leader fences within 2 s, its peer takes over after 5 s); raise it where a box can stall for seconds without being dead',
    )
    .option('--ssh-key <file.pub>', "an operator's OpenSSH public key file; the boxes let it log in as root (repeatable)", collect)
    .option('--force', 'replace an existing file (its pair secret is lost)')
    .option('-i, --interactive', 'ask for the values not given as flags')
    .option('--json', 'print what was written as JSON (never the secret)')
    .action(async (o: Parameters<typeof runInit>[0] & { json?: boolean }) => {
      const result = await runInit(o);
      if (o.json) printJson(result);
      else process.stderr.write(`wrote ${result.file} for site ${result.site.site.id} (pair secret generated; keep this file private)\n`);
    });

  program
    .command('stamp')
    .description('Write a site file into the OEM partition of a raw image or a flashed disk, without mounting and without rebuilding.')
    .requiredOption('--site <file>', 'site file (see `geminik8s init`)')
    .argument('<image>', 'raw image (image.raw, decompressed from image.raw.zst) or block device')
    .option('--json', 'print the result as JSON')
    .action(async (image: string, o: { site: string; json?: boolean }) => {
      const site = await loadSiteFile(o.site);
      if (/\.(zst|xz|gz)$/.test(image))
        throw new CliError(`${image} is compressed: decompress it first (zstd -d ${image}) or stamp the flashed disk`, EXIT.invalidInput);
      const t0 = performance.now();
      await stampSite(image, o.site).catch((err: unknown) => {
        throw err instanceof ImageRefusedError ? new CliError(err.message, EXIT.invalidInput) : err;
      });
      const seconds = (performance.now() - t0) / 1000;
      if (o.json) printJson({ image, siteId: site.site.id, seconds });
      else process.stderr.write(`stamped site ${site.site.id} into ${image} (${seconds.toFixed(2)} s)\n`);
    });

  program
    .command('keygen')
    .description('Make an ed25519 key pair for signing update bundles: <out>.key (private, 0600: keep it off the boxes) and <out>.pub.')
    .option('--out <prefix>', 'file name prefix', 'geminik8s-update')
    .option('--force', 'replace existing files (bundles signed with the old key are then refused by images that trust only the new one)')
    .option('--json', 'print the key id and files as JSON')
    .action(async (o: { out: string; force?: boolean; json?: boolean }) => {
      const result = await generateSigningKey(o.out, o.force ?? false);
      if (o.json) printJson(result);
      else
        process.stderr.write(
          `wrote ${result.privateKey} (0600, keep private) and ${result.publicKey}; key id ${result.keyId}\nbuild with: geminik8s build --signing-key ${result.privateKey}\n`,
        );
    });

  const bundle = program.command('bundle').description('Inspect update bundles.');
  bundle
    .command('verify')
    .description("Check an update bundle offline: the manifest's signature against the given public keys, then the slot image against the manifest.")
    .argument('<file>', 'an update.bundle')
    .requiredOption('--key <file.pub>', 'a trusted public key (repeatable)', collect)
    .option('--json', 'print the manifest and the signing key id as JSON')
    .action(async (file: string, o: { key: string[]; json?: boolean }) => {
      const keys = await Promise.all(o.key.map((f) => readKey(f, 'public')));
      const head = await verifyBundle(file, keys).catch((e: unknown) => {
        throw e instanceof BundleRefused ? new CliError(`refused (${e.code}): ${e.message}`, EXIT.invalidInput) : e;
      });
      const m = head.manifest;
      if (o.json) printJson({ ok: true, keyId: head.keyId, manifest: m });
      else
        process.stderr.write(
          `ok: ${m.product} ${m.version} for ${m.hardware} (${m.arch}), profile ${m.profile}, signed by ${head.keyId}; slot image ${m.slot.rawBytes} bytes\n`,
        );
    });

  siteCommand(
    program,
    'upgrade',
    'Rolling A/B upgrade of a pair over SSH: the follower first (upload, apply, reboot, health gate, back in sync), a planned switchover, then the other box. Stops at the first failed step and says which box runs what.',
  )
    .addOption(
      new Option('--step-timeout <seconds>', 'longest one box may take from apply to a committed slot back in sync')
        .default(1800)
        .argParser((v) => Number.parseInt(v, 10)),
    )
    .option('--json', 'one JSON event per line on stdout')
    .argument('<bundle>', 'an update.bundle from `geminik8s build --signing-key`')
    .action(async (bundlePath: string, o: SiteFlags & { stepTimeout: number; json?: boolean }) => {
      const target = await siteTarget(o);
      if (!Number.isInteger(o.stepTimeout) || o.stepTimeout < 60) throw new CliError('--step-timeout: whole seconds, at least 60', EXIT.invalidInput);
      const report = o.json ? (e: RollingEvent) => printJson(e) : humanRollingReporter();
      const result = await rollingUpgrade({
        hosts: target.hosts as [string, string],
        bundle: path.resolve(bundlePath),
        identity: target.identity,
        report,
        stepTimeoutMs: o.stepTimeout * 1000,
      }).catch(refuseMismatch);
      if (!result.ok) throw new CliError('upgrade stopped (see above)', EXIT.failed);
    });

  siteCommand(
    program,
    'status',
    'Both boxes of a site over SSH: role and term, PostgreSQL, replication mode and lag, the VIP, the Kubernetes API, the last promotion and why, disk use, version and slots. Exit 0 when the pair is a leader with a synchronous follower, 1 when not.',
  )
    .option('--watch [seconds]', 'refresh until interrupted (every 5 s, or as given)')
    .option('--json', 'the site view as JSON (with --watch: one object per line)')
    .action(async (o: SiteFlags & { watch?: string | true; json?: boolean }) => {
      const target = await siteTarget(o);
      const every = o.watch === undefined ? 0 : o.watch === true ? 5 : positiveInteger('--watch')(o.watch);
      for (;;) {
        const t0 = performance.now();
        const view = await readSite(target).catch(refuseMismatch);
        const seconds = Number(((performance.now() - t0) / 1000).toFixed(2));
        if (o.json) printJson({ ...view, seconds });
        else
          process.stdout.write(
            `${every ? '\x1b[2J\x1b[H' : ''}${renderSiteTable(view)}read in ${seconds} s${every ? `; every ${every} s, Ctrl-C stops` : ''}\n`,
          );
        if (!every) {
          if (view.problems.length > 0) throw new CliError('', EXIT.failed);
          return;
        }
        await new Promise((r) => setTimeout(r, every * 1000));
      }
    });

  siteCommand(
    program,
    'switchover',
    'Planned switchover: the leader hands the VIP and the writes to the follower once it has every commit (no acknowledged write is lost), and follows it. Refused when the follower is not a synchronous standby, unless --force.',
  )
    .option('--force', 'ask even though the follower is not in sync right now (the leader still hands over only once it has caught up, within 30 s)')
    .addOption(new Option('--timeout <seconds>', 'how long to wait for the follower to take over').default(90).argParser(positiveInteger('--timeout', 10)))
    .option('--json', 'one JSON event per line')
    .action(async (o: SiteFlags & { force?: boolean; timeout: number; json?: boolean }) => {
      const target = await siteTarget(o);
      const say = (e: SwitchoverEvent) => {
        if (o.json) return printJson(e);
        if (e.event === 'asked') process.stderr.write(`asked ${e.from} to hand over to ${e.to}${e.forced ? ' (forced: it was not in sync)' : ''}\n`);
        else if (e.event === 'done') process.stderr.write(`done in ${e.seconds.toFixed(1)} s: ${e.leader} leads at term ${e.term}\n`);
      };
      await switchover(target, { force: o.force ?? false, timeoutMs: o.timeout * 1000, report: say }).catch(siteRefusal);
    });

  siteCommand(program, 'kubeconfig', "The site's admin kubeconfig for the VIP (client certificate of the pair CA), written 0600.")
    .option('--out <file>', 'where to write it', 'kubeconfig')
    .option('--force', 'replace an existing file')
    .option('--json', 'print where it was written as JSON')
    .action(async (o: SiteFlags & { out: string; force?: boolean; json?: boolean }) => {
      const target = await siteTarget(o);
      const { host, text } = await fetchKubeconfig(target).catch(refuseMismatch);
      await writeFile(o.out, text, { mode: 0o600, flag: o.force ? 'w' : 'wx' }).catch((e: NodeJS.ErrnoException) => {
        throw e.code === 'EEXIST' ? new CliError(`${o.out} exists: --force replaces it`, EXIT.invalidInput) : e;
      });
      await chmod(o.out, 0o600);
      if (o.json) printJson({ file: path.resolve(o.out), from: host });
      else process.stderr.write(`wrote ${o.out} (0600) from ${host}: kubectl --kubeconfig ${o.out} get nodes\n`);
    });

  siteCommand(
    program,
    'backup',
    "An encrypted, verifiable backup of the site's datastore (the leader's pg_dump of Kine's database, with every Kubernetes object), streamed over SSH and encrypted here with a key derived from the site file's pair secret: keep the site file to restore it.",
  )
    .requiredOption('--out <file>', 'the backup file (written 0600, under <file>.partial until it has been read back and checked)')
    .option('--force', 'replace an existing file')
    .option('--json', 'print the result as JSON')
    .action(async (o: SiteFlags & { out: string; force?: boolean; json?: boolean }) => {
      const target = await siteTarget(o);
      const site = await loadSiteFile(o.site);
      let shown = 0;
      const r = await backupSite(target, { siteId: site.site.id, pairSecret: site.pair.secret }, o.out, {
        force: o.force ?? false,
        onBytes: (n) => {
          if (o.json || n < shown + 64 * 2 ** 20) return;
          shown = n;
          process.stderr.write(`  ${(n / 2 ** 20).toFixed(0)} MiB\n`);
        },
      }).catch(siteRefusal);
      if (o.json)
        printJson({
          file: path.resolve(r.file),
          siteId: r.header.siteId,
          source: r.header.source,
          archiveBytes: r.archiveBytes,
          fileBytes: r.fileBytes,
          seconds: r.seconds,
        });
      else
        process.stderr.write(
          `wrote ${r.file} (0600): site ${r.header.siteId} from ${r.header.source.name} (${r.header.source.host}, term ${r.header.source.term}), archive ${r.archiveBytes} B, ${r.seconds.toFixed(1)} s; read back and checked\n`,
        );
    });

  siteCommand(
    program,
    'restore',
    "Replace a site's datastore with a backup (e.g. two freshly flashed boxes after both were lost): the file is decrypted and checked whole before anything on the site is touched, then the leader restores it in one transaction and both boxes restart Kine and Kubernetes.",
  )
    .argument('<file>', 'a backup from `geminik8s backup`')
    .option('--replace', 'required: every Kine key and Kubernetes object written since the backup is lost')
    .option('--verify-only', 'decrypt and check the file against the site file; touch nothing')
    .option('--json', 'print the result as JSON')
    .action(async (file: string, o: SiteFlags & { replace?: boolean; verifyOnly?: boolean; json?: boolean }) => {
      const site = await loadSiteFile(o.site);
      const verifyOnly = o.verifyOnly ?? false;
      if (!verifyOnly && !o.replace)
        throw new CliError(
          'restore replaces the whole datastore of the site (what was written since the backup is lost): add --replace, or --verify-only to only check the file',
          EXIT.invalidInput,
        );
      const target = verifyOnly ? { hosts: [], identity: { keyFile: o.identity, knownHosts: o.knownHosts } } : await siteTarget(o);
      const r = await restoreSite(target, { siteId: site.site.id, pairSecret: site.pair.secret }, file, { verifyOnly }).catch(siteRefusal);
      if (o.json)
        printJson({
          ok: true,
          verifyOnly,
          siteId: r.header.siteId,
          createdAt: r.header.createdAt,
          source: r.header.source,
          archiveBytes: r.archiveBytes,
          leader: r.leader ?? null,
          seconds: r.seconds,
        });
      else
        process.stderr.write(
          `${verifyOnly ? 'ok' : `restored onto ${r.leader}`}: backup of site ${r.header.siteId} taken ${r.header.createdAt} from ${r.header.source.name}, archive ${r.archiveBytes} B, ${r.seconds.toFixed(1)} s\n`,
        );
    });

  siteCommand(
    program,
    'replace-node',
    'Replaces a dead box with a freshly flashed one stamped with the same site file: the survivor (the leader, its peer silent for 30 s) admits exactly one new box, which copies the datastore and becomes its synchronous follower. Refused while the old box answers. Power the new box on before or after asking; the command waits until it has joined and is in sync.',
  )
    .addOption(
      new Option('--timeout <seconds>', 'how long to wait for the new box to join and catch up').default(1800).argParser(positiveInteger('--timeout', 10)),
    )
    .option('--cancel', 'stop a survivor admitting a replacement (the pair stays as it was)')
    .option('--json', 'one JSON event per line')
    .addHelpText(
      'after',
      `
The new box must be flashed with the site's image and stamped with the same site file (static sites:
give it the dead box's address). Host keys pinned for the dead box's address and the new box's are
forgotten when it joins, and the new box's key is pinned at first contact.`,
    )
    .action(async (o: SiteFlags & { timeout: number; cancel?: boolean; json?: boolean }) => {
      const target = await siteTarget(o, { atLeast: 1 });
      if (o.cancel) {
        const r = await cancelReplacement(target).catch(siteRefusal);
        if (o.json) printJson({ event: 'cancelled', ...r });
        else process.stderr.write(`${r.host} stopped admitting a replacement: ${r.answer}\n`);
        return;
      }
      const say = (e: ReplaceEvent) => {
        if (o.json) return printJson(e);
        if (e.event === 'asked') process.stderr.write(`${e.survivor} admits one new box in place of ${e.replaces}; power it on if it is not\n`);
        else if (e.event === 'joined') process.stderr.write(`${e.name} (${e.address}) joined after ${e.seconds.toFixed(0)} s; copying the datastore\n`);
        else if (e.event === 'waiting') process.stderr.write(`  ${e.stage}, ${e.seconds.toFixed(0)} s${e.detail ? `: ${e.detail}` : ''}\n`);
        else process.stderr.write(`done in ${e.seconds.toFixed(1)} s: ${e.leader} leads, ${e.follower} is its synchronous follower\n`);
      };
      await replaceNode(target, { timeoutMs: o.timeout * 1000, report: say }).catch(siteRefusal);
    });

  siteCommand(program, 'logs', "Both boxes' recent agent events, merged by time (the agents keep their newest 2000; journald on each box has all).")
    .addOption(new Option('--lines <n>', 'events per box').default(200).argParser(positiveInteger('--lines')))
    .option('--json', 'one JSON object per event, with its host')
    .action(async (o: SiteFlags & { lines: number; json?: boolean }) => {
      const target = await siteTarget(o);
      const { events, unreachable } = await fetchLogs(target, o.lines).catch(refuseMismatch);
      for (const e of events) process.stdout.write(`${o.json ? JSON.stringify(e) : formatEvent(e)}\n`);
      for (const u of unreachable) process.stderr.write(`not read: ${u}\n`);
      if (unreachable.length === target.hosts.length) throw new CliError('no box could be read', EXIT.failed);
    });

  program
    .command('version')
    .description('Print the geminik8s version.')
    .option('--json', 'as JSON')
    .action(async (o: { json?: boolean }) => {
      const version = await packageVersion();
      if (o.json) printJson({ version, node: process.versions.node });
      else process.stdout.write(`geminik8s ${version}\n`);
    });

  return program;
}

/** Maps every failure to one readable message and a meaningful exit code. */
export async function main(argv: string[]): Promise<number> {
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.once(signal, () => {
      process.stderr.write(`\ninterrupted (${signal}); the next run resumes from the cache\n`);
      process.exit(EXIT.interrupted);
    });
  }
  try {
    await makeProgram().exitOverride().parseAsync(argv);
    return EXIT.ok;
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`invalid input:\n${err.message}\n`);
      return EXIT.invalidInput;
    }
    if (err instanceof CliError) {
      if (err.message) process.stderr.write(`${err.message}\n`);
      return err.exitCode;
    }
    const code = (err as { code?: string; exitCode?: number }).code;
    if (typeof code === 'string' && code.startsWith('commander.')) {
      return code === 'commander.helpDisplayed' || code === 'commander.version' ? EXIT.ok : EXIT.invalidInput;
    }
    process.stderr.write(`error: ${(err as Error).message}\n`);
    return EXIT.failed;
  }
}

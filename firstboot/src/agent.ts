/**
 * The agent's boot sequence: the local steps every boot runs before any pairing work. Each step
 * re-derives its decision from what is on disk, so a power cut anywhere followed by a reboot converges.
 */
import { randomBytes } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { finishLocalSteps, startBoot, type HostMeta, type SiteOutcome } from './core/hostmeta.ts';
import { markers, summaryLine, type DataOutcome, type SiteReport } from './core/report.ts';
import { formatIssue } from './core/config-file.ts';
import { parseSiteConfig, type SiteConfig } from './core/site.ts';
import { renderAuthorizedKeys } from './core/ssh-keys.ts';
import { writeFileAtomic } from './adapters/atomic-file.ts';
import { growDataFilesystem, growDataPartition } from './adapters/disk.ts';
import { loadHostMeta, storeHostMeta } from './adapters/hostmeta-store.ts';
import { readSiteFile } from './adapters/oem.ts';
import { pgPathsOf, secretsDirOf } from './cluster/settings.ts';
import { SECRETS_FILE } from './provision/secrets.ts';
import type { ConsoleOut, Logger } from './adapters/output.ts';

export interface AgentPaths {
  /** OEM partition mount (read-only vfat) holding site.yaml. */
  oemDir: string;
  /** Data partition mount point. */
  dataDir: string;
  /** The data partition before it is mounted (the pre-mount growth step). */
  dataDevice: string;
  /** Where hostmeta.json lives. */
  stateDir: string;
  /** Console device (or file) for the human lines and markers. */
  consolePath: string;
  /** The operators' keys for sshd (AuthorizedKeysFile in overlays/ssh/etc/ssh/sshd_config.d/geminik8s.conf). */
  authorizedKeysFile: string;
  /** Files whose presence means this box holds the pair's data: its identity must not start over (loadHostMeta). */
  pairData: string[];
}

export function agentPaths(env: NodeJS.ProcessEnv): AgentPaths {
  const stateDir = env.GEMINIK8S_STATE_DIR || '/var/lib/geminik8s';
  return {
    oemDir: env.GEMINIK8S_OEM_DIR || '/oem',
    dataDir: env.GEMINIK8S_DATA_DIR || '/data',
    dataDevice: env.GEMINIK8S_DATA_DEVICE || '/dev/disk/by-partlabel/data',
    stateDir,
    consolePath: env.GEMINIK8S_CONSOLE || '/dev/console',
    // Beside the state, so agents run by tests with their own state directory never touch the host's.
    authorizedKeysFile: env.GEMINIK8S_AUTHORIZED_KEYS || join(stateDir, 'ssh', 'authorized_keys'),
    pairData: [join(secretsDirOf(stateDir), SECRETS_FILE), join(pgPathsOf(env).dataDir, 'PG_VERSION')],
  };
}

export interface LocalState {
  meta: HostMeta;
  hostmetaPath: string;
  /** The validated site, for the pairing steps that follow; undefined without a usable site file. */
  site: SiteConfig | undefined;
}

async function readSite(paths: AgentPaths, log: Logger, out: ConsoleOut): Promise<{ outcome: SiteOutcome; report: SiteReport; site?: SiteConfig }> {
  const file = await readSiteFile(paths.oemDir);
  if (file.kind === 'absent') {
    log.event('warn', 'site-absent', { path: file.path, reason: file.reason });
    out.line('geminik8s-agent: no site.yaml on the OEM partition: stamp one with `geminik8s stamp`');
    return { outcome: { kind: 'absent' }, report: { kind: 'absent' } };
  }
  const parsed = parseSiteConfig(file.text, file.path);
  if (!parsed.ok) {
    for (const issue of parsed.issues) {
      log.event('error', 'site-invalid', { ...issue });
      out.line(`geminik8s-agent: ${formatIssue(issue)}`);
    }
    return { outcome: { kind: 'invalid' }, report: { kind: 'invalid', errorCount: parsed.issues.length } };
  }
  const { site, network } = parsed.value;
  log.event('info', 'site-read', { path: file.path, siteId: site.id, vip: network.vip, addressing: network.addressing });
  return { outcome: { kind: 'valid', siteId: site.id }, report: { kind: 'valid', siteId: site.id }, site: parsed.value };
}

export async function runLocalSteps(paths: AgentPaths, log: Logger, out: ConsoleOut): Promise<LocalState> {
  // Count the boot and fix the node id first, so both survive a cut in a later step.
  const booted = startBoot(loadHostMeta(paths.stateDir, log, paths.pairData), new Date(), randomBytes(16).toString('hex'));
  storeHostMeta(paths.stateDir, booted);
  log.event('info', 'boot', { nodeId: booted.nodeId, bootCount: booted.bootCount });
  out.line(markers.started());

  const site = await readSite(paths, log, out);
  out.line(markers.site(site.report));
  if (site.site) installOperatorKeys(paths.authorizedKeysFile, site.site, log);

  const data = await growDataFilesystem(paths.dataDir, log);
  log.event(data.kind === 'failed' ? 'error' : 'info', 'data', { ...data });
  out.line(markers.data(data));

  const dataState = data.kind === 'not-mounted' ? undefined : { device: data.device, sizeBytes: data.partitionBytes, grew: data.kind === 'grown' };
  const meta = finishLocalSteps(booted, site.outcome, dataState, new Date());
  const hostmetaPath = storeHostMeta(paths.stateDir, meta);
  log.event('info', 'hostmeta-written', { path: hostmetaPath, phase: meta.phase, bootCount: meta.bootCount });
  out.line(markers.hostmetaWritten());

  out.line(summaryLine(meta.nodeId, site.report, data, hostmetaPath));
  out.line(markers.ready());
  log.event('info', 'ready', { phase: meta.phase });
  return { meta, hostmetaPath, site: site.site };
}

/**
 * Writes the site's operator keys for sshd, every boot, so a key removed from the site stops working
 * at the next boot. Only from a valid site: an absent or broken site file keeps the keys of the last
 * good one, so a bad edit does not lock the operators out. The directory is the one sshd's host keys
 * live in (0700, root). A failure is logged and the boot goes on: the pair matters more than logins.
 */
function installOperatorKeys(file: string, site: SiteConfig, log: Logger): void {
  const keys = site.ssh?.authorizedKeys ?? [];
  try {
    mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
    writeFileAtomic(file, renderAuthorizedKeys(keys), 0o600);
    log.event('info', 'ssh-keys-written', { path: file, keys: keys.length });
  } catch (e) {
    log.event('error', 'ssh-keys-failed', { path: file, error: (e as Error).message });
  }
}

/**
 * `geminik8s-agent grow-data-partition`, run by geminik8s-grow-data.service before /data is
 * mounted: the only step that changes the partition table, so no mounted filesystem sees it.
 */
export async function runPartitionGrowth(paths: AgentPaths, log: Logger, out: ConsoleOut): Promise<DataOutcome> {
  const result = await growDataPartition(paths.dataDevice, log);
  log.event(result.kind === 'failed' ? 'error' : 'info', 'data-partition', { ...result });
  out.line(markers.data(result, 'data-partition'));
  return result;
}

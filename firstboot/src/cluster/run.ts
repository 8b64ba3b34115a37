/**
 * From a valid site file to a running pair: discover the peer, agree on roles and term, take
 * (leader) or receive (follower) the cluster secrets, provision PostgreSQL, start Kine, and on
 * the leader bind the VIP. Every stage is recorded in hostmeta.json before the next begins, and
 * every provisioning step converges when re-run, so killing the agent anywhere and starting it
 * again ends in the same pair.
 */
import { existsSync, readFileSync, rmSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { writeFileAtomic } from '../adapters/atomic-file.ts';
import { storeHostMeta } from '../adapters/hostmeta-store.ts';
import type { ConsoleOut, Logger } from '../adapters/output.ts';
import { recordPairing, recordProvisioned, type HostMeta } from '../core/hostmeta.ts';
import { MARKER } from '../core/report.ts';
import type { SiteConfig } from '../core/site.ts';
import { bindVip } from '../net/vip.ts';
import { startStatusServer } from '../net/status-server.ts';
import { derivePairKeys, runPairing, startChannelServer, startDiscovery, type Candidate, type Discovery } from '../pairing/index.ts';
import { NO_PROGRESS, readProgress, type Progress } from './progress.ts';
import { keepConfirmingPair } from './reconfirm.ts';
import { validateSecrets, type NodeIdentity } from '../provision/core/secrets.ts';
import { startKine, type KineProcess } from '../provision/kine.ts';
import { confFiles, type LocalPg } from '../provision/postgres.ts';
import { runProvisioning } from '../provision/provision.ts';
import { enableSynchronousReplication, replicationStatus } from '../provision/replication.ts';
import { ensureClusterSecrets, loadSecrets, storeSecrets } from '../provision/secrets.ts';
import { allowNonLocalBind, waitForLanAddress } from './lan.ts';
import type { ClusterSettings } from './settings.ts';

export interface ClusterContext {
  settings: ClusterSettings;
  site: SiteConfig;
  stateDir: string;
  log: Logger;
  out: ConsoleOut;
  signal: AbortSignal;
}

/** What GET /status returns. */
export interface ClusterStatus {
  nodeId: string;
  siteId: string;
  name?: string;
  address?: string;
  phase: string;
  role: string;
  term: number;
  peer?: { nodeId: string; name: string; address: string };
  vip: string;
  kine?: { listen: string; upstream: string };
  replication?: unknown;
  lastError?: string;
}

/** Site node name for an address (static sites), else a stable name derived from the node id. */
export function nodeName(site: SiteConfig, nodeId: string, ip: string): string {
  return site.network.nodes?.find((n) => n.address.split('/')[0] === ip)?.name ?? `node-${nodeId.slice(0, 8)}`;
}

function candidate(meta: HostMeta, name: string, progress: Progress): Candidate {
  return { nodeId: meta.nodeId, name, ...progress, term: meta.term, ...(meta.pair ? { leader: meta.pair.leader } : {}) };
}

function canConnect(host: string, port: number, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host, port, timeout: timeoutMs });
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.once('connect', () => done(true));
    socket.once('timeout', () => done(false));
    socket.once('error', () => done(false));
  });
}

/**
 * Kine runs as our child; after an agent crash its orphan may still hold the port. The pid file
 * lets the next agent stop exactly that process (and nothing else) before starting its own.
 */
function stopOrphanKine(pidFile: string, binary: string): void {
  if (!existsSync(pidFile)) return;
  const pid = Number(readFileSync(pidFile, 'utf8').trim());
  rmSync(pidFile, { force: true });
  if (!Number.isInteger(pid) || pid <= 1) return;
  try {
    const exe = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0')[0] ?? '';
    if (exe === binary) process.kill(pid, 'SIGKILL');
  } catch {
    // already gone
  }
}

export async function runCluster(ctx: ClusterContext, initial: HostMeta): Promise<never | void> {
  const { settings, site, log, out, signal } = ctx;
  let meta = initial;
  const vip = site.network.vip.split('/')[0] ?? '';
  const status: ClusterStatus = { nodeId: meta.nodeId, siteId: site.site.id, phase: meta.phase, role: meta.role, term: meta.term, vip: site.network.vip };
  const pg: LocalPg = { paths: settings.pg, port: settings.pgPort };
  const save = (next: HostMeta) => {
    meta = next;
    storeHostMeta(ctx.stateDir, meta);
    Object.assign(status, { phase: meta.phase, role: meta.role, term: meta.term });
  };

  const statusServer = await startStatusServer(join(settings.runDir, 'agent.sock'), async () => {
    if (meta.phase !== 'provisioned') return status;
    const replication = await replicationStatus(pg).catch((e: unknown) => ({ error: (e as Error).message }));
    return { ...status, replication };
  });
  signal.addEventListener('abort', () => void statusServer.close(), { once: true });

  const lan = await waitForLanAddress(site.network.vip, site.network.interface, log, signal);
  const name = nodeName(site, meta.nodeId, lan.ip);
  Object.assign(status, { name, address: lan.ip });
  log.event('info', 'lan-address', { interface: lan.ifname, address: lan.ip, name });

  // --- discover and agree ---
  // Beacons advertise the last known progress; negotiations read it live.
  let progress = meta.phase === 'paired' || meta.phase === 'provisioned' ? await readProgress(pg) : NO_PROGRESS;
  const currentCandidate = async (): Promise<Candidate> => {
    if (meta.phase === 'paired' || meta.phase === 'provisioned') progress = await readProgress(pg);
    return candidate(meta, name, progress);
  };
  const keys = derivePairKeys(site.pair.secret, site.site.id);
  let discovery: Discovery | undefined;
  const server = await startChannelServer({ keys, nodeId: meta.nodeId, host: lan.ip, port: settings.channelPort, log, admit: (id) => discovery?.refusalFor(id) });
  discovery = await startDiscovery({
    siteId: site.site.id, keys, nodeId: meta.nodeId, bindAddress: lan.ip, broadcastAddress: settings.broadcastAddress, port: settings.discoveryPort, log,
    getState: () => ({ role: meta.role, term: meta.term, ...progress, tcpPort: server.port, name }),
  });
  signal.addEventListener('abort', () => { discovery?.close(); void server.close(); }, { once: true });
  if (meta.pair) discovery.setPair([meta.nodeId, meta.pair.peerNodeId].sort() as [string, string]);
  out.line(`${MARKER} discovering peer on ${lan.ifname} ${lan.ip}`);

  const pairingOptions = {
    discovery, server, keys, siteId: site.site.id, log, signal,
    ...(site.pair.preferredLeader ?? settings.preferredLeader ? { preferredLeader: site.pair.preferredLeader ?? settings.preferredLeader } : {}),
    self: currentCandidate,
    // Persisted before it is sent, so a re-run hands the follower the same bundle.
    secretsIfLeader: (_d: unknown, follower: Candidate & { address: string }) =>
      ensureClusterSecrets(settings.secretsDir, { nodes: [{ name, ip: lan.ip }, { name: follower.name ?? nodeName(site, follower.nodeId, follower.address), ip: follower.address }], vip, siteId: site.site.id }),
    onSecrets: async (s: unknown) => {
      storeSecrets(settings.secretsDir, validateSecrets(s, 'secrets from the leader'));
    },
  };
  const result = await runPairing(pairingOptions);
  const peer: NodeIdentity = { name: result.peer.name ?? nodeName(site, result.peer.nodeId, result.peerAddress), ip: result.peerAddress };
  save(recordPairing(meta, { role: result.role, term: result.term, pair: { leader: result.leader, peerNodeId: result.peer.nodeId, peerName: peer.name, peerAddress: peer.ip } }));
  status.peer = { nodeId: result.peer.nodeId, name: peer.name, address: peer.ip };
  log.event('info', 'paired', { role: result.role, term: result.term, peer: result.peer.nodeId });
  out.line(`${MARKER} paired role=${result.role} term=${result.term} peer=${peer.name}`);
  void keepConfirmingPair({ ...pairingOptions, nodeId: meta.nodeId, peerNodeId: result.peer.nodeId, role: result.role, term: result.term });

  // --- provision ---
  allowNonLocalBind();
  const self: NodeIdentity = { name, ip: lan.ip };
  const secrets = loadSecrets(settings.secretsDir);
  if (!secrets) throw new Error(`no cluster secrets in ${settings.secretsDir} after pairing`);
  if (result.role === 'follower') {
    // The follower copies the primary through the VIP: wait until the leader has bound it.
    for (let waited = 0; !(await canConnect(vip, settings.pgPort, 1000)); waited++) {
      if (signal.aborted) return;
      if (waited % 30 === 0) log.event('info', 'waiting-for-primary', { vip, port: settings.pgPort });
      await new Promise((r) => setTimeout(r, 1000));
    }
  }
  await runProvisioning({
    role: result.role, mode: settings.replication, self, peer, vip, port: settings.pgPort,
    ...(result.role === 'follower' ? { upstream: { host: vip, port: settings.pgPort } } : {}),
    paths: settings.pg, secretsDir: settings.secretsDir, siteId: site.site.id, log,
  });

  const kinePid = join(settings.runDir, 'kine.pid');
  stopOrphanKine(kinePid, settings.kineBinary);
  const upstream = result.role === 'leader' ? { host: '127.0.0.1', port: settings.pgPort } : { host: vip, port: settings.pgPort };
  const kine: KineProcess = await startKine({
    binary: settings.kineBinary, listenAddress: `0.0.0.0:${settings.kinePort}`, db: upstream, password: secrets.kinePassword,
    caFile: confFiles(settings.pg.confDir).caCert, logFile: join(settings.runDir, 'kine.log'),
    // Recorded before the health wait: a crash during it must not leave an unknown orphan on the port.
    onSpawn: (pid) => writeFileAtomic(kinePid, `${pid}\n`),
  });
  signal.addEventListener('abort', () => void kine.stop(), { once: true });
  status.kine = { listen: `${lan.ip}:${settings.kinePort}`, upstream: `${upstream.host}:${upstream.port}` };

  if (result.role === 'leader') {
    await bindVip(lan.ifname, site.network.vip);
    log.event('info', 'vip-bound', { vip: site.network.vip, interface: lan.ifname });
    if (settings.synchronous && settings.replication === 'physical') {
      // Synchronous only once the follower streams: before that, sync would block every write.
      void enableSynchronousReplication(pg, peer.name, 10 * 60_000).then(
        () => log.event('info', 'replication-synchronous', { standby: peer.name }),
        (e: unknown) => { status.lastError = (e as Error).message; log.event('error', 'replication-sync-failed', { error: (e as Error).message }); },
      );
    }
  }
  save(recordProvisioned(meta));
  log.event('info', 'cluster-ready', { role: meta.role, term: meta.term });
  out.line(`${MARKER} cluster ready role=${meta.role} term=${meta.term} kine=${lan.ip}:${settings.kinePort}`);
}

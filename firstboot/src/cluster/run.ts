/**
 * From a valid site file to a running pair: discover the peer, agree on roles and term, take
 * (leader) or receive (follower) the cluster secrets, provision PostgreSQL, start Kine, and on
 * the leader bind the VIP; then hand the node to the liveness loop (failover) for good. Every
 * stage is recorded in hostmeta.json before the next begins, and every provisioning step
 * converges when re-run, so killing the agent anywhere and starting it again ends in the same
 * pair. A node that was provisioned before resumes straight into the liveness loop: it must not
 * wait for the peer to agree again (the peer may be the box that died).
 */
import { createReadStream } from 'node:fs';
import { readFile, statfs } from 'node:fs/promises';
import { PassThrough } from 'node:stream';
import net from 'node:net';
import { join } from 'node:path';
import { processesRunning, stopProcesses } from '../adapters/daemons.ts';
import { storeHostMeta } from '../adapters/hostmeta-store.ts';
import type { ConsoleOut, EventRing, Logger } from '../adapters/output.ts';
import {
  clusterPhases,
  recordPairing,
  recordProvisioned,
  recordReplacement,
  recordReplacementEnded,
  recordReplacementOpened,
  type ClusterPhase,
  type HostMeta,
  type PairRole,
} from '../core/hostmeta.ts';
import { replacedPeerIsBack, replacementCandidateRefusal, replacementRefusal } from '../core/replacement.ts';
import type { HeartbeatFacts } from '../pairing/core/beacon.ts';
import { KineSupervisor } from '../liveness/kine-supervisor.ts';
import { startLiveness, type LivenessHandle } from '../liveness/loop.ts';
import { pacedLivenessConfig, type LivenessRole } from '../liveness/core/types.ts';
import { bootRole } from '../liveness/core/decide.ts';
import type { Watchdog } from '../liveness/watchdog.ts';
import { MARKER } from '../core/report.ts';
import { failoverPace, type SiteConfig } from '../core/site.ts';
import { arbiterClient, type ArbiterClient } from '../liveness/arbiter-client.ts';
import { ARBITER_DEFAULT_PORT } from '../liveness/arbiter-command.ts';
import { bindVip } from '../net/vip.ts';
import { ensureFirewall, nodeFirewall } from '../net/firewall.ts';
import { type StatusActions, startStatusServer } from '../net/status-server.ts';
import { startStatusPageServer } from '../net/status-page-server.ts';
import type { UpgradeService } from '../upgrade/service.ts';
import { derivePairKeys, openBeaconSocket, runPairing, startChannelServer, type BeaconSocket, type Candidate } from '../pairing/index.ts';
import { NO_PROGRESS, readProgress, type Progress } from './progress.ts';
import { keepConfirmingPair } from './reconfirm.ts';
import { validateSecrets, type ClusterSecrets, type NodeIdentity } from '../provision/core/secrets.ts';
import { kineUser, writeKineFiles } from '../provision/kine.ts';
import { ControlPlane } from '../kubernetes/control-plane.ts';
import { dropPhysicalSlot, type LocalPg, restoreKineDatabase, withAdmin } from '../provision/postgres.ts';
import { slotName } from '../provision/core/pgconf.ts';
import { runProvisioning } from '../provision/provision.ts';
import { replicationStatus } from '../provision/replication.ts';
import { ensureClusterSecrets, loadOrCreateNodeKey, loadSecrets, storeSecrets } from '../provision/secrets.ts';
import { allowNonLocalBind, waitForLanAddress } from './lan.ts';
import { runsUpstreamWorker, type ClusterSettings } from './settings.ts';
import { readBakedImages } from '../kubernetes/baked-images.ts';
import { clusterDnsIp } from '../kubernetes/core/addons.ts';
import { firstRangeHolderAfterReplacement, RESOLVED_UPSTREAMS, upstreamNameservers } from '../kubernetes/core/worker.ts';
import { defaultGateways } from '../liveness/probes.ts';
import { imageReference } from '../kubernetes/core/baked-images.ts';

/**
 * How long provisioning waits for its first Kine (failed starts are retried every 2 s meanwhile).
 * Past it the agent fails and systemd starts it again, resuming from hostmeta.json.
 */
const KINE_FIRST_START_MS = 120_000;

/**
 * The agent ends its run so that systemd (Restart=on-failure) starts it again: after a replace-node
 * the new peer is wired in by the one path that wires a peer, the resume of a provisioned node.
 */
export class RestartRequested extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'RestartRequested';
  }
}

export interface ClusterContext {
  settings: ClusterSettings;
  site: SiteConfig;
  stateDir: string;
  log: Logger;
  out: ConsoleOut;
  signal: AbortSignal;
  watchdog: Watchdog;
  /** A/B upgrades: shown in GET /status, applied by POST /upgrade, gated on this status. */
  upgrades?: UpgradeService;
  /** The agent's recent log lines, served as GET /events. */
  events?: EventRing;
}

/** Size and free space of the filesystem holding each path (PostgreSQL's data, the agent's state). */
async function diskUse(
  paths: Record<string, string>,
): Promise<Record<string, { path: string; totalBytes: number; freeBytes: number } | { path: string; error: string }>> {
  const entries = await Promise.all(
    Object.entries(paths).map(async ([key, path]) => {
      try {
        const s = await statfs(path);
        return [key, { path, totalBytes: s.blocks * s.bsize, freeBytes: s.bavail * s.bsize }] as const;
      } catch (e) {
        return [key, { path, error: (e as NodeJS.ErrnoException).code ?? (e as Error).message }] as const;
      }
    }),
  );
  return Object.fromEntries(entries);
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
  /** The operator's replace-node: this box admits one new box in place of `replaces`. */
  replacing?: { replaces: string; since: string };
  vip: string;
  kine?: { listen: string; tls: boolean };
  kubernetes?: ReturnType<ControlPlane['status']>;
  replication?: unknown;
  liveness?: Record<string, unknown>;
  lastError?: string;
}

/** Site node name for an address (static sites), else a stable name derived from the node id. */
export function nodeName(site: SiteConfig, nodeId: string, ip: string): string {
  return site.network.nodes?.find((n) => n.address.split('/')[0] === ip)?.name ?? `node-${nodeId.slice(0, 8)}`;
}

function candidate(meta: HostMeta, name: string, progress: Progress): Candidate {
  return { nodeId: meta.nodeId, name, ...progress, term: meta.term, ...(meta.pair ? { leader: meta.pair.leader } : {}) };
}

/** Witnesses of the site: the gateway and any extra addresses (none: the default gateway is probed). */
export function siteWitnesses(site: SiteConfig): string[] {
  return [...new Set([...(site.network.gateway ? [site.network.gateway] : []), ...(site.network.witnesses ?? [])])];
}

/** The site's arbiter, reached with this node's pair certificate and checked against the pair CA. */
function siteArbiter(a: NonNullable<SiteConfig['arbiter']>, secrets: ClusterSecrets, selfName: string): ArbiterClient {
  const mine = secrets.nodes[selfName];
  if (!mine) throw new Error(`the pair secrets hold no certificate for ${selfName}, which the arbiter needs`);
  return arbiterClient({ host: a.address, port: a.port ?? ARBITER_DEFAULT_PORT, ca: secrets.ca.certPem, cert: mine.certPem, key: mine.keyPem });
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
 * Kine runs as our child and outlives an agent crash (KillMode=process), so its orphan may still
 * hold the port: every Kine in this network namespace is stopped, and only while this agent has no
 * Kine of its own (adapters/daemons.ts says why they are found by what they run).
 */
async function stopOrphanKine(binary: string): Promise<void> {
  await stopProcesses(
    processesRunning(binary).map((p) => p.pid),
    0,
  );
}

export async function runCluster(ctx: ClusterContext, initial: HostMeta): Promise<void> {
  const { settings, site, log, out, signal } = ctx;
  let meta = initial;
  const vip = site.network.vip.split('/')[0] ?? '';
  const status: ClusterStatus = { nodeId: meta.nodeId, siteId: site.site.id, phase: meta.phase, role: meta.role, term: meta.term, vip: site.network.vip };
  const pg: LocalPg = { paths: settings.pg, port: settings.pgPort };
  const save = (next: HostMeta) => {
    meta = next;
    storeHostMeta(ctx.stateDir, meta);
    // The liveness loop reports the live role each tick; until then the persisted one.
    Object.assign(status, { phase: meta.phase, role: meta.role, term: meta.term });
  };
  let liveness: LivenessHandle | undefined;

  const clusterStatus = async () => {
    const disk = await diskUse({ postgresql: settings.pg.dataDir, state: ctx.stateDir });
    const lastPromotion = meta.lastPromotion ? { lastPromotion: meta.lastPromotion } : {};
    if (meta.phase !== 'provisioned') return { ...status, ...lastPromotion, disk };
    const replication = await replicationStatus(pg).catch((e: unknown) => ({ error: (e as Error).message }));
    return { ...status, ...lastPromotion, disk, replication };
  };
  const upgrades = ctx.upgrades;
  upgrades?.watch(async () => status);
  const fullStatus = async () => ({ ...(await clusterStatus()), ...(upgrades ? { upgrade: await upgrades.status() } : {}) });
  /** Set once Kine (and Kubernetes) run here: the operator's restore (POST /restore). */
  let restore: StatusActions['restore'];
  const statusServer = await startStatusServer(join(settings.runDir, 'agent.sock'), fullStatus, {
    switchover: () => liveness?.requestSwitchover() ?? { accepted: false, reason: 'the cluster is not running yet' },
    ...(ctx.events ? { events: ctx.events.last } : {}),
    restore: (request) =>
      restore ? restore(request) : Promise.resolve({ result: 'refused' as const, message: 'the datastore is not running on this box yet' }),
    ...(upgrades ? { upgrade: (request, progress) => upgrades.apply(request, progress) } : {}),
    replaceNode: (request) => replaceNodeAction(request),
  });
  signal.addEventListener('abort', () => void statusServer.close(), { once: true });

  const lan = await waitForLanAddress(site.network.vip, site.network.interface, log, signal);
  const name = nodeName(site, meta.nodeId, lan.ip);
  Object.assign(status, { name, address: lan.ip });
  log.event('info', 'lan-address', { interface: lan.ifname, address: lan.ip, name });
  // The agent does not go on without its firewall (ensureFirewall retries, one error event per
  // try): unpaired, the image's boot table may be all that stands between the LAN and what this
  // node is about to serve; paired, the peer cannot replicate through it anyway. A provisioned node
  // admits its peer at once, so an agent restart never shuts the peer out.
  await ensureFirewall(nodeFirewall(settings, lan.ifname, meta.phase === 'provisioned' ? meta.pair?.peerAddress : undefined), log, signal);
  // Every address, so the VIP shows the leader's page. Who reaches it: the LAN only (the host
  // firewall opens this port on the LAN interface and nowhere else). No authentication, on purpose:
  // it answers GET and HEAD with the same summary `geminik8s status` shows, nothing secret and no
  // action (net/status-page-server.ts). A box without its status page still does its job: the
  // failure is an event, not a stop.
  await startStatusPageServer({
    host: '0.0.0.0',
    port: settings.statusPagePort,
    status: fullStatus,
    kineMetricsUrl: `http://127.0.0.1:${settings.kineMetricsPort}/metrics`,
    log,
  }).then(
    (page) => signal.addEventListener('abort', () => void page.close(), { once: true }),
    (e: unknown) => log.event('error', 'status-page-unavailable', { port: settings.statusPagePort, error: (e as Error).message }),
  );

  // --- discover and agree ---
  // Beacons advertise the last known progress; negotiations read it live. Once the liveness loop
  // runs, every beacon carries its heartbeat instead.
  let progress = meta.phase === 'paired' || meta.phase === 'provisioned' ? await readProgress(pg) : NO_PROGRESS;
  const currentCandidate = async (): Promise<Candidate> => {
    if (meta.phase === 'paired' || meta.phase === 'provisioned') progress = await readProgress(pg);
    return candidate(meta, name, progress);
  };
  let live: { role: LivenessRole; term: number; timeline: number; lsn: string; hb: HeartbeatFacts } | undefined;
  const keys = derivePairKeys(site.pair.secret, site.site.id);
  const nodeKey = loadOrCreateNodeKey(settings.secretsDir);
  let beacons: BeaconSocket | undefined;
  // Paired but not yet live: tell the peer we are alive (provisioning can take minutes).
  const provisionalHeartbeat = (): HeartbeatFacts | undefined => {
    const heard = meta.pair ? beacons?.heartbeat.heard(meta.pair.peerNodeId) : undefined;
    if (!meta.pair) return undefined;
    return {
      pg: 'down',
      pgHealthy: false,
      syncRep: false,
      handoverForMs: null,
      peerSilentMs: Math.round(heard ? performance.now() - heard.at : 86_400_000),
      holdsVip: false,
      heardSyncRep: null,
    };
  };
  const server = await startChannelServer({
    keys,
    nodeId: meta.nodeId,
    host: lan.ip,
    port: settings.channelPort,
    log,
    admit: (id) => beacons?.discovery.refusalFor(id),
  });
  beacons = await openBeaconSocket({
    siteId: site.site.id,
    keys,
    nodeId: meta.nodeId,
    bindAddress: lan.ip,
    broadcastAddress: settings.broadcastAddress,
    port: settings.discoveryPort,
    log,
    getState: () => {
      if (live) return { ...live, committed: true, tcpPort: server.port, name };
      const hb = provisionalHeartbeat();
      return { role: meta.role, term: meta.term, ...progress, tcpPort: server.port, name, ...(hb ? { hb } : {}) };
    },
  });
  signal.addEventListener(
    'abort',
    () => {
      void beacons?.close();
      void server.close();
    },
    { once: true },
  );
  const { discovery, heartbeat } = beacons;
  if (meta.pair) {
    discovery.setPair([meta.nodeId, meta.pair.peerNodeId].sort() as [string, string]);
    heartbeat.setLink(meta.pair.peerNodeId, nodeKey.linkWith(meta.pair.peerKey, site.site.id));
  }
  out.line(`${MARKER} discovering peer on ${lan.ifname} ${lan.ip}`);

  const pairingOptions = {
    discovery,
    server,
    keys,
    nodeKey,
    siteId: site.site.id,
    log,
    signal,
    // Once paired, the partner must prove the node key it proved then (pair secret alone: refused).
    pinnedKey: (peerNodeId: string) => (meta.pair?.peerNodeId === peerNodeId ? meta.pair.peerKey : undefined),
    ...((site.pair.preferredLeader ?? settings.preferredLeader) ? { preferredLeader: site.pair.preferredLeader ?? settings.preferredLeader } : {}),
    self: currentCandidate,
    // Persisted before it is sent, so a re-run hands the follower the same bundle.
    secretsIfLeader: (_d: unknown, follower: Candidate & { address: string }) =>
      ensureClusterSecrets(settings.secretsDir, {
        nodes: [
          { name, ip: lan.ip },
          { name: follower.name ?? nodeName(site, follower.nodeId, follower.address), ip: follower.address },
        ],
        vip,
        siteId: site.site.id,
      }),
    onSecrets: async (s: unknown) => {
      storeSecrets(settings.secretsDir, validateSecrets(s, 'secrets from the leader'));
    },
  };
  const self: NodeIdentity = { name, ip: lan.ip };
  // Loopback by default: only this box's own clients reach Kine. A profile with remote etcd clients
  // (Kubernetes servers elsewhere on the site LAN) binds every address, and then Kine accepts only
  // TLS with a client certificate from the pair CA (kineLaunch passes its tls files; kine.ts); the
  // firewall opens 2379 to the LAN only in that mode (net/core/firewall.ts).
  const kineListen = `${settings.kineRemoteClients ? '0.0.0.0' : '127.0.0.1'}:${settings.kinePort}`;
  const kineLaunch = (secrets: ClusterSecrets) => {
    const owner = kineUser();
    const files = writeKineFiles(join(settings.runDir, 'kine'), secrets, name, { remoteClients: settings.kineRemoteClients, ...(owner ? { owner } : {}) });
    return {
      binary: settings.kineBinary,
      listenAddress: kineListen,
      password: secrets.kinePassword,
      caFile: files.pgCaFile,
      logFile: join(settings.runDir, 'kine.log'),
      // Loopback only: the status page server appends Kine's metrics to its /metrics.
      metricsBindAddress: `127.0.0.1:${settings.kineMetricsPort}`,
      ...(files.tls ? { tls: files.tls } : {}),
      ...(owner ? { runAs: { uid: owner.uid, gid: owner.gid } } : {}),
    };
  };
  // Set by resume or pair, for the phases after them.
  let peer!: NodeIdentity & { nodeId: string };
  let initialRole!: LivenessRole;
  let secrets!: ClusterSecrets;
  let kine!: KineSupervisor;
  let announcedReady = false;
  let kubernetesControlPlane: ControlPlane | undefined;
  /** The re-confirmation loop of the current peer (stopped while a replacement is admitted). */
  let reconfirm: AbortController | undefined;
  /** The open admission of a replacement, if any. */
  let admission: AbortController | undefined;
  let replacedBy: string | undefined;
  let onPeerReplaced!: () => void;
  const peerReplaced = new Promise<void>((resolve) => {
    onPeerReplaced = resolve;
  });
  /** The pair's secrets, and the one owner of Kine from here on (provisioning's first start and the liveness loop's restarts). */
  const takeSecrets = () => {
    const loaded = loadSecrets(settings.secretsDir);
    if (!loaded) throw new Error(`no cluster secrets in ${settings.secretsDir}; the node is ${meta.phase} but its secrets are gone`);
    secrets = loaded;
    kine = new KineSupervisor({ ...kineLaunch(secrets), port: settings.pgPort, log });
    status.kine = { listen: kineListen, tls: settings.kineRemoteClients };
  };

  const phases: Record<ClusterPhase, () => Promise<void>> = {
    resume: async () => {
      if (!meta.pair) throw new Error('resume needs a recorded pair');
      peer = { nodeId: meta.pair.peerNodeId, name: meta.pair.peerName, ip: meta.pair.peerAddress };
      initialRole = bootRole(meta.role === 'follower' ? 'follower' : 'leader');
      log.event('info', 'resuming', { role: meta.role, startsAs: initialRole, term: meta.term, peer: peer.nodeId });
      out.line(`${MARKER} resuming role=${meta.role} term=${meta.term} peer=${peer.name}`);
      answerPeerReruns();
      allowNonLocalBind();
      await stopOrphanKine(settings.kineBinary);
      takeSecrets();
    },
    pair: async () => {
      const result = await runPairing(pairingOptions);
      peer = { nodeId: result.peer.nodeId, name: result.peer.name ?? nodeName(site, result.peer.nodeId, result.peerAddress), ip: result.peerAddress };
      save(
        recordPairing(meta, {
          role: result.role,
          term: result.term,
          pair: { leader: result.leader, peerNodeId: peer.nodeId, peerName: peer.name, peerAddress: peer.ip, peerKey: result.peerKey },
        }),
      );
      heartbeat.setLink(peer.nodeId, result.link);
      log.event('info', 'paired', { role: result.role, term: result.term, peer: peer.nodeId });
      out.line(`${MARKER} paired role=${result.role} term=${result.term} peer=${peer.name}`);
      // PostgreSQL and the pairing channel: from now on the peer's address only.
      await ensureFirewall(nodeFirewall(settings, lan.ifname, peer.ip), log, signal);
      initialRole = result.role;
      // Before provisioning: a peer restarted meanwhile re-runs the agreement and needs an answer
      // (its new boot must not be mistaken for the one already confirmed).
      answerPeerReruns();
      takeSecrets();
    },
    provision: async () => {
      await provision(initialRole === 'follower' ? 'follower' : 'leader', kine);
      announcedReady = true;
    },
    live: async () => {
      const controlPlane = await startControlPlane(secrets);
      kubernetesControlPlane = controlPlane;
      restore = restoreAction(controlPlane);
      liveness = startLiveness({
        nodeId: meta.nodeId,
        peer: { nodeId: peer.nodeId, name: peer.name, address: peer.ip },
        ifname: lan.ifname,
        vipCidr: site.network.vip,
        witnesses: siteWitnesses(site),
        ...(site.arbiter ? { arbiter: { client: siteArbiter(site.arbiter, secrets, self.name), selfName: self.name } } : {}),
        config: pacedLivenessConfig(failoverPace(site)),
        pg,
        mode: settings.replication,
        secrets,
        divergentDir: join(ctx.stateDir, 'divergent'),
        stateDir: ctx.stateDir,
        follower: provisionConfig('follower'),
        heartbeat,
        kine,
        meta: () => meta,
        save,
        ...(controlPlane
          ? {
              kubernetes: {
                observe: (datastoreReady: boolean) => {
                  controlPlane.observe(datastoreReady);
                  status.kubernetes = controlPlane.status();
                },
                apiHealthy: () => controlPlane.apiHealthy(),
              },
            }
          : {}),
        publish: (state) => {
          // A new role, term, handover, VIP or sync mode is worth a heartbeat now rather than at the next beat.
          const changed =
            !live ||
            live.role !== state.role ||
            live.term !== state.term ||
            live.hb.holdsVip !== state.hb.holdsVip ||
            live.hb.syncRep !== state.hb.syncRep ||
            // The echo a leader waits for before it switches to async (D1).
            live.hb.heardSyncRep !== state.hb.heardSyncRep ||
            (live.hb.handoverForMs === null) !== (state.hb.handoverForMs === null);
          live = state;
          if (changed) heartbeat.announce();
        },
        report: (fields) => {
          Object.assign(status, fields);
          if (!fields.lastError) delete status.lastError;
        },
        initialRole,
        announcedReady,
        log,
        out,
        signal,
        watchdog: ctx.watchdog,
      });
      if (meta.replacing) admitReplacement();
      await Promise.race([liveness.done, peerReplaced]);
      if (replacedBy) throw new RestartRequested(`the peer was replaced by ${replacedBy}: restarting to take it in`);
    },
  };
  for (const phase of clusterPhases(meta)) {
    log.event('info', 'cluster-phase', { phase });
    await phases[phase]();
  }

  /**
   * The operator's restore (geminik8s restore): on the leader, Kine's database is replaced with the
   * archive while Kine is held stopped; the follower's standby receives it by replication. Every
   * reader of the datastore (Kine; the Kubernetes programs, whose caches and watches describe the
   * old one) starts afresh; on the follower that is all a restartOnly request does.
   */
  function restoreAction(controlPlane: ControlPlane | undefined): NonNullable<StatusActions['restore']> {
    let busy = false;
    return async (request) => {
      if (busy) return { result: 'refused', message: 'a restore is already running on this box' };
      const role = live?.role ?? meta.role;
      if (request.file !== undefined && role !== 'leader') return { result: 'refused', message: `this box is ${role}: restore on the leader` };
      busy = true;
      const t0 = performance.now();
      try {
        if (request.file !== undefined) {
          log.event('warn', 'restore-started', { file: request.file });
          try {
            await kine.hold();
            await restoreKineDatabase(pg, createReadStream(request.file), new PassThrough().resume());
          } finally {
            // Also when Kine would not stop in time: a held Kine never comes back by itself.
            kine.release();
          }
        } else kine.restart();
        await controlPlane?.restartPrograms();
        const seconds = Math.round((performance.now() - t0) / 100) / 10;
        log.event('warn', request.file !== undefined ? 'restored' : 'datastore-readers-restarted', { seconds });
        return request.file !== undefined
          ? { result: 'restored', message: `Kine's database restored in ${seconds} s; Kine${controlPlane ? ' and Kubernetes' : ''} restarted` }
          : { result: 'restarted', message: `Kine${controlPlane ? ' and Kubernetes' : ''} restarted` };
      } catch (e) {
        log.event('error', 'restore-failed', { error: (e as Error).message });
        return { result: 'failed', message: (e as Error).message };
      } finally {
        busy = false;
      }
    };
  }

  /** The Kubernetes server's files, ready to start once Kine answers (the liveness tick starts it). */
  async function startControlPlane(secrets: ClusterSecrets): Promise<ControlPlane | undefined> {
    if (!settings.kubernetes) return undefined;
    // Kine answers on loopback in both modes (a wildcard bind covers it); TLS only when it serves remote clients.
    const etcdEndpoint = `${settings.kineRemoteClients ? 'https' : 'http'}://127.0.0.1:${settings.kinePort}`;
    const cp = new ControlPlane({
      distribution: settings.kubernetes.distribution,
      binary: settings.kubernetesBinary,
      stateDir: ctx.stateDir,
      runDir: settings.runDir,
      log,
      ...(runsUpstreamWorker(settings) ? { upstreamDns: currentUpstreamDns } : {}),
      input: {
        node: self,
        vip,
        etcdEndpoint,
        etcdTls: settings.kineRemoteClients,
        clusterCidr: settings.kubernetes.clusterCidr,
        serviceCidr: settings.kubernetes.serviceCidr,
        apiPort: settings.kubeApiPort,
        timeScale: failoverPace(site),
        kinePort: settings.kinePort,
        k3sDisable: settings.kubernetes.disable,
        ...(runsUpstreamWorker(settings) ? { worker: await workerOptions(settings.kubernetes.serviceCidr, secrets.podRangeFirst) } : {}),
      },
    });
    await cp.prepare(secrets);
    status.kubernetes = cp.status();
    return cp;
  }

  /**
   * This box as a worker: its peer, the pod range split the pair recorded, the baked images its
   * pods start from (images.json), and the nameservers CoreDNS forwards to (core/worker.ts).
   */
  async function workerOptions(serviceCidr: string, podRangeFirst: string | undefined) {
    const images = readBakedImages();
    const upstreamDns = await currentUpstreamDns();
    if (upstreamDns.length === 0)
      log.event('warn', 'kube-no-upstream-dns', {
        message: 'no DNS server and no gateway known: cluster DNS will fail (set network.gateway in the site file)',
      });
    return {
      upstreamDns,
      peer: { name: peer.name, ip: peer.ip },
      ...(podRangeFirst !== undefined ? { podRangeFirst } : {}),
      lanInterface: lan.ifname,
      clusterDns: clusterDnsIp(serviceCidr),
      pauseImage: imageReference(images, 'pause'),
      coreDnsImage: imageReference(images, 'coredns'),
    };
  }

  /** The nameservers CoreDNS forwards to, as the box knows them now (core/worker.ts upstreamNameservers). */
  async function currentUpstreamDns(): Promise<string[]> {
    const resolved = await readFile(RESOLVED_UPSTREAMS, 'utf8').catch(() => '');
    const gateway = site.network.gateway ?? (await defaultGateways().catch(() => []))[0];
    return upstreamNameservers(resolved, gateway);
  }

  function answerPeerReruns(): void {
    status.peer = { nodeId: peer.nodeId, name: peer.name, address: peer.ip };
    // The replaced peer is dead and a new box is being admitted: nobody to re-confirm with.
    if (meta.replacing) return;
    reconfirm = new AbortController();
    const stop = reconfirm;
    signal.addEventListener('abort', () => stop.abort(), { once: true });
    void keepConfirmingPair({
      ...pairingOptions,
      nodeId: meta.nodeId,
      peerNodeId: peer.nodeId,
      current: () => ({ role: meta.role, term: meta.term }),
      signal: stop.signal,
    });
  }

  /**
   * POST /replace-node (geminik8s replace-node): opens this box to one freshly flashed box of the
   * site in place of its dead peer (the rules: core/replacement.ts), or with `cancel` closes it.
   */
  function replaceNodeAction(request: { cancel?: boolean }): { accepted: boolean; reason: string } {
    if (request.cancel) {
      if (!meta.replacing) return { accepted: false, reason: 'this box is not admitting a replacement' };
      endAdmission('the operator cancelled it');
      return { accepted: true, reason: `admission closed: the pair stays ${name} + ${peer.name}` };
    }
    if (meta.replacing) return { accepted: true, reason: `already admitting a replacement for ${peer.name} (since ${meta.replacing.since})` };
    const now = liveness?.state();
    const refusal = replacementRefusal({ phase: meta.phase, role: now?.role ?? meta.role, peerSilentMs: now?.peerSilentMs });
    if (refusal !== undefined) {
      log.event('warn', 'replacement-refused', { reason: refusal });
      return { accepted: false, reason: refusal };
    }
    save(recordReplacementOpened(meta, new Date()));
    admitReplacement();
    return { accepted: true, reason: `admitting one freshly flashed box of site ${site.site.id} in place of ${peer.name} (${peer.ip})` };
  }

  /**
   * The survivor's open door: its pair forgotten by discovery, the pairing channel open to the LAN
   * (PostgreSQL to nobody: the old peer is dead and the new one not known yet), and the pairing run
   * again, in which this box (committed) leads and hands its secrets to the one fresh box that comes.
   * Closed when the replaced box is heard again. Once the new box has its secrets, it is recorded as
   * the peer and the agent restarts to wire it in (RestartRequested).
   */
  function admitReplacement(): void {
    const replacing = meta.replacing;
    if (!replacing || admission) return;
    const door = new AbortController();
    admission = door;
    signal.addEventListener('abort', () => door.abort(), { once: true });
    reconfirm?.abort();
    const old = { nodeId: peer.nodeId, name: peer.name, ip: peer.ip };
    status.replacing = { replaces: old.name, since: replacing.since };
    discovery.clearPair();
    log.event('warn', 'replacement-admitting', { replaces: old.nodeId, name: old.name, address: old.ip });
    out.line(`${MARKER} admitting a replacement for ${old.name}`);
    // From the moment a newcomer's secrets are being prepared until its pairing attempt ends, the
    // door stays open even if the replaced box is heard: closing it then would take PostgreSQL and
    // the firewall back from a newcomer that may already hold the secrets, and strand it. A close
    // asked for meanwhile happens when the next attempt starts (the hand-over failed), or is only
    // logged if the hand-over completed (the operator's replacement stands; the old box is refused).
    let handingOver = false;
    let closeBetweenAttempts: string | undefined;
    const watch = setInterval(() => {
      const now = liveness?.state();
      if (now?.peerSilentMs === undefined || !replacedPeerIsBack(now.peerSilentMs)) return;
      const why = `${old.name} is heard again`;
      if (handingOver) closeBetweenAttempts = why;
      else endAdmission(why);
    }, 1000);
    door.signal.addEventListener('abort', () => clearInterval(watch), { once: true });
    void (async () => {
      await ensureFirewall(nodeFirewall(settings, lan.ifname, undefined), log, door.signal);
      const result = await runPairing({
        ...pairingOptions,
        discovery: {
          ...discovery,
          peers: () => discovery.peers().filter((p) => p.nodeId !== old.nodeId),
        },
        signal: door.signal,
        // runPairing reads the candidate at the start of every attempt: the last one has ended.
        self: () => {
          handingOver = false;
          if (closeBetweenAttempts !== undefined) {
            endAdmission(closeBetweenAttempts);
            // runPairing checks its signal only before this call: the attempt must not go on.
            throw new Error(`admission closed: ${closeBetweenAttempts}`);
          }
          return currentCandidate();
        },
        refuseCandidate: (c) => replacementCandidateRefusal(c, old.nodeId),
        secretsIfLeader: (_d, newcomer) => {
          if (door.signal.aborted) throw new Error('admission closed');
          handingOver = true;
          return prepareForNewcomer(old, newcomer);
        },
        onSecrets: () => Promise.reject(new Error('a survivor admitting a replacement leads; it takes no secrets')),
      });
      if (door.signal.aborted) return;
      if (result.role !== 'leader') throw new Error(`the pairing made this box ${result.role}; a survivor must lead`);
      const newName = result.peer.name ?? nodeName(site, result.peer.nodeId, result.peerAddress);
      replacedBy = `${newName} (${result.peerAddress}, node ${result.peer.nodeId})`;
      save(
        recordReplacement(meta, {
          leader: meta.nodeId,
          peerNodeId: result.peer.nodeId,
          peerName: newName,
          peerAddress: result.peerAddress,
          peerKey: result.peerKey,
        }),
      );
      delete status.replacing;
      status.peer = { nodeId: result.peer.nodeId, name: newName, address: result.peerAddress };
      log.event('warn', 'peer-replaced', { replaced: old.nodeId, name: newName, address: result.peerAddress, peer: result.peer.nodeId });
      if (closeBetweenAttempts !== undefined) log.event('warn', 'replaced-box-heard-during-hand-over', { replaced: old.nodeId, name: old.name });
      out.line(`${MARKER} peer replaced old=${old.name} new=${newName} address=${result.peerAddress}`);
      if (kubernetesControlPlane && newName !== old.name) {
        await kubernetesControlPlane.deleteNode(old.name).then(
          (r) => log.event('info', 'kubernetes-node-removed', { node: old.name, result: r }),
          (e: unknown) => log.event('warn', 'kubernetes-node-not-removed', { node: old.name, error: (e as Error).message }),
        );
      }
      door.abort();
      onPeerReplaced();
    })().catch((e: unknown) => {
      if (door.signal.aborted) return;
      log.event('error', 'replacement-failed', { error: (e as Error).message });
      endAdmission(`it failed: ${(e as Error).message}`);
    });
  }

  /** Closes the door; the pair stays as it was: the old peer's pin, firewall, PostgreSQL access and re-confirmation. */
  function endAdmission(why: string): void {
    if (!meta.replacing) return;
    admission?.abort();
    admission = undefined;
    save(recordReplacementEnded(meta));
    delete status.replacing;
    discovery.setPair([meta.nodeId, peer.nodeId].sort() as [string, string]);
    log.event('warn', 'replacement-ended', { reason: why, peer: peer.nodeId });
    void (async () => {
      await ensureFirewall(nodeFirewall(settings, lan.ifname, peer.ip), log, signal);
      // A newcomer that got this far had PostgreSQL opened to it: give the old peer its access back.
      await runProvisioning(provisionConfig('leader'));
    })().catch((e: unknown) => log.event('error', 'replacement-end-failed', { error: (e as Error).message }));
    answerPeerReruns();
  }

  /**
   * Before the new box gets the secrets (it base-backs-up from this box right after): a certificate
   * of its own, the firewall and pg_hba open to its address, its replication slot, and the dead
   * box's slot dropped so it stops holding WAL here. Re-run for every newcomer that gets this far.
   */
  async function prepareForNewcomer(old: NodeIdentity, newcomer: Candidate & { address: string }): Promise<ClusterSecrets> {
    const next: NodeIdentity = { name: newcomer.name ?? nodeName(site, newcomer.nodeId, newcomer.address), ip: newcomer.address };
    if (next.name === name) throw new Error(`the new box would be named ${next.name}, like this one: give it another address in the site file`);
    // This box's pods keep their addresses: its share of the pod range stays its own.
    const recorded = loadSecrets(settings.secretsDir)?.podRangeFirst;
    const podRangeFirst = firstRangeHolderAfterReplacement(
      { node: self, peer: old, ...(recorded !== undefined ? { podRangeFirst: recorded } : {}) },
      next.name,
    );
    const s = await ensureClusterSecrets(settings.secretsDir, { nodes: [self, next], vip, siteId: site.site.id }, { replacing: old.name, podRangeFirst });
    await ensureFirewall(nodeFirewall(settings, lan.ifname, next.ip), log, signal);
    await runProvisioning(provisionConfig('leader', next));
    if (old.name !== next.name) {
      const dropped = await withAdmin(pg, (db) => dropPhysicalSlot(db, slotName(old.name)));
      log.event('info', 'replication-slot-of-replaced-box', { slot: slotName(old.name), result: dropped });
    }
    return s;
  }

  function provisionConfig(role: PairRole, partner: NodeIdentity = peer) {
    return {
      role,
      mode: settings.replication,
      self,
      peer: partner,
      vip,
      port: settings.pgPort,
      // A standby streams from the peer's own address, not the VIP: in a pair the peer is the
      // primary whenever this node follows, and a leader handing over releases the VIP before
      // its standby has caught up.
      ...(role === 'follower' ? { upstream: { host: partner.ip, port: settings.pgPort } } : {}),
      paths: settings.pg,
      secretsDir: settings.secretsDir,
      siteId: site.site.id,
      log,
    };
  }

  /** First provisioning after the agreement: PostgreSQL in its role, Kine (through the supervisor), the VIP on the leader. */
  async function provision(role: PairRole, kine: KineSupervisor): Promise<void> {
    allowNonLocalBind();
    if (role === 'follower') {
      // The follower copies the primary once the leader has provisioned and bound the VIP.
      for (let waited = 0; !(await canConnect(vip, settings.pgPort, 1000)); waited++) {
        if (signal.aborted) throw new Error('stopped while waiting for the primary');
        if (waited % 30 === 0) log.event('info', 'waiting-for-primary', { vip, port: settings.pgPort });
        await new Promise((r) => setTimeout(r, 1000));
      }
    }
    await runProvisioning(provisionConfig(role));
    await stopOrphanKine(settings.kineBinary);
    await kine.running(role === 'leader' ? '127.0.0.1' : vip, KINE_FIRST_START_MS, signal);
    if (role === 'leader') {
      await bindVip(lan.ifname, site.network.vip);
      log.event('info', 'vip-bound', { vip: site.network.vip, interface: lan.ifname });
    }
    save(recordProvisioned(meta));
    log.event('info', 'cluster-ready', { role: meta.role, term: meta.term });
    out.line(`${MARKER} cluster ready role=${meta.role} term=${meta.term} kine=${settings.kineRemoteClients ? lan.ip : '127.0.0.1'}:${settings.kinePort}`);
  }
}

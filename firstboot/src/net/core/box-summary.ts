/**
 * One box as an operator sees it (pure): the agent's GET /status reduced to what `geminik8s status`,
 * the box's metrics and its status page show — role, term, PostgreSQL, replication mode and lag,
 * VIP, Kubernetes API, last promotion and why, disk use, version and slots. All three read this
 * summary, so a field means the same wherever it is shown.
 */

/** The parts of GET /status (cluster/run.ts ClusterStatus, upgrade/service.ts status()) read here. */
export interface AgentStatusJson {
  nodeId?: string;
  siteId?: string;
  name?: string;
  address?: string;
  phase?: string;
  role?: string;
  term?: number;
  vip?: string;
  peer?: { nodeId?: string; name?: string; address?: string };
  /** Set while the box admits a replacement for its dead peer (replace-node). */
  replacing?: { replaces: string; since: string };
  lastError?: string;
  lastPromotion?: { at: string; term: number; cause: string; reason: string };
  liveness?: {
    reason?: string;
    pg?: string;
    syncRep?: boolean;
    standbyStreaming?: boolean;
    receiverStreaming?: boolean;
    holdsVip?: boolean;
    witnessOk?: boolean;
    peerSilentMs?: number;
    kineHealthy?: boolean;
    promotions?: Record<string, number>;
  };
  replication?: {
    role?: 'primary' | 'standby';
    timeline?: number;
    currentLsn?: string;
    receiveLsn?: string | null;
    replayLsn?: string | null;
    replayBacklogBytes?: number | null;
    standbys?: { applicationName: string; state: string; syncState: string; replayLagBytes: number | null; replayLagMs: number | null }[];
    error?: string;
  };
  kubernetes?: { apiserver?: string };
  disk?: Record<string, { path: string; totalBytes?: number; freeBytes?: number; error?: string }>;
  upgrade?: { version?: string; slots?: { booted?: string; committed?: string; trying?: string | null }; last?: { state: string; reason?: string } };
}

/** sync / async: how the leader's standby replicates; streaming: a follower receiving WAL (the leader knows which mode). */
export type ReplicationMode = 'sync' | 'async' | 'streaming' | 'none';

export interface BoxSummary {
  name: string;
  address: string;
  siteId: string;
  phase: string;
  role: string;
  term: number;
  /** PostgreSQL as the liveness loop last sampled it: primary, standby, down, … */
  postgres: string;
  timeline: number | null;
  /** This box's WAL position: the primary's current LSN, a standby's replayed LSN. */
  walLsn: string | null;
  /** A standby's received LSN. */
  receivedLsn: string | null;
  /** Leader: how its standby replicates (sync: commits wait for it); follower: whether it streams. */
  replication: ReplicationMode;
  /** Leader: its standby's replay lag; follower: WAL received but not replayed yet. Null when unknown. */
  lagBytes: number | null;
  lagSeconds: number | null;
  holdsVip: boolean;
  vip: string;
  fenced: boolean;
  witnessOk: boolean | null;
  peerSilentSeconds: number | null;
  kineHealthy: boolean | null;
  /** ready / starting / down; null on a box without Kubernetes. */
  kubernetesApi: string | null;
  lastPromotion: { at: string; term: number; cause: string; reason: string } | null;
  promotions: Record<string, number>;
  disk: { name: string; path: string; totalBytes: number; freeBytes: number }[];
  version: string | null;
  slots: { booted: string | null; committed: string | null; trying: string | null };
  lastUpgrade: string | null;
  /** Why the box is not healthy, from the agent's own report. */
  lastError: string | null;
  /** The dead peer this box admits a replacement for (replace-node), and since when. */
  replacing: { replaces: string; since: string } | null;
}

const numberOr = (v: unknown, fallback: number | null): number | null => (typeof v === 'number' && Number.isFinite(v) ? v : fallback);

export function summarizeBox(s: AgentStatusJson): BoxSummary {
  const l = s.liveness ?? {};
  const r = s.replication ?? {};
  const leader = s.role === 'leader';
  const standby = r.standbys?.find((x) => x.state === 'streaming') ?? r.standbys?.[0];
  const replication: ReplicationMode = leader
    ? standby?.state === 'streaming'
      ? standby.syncState === 'sync'
        ? 'sync'
        : 'async'
      : 'none'
    : l.receiverStreaming === true
      ? 'streaming'
      : 'none';
  const slots = s.upgrade?.slots ?? {};
  return {
    name: s.name ?? (s.nodeId ? `node-${s.nodeId.slice(0, 8)}` : 'unknown'),
    address: s.address ?? '',
    siteId: s.siteId ?? '',
    phase: s.phase ?? 'unknown',
    role: s.role ?? 'unknown',
    term: s.term ?? 0,
    postgres: l.pg ?? r.role ?? 'unknown',
    timeline: numberOr(r.timeline, null),
    walLsn: (r.role === 'primary' ? r.currentLsn : r.replayLsn) ?? null,
    receivedLsn: r.role === 'standby' ? (r.receiveLsn ?? null) : null,
    replication,
    lagBytes: leader ? numberOr(standby?.replayLagBytes, null) : numberOr(r.replayBacklogBytes, null),
    lagSeconds: leader ? leaderLagSeconds(standby) : null,
    holdsVip: l.holdsVip === true,
    vip: s.vip ?? '',
    fenced: s.role === 'fenced',
    witnessOk: typeof l.witnessOk === 'boolean' ? l.witnessOk : null,
    peerSilentSeconds: typeof l.peerSilentMs === 'number' ? l.peerSilentMs / 1000 : null,
    kineHealthy: typeof l.kineHealthy === 'boolean' ? l.kineHealthy : null,
    kubernetesApi: s.kubernetes?.apiserver ?? null,
    lastPromotion: s.lastPromotion ?? null,
    promotions: { ...(l.promotions ?? {}) },
    disk: Object.entries(s.disk ?? {}).flatMap(([name, d]) =>
      typeof d.totalBytes === 'number' && typeof d.freeBytes === 'number' ? [{ name, path: d.path, totalBytes: d.totalBytes, freeBytes: d.freeBytes }] : [],
    ),
    version: s.upgrade?.version ?? null,
    slots: { booted: slots.booted ?? null, committed: slots.committed ?? null, trying: slots.trying ?? null },
    lastUpgrade: s.upgrade?.last ? `${s.upgrade.last.state}${s.upgrade.last.reason ? `: ${s.upgrade.last.reason}` : ''}` : null,
    lastError: s.lastError ?? (r.error ? `replication status: ${r.error}` : null),
    replacing: s.replacing ?? null,
  };
}

/**
 * PostgreSQL shows replay_lag as NULL once a caught-up standby has seen no WAL for a while: with no
 * bytes outstanding that is no lag at all.
 */
function leaderLagSeconds(standby: { replayLagMs: number | null; replayLagBytes: number | null } | undefined): number | null {
  if (!standby) return null;
  if (standby.replayLagMs !== null) return standby.replayLagMs / 1000;
  return standby.replayLagBytes === 0 ? 0 : null;
}

/** A PostgreSQL LSN ("16/B374D848") as a byte position. */
export function lsnBytes(lsn: string): number | null {
  const m = /^([0-9A-Fa-f]{1,8})\/([0-9A-Fa-f]{1,8})$/.exec(lsn);
  return m ? Number.parseInt(m[1]!, 16) * 2 ** 32 + Number.parseInt(m[2]!, 16) : null;
}

/** Bytes as a short human figure (binary units). */
export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let u = 0;
  while (Math.abs(v) >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return `${u === 0 ? v : v.toFixed(v < 10 ? 1 : 0)} ${units[u]}`;
}

/** The cells of one box's row, shared by the CLI table and the status page. */
export function summaryCells(b: BoxSummary): [string, string][] {
  const disk = b.disk.map((d) => `${d.name} ${formatBytes(d.totalBytes - d.freeBytes)} of ${formatBytes(d.totalBytes)}`).join(', ');
  const lag = b.lagBytes === null ? '' : ` lag ${formatBytes(b.lagBytes)}${b.lagSeconds !== null ? ` / ${b.lagSeconds.toFixed(1)} s` : ''}`;
  return [
    ['box', `${b.name} ${b.address}`],
    ['role', `${b.role} (term ${b.term})${b.holdsVip ? `, holds VIP ${b.vip}` : ''}`],
    ['postgresql', `${b.postgres}${b.timeline !== null ? `, timeline ${b.timeline}` : ''}${b.walLsn ? `, WAL ${b.walLsn}` : ''}`],
    ['replication', `${b.replication}${lag}`],
    ['kubernetes api', b.kubernetesApi ?? 'not run on this box'],
    ['last promotion', b.lastPromotion ? `${b.lastPromotion.at} term ${b.lastPromotion.term}, ${b.lastPromotion.cause}: ${b.lastPromotion.reason}` : 'never'],
    ['disk', disk || 'unknown'],
    [
      'version',
      `${b.version ?? 'unknown'} (slot ${b.slots.booted ?? '?'}, committed ${b.slots.committed ?? '?'})${b.lastUpgrade ? `, last upgrade ${b.lastUpgrade}` : ''}`,
    ],
    ...(b.replacing ? ([['replacing', `admits one new box in place of ${b.replacing.replaces} (since ${b.replacing.since})`]] as [string, string][]) : []),
    ...(b.lastError ? ([['problem', b.lastError]] as [string, string][]) : []),
  ];
}

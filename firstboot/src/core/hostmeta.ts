/**
 * hostmeta.json: the node's persistent identity and boot state. Pure model and transitions; the
 * store adapter does the atomic file I/O. Never holds the pair secret.
 */

export const HOSTMETA_SCHEMA_VERSION = 1;
export const HOSTMETA_FILE = 'hostmeta.json';

/**
 * - `waiting-for-site`: local steps done, no site.yaml on the OEM partition yet.
 * - `site-invalid`: local steps done, site.yaml present but rejected (errors logged and on the console).
 * - `local-ready`: local steps done and a valid site read; next is discovery of the peer.
 * - `paired`: both boxes agreed on roles and term (persisted here before any provisioning).
 * - `provisioned`: PostgreSQL, Kine (and the VIP on the leader) are set up; the node has
 *   committed cluster state, which the election ranks first.
 */
export type Phase = 'waiting-for-site' | 'site-invalid' | 'local-ready' | 'paired' | 'provisioned';
const PHASES: readonly Phase[] = ['waiting-for-site', 'site-invalid', 'local-ready', 'paired', 'provisioned'];
/**
 * The one role vocabulary of a node. The pairing gives a node one of the two pair roles; liveness
 * adds `fenced`, a leader that stopped taking writes (liveness/core/types.ts), which is how every
 * leader starts after a restart too; hostmeta records `unassigned` before the pairing.
 */
export type PairRole = 'leader' | 'follower';
export type LivenessRole = PairRole | 'fenced';
export type Role = 'unassigned' | LivenessRole;
/**
 * Why a node became the leader, for the operator (status, metrics): the leader was lost (the peer
 * went silent), the peer handed over (planned switchover or its broken PostgreSQL), or a fenced
 * node that had gone async reclaimed the lead alone.
 */
export type PromotionCause = 'leader-lost' | 'handover' | 'reclaim';
const ROLES: readonly Role[] = ['unassigned', 'leader', 'follower', 'fenced'];

/** The agreed pair, persisted so a restart re-confirms it instead of electing afresh. */
export interface PairState {
  leader: string;
  peerNodeId: string;
  peerName: string;
  peerAddress: string;
  /** The peer's node public key, proven at pairing: only it can speak for the peer from now on. */
  peerKey: string;
}

export interface DataPartitionState {
  device: string;
  sizeBytes: number;
  /** When the agent last grew the partition or filesystem (informational: the clock may be wrong). */
  grownAt?: string;
}

export interface HostMeta {
  schemaVersion: typeof HOSTMETA_SCHEMA_VERSION;
  /** 128-bit random, lowercase hex; generated once and kept for the life of the install. */
  nodeId: string;
  siteId?: string;
  /** Incremented on every agent start. */
  bootCount: number;
  /** Informational only: the box may have no RTC. */
  firstBootAt: string;
  lastBootAt: string;
  dataPartition?: DataPartitionState;
  phase: Phase;
  term: number;
  role: Role;
  pair?: PairState;
  /**
   * This node is yielding its writes to the peer (planned switchover, broken PostgreSQL): it must
   * stay fenced until the peer takes over or the handover times out, across restarts too.
   */
  handover?: boolean;
  /** The last time this node became the leader by a promotion, and why: the operator's "last failover". */
  lastPromotion?: Promotion;
  /**
   * The operator asked this box (the survivor) to admit one new box in place of its dead peer
   * (geminik8s replace-node): kept until a box joins or the admission ends, across restarts too.
   */
  replacing?: Replacing;
}

export interface Replacing {
  /** The peer being replaced (pair.peerNodeId when the admission opened). */
  peerNodeId: string;
  /** When the operator asked (informational: the clock may be wrong). */
  since: string;
}

export interface Promotion {
  at: string;
  term: number;
  cause: PromotionCause;
  /** The liveness decision's reason, as logged. */
  reason: string;
}

const PROMOTION_CAUSES: readonly PromotionCause[] = ['leader-lost', 'handover', 'reclaim'];

const NODE_ID_RE = /^[0-9a-f]{32}$/;

export function isNodeId(text: string): boolean {
  return NODE_ID_RE.test(text);
}

/** Validates a hostmeta.json text; returns the reason when it is not usable. */
export function parseHostMeta(text: string): { ok: true; meta: HostMeta } | { ok: false; reason: string } {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    return { ok: false, reason: `not JSON: ${(e as Error).message}` };
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) return { ok: false, reason: 'not a JSON object' };
  const o = raw as Record<string, unknown>;
  if (o.schemaVersion !== HOSTMETA_SCHEMA_VERSION) return { ok: false, reason: `unsupported schemaVersion ${JSON.stringify(o.schemaVersion)}` };
  if (typeof o.nodeId !== 'string' || !isNodeId(o.nodeId)) return { ok: false, reason: 'nodeId is not 32 lowercase hex digits' };
  if (!isCount(o.bootCount)) return { ok: false, reason: 'bootCount is not a non-negative integer' };
  if (!isCount(o.term)) return { ok: false, reason: 'term is not a non-negative integer' };
  if (typeof o.firstBootAt !== 'string' || typeof o.lastBootAt !== 'string') return { ok: false, reason: 'firstBootAt/lastBootAt missing' };
  if (typeof o.phase !== 'string' || !PHASES.includes(o.phase as Phase)) return { ok: false, reason: `unknown phase ${JSON.stringify(o.phase)}` };
  if (typeof o.role !== 'string' || !ROLES.includes(o.role as Role)) return { ok: false, reason: `unknown role ${JSON.stringify(o.role)}` };
  if (o.siteId !== undefined && typeof o.siteId !== 'string') return { ok: false, reason: 'siteId is not a string' };
  const meta: HostMeta = {
    schemaVersion: HOSTMETA_SCHEMA_VERSION,
    nodeId: o.nodeId,
    bootCount: o.bootCount,
    firstBootAt: o.firstBootAt,
    lastBootAt: o.lastBootAt,
    phase: o.phase as Phase,
    term: o.term,
    role: o.role as Role,
  };
  if (typeof o.siteId === 'string') meta.siteId = o.siteId;
  if (o.handover !== undefined && typeof o.handover !== 'boolean') return { ok: false, reason: 'handover is not a boolean' };
  if (o.handover === true) meta.handover = true;
  const pair = o.pair as Record<string, unknown> | undefined;
  if (pair !== undefined) {
    const fields = ['leader', 'peerNodeId', 'peerName', 'peerAddress', 'peerKey'] as const;
    if (typeof pair !== 'object' || pair === null || fields.some((f) => typeof pair[f] !== 'string')) return { ok: false, reason: 'pair is malformed' };
    meta.pair = {
      leader: pair.leader as string,
      peerNodeId: pair.peerNodeId as string,
      peerName: pair.peerName as string,
      peerAddress: pair.peerAddress as string,
      peerKey: pair.peerKey as string,
    };
  }
  const d = o.dataPartition as Record<string, unknown> | undefined;
  if (d !== undefined) {
    if (typeof d !== 'object' || d === null || typeof d.device !== 'string' || !isCount(d.sizeBytes)) {
      return { ok: false, reason: 'dataPartition is malformed' };
    }
    meta.dataPartition = { device: d.device, sizeBytes: d.sizeBytes };
    if (typeof d.grownAt === 'string') meta.dataPartition.grownAt = d.grownAt;
  }
  const lp = o.lastPromotion as Record<string, unknown> | undefined;
  if (lp !== undefined) {
    if (
      typeof lp !== 'object' ||
      lp === null ||
      typeof lp.at !== 'string' ||
      !isCount(lp.term) ||
      !PROMOTION_CAUSES.includes(lp.cause as PromotionCause) ||
      typeof lp.reason !== 'string'
    )
      return { ok: false, reason: 'lastPromotion is malformed' };
    meta.lastPromotion = { at: lp.at, term: lp.term, cause: lp.cause as PromotionCause, reason: lp.reason };
  }
  const rp = o.replacing as Record<string, unknown> | undefined;
  if (rp !== undefined) {
    if (typeof rp !== 'object' || rp === null || typeof rp.peerNodeId !== 'string' || !isNodeId(rp.peerNodeId) || typeof rp.since !== 'string')
      return { ok: false, reason: 'replacing is malformed' };
    meta.replacing = { peerNodeId: rp.peerNodeId, since: rp.since };
  }
  return { ok: true, meta };
}

function isCount(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
}

/** hostmeta.json or its backup as read from disk. */
export type StoredRecord = { kind: 'absent' } | { kind: 'unreadable'; reason: string } | { kind: 'ok'; meta: HostMeta };

/**
 * Which identity this start continues (issue 11 point 7). The record is written before its backup,
 * so a readable record is always the newest; the backup stands in when the record is lost (it is at
 * most one write behind: a power cut between the two writes and then a damaged record). Without
 * either, a box that holds the pair's data (its secrets, a PostgreSQL cluster) must not start over
 * under a new node id: its peer, its data and the election know it by the old one, so it refuses.
 */
export type IdentityChoice = { kind: 'continue'; meta: HostMeta; from: 'record' | 'backup' } | { kind: 'new' } | { kind: 'refuse'; reason: string };

export function chooseIdentity(record: StoredRecord, backup: StoredRecord, pairData: readonly string[]): IdentityChoice {
  if (record.kind === 'ok') return { kind: 'continue', meta: record.meta, from: 'record' };
  if (backup.kind === 'ok') return { kind: 'continue', meta: backup.meta, from: 'backup' };
  if (pairData.length === 0) return { kind: 'new' };
  const said = (r: Exclude<StoredRecord, { kind: 'ok' }>) => (r.kind === 'absent' ? 'missing' : `unreadable (${r.reason})`);
  return {
    kind: 'refuse',
    reason:
      `${HOSTMETA_FILE} is ${said(record)} and its backup is ${said(backup)}, but this box holds the pair's data (${pairData.join(', ')}): ` +
      'it will not start over under a new node id that its peer and its data do not know. ' +
      `Put back a copy of ${HOSTMETA_FILE} (the peer's status names this box's node id) and restart the agent`,
  };
}

/**
 * The record for an agent start: keeps identity and cluster state from `prev`, counts the boot.
 * `freshNodeId` is used only when there is no previous record.
 */
export function startBoot(prev: HostMeta | undefined, now: Date, freshNodeId: string): HostMeta {
  if (!prev && !isNodeId(freshNodeId)) throw new Error(`invalid node id ${JSON.stringify(freshNodeId)}`);
  const at = now.toISOString();
  if (!prev) {
    return {
      schemaVersion: HOSTMETA_SCHEMA_VERSION,
      nodeId: freshNodeId,
      bootCount: 1,
      firstBootAt: at,
      lastBootAt: at,
      phase: 'waiting-for-site',
      term: 0,
      role: 'unassigned',
    };
  }
  return { ...prev, bootCount: prev.bootCount + 1, lastBootAt: at };
}

export type SiteOutcome = { kind: 'absent' } | { kind: 'invalid' } | { kind: 'valid'; siteId: string };

/** The record after this boot's local steps. `data` is undefined when the data dir is not a mounted partition. */
export function finishLocalSteps(
  meta: HostMeta,
  site: SiteOutcome,
  data: { device: string; sizeBytes: number; grew: boolean } | undefined,
  now: Date,
): HostMeta {
  const clusterPhase = meta.phase === 'paired' || meta.phase === 'provisioned';
  const phase: Phase = site.kind === 'valid' ? (clusterPhase ? meta.phase : 'local-ready') : site.kind === 'invalid' ? 'site-invalid' : 'waiting-for-site';
  const next: HostMeta = { ...meta, phase };
  delete next.siteId;
  if (site.kind === 'valid') next.siteId = site.siteId;
  delete next.dataPartition;
  if (data) {
    const prevGrownAt = meta.dataPartition?.device === data.device ? meta.dataPartition.grownAt : undefined;
    const grownAt = data.grew ? now.toISOString() : prevGrownAt;
    next.dataPartition = { device: data.device, sizeBytes: data.sizeBytes, ...(grownAt !== undefined ? { grownAt } : {}) };
  }
  return next;
}

/** After both boxes agreed: the role, term and peer this node must keep. */
export function recordPairing(meta: HostMeta, p: { role: PairRole; term: number; pair: PairState }): HostMeta {
  const keepProvisioned = meta.phase === 'provisioned' && meta.role === p.role && meta.pair?.peerNodeId === p.pair.peerNodeId;
  return { ...meta, role: p.role, term: p.term, pair: p.pair, phase: keepProvisioned ? 'provisioned' : 'paired' };
}

/** The operator opened the admission of a replacement for the current peer (the caller checked replacementRefusal). */
export function recordReplacementOpened(meta: HostMeta, now: Date): HostMeta {
  if (!meta.pair) throw new Error('a replacement needs a recorded pair');
  return { ...meta, replacing: { peerNodeId: meta.pair.peerNodeId, since: now.toISOString() } };
}

/** The admission ended without a new box: the pair stays as it was. */
export function recordReplacementEnded(meta: HostMeta): HostMeta {
  const out = { ...meta };
  delete out.replacing;
  return out;
}

/**
 * A new box joined in place of the dead peer: it is the peer from now on. Role, term and phase stay
 * (this box kept leading and holds the pair's data); the new box starts as its follower.
 */
export function recordReplacement(meta: HostMeta, pair: PairState): HostMeta {
  if (meta.phase !== 'provisioned' || !meta.replacing) throw new Error('a replacement is recorded only on a provisioned box that admits one');
  return { ...recordReplacementEnded(meta), pair };
}

export function recordProvisioned(meta: HostMeta): HostMeta {
  return { ...meta, phase: 'provisioned' };
}

/** What the agent does with a valid site file, in order (cluster/run.ts runs one handler per phase). */
export type ClusterPhase = 'resume' | 'pair' | 'provision' | 'live';

/**
 * The phases of this boot, from what hostmeta.json says earlier boots did. A provisioned node
 * resumes straight into the liveness loop: it must not wait for the peer to agree again (the peer
 * may be the box that died). Any other node pairs (again: a node that paired and then crashed
 * re-runs the agreement, which the peer answers with the same roles and term), then provisions.
 */
export function clusterPhases(meta: Pick<HostMeta, 'phase' | 'pair'>): ClusterPhase[] {
  return meta.phase === 'provisioned' && meta.pair ? ['resume', 'live'] : ['pair', 'provision', 'live'];
}

/**
 * A failover transition of a provisioned node (promotion, fence, rejoin, handover): the live role,
 * the term (never lowered), and who leads at that term (the pairing election's persisted leader).
 */
export function recordLiveness(
  meta: HostMeta,
  next: { role: LivenessRole; term: number; leader?: string; handover: boolean; promotion?: Promotion },
): HostMeta {
  const out: HostMeta = { ...meta, role: next.role, term: Math.max(meta.term, next.term) };
  if (next.promotion) out.lastPromotion = next.promotion;
  if (out.pair && next.leader !== undefined) out.pair = { ...out.pair, leader: next.leader };
  delete out.handover;
  if (next.handover) out.handover = true;
  return out;
}

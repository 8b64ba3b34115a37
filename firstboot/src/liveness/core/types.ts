/**
 * Liveness and failover: the pure decision core's vocabulary (DESIGN.md "Liveness and failover").
 *
 * The agent samples facts about once a second (a "tick") and calls `decide()` with them; it gets
 * back the actions to carry out and a reason for the log. The core keeps no state between ticks:
 * every duration it needs ("peer silent for", "PostgreSQL bad for", ...) is measured by the caller
 * with a monotonic clock and passed in, and every action is level-triggered (re-emitted each tick
 * while its condition holds), so the caller must make actions idempotent and may drop duplicates
 * of an action still running.
 *
 * Roles:
 *  - `leader`: holds the VIP, PostgreSQL primary, takes writes.
 *  - `follower`: PostgreSQL standby, never holds the VIP.
 *  - `fenced`: a leader that stopped taking writes (no VIP, PostgreSQL primary but read-only, Kine
 *    writes stopped). Every node whose persisted role is `leader` starts fenced after a boot
 *    (`bootRole()`): a restarted leader has to earn its writes back.
 */

export type { LivenessRole } from '../../core/hostmeta.ts';
import type { LivenessRole, PromotionCause } from '../../core/hostmeta.ts';

/** What PostgreSQL on a node currently is. `down`: not running or not answering. */
export type PgState = 'primary' | 'standby' | 'down';

/** A node's identity and how far its data has got: what ranking two nodes compares. */
export interface NodeFacts {
  nodeId: string;
  role: LivenessRole;
  /** Persisted term. */
  term: number;
  /** PostgreSQL timeline (pg_control_checkpoint().timeline_id). */
  timeline: number;
  /** PostgreSQL LSN: primary pg_current_wal_lsn(), standby max(receive, replay); "0/0" when unknown. */
  lsn: string;
  /** The seed's lastModified (ms since the epoch), the very last tie-break only. */
  lastModified?: number;
}

/** What a node tells its peer in every heartbeat (about 1 s apart, authenticated channel). */
export interface Heartbeat extends NodeFacts {
  /** Sender's PostgreSQL state, and whether it has been healthy in its role (not down, not hung). */
  pg: PgState;
  pgHealthy: boolean;
  /**
   * Leader/fenced sender: synchronous replication to the receiver is on, i.e. no commit was
   * acknowledged without the receiver's flush. False once it degraded to async.
   */
  syncRep: boolean;
  /** Fenced sender yielding to the receiver (see `begin-handover`): ms since it began, else null. */
  handoverForMs: number | null;
  /** How long the sender had not heard the receiver when it sent this heartbeat (ms). */
  peerSilentMs: number;
  holdsVip: boolean;
  /**
   * The `syncRep` of the receiver's last heartbeat the sender heard (null: none, or a sender that
   * predates the field). A follower that echoes false has heard its leader announce the switch to
   * async, and so no longer counts on holding every commit: only then does the leader make the
   * switch (D1, issue 11 point 5).
   */
  heardSyncRep: boolean | null;
}

export interface TickInput {
  self: NodeFacts;
  pg: {
    state: PgState;
    /** ms PostgreSQL has not been healthy in the role the node wants (0 when healthy now). */
    badForMs: number;
  };
  /**
   * The node's state disk: ms its probe write has been failing (read-only, EIO, full) or stalled
   * (0 when the last one went through). A failing disk counts as a PostgreSQL in trouble: the same
   * disk holds its data on an appliance, and a node that cannot record its state must not lead.
   */
  disk: { badForMs: number };
  /** Informational only: Kine and the Kubernetes API are restarted locally, moving the database would not fix them. */
  kineHealthy: boolean;
  kubeApiHealthy?: boolean;
  /** This node has the VIP on one of its interfaces. */
  holdsVip: boolean;
  peer: {
    /** ms since a heartbeat of the peer was last received; the agent's uptime when none was since it started. */
    silentMs: number;
    /** The last heartbeat received since the agent started, if any. */
    last?: Heartbeat;
  };
  witness: {
    /** How many witnesses are configured (site gateway and extra witness addresses). */
    configured: number;
    /** ms since any of them last answered (uptime when none has). */
    silentMs: number;
    /**
     * ms the witnesses have answered without a gap of witnessLostMs or more (0 when lost now).
     * Tells whether this node was on the LAN, able to see the VIP, while the peer was silent.
     */
    okForMs: number;
  };
  vip: {
    /**
     * ms since the VIP last answered this node's probe (ARP, so that an IP-level filter between
     * the nodes does not hide a live leader); uptime when it never did. Ignored while holding it.
     */
    silentMs: number;
  };
  replication: {
    /** synchronous_standby_names names the peer (a primary's commits wait for it). */
    syncRep: boolean;
    /** Leader: pg_stat_replication shows the peer in state `streaming`. */
    standbyStreaming: boolean;
    /** Leader: ms since the standby was last seen streaming, or catching up for less than catchupGraceMs (0 when it is now). */
    standbySilentMs: number;
    /** Leader: bytes between the current WAL position and the standby's flush position. */
    standbyLagBytes: number;
    /**
     * Follower: ms since its WAL receiver last streamed from the leader (0 when streaming now,
     * uptime when never). A leader that saw no stream long enough may have degraded to async.
     */
    receiverSilentMs: number;
  };
  /**
   * This node is yielding to the peer (began with `begin-handover`): ms since, else null. Persisted:
   * after a restart it is still yielding (count the age from the boot).
   */
  handover: { sinceMs: number } | null;
  /** An operator asked this node (the leader) for a planned switchover. */
  switchoverRequested: boolean;
  /**
   * Present when the site has an arbiter (core/arbiter.ts): then promoting without the peer's word
   * and going async need its lease first. `lease`: the last one it granted this node (null: none
   * yet since the agent started); `newerTerm`: a term it leased to another node, learned from a
   * refusal (null: none newer than ours known). With an arbiter it, not the gateway, is what a
   * leader cut off from its peer must still reach (F1).
   */
  arbiter?: {
    lease: { term: number; alone: boolean } | null;
    newerTerm: number | null;
    /** ms since the arbiter last answered anything (its probe or a lease request); uptime when never. */
    silentMs: number;
  };
}

/**
 * What the caller does, in list order:
 *  - `promote`: persist {term, role leader} FIRST, then pg_promote() if PostgreSQL is a standby.
 *  - `take-vip` / `release-vip`: bind the VIP with gratuitous ARP / remove it.
 *  - `fence`: persist role `fenced`, release the VIP, stop Kine writes and make PostgreSQL
 *    read-only (terminate client sessions); report `fenced` in heartbeats only once done.
 *  - `unfence`: persist role `leader`, writes allowed again (PostgreSQL must be a primary).
 *  - `degrade-to-async` / `restore-sync`: clear / set synchronous_standby_names (+ reload).
 *  - `demote-and-rejoin`: persist {term, role follower} FIRST, then save the rows a rewind would
 *    discard (under /var/lib/geminik8s, reported), pg_rewind (or a fresh base backup) from
 *    `leader` and start as its standby.
 *  - `adopt-term`: persist the higher term of the leader this follower follows.
 *  - `begin-handover` / `end-handover`: start / stop yielding to the peer (persisted with its start time).
 *  - `arbiter-lease`: ask the arbiter for the lease of `term` (core/arbiter.ts); a refusal or no
 *    answer fails the action, and so stops the rest of the batch (the promotion or async switch
 *    after it does not happen).
 * No action ("none") is an empty list; `reason` always says why.
 */
export type Action =
  | { kind: 'promote'; term: number; cause: PromotionCause }
  | { kind: 'take-vip' }
  | { kind: 'release-vip' }
  | { kind: 'fence' }
  | { kind: 'unfence' }
  | { kind: 'degrade-to-async' }
  | { kind: 'restore-sync' }
  | { kind: 'demote-and-rejoin'; term: number; leader: string }
  | { kind: 'adopt-term'; term: number }
  | { kind: 'begin-handover' }
  | { kind: 'end-handover' }
  | { kind: 'arbiter-lease'; term: number; alone: boolean; peerSilent: boolean };

export type ActionKind = Action['kind'];

/**
 * How long each action may run before the loop abandons it (issue 11 point 2): the batch fails,
 * what the abandoned call still does is cut off at its next step, and the next tick decides
 * afresh. A hung pg_promote, CHECKPOINT, ALTER SYSTEM, `ip` call or fsync thus costs at most this
 * long, and a step-down does not even wait for it (`preempts`). Rejoining may copy the whole
 * database (a base backup when pg_rewind cannot), hours on an SD card: its bound is generous.
 */
export const ACTION_DEADLINE_MS: Readonly<Record<ActionKind, number>> = Object.freeze({
  promote: 120_000,
  'take-vip': 20_000,
  'release-vip': 20_000,
  fence: 30_000,
  unfence: 30_000,
  'degrade-to-async': 20_000,
  'restore-sync': 20_000,
  'demote-and-rejoin': 6 * 3_600_000,
  'adopt-term': 10_000,
  'begin-handover': 10_000,
  'end-handover': 10_000,
  // An unreachable arbiter must not hold the loop: the lease is asked again next tick.
  'arbiter-lease': 3_000,
});

export interface Decision {
  actions: Action[];
  reason: string;
}

/** Thresholds in ms (bytes for the lag). `validateTimeouts()` checks the orderings safety rests on. */
export interface LivenessConfig {
  /** How often decide() runs. */
  tickMs: number;
  heartbeatIntervalMs: number;
  /** How often the VIP is probed. */
  vipProbeIntervalMs: number;
  /** A peer heard within this is alive. */
  peerDeadMs: number;
  /** A witness that answered within this is reachable. */
  witnessLostMs: number;
  /** A leader without peer and witness for this long fences. */
  fenceAfterMs: number;
  /** Time budget for carrying out `fence` (release the VIP, stop writes). */
  fenceBudgetMs: number;
  /** A follower promotes only after the peer was silent this long (and the other conditions). */
  promoteAfterMs: number;
  /** The VIP must not have answered for this long before a node without it promotes. */
  vipSilentMs: number;
  /** A leader whose standby is gone this long degrades to async (peer known down). */
  degradeAfterMs: number;
  /** A leader whose PostgreSQL is bad this long hands over to a healthy follower. */
  pgHandoverAfterMs: number;
  /** A yielding node takes its writes back after this long if the peer did not take over. */
  handoverTimeoutMs: number;
  /** A follower does not take over a handover that is within this of timing out. */
  handoverMarginMs: number;
  /** A fenced node unfences next to a live peer only if the peer heard it within this. */
  peerHearsMeMs: number;
  /** restore-sync waits until the standby is at most this far behind. */
  restoreSyncMaxLagBytes: number;
  /** A planned switchover the follower was not ready for within this is dropped (the operator asks again). */
  switchoverRequestMs: number;
  /**
   * A standby catching up counts as connected for this long (a reconnect is not a standby gone);
   * past it, it counts as gone, so a backlog that never clears cannot hold synchronous commits forever.
   */
  catchupGraceMs: number;
  /** A write to the state disk still pending after this long counts as a failing disk (a stalled device). */
  diskStallMs: number;
}

export const DEFAULT_LIVENESS_CONFIG: Readonly<LivenessConfig> = Object.freeze({
  tickMs: 1000,
  heartbeatIntervalMs: 1000,
  vipProbeIntervalMs: 1000,
  peerDeadMs: 3000,
  witnessLostMs: 2000,
  fenceAfterMs: 2000,
  fenceBudgetMs: 1000,
  promoteAfterMs: 5000,
  vipSilentMs: 2000,
  degradeAfterMs: 4000,
  pgHandoverAfterMs: 3000,
  handoverTimeoutMs: 15000,
  handoverMarginMs: 3000,
  peerHearsMeMs: 2000,
  restoreSyncMaxLagBytes: 1024 * 1024,
  switchoverRequestMs: 30_000,
  catchupGraceMs: 30_000,
  diskStallMs: 10_000,
});

/** How often things happen, as opposed to how long a silence may last: what a slower pace leaves alone. */
const LIVENESS_INTERVALS: ReadonlySet<keyof LivenessConfig> = new Set(['tickMs', 'heartbeatIntervalMs', 'vipProbeIntervalMs']);

/** The largest `failover.timeScale` a site may set: a cut-off leader then fences within 20 s, its peer takes over after 50 s. */
export const MAX_FAILOVER_TIME_SCALE = 10;

/**
 * The thresholds for a site's `failover.timeScale` (1 to MAX_FAILOVER_TIME_SCALE): every silence,
 * grace and deadline multiplied by it, the intervals (tick, heartbeat, probes) kept. A box that can
 * stall for seconds without being dead (slow or busy hardware, emulation) is then not taken for
 * dead; failover is slower by the same factor. Every ordering validateTimeouts checks is a sum of
 * thresholds bounded by a larger threshold plus intervals, so it still holds for any scale ≥ 1.
 */
export function pacedLivenessConfig(timeScale: number, base: Readonly<LivenessConfig> = DEFAULT_LIVENESS_CONFIG): LivenessConfig {
  if (!(timeScale >= 1 && timeScale <= MAX_FAILOVER_TIME_SCALE))
    throw new Error(`failover.timeScale must be from 1 to ${MAX_FAILOVER_TIME_SCALE}, not ${timeScale}`);
  const paced = { ...base };
  for (const key of Object.keys(base) as (keyof LivenessConfig)[]) {
    if (key.endsWith('Ms') && !LIVENESS_INTERVALS.has(key)) paced[key] = Math.round(base[key] * timeScale);
  }
  return paced;
}

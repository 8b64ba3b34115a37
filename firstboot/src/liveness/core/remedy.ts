/**
 * What to do about a PostgreSQL that is down while no liveness action touches it (issue 11
 * point 1: the policy lives in the pure core, the loop only observes and executes). Pure.
 */
import type { Heartbeat, LivenessConfig, LivenessRole } from './types.ts';

/** A standby that failed to start this many times in a row (not for a full disk) is copied afresh. */
export const STANDBY_REBUILD_AFTER_FAILURES = 8;
/** A leader whose primary died waits this long past the handover threshold before restarting it anyway. */
export const HANDOVER_GRACE_MS = 7000;

export interface PgRemedyInput {
  role: LivenessRole;
  /** ms PostgreSQL has been down. */
  downForMs: number;
  /** The server process is gone (pg_ctl status): false while it still runs, hung or shutting down. */
  serverStopped: boolean;
  /** The peer's last heartbeat, and whether it is recent enough to count as alive. */
  peer?: Heartbeat;
  peerAlive: boolean;
  /** synchronous_standby_names was set when PostgreSQL last answered: the standby has every commit. */
  wasSync: boolean;
  /** Failed starts in a row. */
  startFailures: number;
  /** PostgreSQL's log ends with "No space left on device": starting again is all it needs once space is freed. */
  diskFull: boolean;
}

export type PgRemedy = { kind: 'wait'; reason: string } | { kind: 'restart'; reason: string } | { kind: 'rebuild-standby'; reason: string };

/** The facts the handover wait needs: none of them asks the server or its disk. */
export type HandoverFacts = Pick<PgRemedyInput, 'role' | 'downForMs' | 'peer' | 'peerAlive' | 'wasSync'>;

/**
 * A leader whose primary died while a synchronous standby is healthy hands over (decide() does,
 * after pgHandoverAfterMs) instead of coming back in place: the standby holds every commit and Kine
 * on the standby's side starts clean. Once fenced, the old primary may come back read-only. Asked
 * first, so the loop spares a hung box the server and log looks while it only waits.
 */
export function waitsForHandover(i: HandoverFacts, c: LivenessConfig): boolean {
  const healthyStandby = i.peerAlive && i.peer?.role === 'follower' && i.peer.pg === 'standby' && i.peer.pgHealthy && i.wasSync;
  return i.role === 'leader' && healthyStandby && i.downForMs < c.pgHandoverAfterMs + HANDOVER_GRACE_MS;
}

export function pgRemedy(i: PgRemedyInput, c: LivenessConfig): PgRemedy {
  if (waitsForHandover(i, c)) return { kind: 'wait', reason: `down ${i.downForMs} ms; the synchronous standby takes over` };
  if (!i.serverStopped) return { kind: 'wait', reason: 'the server process still runs (hung or stopping)' };
  // A standby that keeps failing for another reason (its history no longer fits the leader's) is
  // copied afresh from the leader, while the leader is heard.
  const leaderHeard = i.peerAlive && i.peer?.role === 'leader';
  if (i.role === 'follower' && leaderHeard && i.startFailures >= STANDBY_REBUILD_AFTER_FAILURES && !i.diskFull) {
    return { kind: 'rebuild-standby', reason: `${i.startFailures} failed starts in a row, leader heard` };
  }
  return { kind: 'restart', reason: i.diskFull ? 'its disk was full: start again once space is freed' : `down ${i.downForMs} ms` };
}

/** What the sampler saw of the standby's replication connection, and for how long it has been catching up. */
export interface StandbyLook {
  streaming: boolean;
  /** Connected at all: streaming or catching up. */
  connected: boolean;
  /** ms the connection has been in catchup without streaming (0 when not). */
  catchupForMs: number;
}

/**
 * The standby counts as there (issue 11 point 5) while it streams, and while a reconnect catches up
 * for up to catchupGraceMs: a reconnect must not read as a standby gone, which degrades to async
 * after degradeAfterMs; one that never finishes catching up does count as gone.
 */
export function standbyThere(s: StandbyLook, c: LivenessConfig): boolean {
  return s.streaming || (s.connected && s.catchupForMs < c.catchupGraceMs);
}

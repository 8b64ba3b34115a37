/**
 * Provisioning steps and the on-disk facts they decide from. Pure.
 *
 * Data directories are only ever created under a temporary sibling name (`<data>.partial`) and renamed
 * into place once complete (initdb + first config, or pg_basebackup + standby fix-ups): a data
 * directory at its final path is complete by construction, and a `.partial` sibling is debris from a
 * cut, wiped and redone.
 */
export const LEADER_STEPS = ['secrets', 'tls', 'initdb', 'config', 'start', 'bootstrap'] as const;
export const FOLLOWER_STEPS = ['secrets', 'tls', 'basebackup', 'config', 'start'] as const;
/** Logical mode: the follower is a primary of its own, subscribed to the leader's kine table. */
export const LOGICAL_FOLLOWER_STEPS = ['secrets', 'tls', 'initdb', 'config', 'start', 'bootstrap', 'subscribe'] as const;

/**
 * A base backup streams the whole cluster over the LAN, for minutes on a slow box: a cut stream (the
 * leader's box stalled past wal_sender_timeout, a network blip, its server restarting) is ordinary
 * and worth another go from a clean `.partial` before the agent gives up (and systemd restarts it).
 */
export const BASEBACKUP_ATTEMPTS = 4;
export const BASEBACKUP_RETRY_MS = 10_000;

/** After failed attempt number `attempt` (from 1): how long to wait before the next, or undefined to give up. */
export function basebackupRetryAfter(attempt: number): number | undefined {
  return attempt < BASEBACKUP_ATTEMPTS ? BASEBACKUP_RETRY_MS : undefined;
}

/**
 * The application_name of a base backup's WAL stream. Not the node's name: the leader reads
 * pg_stat_replication by that name to see its standby, and a backup's stream would pass for one (it
 * streams and reports flush positions), so the leader would turn synchronous replication on against
 * a copy that is not a server yet.
 */
export const basebackupAppName = (nodeName: string): string => `${nodeName}-basebackup`;

export type LeaderStep = (typeof LEADER_STEPS)[number];
export type FollowerStep = (typeof FOLLOWER_STEPS)[number];
export type LogicalFollowerStep = (typeof LOGICAL_FOLLOWER_STEPS)[number];
export type StepName = LeaderStep | FollowerStep | LogicalFollowerStep;

export interface DataDirFacts {
  /** Final data directory exists and holds PG_VERSION. */
  hasPgVersion: boolean;
  /** standby.signal present in the final data directory. */
  hasStandbySignal: boolean;
  /** The final path exists (file or directory) at all. */
  exists: boolean;
  /** The final path is an empty directory. */
  empty: boolean;
  /** A `.partial` sibling exists (a cut during initdb/basebackup). */
  partialExists: boolean;
}

export type DataDirState =
  /** Nothing there (or an empty dir): create. */
  | { kind: 'absent'; wipePartial: boolean }
  | { kind: 'primary' }
  | { kind: 'standby' }
  /** Something that is not a data directory: refuse, a human must look (never delete unknown data). */
  | { kind: 'foreign' };

export function classifyDataDir(f: DataDirFacts): DataDirState {
  if (!f.exists || f.empty) return { kind: 'absent', wipePartial: f.partialExists };
  if (!f.hasPgVersion) return { kind: 'foreign' };
  return f.hasStandbySignal ? { kind: 'standby' } : { kind: 'primary' };
}

export function partialPath(dataDir: string): string {
  return `${dataDir.replace(/\/+$/, '')}.partial`;
}

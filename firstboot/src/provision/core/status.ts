/**
 * Replication status as the agent's status endpoint reports it. Pure types and row mapping; the
 * queries are in ../status.ts.
 */
export interface StandbyPeerStatus {
  applicationName: string;
  clientAddr: string | null;
  /** startup | catchup | streaming | backup | stopping */
  state: string;
  /** async | potential | sync | quorum */
  syncState: string;
  sentLsn: string | null;
  writeLsn: string | null;
  flushLsn: string | null;
  replayLsn: string | null;
  writeLagMs: number | null;
  flushLagMs: number | null;
  replayLagMs: number | null;
  /** pg_current_wal_lsn() − replay_lsn, bytes. */
  replayLagBytes: number | null;
}

export interface SlotStatus {
  name: string;
  type: 'physical' | 'logical';
  active: boolean;
  restartLsn: string | null;
  /** WAL the slot holds back, bytes. */
  retainedBytes: number | null;
  /** reserved | extended | unreserved | lost */
  walStatus: string | null;
}

export interface SubscriptionStatus {
  name: string;
  enabled: boolean;
  receivedLsn: string | null;
  latestEndLsn: string | null;
  lastMsgReceiptTime: string | null;
}

export interface PrimaryStatus {
  role: 'primary';
  inRecovery: false;
  currentLsn: string;
  timeline: number;
  synchronousStandbyNames: string;
  standbys: StandbyPeerStatus[];
  slots: SlotStatus[];
  /** Logical mode: subscriptions of this node (a logical follower is a primary with a subscription). */
  subscriptions: SubscriptionStatus[];
}

export interface WalReceiverStatus {
  /** streaming | stopping | starting | waiting | restarting | stopped */
  status: string;
  senderHost: string | null;
  senderPort: number | null;
  slotName: string | null;
  flushedLsn: string | null;
  latestEndLsn: string | null;
  lastMsgReceiptTime: string | null;
}

export interface StandbyStatus {
  role: 'standby';
  inRecovery: true;
  timeline: number;
  receiver: WalReceiverStatus | null;
  receiveLsn: string | null;
  replayLsn: string | null;
  /** receive − replay, bytes. */
  replayBacklogBytes: number | null;
  lastReplayTime: string | null;
}

export type ReplicationStatus = PrimaryStatus | StandbyStatus;

const num = (v: unknown): number | null => (v === null || v === undefined ? null : Number(v));
const str = (v: unknown): string | null => (v === null || v === undefined ? null : v instanceof Date ? v.toISOString() : String(v));

export function mapStandbyRow(r: Record<string, unknown>): StandbyPeerStatus {
  return {
    applicationName: String(r.application_name ?? ''),
    clientAddr: str(r.client_addr),
    state: String(r.state ?? ''),
    syncState: String(r.sync_state ?? ''),
    sentLsn: str(r.sent_lsn),
    writeLsn: str(r.write_lsn),
    flushLsn: str(r.flush_lsn),
    replayLsn: str(r.replay_lsn),
    writeLagMs: num(r.write_lag_ms),
    flushLagMs: num(r.flush_lag_ms),
    replayLagMs: num(r.replay_lag_ms),
    replayLagBytes: num(r.replay_lag_bytes),
  };
}

export function mapSlotRow(r: Record<string, unknown>): SlotStatus {
  return {
    name: String(r.slot_name),
    type: r.slot_type === 'logical' ? 'logical' : 'physical',
    active: r.active === true,
    restartLsn: str(r.restart_lsn),
    retainedBytes: num(r.retained_bytes),
    walStatus: str(r.wal_status),
  };
}

export function mapReceiverRow(r: Record<string, unknown>): WalReceiverStatus {
  return {
    status: String(r.status ?? ''),
    senderHost: str(r.sender_host),
    senderPort: num(r.sender_port),
    slotName: str(r.slot_name),
    flushedLsn: str(r.flushed_lsn),
    latestEndLsn: str(r.latest_end_lsn),
    lastMsgReceiptTime: str(r.last_msg_receipt_time),
  };
}

export function mapSubscriptionRow(r: Record<string, unknown>): SubscriptionStatus {
  return {
    name: String(r.subname),
    enabled: r.subenabled === true,
    receivedLsn: str(r.received_lsn),
    latestEndLsn: str(r.latest_end_lsn),
    lastMsgReceiptTime: str(r.last_msg_receipt_time),
  };
}

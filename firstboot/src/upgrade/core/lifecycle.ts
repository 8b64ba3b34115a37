/**
 * An upgrade's life on one box, pure: the record the agent keeps on the data partition
 * (upgrade.json), what a boot makes of it (gate, committed, rolled back, interrupted), and the
 * health gate's verdict on the agent's own status. The shell (upgrade/service.ts) reads the slot
 * state and the status and carries out what these functions return.
 */
import { onTrial, type Slot, type SlotState } from './slots.ts';

/** What the box was before the upgrade, and so must be again before the new slot is committed. */
export interface GateExpectation {
  /** It was a provisioned pair member: it must be leader or follower again, replicating, with its peer seen. */
  paired: boolean;
  /** Its Kubernetes API server answered: it must again. */
  kubernetes: boolean;
  /** Profile health commands that must exit 0 (image.yaml upgrade.healthChecks). */
  checks: string[];
}

export type UpgradeState = 'writing' | 'trying' | 'committed' | 'rolled-back' | 'failed';

export interface UpgradeRecord {
  state: UpgradeState;
  from: { slot: Slot; version: string };
  to: { slot: Slot; version: string };
  startedAt: string;
  updatedAt: string;
  expect: GateExpectation;
  /** Why it ended as it did (rolled back, failed), for `status`. */
  reason?: string;
}

export type BootAction =
  | { kind: 'none' }
  /** The new slot booted and is on trial: run the health gate, then commit or abandon. */
  | { kind: 'gate'; record: UpgradeRecord }
  /** The record is behind what the slots say; store `record`, and abandon a leftover trial when `abandonTrial`. */
  | { kind: 'settle'; record: UpgradeRecord; abandonTrial: boolean };

const settle = (r: UpgradeRecord, state: UpgradeState, reason: string | undefined, now: string, abandonTrial = false): BootAction => ({
  kind: 'settle',
  record: { ...r, state, updatedAt: now, ...(reason !== undefined ? { reason } : {}) },
  abandonTrial,
});

/** Why a trial the bootloader was set to try is not what booted, as grub's counter tells it. */
export const GRUB_UNBOOTED_TRIAL = 'could not be booted (no kernel the bootloader could load)';

/** The same for the Pi's tryboot, which tries a slot once and only when the reboot carries its flag. */
export const TRYBOOT_UNBOOTED_TRIAL =
  'was not booted: the bootloader could not load it, or the reboot after the upgrade did not carry the tryboot flag (a plain reboot, a reset or a power cut: tryboot tries a slot once, after `systemctl reboot --reboot-argument="0 tryboot"`)';

/**
 * What this boot does about the last upgrade, from its record and the slot state. `unbootedTrial`:
 * the bootloader backend's words for a trial that is set but did not boot.
 */
export function bootAction(record: UpgradeRecord | undefined, slots: SlotState, now: string, unbootedTrial = GRUB_UNBOOTED_TRIAL): BootAction {
  if (!record) return { kind: 'none' };
  const { from, to } = record;
  const trial = onTrial(slots);
  if (record.state === 'writing' || record.state === 'trying') {
    if (slots.booted === to.slot && trial) return { kind: 'gate', record: { ...record, state: 'trying' } };
    if (slots.booted === to.slot && slots.committed === to.slot) return settle(record, 'committed', undefined, now);
  }
  if (record.state === 'writing') {
    // The power went or the agent stopped before the slot was complete and set to try: the old slot
    // never stopped being the default, and the bundle can be applied again.
    return settle(
      record,
      'failed',
      `writing slot ${to.slot} was interrupted (power cut or agent restart); slot ${from.slot} still runs ${from.version}; apply the bundle again`,
      now,
      slots.trying === to.slot,
    );
  }
  if (record.state === 'trying' && slots.booted !== to.slot) {
    const why =
      slots.trying === to.slot
        ? `slot ${to.slot} (${to.version}) ${unbootedTrial}; back on slot ${from.slot} (${from.version})`
        : `slot ${to.slot} (${to.version}) never reached its health gate (its boot tries ran out: kernel or early boot failure); back on slot ${from.slot} (${from.version})`;
    // A trial grub skipped in this power cycle would be tried again at the next reboot: end it.
    return settle(record, 'rolled-back', why, now, slots.trying !== null);
  }
  return { kind: 'none' };
}

/** What the gate looks at: the agent's own status (GET /status), flattened. */
export interface GateObservation {
  phase: string;
  role: string;
  pg?: string;
  /** Leader: its standby streams. Follower: its WAL receiver streams. */
  replicating: boolean;
  kineHealthy?: boolean;
  peerSilentMs?: number;
  apiserver?: string;
  /** Health commands that have not exited 0 yet, with their last output. */
  failingChecks: string[];
}

export type GateVerdict = { result: 'pass' } | { result: 'wait'; missing: string[] } | { result: 'fail'; reason: string };

/** A peer heard within this is "seen" (the liveness loop beats every second or so). */
export const PEER_SEEN_MS = 10_000;

/** Everything the box had before that it does not have yet; empty when it passes. */
export function gateMissing(expect: GateExpectation, o: GateObservation): string[] {
  const missing: string[] = [];
  if (expect.paired) {
    if (o.phase !== 'provisioned') missing.push(`the cluster phase is ${o.phase}, not provisioned`);
    else {
      if (o.role !== 'leader' && o.role !== 'follower') missing.push(`the role is ${o.role}, not leader or follower`);
      const pgWanted = o.role === 'leader' ? 'primary' : 'standby';
      if (o.pg !== pgWanted) missing.push(`PostgreSQL is ${o.pg ?? 'unknown'}, not ${pgWanted}`);
      if (!o.replicating) missing.push(o.role === 'leader' ? 'the standby is not streaming' : 'this standby is not streaming from the leader');
      if (o.kineHealthy !== true) missing.push('Kine does not answer');
      if (o.peerSilentMs === undefined || o.peerSilentMs > PEER_SEEN_MS) missing.push('the peer has not been heard');
    }
  }
  if (expect.kubernetes && o.apiserver !== 'ready') missing.push(`the Kubernetes API server is ${o.apiserver ?? 'not running'}`);
  missing.push(...o.failingChecks.map((c) => `health check ${c}`));
  return missing;
}

export function gateVerdict(expect: GateExpectation, o: GateObservation, elapsedMs: number, deadlineMs: number): GateVerdict {
  const missing = gateMissing(expect, o);
  if (missing.length === 0) return { result: 'pass' };
  if (elapsedMs < deadlineMs) return { result: 'wait', missing };
  return { result: 'fail', reason: `health gate not passed within ${Math.round(deadlineMs / 1000)} s: ${missing.join('; ')}` };
}

/** What the box must get back to, from its status before the upgrade. */
export function expectationFrom(o: Pick<GateObservation, 'phase' | 'apiserver'>, checks: string[]): GateExpectation {
  return { paired: o.phase === 'provisioned', kubernetes: o.apiserver === 'ready', checks };
}

/** Reads the flattened observation out of GET /status (cluster/run.ts ClusterStatus). */
export function observeStatus(status: unknown, failingChecks: string[]): GateObservation {
  const s = (status ?? {}) as {
    phase?: string;
    role?: string;
    kubernetes?: { apiserver?: string };
    liveness?: { pg?: string; standbyStreaming?: boolean; receiverStreaming?: boolean; kineHealthy?: boolean; peerSilentMs?: number };
  };
  const l = s.liveness ?? {};
  return {
    phase: s.phase ?? 'starting',
    role: s.role ?? 'none',
    ...(l.pg !== undefined ? { pg: l.pg } : {}),
    replicating: s.role === 'leader' ? l.standbyStreaming === true : l.receiverStreaming === true,
    ...(l.kineHealthy !== undefined ? { kineHealthy: l.kineHealthy } : {}),
    ...(l.peerSilentMs !== undefined ? { peerSilentMs: l.peerSilentMs } : {}),
    ...(s.kubernetes?.apiserver !== undefined ? { apiserver: s.kubernetes.apiserver } : {}),
    failingChecks,
  };
}

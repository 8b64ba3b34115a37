/**
 * The rolling pair upgrade's decisions, pure (issue 12): what a box's status says about it, whether
 * the pair is healthy enough to take the next step, the steps (follower first, planned switchover,
 * then the other box), and when a step is done or has failed. The shell (remote/rolling-upgrade.ts)
 * reads each box's status over SSH and runs the steps.
 */

export interface BoxView {
  host: string;
  name?: string;
  phase?: string;
  role?: string;
  term?: number;
  version?: string;
  /** Leader: its standby streams and commits wait for it. Follower: it streams from the leader. */
  replicating: boolean;
  synchronous: boolean;
  /** The last upgrade on this box (upgrade.json). */
  upgrade?: { state: string; reason?: string; to?: { version: string } };
  /** An uncommitted trial slot is running. */
  onTrial: boolean;
  busy: boolean;
  /** The box could not be read (SSH or the agent's socket). */
  error?: string;
}

interface StatusJson {
  name?: string;
  phase?: string;
  role?: string;
  term?: number;
  liveness?: { syncRep?: boolean; standbyStreaming?: boolean; receiverStreaming?: boolean };
  upgrade?: {
    version?: string;
    busy?: boolean;
    slots?: { booted?: string; committed?: string; trying?: string | null };
    last?: { state: string; reason?: string; to?: { version: string } };
  };
}

/** The view of one box from its `geminik8s-agent status --json`. */
export function boxView(host: string, status: unknown): BoxView {
  const s = (status ?? {}) as StatusJson;
  const l = s.liveness ?? {};
  const slots = s.upgrade?.slots;
  return {
    host,
    ...(s.name !== undefined ? { name: s.name } : {}),
    ...(s.phase !== undefined ? { phase: s.phase } : {}),
    ...(s.role !== undefined ? { role: s.role } : {}),
    ...(s.term !== undefined ? { term: s.term } : {}),
    ...(s.upgrade?.version !== undefined ? { version: s.upgrade.version } : {}),
    replicating: s.role === 'leader' ? l.standbyStreaming === true : l.receiverStreaming === true,
    synchronous: l.syncRep === true,
    ...(s.upgrade?.last ? { upgrade: s.upgrade.last } : {}),
    onTrial: slots?.trying != null && slots.trying === slots.booted && slots.committed !== slots.booted,
    busy: s.upgrade?.busy === true,
  };
}

export function unreachable(host: string, error: string): BoxView {
  return { host, replicating: false, synchronous: false, onTrial: false, busy: false, error };
}

/** Everything that keeps the pair from being a healthy leader + synchronous follower right now. */
export function pairProblems(boxes: readonly BoxView[]): string[] {
  const problems: string[] = [];
  for (const b of boxes) {
    const who = b.name ? `${b.name} (${b.host})` : b.host;
    if (b.error) problems.push(`${who}: ${b.error}`);
    else {
      if (b.phase !== 'provisioned') problems.push(`${who}: phase ${b.phase ?? 'unknown'}, not provisioned`);
      if (b.role !== 'leader' && b.role !== 'follower') problems.push(`${who}: role ${b.role ?? 'unknown'}`);
      else if (!b.replicating) problems.push(`${who}: ${b.role === 'leader' ? 'its standby is not streaming' : 'not streaming from the leader'}`);
      if (b.onTrial) problems.push(`${who}: a trial slot is not committed yet`);
      if (b.busy) problems.push(`${who}: an upgrade is being applied`);
    }
  }
  if (problems.length === 0) {
    const roles = boxes.map((b) => b.role).sort();
    if (roles.join(',') !== 'follower,leader') problems.push(`roles are ${roles.join(' and ')}, not one leader and one follower`);
    const leader = boxes.find((b) => b.role === 'leader');
    if (leader && !leader.synchronous) problems.push(`${leader.host}: replication is asynchronous (the leader is not waiting for its standby)`);
  }
  return problems;
}

export type RollingStep = { kind: 'upgrade'; host: string; from?: string } | { kind: 'switchover'; from: string; to: string };

/** Follower first, then a planned switchover, then the other box; boxes already on `target` are skipped. */
export function planRolling(boxes: readonly BoxView[], target: string): RollingStep[] {
  const leader = boxes.find((b) => b.role === 'leader');
  const follower = boxes.find((b) => b.role === 'follower');
  if (!leader || !follower) throw new Error('internal: planRolling needs a leader and a follower (check pairProblems first)');
  const steps: RollingStep[] = [];
  const up = (b: BoxView): RollingStep => ({ kind: 'upgrade', host: b.host, ...(b.version ? { from: b.version } : {}) });
  if (follower.version !== target) steps.push(up(follower));
  if (leader.version !== target) {
    steps.push({ kind: 'switchover', from: leader.host, to: follower.host });
    steps.push(up(leader));
  }
  return steps;
}

export type StepVerdict = { state: 'done' } | { state: 'wait'; why: string } | { state: 'failed'; reason: string };

/**
 * Is `step` finished, given both boxes' views now? An upgraded box is done once it runs `target`,
 * committed, and is back in the pair replicating; a rollback or failed write ends the run.
 */
export function stepVerdict(step: RollingStep, boxes: readonly BoxView[], target: string): StepVerdict {
  if (step.kind === 'upgrade') {
    const b = boxes.find((x) => x.host === step.host);
    if (!b || b.error) return { state: 'wait', why: `${step.host} is not answering (${b?.error ?? 'no status'}); it is rebooting` };
    const last = b.upgrade;
    if (last && last.to?.version === target && (last.state === 'rolled-back' || last.state === 'failed'))
      return {
        state: 'failed',
        reason: `${step.host}: the upgrade to ${target} ${last.state === 'failed' ? 'failed' : 'was rolled back'}: ${last.reason ?? 'no reason recorded'}`,
      };
    if (b.version !== target) return { state: 'wait', why: `${step.host} still runs ${b.version ?? 'an unknown version'}` };
    if (last?.state !== 'committed' || b.onTrial) return { state: 'wait', why: `${step.host} runs ${target} on trial (health gate)` };
    const problems = pairProblems(boxes);
    return problems.length === 0 ? { state: 'done' } : { state: 'wait', why: problems.join('; ') };
  }
  const newLeader = boxes.find((x) => x.host === step.to);
  if (newLeader?.role !== 'leader') return { state: 'wait', why: `${step.to} is ${newLeader?.role ?? 'unknown'}, not leader yet` };
  const problems = pairProblems(boxes);
  return problems.length === 0 ? { state: 'done' } : { state: 'wait', why: problems.join('; ') };
}

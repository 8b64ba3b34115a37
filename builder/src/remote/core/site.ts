/**
 * The operator's view of a site (pure): both boxes' summaries (firstboot/src/net/core/box-summary.ts,
 * the same the boxes' own status pages show), what is wrong with the pair, whether a planned
 * switchover may be asked for and when it is done, the readable table, and both boxes' event logs
 * merged by time. The shell (remote/site-commands.ts) reads the boxes over SSH.
 */
import { type AgentStatusJson, type BoxSummary, summarizeBox, summaryCells } from '../../../../firstboot/src/net/core/box-summary.ts';
import { replacementRefusal } from '../../../../firstboot/src/core/replacement.ts';
import type { Phase } from '../../../../firstboot/src/core/hostmeta.ts';

export type SiteBox = ({ host: string; reachable: true } & BoxSummary) | { host: string; reachable: false; error: string };

export interface SiteView {
  boxes: SiteBox[];
  /** The box that is leader and holds the VIP, if exactly one does. */
  leader: string | null;
  vipHolder: string | null;
  /** Empty when the pair is a leader with a synchronous, streaming follower. */
  problems: string[];
}

export function siteView(observed: readonly ({ host: string; status: unknown } | { host: string; error: string })[]): SiteView {
  const boxes: SiteBox[] = observed.map((o) =>
    'error' in o ? { host: o.host, reachable: false, error: o.error } : { host: o.host, reachable: true, ...summarizeBox(o.status as AgentStatusJson) },
  );
  const up = boxes.filter((b): b is Extract<SiteBox, { reachable: true }> => b.reachable);
  const leaders = up.filter((b) => b.role === 'leader');
  const vipHolders = up.filter((b) => b.holdsVip);
  const problems: string[] = [];
  for (const b of boxes) {
    if (!b.reachable) problems.push(`${b.host}: unreachable (${b.error})`);
    else {
      if (b.phase !== 'provisioned') problems.push(`${b.name}: ${b.phase}, not provisioned yet`);
      if (b.fenced) problems.push(`${b.name}: fenced`);
      if (b.lastError) problems.push(`${b.name}: ${b.lastError}`);
    }
  }
  if (leaders.length === 0) problems.push('no leader');
  if (leaders.length > 1) problems.push(`${leaders.length} boxes say they lead: ${leaders.map((b) => b.name).join(', ')}`);
  if (vipHolders.length > 1) problems.push(`the VIP is bound on ${vipHolders.map((b) => b.name).join(' and ')}`);
  const leader = leaders.length === 1 ? leaders[0]! : undefined;
  if (leader && !leader.holdsVip) problems.push(`${leader.name} leads but does not hold the VIP`);
  if (leader && leader.replication !== 'sync')
    problems.push(
      `${leader.name}'s standby ${leader.replication === 'none' ? 'is not streaming' : 'streams asynchronously'}: a failover now could lose acknowledged writes`,
    );
  return { boxes, leader: leader?.host ?? null, vipHolder: vipHolders.length === 1 ? vipHolders[0]!.host : null, problems };
}

export type SwitchoverPlan = { ok: true; from: string; to: string; forced: boolean } | { ok: false; reason: string };

/**
 * A planned switchover is asked of the leader, for the follower. Refused while the follower is not
 * a synchronous streaming standby (it might not hold every acknowledged commit) unless forced; even
 * forced, the leader hands over only once the follower has caught up (liveness core), so no
 * acknowledged write is given up — forcing only skips this early refusal.
 */
export function planSwitchover(view: SiteView, force: boolean): SwitchoverPlan {
  const up = view.boxes.filter((b): b is Extract<SiteBox, { reachable: true }> => b.reachable);
  const down = view.boxes.filter((b) => !b.reachable);
  if (down.length > 0) return { ok: false, reason: `cannot reach ${down.map((b) => b.host).join(', ')}: a switchover needs both boxes` };
  const leader = up.find((b) => b.host === view.leader);
  const follower = up.find((b) => b.role === 'follower');
  if (!leader) return { ok: false, reason: `no single leader (${up.map((b) => `${b.name}: ${b.role}`).join(', ')})` };
  if (!follower) return { ok: false, reason: `no follower to hand over to (${up.map((b) => `${b.name}: ${b.role}`).join(', ')})` };
  if (leader.replication !== 'sync' && !force)
    return {
      ok: false,
      reason: `${follower.name} is not a synchronous standby (${leader.replication}): it may not hold every acknowledged write. Wait for it to catch up, or --force to ask anyway (the leader still hands over only once ${follower.name} has caught up)`,
    };
  return { ok: true, from: leader.host, to: follower.host, forced: leader.replication !== 'sync' };
}

/** Done once the former follower leads at a higher term and the former leader follows it. */
export function switchoverDone(plan: Extract<SwitchoverPlan, { ok: true }>, termBefore: number, view: SiteView): boolean {
  const to = view.boxes.find((b) => b.host === plan.to);
  const from = view.boxes.find((b) => b.host === plan.from);
  return to?.reachable === true && to.role === 'leader' && to.term > termBefore && to.holdsVip && from?.reachable === true && from.role === 'follower';
}

export type ReplacementPlan =
  | { ok: true; survivor: string; replaced: { nodeId: string; name: string; address: string }; alreadyAdmitting: boolean }
  | { ok: false; reason: string };

/**
 * replace-node is asked of the survivor: the one box that answers as a provisioned leader, whose
 * peer has been silent long enough (the same rule the survivor applies: core/replacement.ts). The
 * other address may not answer (the dead box), present another host key than the pinned one (a new
 * box there already) or be a box that has not paired; but a box that answers as the survivor's peer
 * is alive, and that is refused.
 */
export function planReplacement(observed: readonly ({ host: string; status: unknown } | { host: string; error: string })[]): ReplacementPlan {
  const up = observed.filter((o): o is { host: string; status: AgentStatusJson } => 'status' in o);
  const leaders = up.filter((o) => o.status.role === 'leader' && o.status.phase === 'provisioned');
  if (leaders.length !== 1) {
    const seen = observed.map((o) => ('status' in o ? `${o.host}: ${(o.status as AgentStatusJson).role ?? '?'}` : `${o.host}: unreachable (${o.error})`));
    return { ok: false, reason: `replace-node needs exactly one box leading, the survivor (${seen.join('; ')})` };
  }
  const survivor = leaders[0]!;
  const peer = survivor.status.peer;
  if (!peer?.nodeId || !peer.name || !peer.address) return { ok: false, reason: `${survivor.host} reports no peer: it is not a member of a pair` };
  const replaced = { nodeId: peer.nodeId, name: peer.name, address: peer.address };
  const alive = up.find((o) => o.status.nodeId === peer.nodeId);
  if (alive)
    return {
      ok: false,
      reason: `${alive.host} answers as ${peer.name}, ${survivor.host}'s peer: it is alive, and replace-node replaces a dead box. Nothing was changed`,
    };
  if (survivor.status.replacing) return { ok: true, survivor: survivor.host, replaced, alreadyAdmitting: true };
  const refusal = replacementRefusal({
    phase: (survivor.status.phase ?? 'provisioned') as Phase,
    role: survivor.status.role ?? 'unknown',
    peerSilentMs: survivor.status.liveness?.peerSilentMs,
  });
  if (refusal !== undefined) return { ok: false, reason: `${survivor.host}: ${refusal}. Nothing was changed` };
  return { ok: true, survivor: survivor.host, replaced, alreadyAdmitting: false };
}

/** Where a replacement stands, from the survivor's own status. */
export type ReplacementProgress =
  | { stage: 'admitting' }
  | { stage: 'joined'; peer: { nodeId: string; name: string; address: string } }
  | { stage: 'ended'; reason: string };

export function replacementProgress(plan: Extract<ReplacementPlan, { ok: true }>, survivor: AgentStatusJson): ReplacementProgress {
  if (survivor.replacing) return { stage: 'admitting' };
  const peer = survivor.peer;
  if (peer?.nodeId && peer.nodeId !== plan.replaced.nodeId && peer.name && peer.address)
    return { stage: 'joined', peer: { nodeId: peer.nodeId, name: peer.name, address: peer.address } };
  return {
    stage: 'ended',
    reason: `the survivor stopped admitting and keeps ${plan.replaced.name} as its peer (heard again, or cancelled: see geminik8s logs)`,
  };
}

/** The readable table: one column per box. */
export function renderSiteTable(view: SiteView): string {
  const columns = view.boxes.map((b) => (b.reachable ? new Map(summaryCells(b)) : new Map([['box', `${b.host} unreachable: ${b.error}`]])));
  const keys = [...new Set(columns.flatMap((c) => [...c.keys()]))];
  const keyWidth = Math.max(...keys.map((k) => k.length));
  const widths = columns.map((c) => Math.min(60, Math.max(...keys.map((k) => (c.get(k) ?? '').length))));
  const lines = keys.map((k) => [k.padEnd(keyWidth), ...columns.map((c, i) => (c.get(k) ?? '').padEnd(widths[i]!))].join('  ').trimEnd());
  const verdict = view.problems.length === 0 ? 'healthy: a leader with a synchronous follower' : `not healthy:\n  - ${view.problems.join('\n  - ')}`;
  return `${lines.join('\n')}\n${verdict}\n`;
}

export interface MergedEvent {
  host: string;
  ts: string;
  level: string;
  event: string;
  fields: Record<string, unknown>;
}

/** Both boxes' events (JSON lines from `geminik8s-agent logs`), merged oldest first; unparsable lines are kept as text. */
export function mergeEvents(perBox: readonly { host: string; lines: readonly string[] }[]): MergedEvent[] {
  const all: MergedEvent[] = [];
  for (const { host, lines } of perBox) {
    for (const line of lines) {
      try {
        const { ts, level, event, ...fields } = JSON.parse(line) as Record<string, unknown>;
        all.push({ host, ts: String(ts ?? ''), level: String(level ?? ''), event: String(event ?? ''), fields });
      } catch {
        all.push({ host, ts: '', level: 'text', event: '', fields: { text: line } });
      }
    }
  }
  // Stable: lines of one box without a time keep their order after it.
  return all
    .map((e, i) => ({ e, i }))
    .sort((a, b) => (a.e.ts === b.e.ts ? a.i - b.i : a.e.ts < b.e.ts ? -1 : 1))
    .map((x) => x.e);
}

export function formatEvent(e: MergedEvent): string {
  const fields = Object.entries(e.fields)
    .map(([k, v]) => `${k}=${typeof v === 'string' ? (/\s/.test(v) ? JSON.stringify(v) : v) : JSON.stringify(v)}`)
    .join(' ');
  return `${e.ts} ${e.host} ${e.level.padEnd(5)} ${e.event}${fields ? ` ${fields}` : ''}`;
}

/**
 * The operator's commands against a site, over SSH (remote/ssh.ts: the operator's key, host keys
 * pinned on first contact): each box is asked through its agent's own CLI, which reads the agent's
 * socket as root, so nothing on the box listens for the operator but sshd. Decisions:
 * remote/core/site.ts.
 */
import { type SiteView, mergeEvents, type MergedEvent, planSwitchover, siteView, switchoverDone, type SwitchoverPlan } from './core/site.ts';
import { connect, type SshIdentity, type SshSession } from './ssh.ts';

/** The agent executable the image installs (builder/src/pipeline/root-tree.ts). */
export const AGENT = '/usr/lib/geminik8s/geminik8s-agent';
/** The agent executable (a Node single-executable) can take seconds to start on a slow or busy box. */
export const STATUS_TIMEOUT_MS = 60_000;

export interface SiteTarget {
  hosts: string[];
  identity: SshIdentity;
}

/** Runs `fn` on a fresh SSH session to `host` (a box that reboots drops its connections). */
export async function onBox<T>(host: string, identity: SshIdentity, fn: (s: SshSession) => Promise<T>): Promise<T> {
  const s = await connect(host, identity, { timeoutMs: 10_000 });
  try {
    return await fn(s);
  } finally {
    s.close();
  }
}

/** One box's GET /status through `geminik8s-agent status --json`; a host key mismatch is thrown, anything else is the box's error. */
export async function readBox(host: string, identity: SshIdentity): Promise<{ host: string; status: unknown } | { host: string; error: string }> {
  try {
    return await onBox(host, identity, async (s) => {
      const r = await s.exec([AGENT, 'status', '--json'], { timeoutMs: STATUS_TIMEOUT_MS });
      if (r.code !== 0) return { host, error: `the agent's status: ${(r.stderr || r.stdout).trim().slice(-300)}` };
      return { host, status: JSON.parse(r.stdout) as unknown };
    });
  } catch (e) {
    if ((e as Error).name === 'HostKeyMismatch') throw e;
    return { host, error: (e as Error).message };
  }
}

export async function readSite(t: SiteTarget): Promise<SiteView> {
  return siteView(await Promise.all(t.hosts.map((h) => readBox(h, t.identity))));
}

export type SwitchoverEvent =
  | { event: 'asked'; from: string; to: string; forced: boolean; answer: string }
  | { event: 'waiting'; seconds: number }
  | { event: 'done'; leader: string; term: number; seconds: number };

/**
 * Asks the leader for a planned switchover and waits until the follower leads. Throws a refusal
 * (nothing asked) or a timeout (asked; the leader gives up on its own after 30 s if the follower
 * never caught up, and keeps leading).
 */
export async function switchover(
  t: SiteTarget,
  o: { force: boolean; timeoutMs: number; report(e: SwitchoverEvent): void },
): Promise<{ plan: Extract<SwitchoverPlan, { ok: true }>; view: SiteView }> {
  const t0 = performance.now();
  const before = await readSite(t);
  const plan = planSwitchover(before, o.force);
  if (!plan.ok) throw new SwitchoverRefused(plan.reason);
  const from = before.boxes.find((b) => b.host === plan.from);
  const termBefore = from?.reachable ? from.term : 0;
  const answer = await onBox(plan.from, t.identity, (s) => s.exec([AGENT, 'switchover'], { timeoutMs: STATUS_TIMEOUT_MS }));
  if (answer.code !== 0) throw new SwitchoverRefused(`${plan.from} refused: ${(answer.stdout || answer.stderr).trim()}`);
  o.report({ event: 'asked', from: plan.from, to: plan.to, forced: plan.forced, answer: answer.stdout.trim() });
  for (;;) {
    await new Promise((r) => setTimeout(r, 1000));
    const view = await readSite(t);
    const seconds = (performance.now() - t0) / 1000;
    if (switchoverDone(plan, termBefore, view)) {
      const to = view.boxes.find((b) => b.host === plan.to);
      o.report({ event: 'done', leader: plan.to, term: to?.reachable ? to.term : 0, seconds });
      return { plan, view };
    }
    if (performance.now() - t0 > o.timeoutMs)
      throw new Error(`${plan.to} did not take over within ${o.timeoutMs / 1000} s: ${view.problems.join('; ') || 'roles unchanged'}`);
    o.report({ event: 'waiting', seconds });
  }
}

export class SwitchoverRefused extends Error {
  constructor(reason: string) {
    super(`switchover refused, nothing changed: ${reason}`);
    this.name = 'SwitchoverRefused';
  }
}

/** The admin kubeconfig for the VIP, from the first box that has one. */
export async function fetchKubeconfig(t: SiteTarget): Promise<{ host: string; text: string }> {
  const why: string[] = [];
  for (const host of t.hosts) {
    try {
      const r = await onBox(host, t.identity, (s) => s.exec([AGENT, 'kubeconfig'], { timeoutMs: STATUS_TIMEOUT_MS }));
      if (r.code === 0 && r.stdout.includes('apiVersion')) return { host, text: r.stdout };
      why.push(`${host}: ${(r.stderr || r.stdout).trim()}`);
    } catch (e) {
      if ((e as Error).name === 'HostKeyMismatch') throw e;
      why.push(`${host}: ${(e as Error).message}`);
    }
  }
  throw new Error(`no box gave an admin kubeconfig:\n  ${why.join('\n  ')}`);
}

/** Both boxes' newest `lines` agent events, merged by time; an unreachable box is named, not fatal. */
export async function fetchLogs(t: SiteTarget, lines: number): Promise<{ events: MergedEvent[]; unreachable: string[] }> {
  const unreachable: string[] = [];
  const perBox = await Promise.all(
    t.hosts.map(async (host) => {
      try {
        const r = await onBox(host, t.identity, (s) => s.exec([AGENT, 'logs', '--lines', String(lines)], { timeoutMs: STATUS_TIMEOUT_MS }));
        if (r.code !== 0) throw new Error((r.stderr || r.stdout).trim());
        return { host, lines: r.stdout.split('\n').filter((l) => l !== '') };
      } catch (e) {
        if ((e as Error).name === 'HostKeyMismatch') throw e;
        unreachable.push(`${host}: ${(e as Error).message}`);
        return { host, lines: [] };
      }
    }),
  );
  return { events: mergeEvents(perBox), unreachable };
}

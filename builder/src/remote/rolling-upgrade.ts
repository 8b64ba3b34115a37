/**
 * `geminik8s upgrade`: the rolling A/B upgrade of a pair from the operator's machine, over SSH.
 * Follower first (upload, apply, reboot, wait for its health gate and for the pair to be whole and
 * synchronous again), then a planned switchover, then the other box. Any failed step stops the run
 * with the pair as it is: a rolled-back box is back on the version that works, and the report says
 * which box runs what. Decisions: remote/core/rolling.ts.
 */
import path from 'node:path';
import { readManifest } from '../../../firstboot/src/upgrade/bundle.ts';
import { type BoxView, boxView, pairProblems, planRolling, type RollingStep, stepVerdict, unreachable } from './core/rolling.ts';
import { AGENT, readBox } from './site-commands.ts';
import { connect, type SshIdentity } from './ssh.ts';

const UPDATES_DIR = '/var/lib/geminik8s/updates';
const POLL_MS = 3000;
/** A pair that is briefly not whole (a box still starting, the standby catching up) gets this long to become healthy. */
const HEALTHY_WAIT_MS = 180_000;
/** Two upgrades and a switchover, with room for a failover that reorders them. */
const MAX_STEPS = 6;

export type RollingEvent =
  | { event: 'plan'; target: string; boxes: BoxView[]; steps: RollingStep[] }
  | { event: 'step-start'; index: number; total: number; step: RollingStep }
  | { event: 'progress'; host: string; phase: string; doneBytes: number; totalBytes: number }
  | { event: 'waiting'; step: RollingStep; why: string }
  | { event: 'step-done'; index: number; step: RollingStep; seconds: number }
  | { event: 'done'; target: string; boxes: BoxView[]; seconds: number }
  | { event: 'stopped'; reason: string; boxes: BoxView[] };

export interface RollingOptions {
  hosts: [string, string];
  bundle: string;
  identity: SshIdentity;
  report(e: RollingEvent): void;
  /** How long one box may take from apply to a committed slot back in the pair. */
  stepTimeoutMs: number;
}

/** One box's status over a fresh SSH session (a box that reboots drops its connections). */
async function observe(host: string, identity: SshIdentity): Promise<BoxView> {
  const r = await readBox(host, identity);
  return 'error' in r ? unreachable(host, r.error) : boxView(host, r.status);
}

export async function rollingUpgrade(o: RollingOptions): Promise<{ ok: boolean; boxes: BoxView[] }> {
  const t0 = performance.now();
  const target = (await readManifest(o.bundle)).version;
  const observeBoth = () => Promise.all(o.hosts.map((h) => observe(h, o.identity)));
  const stop = async (reason: string) => {
    const boxes = await observeBoth();
    o.report({ event: 'stopped', reason, boxes });
    return { ok: false, boxes };
  };
  let boxes = await observeBoth();
  // Plan from what the boxes say, run the first step, and plan again: a failover during a step
  // (the roles swapped) changes which box is next, and the plan follows instead of rebooting a leader.
  for (let index = 1; ; index++) {
    const healthyBy = Date.now() + HEALTHY_WAIT_MS;
    for (let problems = pairProblems(boxes); problems.length > 0; problems = pairProblems(boxes)) {
      if (Date.now() > healthyBy)
        return stop(`the pair is not healthy${index === 1 ? ', nothing was changed' : ` before step ${index}`}: ${problems.join('; ')}`);
      await new Promise((r) => setTimeout(r, POLL_MS));
      boxes = await observeBoth();
    }
    const steps = planRolling(boxes, target);
    if (index === 1) o.report({ event: 'plan', target, boxes, steps });
    const step = steps[0];
    if (!step) break;
    if (index > MAX_STEPS) return stop(`still not done after ${MAX_STEPS} steps (the roles keep changing?): next would be ${JSON.stringify(step)}`);
    const started = performance.now();
    o.report({ event: 'step-start', index, total: index - 1 + steps.length, step });
    const outcome = step.kind === 'upgrade' ? await apply(step.host) : await switchover(step.from);
    if (outcome === 'replan') continue;
    if (outcome) return stop(outcome);
    const deadline = Date.now() + o.stepTimeoutMs;
    let lastWhy = '';
    for (;;) {
      boxes = await observeBoth();
      const verdict = stepVerdict(step, boxes, target);
      if (verdict.state === 'done') break;
      if (verdict.state === 'failed') return stop(verdict.reason);
      if (Date.now() > deadline) return stop(`step ${index} did not finish within ${o.stepTimeoutMs / 1000} s: ${verdict.why}`);
      if (verdict.why !== lastWhy) o.report({ event: 'waiting', step, why: verdict.why });
      lastWhy = verdict.why;
      await new Promise((r) => setTimeout(r, POLL_MS));
    }
    o.report({ event: 'step-done', index, step, seconds: (performance.now() - started) / 1000 });
  }
  o.report({ event: 'done', target, boxes, seconds: (performance.now() - t0) / 1000 });
  return { ok: true, boxes };

  /**
   * Uploads the bundle and has the box apply it; a refusal or failure as a reason, 'replan' when
   * the box stopped being the follower while it wrote the slot (it then neither tries nor reboots).
   */
  async function apply(host: string): Promise<string | 'replan' | undefined> {
    const s = await connect(host, o.identity);
    try {
      const remote = `${UPDATES_DIR}/${path.basename(o.bundle)}`;
      const mk = await s.exec(['mkdir', '-p', UPDATES_DIR]);
      if (mk.code !== 0) return `${host}: mkdir ${UPDATES_DIR}: ${mk.stderr.trim()}`;
      await s.upload(o.bundle, remote, (done, total) => o.report({ event: 'progress', host, phase: 'upload', doneBytes: done, totalBytes: total }));
      let buffer = '';
      let result: { result?: string; code?: string; message?: string } = {};
      await s.exec([AGENT, 'upgrade', 'apply', remote, '--only-as-follower', '--json'], {
        onStdout: (chunk) => {
          buffer += chunk;
          for (let nl = buffer.indexOf('\n'); nl >= 0; nl = buffer.indexOf('\n')) {
            const line = JSON.parse(buffer.slice(0, nl)) as {
              step?: string;
              doneBytes?: number;
              totalBytes?: number;
              result?: string;
              code?: string;
              message?: string;
            };
            buffer = buffer.slice(nl + 1);
            if (line.result) result = line;
            else if (line.doneBytes !== undefined && line.step)
              o.report({ event: 'progress', host, phase: line.step, doneBytes: line.doneBytes, totalBytes: line.totalBytes ?? 0 });
          }
        },
      });
      if (result.code === 'role-changed') return 'replan';
      return result.result === 'installed' ? undefined : `${host}: ${result.result ?? 'no answer'}: ${result.message ?? ''}`;
    } finally {
      s.close();
    }
  }

  /** Asks the leader for a planned switchover; it may refuse for a while (the standby catching up). */
  async function switchover(host: string): Promise<string | undefined> {
    const until = Date.now() + 60_000;
    let answer = '';
    while (Date.now() < until) {
      const s = await connect(host, o.identity);
      try {
        const r = await s.exec([AGENT, 'switchover']);
        answer = r.stdout.trim() || r.stderr.trim();
        if (r.code === 0) return undefined;
      } finally {
        s.close();
      }
      await new Promise((r) => setTimeout(r, POLL_MS));
    }
    return `${host} refused the planned switchover for 60 s: ${answer}`;
  }
}

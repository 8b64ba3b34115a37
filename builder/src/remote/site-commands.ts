/**
 * The operator's commands against a site, over SSH (remote/ssh.ts: the operator's key, host keys
 * pinned on first contact): each box is asked through its agent's own CLI, which reads the agent's
 * socket as root, so nothing on the box listens for the operator but sshd. Decisions:
 * remote/core/site.ts.
 */
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdtemp, rename, rm, stat } from 'node:fs/promises';
import { once } from 'node:events';
import os from 'node:os';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { type BackupHeader, encryptingStream, newHeader, readBackup } from './backup-file.ts';
import type { AgentStatusJson } from '../../../firstboot/src/net/core/box-summary.ts';
import {
  type SiteView,
  mergeEvents,
  type MergedEvent,
  planReplacement,
  planSwitchover,
  replacementProgress,
  siteView,
  switchoverDone,
  type SwitchoverPlan,
} from './core/site.ts';
import { connect, forgetHostKeys, type SshIdentity, type SshSession } from './ssh.ts';

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
  if (!plan.ok) throw new SiteCommandRefused(`switchover refused, nothing changed: ${plan.reason}`);
  const from = before.boxes.find((b) => b.host === plan.from);
  const termBefore = from?.reachable ? from.term : 0;
  const answer = await onBox(plan.from, t.identity, (s) => s.exec([AGENT, 'switchover'], { timeoutMs: STATUS_TIMEOUT_MS }));
  if (answer.code !== 0) throw new SiteCommandRefused(`switchover refused by ${plan.from}, nothing changed: ${(answer.stdout || answer.stderr).trim()}`);
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

export type ReplaceEvent =
  | { event: 'asked'; survivor: string; replaces: string; answer: string }
  | { event: 'waiting'; stage: 'admitting' | 'copying'; seconds: number; detail?: string }
  | { event: 'joined'; name: string; address: string; nodeId: string; seconds: number; forgottenHostKeys: number }
  | { event: 'done'; leader: string; follower: string; seconds: number };

/**
 * replace-node: asks the survivor (core/site.ts planReplacement) to admit one freshly flashed box
 * in place of its dead peer, then follows the survivor's status until a new box has joined and is
 * its synchronous follower. The host keys pinned for the dead box's address and the new box's are
 * forgotten when it joins (a new box is a new host key), and the new one is pinned at first
 * contact. A box at the other address that shows another host key than the pinned one is taken
 * for that new box, not refused.
 */
export async function replaceNode(t: SiteTarget, o: { timeoutMs: number; report(e: ReplaceEvent): void }): Promise<SiteView> {
  const t0 = performance.now();
  const seconds = () => (performance.now() - t0) / 1000;
  const observed = await Promise.all(
    t.hosts.map((host) =>
      readBox(host, t.identity).catch((e: Error) => {
        if (e.name !== 'HostKeyMismatch') throw e;
        return { host, error: 'presents another host key than the one pinned (a new box at this address?)' };
      }),
    ),
  );
  const plan = planReplacement(observed);
  if (!plan.ok) throw new SiteCommandRefused(`replace-node refused: ${plan.reason}`);
  const answer = await onBox(plan.survivor, t.identity, (s) => s.exec([AGENT, 'replace-node'], { timeoutMs: STATUS_TIMEOUT_MS }));
  if (answer.code !== 0) throw new SiteCommandRefused(`replace-node refused by ${plan.survivor}, nothing changed: ${(answer.stdout || answer.stderr).trim()}`);
  o.report({ event: 'asked', survivor: plan.survivor, replaces: plan.replaced.name, answer: answer.stdout.trim() });
  let joined: { nodeId: string; name: string; address: string } | undefined;
  let lastReport = 0;
  for (;;) {
    if (performance.now() - t0 > o.timeoutMs)
      throw new Error(
        joined
          ? `${joined.name} joined but is not a synchronous follower after ${Math.round(seconds())} s: geminik8s status shows why`
          : `no new box joined within ${Math.round(seconds())} s; ${plan.survivor} keeps admitting one: run replace-node again to wait, or --cancel`,
      );
    await new Promise((r) => setTimeout(r, 2000));
    // The survivor restarts its agent once the new box joined (a few seconds without an answer).
    const box = await readBox(plan.survivor, t.identity);
    if ('error' in box) continue;
    const progress = replacementProgress(plan, box.status as AgentStatusJson);
    if (progress.stage === 'ended') throw new Error(`replace-node ended without a new box: ${progress.reason}`);
    if (progress.stage === 'joined' && !joined) {
      joined = progress.peer;
      let forgotten = 0;
      for (const host of new Set([plan.replaced.address, joined.address])) forgotten += await forgetHostKeys(t.identity.knownHosts, host);
      o.report({ event: 'joined', ...joined, seconds: seconds(), forgottenHostKeys: forgotten });
    }
    if (joined) {
      const view = siteView([box, await readBox(joined.address, t.identity)]);
      if (view.problems.length === 0 && view.leader === plan.survivor) {
        o.report({ event: 'done', leader: plan.survivor, follower: joined.address, seconds: seconds() });
        return view;
      }
      if (performance.now() - lastReport > 10_000) {
        lastReport = performance.now();
        o.report({ event: 'waiting', stage: 'copying', seconds: seconds(), detail: view.problems.join('; ') });
      }
    } else if (performance.now() - lastReport > 10_000) {
      lastReport = performance.now();
      o.report({ event: 'waiting', stage: 'admitting', seconds: seconds() });
    }
  }
}

/** Closes a survivor's open admission (replace-node --cancel): the box that admits one is asked. */
export async function cancelReplacement(t: SiteTarget): Promise<{ host: string; answer: string }> {
  const observed = await Promise.all(t.hosts.map((host) => readBox(host, t.identity).catch((e: Error) => ({ host, error: e.message }))));
  const admitting = observed.find((o) => 'status' in o && (o.status as AgentStatusJson).replacing);
  if (!admitting) throw new SiteCommandRefused('no box of this site is admitting a replacement');
  const r = await onBox(admitting.host, t.identity, (s) => s.exec([AGENT, 'replace-node', '--cancel'], { timeoutMs: STATUS_TIMEOUT_MS }));
  if (r.code !== 0) throw new SiteCommandRefused(`${admitting.host} did not stop admitting: ${(r.stdout || r.stderr).trim()}`);
  return { host: admitting.host, answer: r.stdout.trim() };
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

export interface SiteKey {
  siteId: string;
  /** The site file's pair secret: the backup key is derived from it. */
  pairSecret: string;
}

export class SiteCommandRefused extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'SiteCommandRefused';
  }
}

/**
 * Streams the leader's archive of Kine's database over SSH into an encrypted backup file, checks
 * the file it wrote by reading it back, and only then gives it its name (`<out>.partial` before).
 */
export async function backupSite(
  t: SiteTarget,
  key: SiteKey,
  out: string,
  o: { force: boolean; onBytes?: (archiveBytes: number) => void },
): Promise<{ file: string; header: BackupHeader; archiveBytes: number; fileBytes: number; seconds: number }> {
  const t0 = performance.now();
  if (!o.force && (await stat(out).catch(() => undefined))) throw new SiteCommandRefused(`${out} exists: --force replaces it`);
  const view = await readSite(t);
  const leader = view.boxes.find((b) => b.host === view.leader);
  if (!leader?.reachable) throw new SiteCommandRefused(`no leader to back up from: ${view.problems.join('; ')}`);
  const header = newHeader({ siteId: key.siteId, source: { host: leader.host, name: leader.name, term: leader.term } });
  const partial = `${out}.partial`;
  let archiveBytes = 0;
  const counter = new PassThrough();
  counter.on('data', (b: Buffer) => {
    archiveBytes += b.length;
    o.onBytes?.(archiveBytes);
  });
  const written = pipeline(counter, encryptingStream(header, key.pairSecret), createWriteStream(partial, { mode: 0o600 }));
  try {
    const r = await onBox(leader.host, t.identity, (s) => s.exec([AGENT, 'backup'], { stdoutTo: counter, timeoutMs: 6 * 3_600_000 }));
    counter.end();
    await written;
    if (r.code !== 0) throw new Error(`${leader.host}: the backup failed (exit ${r.code}): ${r.stderr.trim()}`);
    const check = await readBackup(partial, key, () => undefined);
    if (check.archiveBytes !== archiveBytes) throw new Error(`${partial}: read back ${check.archiveBytes} archive bytes, ${archiveBytes} were written`);
    await rename(partial, out);
  } catch (e) {
    counter.destroy();
    await written.catch(() => undefined);
    await rm(partial, { force: true });
    throw e;
  }
  return { file: out, header, archiveBytes, fileBytes: (await stat(out)).size, seconds: (performance.now() - t0) / 1000 };
}

/**
 * Restores a backup onto a site's pair (new boxes after both were lost, or the same pair): the
 * whole file is decrypted and checked first, into a 0600 file of our own; nothing touches the site
 * before that. Then the pair must be healthy (a leader with a synchronous follower); the archive is
 * streamed to the leader's agent, which replaces Kine's database in one transaction, and the
 * follower restarts what reads it.
 */
export async function restoreSite(
  t: SiteTarget,
  key: SiteKey,
  file: string,
  o: { verifyOnly: boolean },
): Promise<{ header: BackupHeader; archiveBytes: number; leader?: string; seconds: number }> {
  const t0 = performance.now();
  const dir = await mkdtemp(path.join(os.tmpdir(), 'geminik8s-restore-'));
  try {
    const plain = path.join(dir, 'kine.dump');
    const sink = createWriteStream(plain, { mode: 0o600 });
    const checked = await readBackup(file, key, (chunk) => (sink.write(chunk) ? undefined : once(sink, 'drain').then(() => undefined)));
    await new Promise<void>((resolve, reject) => sink.end((e?: Error | null) => (e ? reject(e) : resolve())));
    if (o.verifyOnly) return { ...checked, seconds: (performance.now() - t0) / 1000 };
    const view = await readSite(t);
    if (view.problems.length > 0) throw new SiteCommandRefused(`the pair is not healthy, nothing was changed: ${view.problems.join('; ')}`);
    const leader = view.leader!;
    const follower = view.boxes.find((b) => b.host !== leader)!.host;
    const answer = await onBox(leader, t.identity, (s) => s.exec([AGENT, 'restore', '-'], { stdinFrom: createReadStream(plain), timeoutMs: 6 * 3_600_000 }));
    if (answer.code !== 0) throw new Error(`${leader}: the restore failed, the site keeps its data: ${(answer.stdout || answer.stderr).trim()}`);
    const after = await onBox(follower, t.identity, (s) => s.exec([AGENT, 'restore', '--restart-only'], { timeoutMs: STATUS_TIMEOUT_MS }));
    if (after.code !== 0)
      throw new Error(`${follower}: restored on ${leader}, but the follower did not restart its Kine: ${(after.stdout || after.stderr).trim()}`);
    return { ...checked, leader, seconds: (performance.now() - t0) / 1000 };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

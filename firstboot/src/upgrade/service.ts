/**
 * A/B upgrades on one box (issue 12): apply a bundle (verify everything, write the inactive slot
 * through `zstd -d` at low priority and check its hash read back, set a one-time try, reboot), and on each boot settle the last
 * upgrade: run the health gate on a trial slot and commit it or go back, or record why the box is
 * back on the old slot. The decisions are upgrade/core/*; this file reads, writes and reboots.
 *
 * State: upgrade.json in the state directory (data partition), untouched by either slot.
 */
import { readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { PassThrough, Writable } from 'node:stream';
import { writeFileAtomic } from '../adapters/atomic-file.ts';
import { runFilter, runTool } from '../adapters/exec.ts';
import type { ConsoleOut, Logger } from '../adapters/output.ts';
import type { UpgradePolicy } from '../core/image-facts.ts';
import { MARKER } from '../core/report.ts';
import { BundleRefused, loadKeyDir, readVerifiedHead, streamSlot, verifyBundle } from './bundle.ts';
import { bootAction, expectationFrom, gateVerdict, observeStatus, type UpgradeRecord } from './core/lifecycle.ts';
import { checkCompatibility } from './core/manifest.ts';
import { abandonTransition, commitTransition, onTrial, otherSlot, type SlotState, tryTransition } from './core/slots.ts';
import type { SlotBackend } from './slot-backend.ts';

export const UPGRADE_RECORD = 'upgrade.json';
/**
 * Present exactly while a trial is pending or running: geminik8s-upgrade-deadline.service runs only
 * when it exists (ConditionPathExists), so boxes without a trial never start the agent executable for it.
 */
export const TRIAL_MARKER = 'upgrade-trial';
/** The deadline unit acts this long after the agent's own gate deadline, so the two never race. */
export const DEADLINE_GRACE_SECONDS = 60;
const GATE_POLL_MS = 2000;

export interface RunningImage {
  version: string;
  arch: string;
  hardware: string;
  policy: UpgradePolicy;
}

export interface UpgradeServiceOptions {
  stateDir: string;
  /** Trusted public keys (*.pem), baked into the image: /etc/geminik8s/update-keys. */
  keysDir: string;
  image: RunningImage;
  backend: SlotBackend;
  log: Logger;
  out: ConsoleOut;
  reboot(): Promise<void>;
  /** Seconds since boot (/proc/uptime): the gate's deadline counts from boot, as the deadline unit's does. */
  uptimeSeconds(): number;
}

export interface ApplyRequest {
  bundle: string;
  allowDowngrade?: boolean;
  /** false: set the try but leave the reboot to the caller. */
  reboot?: boolean;
  /**
   * Set the try and reboot only if this box is still the pair's follower once the slot is written
   * (the rolling upgrade: a failover during the write must not have the new leader reboot).
   */
  onlyAsFollower?: boolean;
}

export type ApplyEvent = { step: 'verify' | 'write'; doneBytes: number; totalBytes: number } | { step: 'try' | 'reboot'; slot: string };
export type ApplyResult =
  /** `rebootWith`: the command that boots the trial (tryboot needs its flag: a plain reboot would skip it). */
  | { result: 'installed'; version: string; slot: string; rebooting: boolean; rebootWith: string; seconds: number }
  | { result: 'refused'; code: string; message: string }
  | { result: 'failed'; message: string };

export function readUpgradeRecord(stateDir: string): UpgradeRecord | undefined {
  try {
    return JSON.parse(readFileSync(join(stateDir, UPGRADE_RECORD), 'utf8')) as UpgradeRecord;
  } catch {
    return undefined;
  }
}

function storeRecord(stateDir: string, r: UpgradeRecord): void {
  writeFileAtomic(join(stateDir, UPGRADE_RECORD), `${JSON.stringify(r, null, 2)}\n`, 0o644);
  if (r.state === 'trying') writeFileAtomic(join(stateDir, TRIAL_MARKER), `${r.to.slot}\n`, 0o644);
  else rmSync(join(stateDir, TRIAL_MARKER), { force: true });
}

/**
 * The slot is written and read back by processes of their own at the lowest CPU and I/O priority
 * (nice 19, idle I/O class): the agent only streams the compressed image into the writer. On a
 * slow box the decompression, the writes and the hashing would otherwise take the CPU from the
 * agent's liveness loop and PostgreSQL, whose silence the peer reads as a failure (issue 12: a
 * leader fenced over and over while its follower wrote its slot under emulation).
 */
const LOW_PRIORITY = ['-n', '19', 'ionice', '-c', '3'];
/**
 * zstd decompresses stdin, dd writes it in place (never truncating: the slot is a file in tests).
 * Each 4 MiB block is written through to the device (oflag=dsync) rather than into the page cache:
 * a root image written at the speed of decompression filled the dirty-page limit, and the kernel
 * then throttled every process that wrote a file, the agent's state and PostgreSQL's WAL included
 * (its priority does not shield them: ionice counts only on a scheduler that has I/O classes). bash
 * (Essential in Debian) for pipefail: in dash the pipeline's status is dd's alone, and a corrupt
 * stream would surface only as the read-back's hash mismatch instead of zstd's own error.
 */
const WRITE_SLOT = 'set -o pipefail; zstd -d -c -q | dd of="$1" bs=4M iflag=fullblock oflag=dsync conv=notrunc,fsync status=none';
/** The sha256 of the slot's first $2 bytes as the device holds them now. */
const READ_BACK_SLOT = 'head -c "$2" "$1" | sha256sum';

/** Streams the bundle's compressed slot image through zstd onto `device`, then hashes `rawBytes` of it read back. */
async function writeSlot(bundle: string, device: string, rawBytes: number, progress: (doneBytes: number, totalBytes: number) => void): Promise<string> {
  const compressed = new PassThrough({ highWaterMark: 4 << 20 });
  const nothing = new Writable({ write: (_chunk, _enc, cb) => cb() });
  await Promise.all([
    streamSlot(bundle, compressed, progress),
    runFilter('nice', [...LOW_PRIORITY, 'bash', '-c', WRITE_SLOT, 'write-slot', device], compressed, nothing),
  ]);
  // Read back rather than hashed on the way: what is checked is what the next boot will read.
  const read = await runTool('nice', [...LOW_PRIORITY, 'sh', '-c', READ_BACK_SLOT, 'read-back-slot', device, String(rawBytes)]);
  return read.stdout.split(/\s/)[0] ?? '';
}

/**
 * Byte progress as one event per whole percent: per chunk read it was thousands of lines, each
 * written to the status socket and carried over SSH to the operator's upgrade.
 */
function byPercent(step: 'verify' | 'write', progress: (e: ApplyEvent) => void): (doneBytes: number, totalBytes: number) => void {
  let last = -1;
  return (doneBytes, totalBytes) => {
    const percent = Math.floor((100 * doneBytes) / Math.max(1, totalBytes));
    if (percent === last) return;
    last = percent;
    progress({ step, doneBytes, totalBytes });
  };
}

export class UpgradeService {
  readonly #o: UpgradeServiceOptions;
  #busy = false;
  #status: () => Promise<unknown> = async () => ({});

  constructor(o: UpgradeServiceOptions) {
    this.#o = o;
  }

  /** Where the gate and the expectation of an apply read the agent's status (GET /status) from. */
  watch(status: () => Promise<unknown>): void {
    this.#status = status;
  }

  /** What GET /status shows: the slots, the running version and the last upgrade. */
  async status(): Promise<Record<string, unknown>> {
    const slots = await this.#o.backend.state().catch((e: unknown) => ({ error: (e as Error).message }));
    const last = readUpgradeRecord(this.#o.stateDir);
    return { version: this.#o.image.version, backend: this.#o.backend.kind, slots, busy: this.#busy, ...(last ? { last } : {}) };
  }

  async apply(req: ApplyRequest, progress: (e: ApplyEvent) => void): Promise<ApplyResult> {
    if (this.#busy) return { result: 'refused', code: 'busy', message: 'an upgrade is already being applied on this box' };
    this.#busy = true;
    const t0 = performance.now();
    const { log, stateDir, backend, image } = this.#o;
    /** Set once the write has begun: an error thrown before the try is set ends it as failed, not still "writing". */
    let writing: UpgradeRecord | undefined;
    try {
      const slots = await backend.state();
      if (onTrial(slots))
        return {
          result: 'refused',
          code: 'on-trial',
          message: `slot ${slots.booted} is on trial (not committed yet); wait for its health gate before another upgrade`,
        };
      // Cheap checks first (signature, manifest, compatibility), then the whole slot image's hash:
      // a bundle for the wrong box is refused without reading its hundreds of megabytes.
      const keys = await loadKeyDir(this.#o.keysDir);
      const signed = await readVerifiedHead(req.bundle, keys);
      const target = otherSlot(slots.booted);
      const device = await backend.device(target);
      const refusal = checkCompatibility(
        signed.manifest,
        { version: image.version, arch: image.arch, hardware: image.hardware, slotBytes: device.bytes },
        { allowDowngrade: req.allowDowngrade === true },
      );
      if (refusal) throw new BundleRefused(refusal.code, refusal.message);
      const head = await verifyBundle(req.bundle, keys, byPercent('verify', progress));
      const m = head.manifest;
      log.event('info', 'upgrade-verified', { bundle: req.bundle, version: m.version, key: head.keyId, slot: target, device: device.path });

      const now = new Date().toISOString();
      const record: UpgradeRecord = {
        state: 'writing',
        from: { slot: slots.booted, version: image.version },
        to: { slot: target, version: m.version },
        startedAt: now,
        updatedAt: now,
        expect: expectationFrom(
          observeStatus(await this.#status().catch(() => ({})), []),
          image.policy.healthChecks.map((c) => c.name),
        ),
      };
      storeRecord(stateDir, record);
      writing = record;
      // A trial left from an earlier attempt must not boot a half-written slot.
      if (slots.trying !== null) await backend.set(abandonTransition(slots));

      const readBack = await writeSlot(req.bundle, device.path, m.slot.rawBytes, byPercent('write', progress));
      if (readBack !== m.slot.rawSha256) {
        const message = `slot ${target} does not hold the image its signed manifest describes: expected sha256 ${m.slot.rawSha256} over its first ${m.slot.rawBytes} bytes, read back ${readBack}`;
        storeRecord(stateDir, { ...record, state: 'failed', updatedAt: new Date().toISOString(), reason: message });
        return { result: 'failed', message };
      }
      if (req.onlyAsFollower) {
        const role = observeStatus(await this.#status().catch(() => ({})), []).role;
        if (role !== 'follower') {
          const message = `this box became ${role} while slot ${target} was written: not tried, not rebooted (apply again when it is the follower)`;
          storeRecord(stateDir, { ...record, state: 'failed', updatedAt: new Date().toISOString(), reason: message });
          return { result: 'refused', code: 'role-changed', message };
        }
      }
      try {
        await backend.prepare(target);
      } catch (e) {
        const message = `slot ${target} holds the new root but cannot be made bootable: ${(e as Error).message}`;
        storeRecord(stateDir, { ...record, state: 'failed', updatedAt: new Date().toISOString(), reason: message });
        return { result: 'failed', message };
      }
      await backend.set(tryTransition(slots, target));
      writing = undefined;
      storeRecord(stateDir, { ...record, state: 'trying', updatedAt: new Date().toISOString() });
      progress({ step: 'try', slot: target });
      log.event('info', 'upgrade-written', { version: m.version, slot: target, bytes: m.slot.rawBytes, seconds: (performance.now() - t0) / 1000 });
      this.#o.out.line(`${MARKER} upgrade written version=${m.version} slot=${target}`);
      const rebooting = req.reboot !== false;
      if (rebooting) {
        progress({ step: 'reboot', slot: target });
        // After the answer is on its way: the caller learns the result before the connection drops.
        setTimeout(() => void this.#o.reboot().catch((e: unknown) => log.event('error', 'reboot-failed', { error: (e as Error).message })), 500);
      }
      const rebootWith = ['systemctl', 'reboot', ...(await backend.rebootArguments())].map((w) => (/\s/.test(w) ? `'${w}'` : w)).join(' ');
      return { result: 'installed', version: m.version, slot: target, rebooting, rebootWith, seconds: (performance.now() - t0) / 1000 };
    } catch (e) {
      if (e instanceof BundleRefused) {
        log.event('warn', 'upgrade-refused', { bundle: req.bundle, code: e.code, reason: e.message });
        return { result: 'refused', code: e.code, message: e.message };
      }
      const message = (e as Error).message;
      if (writing) storeRecord(stateDir, { ...writing, state: 'failed', updatedAt: new Date().toISOString(), reason: message });
      log.event('error', 'upgrade-failed', { bundle: req.bundle, error: message });
      return { result: 'failed', message };
    } finally {
      this.#busy = false;
    }
  }

  /**
   * Settles the last upgrade at boot: records a rollback or an interrupted write, or runs the gate
   * on a trial slot and commits it (or goes back). Resolves when there is nothing more to do.
   */
  async settle(signal: AbortSignal): Promise<void> {
    const { backend, stateDir, log, out } = this.#o;
    let slots: SlotState;
    try {
      slots = await backend.state();
    } catch (e) {
      log.event('warn', 'slots-unknown', { error: (e as Error).message });
      return;
    }
    const action = bootAction(readUpgradeRecord(stateDir), slots, new Date().toISOString(), backend.unbootedTrial);
    if (action.kind === 'none') return;
    if (action.kind === 'settle') {
      if (action.abandonTrial) await backend.set(abandonTransition(slots));
      storeRecord(stateDir, action.record);
      log.event(action.record.state === 'committed' ? 'info' : 'warn', 'upgrade-settled', { state: action.record.state, reason: action.record.reason });
      out.line(`${MARKER} upgrade ${action.record.state} version=${action.record.to.version}${action.record.reason ? ` ${action.record.reason}` : ''}`);
      return;
    }
    const record = action.record;
    const deadlineMs = this.#o.image.policy.gateSeconds * 1000;
    out.line(`${MARKER} upgrade gate version=${record.to.version} slot=${record.to.slot} deadline=${this.#o.image.policy.gateSeconds}s`);
    const passedChecks = new Set<string>();
    let lastMissing = '';
    while (!signal.aborted) {
      const failing = await this.#runChecks(passedChecks);
      const verdict = gateVerdict(record.expect, observeStatus(await this.#status().catch(() => ({})), failing), this.#o.uptimeSeconds() * 1000, deadlineMs);
      if (verdict.result === 'pass') {
        await backend.set(commitTransition(slots));
        storeRecord(stateDir, { ...record, state: 'committed', updatedAt: new Date().toISOString() });
        log.event('info', 'upgrade-committed', { version: record.to.version, slot: record.to.slot });
        out.line(`${MARKER} upgrade committed version=${record.to.version} slot=${record.to.slot}`);
        return;
      }
      if (verdict.result === 'fail') {
        storeRecord(stateDir, { ...record, state: 'rolled-back', updatedAt: new Date().toISOString(), reason: verdict.reason });
        await backend.set(abandonTransition(slots));
        log.event('error', 'upgrade-gate-failed', { version: record.to.version, reason: verdict.reason });
        out.line(`${MARKER} upgrade rolled-back version=${record.to.version} ${verdict.reason}; rebooting into slot ${slots.committed}`);
        await this.#o.reboot();
        return;
      }
      const missing = verdict.missing.join('; ');
      if (missing !== lastMissing) log.event('info', 'upgrade-gate-waiting', { missing });
      lastMissing = missing;
      await new Promise((r) => setTimeout(r, GATE_POLL_MS));
    }
  }

  /** The profile's health commands not yet passed, each with why (a command that passed once stays passed). */
  async #runChecks(passed: Set<string>): Promise<string[]> {
    const failing: string[] = [];
    for (const check of this.#o.image.policy.healthChecks) {
      if (passed.has(check.name)) continue;
      const [program, ...args] = check.command;
      try {
        await runTool(program!, args, { timeoutMs: (check.timeoutSeconds ?? 30) * 1000 });
        passed.add(check.name);
      } catch (e) {
        failing.push(`${check.name} (${(e as Error).message.slice(0, 200)})`);
      }
    }
    return failing;
  }
}

/**
 * The deadline unit (geminik8s-upgrade-deadline.timer) for a trial the agent never gated: the
 * agent did not start, hung, or crash-looped. Past the gate deadline (plus a grace) it records why,
 * ends the trial and reboots into the committed slot. Returns what it did.
 */
export async function enforceDeadline(o: Pick<UpgradeServiceOptions, 'stateDir' | 'backend' | 'image' | 'reboot' | 'uptimeSeconds' | 'log'>): Promise<string> {
  const slots = await o.backend.state();
  if (!onTrial(slots)) return 'no trial';
  const limit = o.image.policy.gateSeconds + DEADLINE_GRACE_SECONDS;
  const up = o.uptimeSeconds();
  if (up < limit) return `trial of slot ${slots.booted}: ${Math.round(limit - up)} s left`;
  const record = readUpgradeRecord(o.stateDir);
  const reason = `slot ${slots.booted} did not pass its health gate within ${limit} s of boot (the agent did not run, hung or kept failing)`;
  if (record) storeRecord(o.stateDir, { ...record, state: 'rolled-back', updatedAt: new Date().toISOString(), reason });
  await o.backend.set(abandonTransition(slots));
  o.log.event('error', 'upgrade-deadline', { reason });
  await o.reboot();
  return `rolled back: ${reason}`;
}

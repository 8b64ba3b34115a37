/**
 * The liveness loop of a provisioned node (DESIGN.md "Liveness and failover"): about once a second
 * it samples PostgreSQL, Kine, the VIP, the witnesses and the peer's last heartbeat, asks the pure
 * core (core/decide.ts) what to do, and carries the actions out in order, in the background, one
 * batch at a time (the core is level-triggered: a batch still running is simply not repeated).
 * Between ticks it keeps PostgreSQL running in the role it should have and Kine pointed at the
 * primary. Every transition is persisted before it takes effect (hostmeta.json).
 */
import { open } from 'node:fs/promises';
import type { ConsoleOut, Logger } from '../adapters/output.ts';
import { recordLiveness, type HostMeta, type Promotion, type PromotionCause } from '../core/hostmeta.ts';
import { MARKER } from '../core/report.ts';
import { bindVip, interfacesWith, releaseVip } from '../net/vip.ts';
import type { HeartbeatFacts } from '../pairing/core/beacon.ts';
import type { HeartbeatView } from '../pairing/index.ts';
import { slotName, type ReplicationMode } from '../provision/core/pgconf.ts';
import type { ClusterSecrets } from '../provision/core/secrets.ts';
import { ensurePhysicalSlot, serverState, startServer, withAdmin, type LocalPg } from '../provision/postgres.ts';
import type { ProvisionConfig } from '../provision/provision.ts';
import { promoteLogicalFollower, setSynchronousStandby } from '../provision/replication.ts';
import { readProgress } from '../cluster/progress.ts';
import { lsnOrder } from '../core/history.ts';
import { logsOccurrence, streakAfter, type Streak } from '../core/streak.ts';
import { announcesAsync, bootRole, decide, healthyInRole, preempts, switchoverStands, validateTimeouts } from './core/decide.ts';
import { startDiskProbe } from './disk-probe.ts';
import { pgRemedy, standbyThere, waitsForHandover } from './core/remedy.ts';
import {
  ACTION_DEADLINE_MS,
  DEFAULT_LIVENESS_CONFIG,
  type Action,
  type ActionKind,
  type Heartbeat,
  type LivenessConfig,
  type LivenessRole,
  type TickInput,
} from './core/types.ts';
import { setFence } from './fence.ts';
import type { KineSupervisor } from './kine-supervisor.ts';
import { samplePg, type PgSample } from './pg-sample.ts';
import { startProbes } from './probes.ts';
import { rejoinAsStandby } from './rejoin.ts';
import type { Watchdog } from './watchdog.ts';
import type { ArbiterClient } from './arbiter-client.ts';
import { ARBITER_VIEW_START, arbiterTickInput, arbiterViewAfter, type ArbiterState, type ArbiterView } from './core/arbiter.ts';

export interface LivenessContext {
  nodeId: string;
  peer: { nodeId: string; name: string; address: string };
  ifname: string;
  vipCidr: string;
  /** Site gateway and witness addresses (empty: the default gateway). */
  witnesses: string[];
  /**
   * The site's arbiter (liveness/arbiter-client.ts) and this node's name as its certificate says:
   * with it, takeovers and the async switch take its lease first (core/arbiter.ts).
   */
  arbiter?: { client: ArbiterClient; selfName: string };
  pg: LocalPg;
  mode: ReplicationMode;
  secrets: ClusterSecrets;
  /** Where divergent rows are saved before a rewind. */
  divergentDir: string;
  /** The agent's state directory: its disk is probed each couple of seconds (disk-probe.ts). */
  stateDir: string;
  /** This node's follower provisioning (used to rejoin as a standby). */
  follower: ProvisionConfig;
  heartbeat: HeartbeatView;
  kine: KineSupervisor;
  /**
   * The node's Kubernetes, when the image runs one: observed each tick (it starts once the local
   * Kine answers) and reported, never a failover trigger (restarting it locally is its remedy).
   */
  kubernetes?: { observe(datastoreReady: boolean): void; apiHealthy(): boolean | undefined };
  meta(): HostMeta;
  save(next: HostMeta): void;
  /** What this node's beacons carry from now on (each announce is a heartbeat). */
  publish(state: { role: LivenessRole; term: number; timeline: number; lsn: string; hb: HeartbeatFacts }): void;
  /** Status fields for GET /status. */
  report(fields: { role: LivenessRole; term: number; liveness: Record<string, unknown>; lastError?: string }): void;
  initialRole: LivenessRole;
  /** Whether "cluster ready" was already printed in this run (after provisioning). */
  announcedReady: boolean;
  log: Logger;
  out: ConsoleOut;
  signal: AbortSignal;
  watchdog: Watchdog;
  config?: LivenessConfig;
}

export interface LivenessHandle {
  /** Asks the leader for a planned switchover; refused (with why) on any other role. */
  requestSwitchover(): { accepted: boolean; reason: string };
  /** The live role, and how long the peer has been silent at the last tick (undefined before the first). */
  state(): { role: LivenessRole; peerSilentMs: number | undefined };
  done: Promise<void>;
}

const PG_RESTART_BACKOFF_MS = 3000;
/** An arbiter call's bound: below the lease action's deadline, and short enough for a tick. */
const ARBITER_TIMEOUT_MS = 1500;
/** A batch failing the same way tick after tick is logged at its first failure and then every this many (about a minute). */
const REPEAT_LOG_EVERY = 60;

/** A batch's step after it was preempted by a step-down or abandoned past its deadline. */
class BatchCutOff extends Error {}

/** `work`, or a rejection once `ms` passed (with the message `late()` gives; `work` itself runs on). */
function withDeadline<T>(work: Promise<T>, ms: number, late: () => string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(late())), ms);
  });
  return Promise.race([work, deadline]).finally(() => clearTimeout(timer));
}

function heartbeatFrom(nodeId: string, s: { role: string; term: number; timeline: number; lsn: string; hb?: HeartbeatFacts }): Heartbeat | undefined {
  if (!s.hb || !['leader', 'follower', 'fenced'].includes(s.role)) return undefined;
  return { nodeId, role: s.role as LivenessRole, term: s.term, timeline: s.timeline, lsn: s.lsn, ...s.hb };
}

export function startLiveness(ctx: LivenessContext): LivenessHandle {
  const c = ctx.config ?? DEFAULT_LIVENESS_CONFIG;
  const problems = validateTimeouts(c);
  if (problems.length) throw new Error(`liveness timeouts are unsafe: ${problems.join('; ')}`);
  const { pg, log, out } = ctx;
  const vip = ctx.vipCidr.split('/')[0] ?? '';
  const startedAt = performance.now();
  let role: LivenessRole = ctx.initialRole;
  let handoverSince: number | undefined = ctx.meta().handover ? startedAt : undefined;
  // What the arbiter last said (TickInput.arbiter): the agent's memory, rebuilt from its first answer after a restart.
  let arbiterView: ArbiterView = ARBITER_VIEW_START;
  let arbiterOkAt: number | undefined;
  let switchoverAt: number | undefined;
  let holdsVip = false;
  let sample: PgSample | undefined;
  let known = { timeline: 0, lsn: '0/0' };
  let badSince: number | undefined = startedAt;
  let standbyStreamAt: number | undefined;
  let diskWasBad = false;
  /** When the standby's walsender entered `catchup` (undefined while streaming or gone). */
  let catchupSince: number | undefined;
  let receiverStreamAt: number | undefined;
  let busy: string | undefined;
  let pgStarting = false;
  let startFailures = 0;
  /** synchronous_standby_names as last seen while PostgreSQL answered. */
  let wasSync = false;
  /** synchronous_standby_names as the last sync switch left it, until the next sample reads it. */
  let syncRepNow: boolean | undefined;
  let lastReason = '';
  /** The peer's silence at the last tick: the operator's replace-node asks how long it has been. */
  let lastPeerSilentMs: number | undefined;
  let nextPgStart = 0;
  let announcedReady = ctx.announcedReady;
  let lastError: string | undefined;
  let divergent: { file: string; rows: number } | undefined;
  let lastActions: { at: string; actions: string[]; ms: number; ok: boolean }[] = [];
  /** Promotions of this node by cause since the agent started (a Prometheus counter; lastPromotion in hostmeta.json outlives restarts). */
  const promotions: Record<PromotionCause, number> = { 'leader-lost': 0, handover: 0, reclaim: 0 };

  const disk = startDiskProbe(ctx.stateDir, { stallMs: c.diskStallMs });
  const probes = startProbes({
    ifname: ctx.ifname,
    vip,
    witnesses: ctx.witnesses,
    intervalMs: c.vipProbeIntervalMs,
    witnessLostMs: c.witnessLostMs,
    holdsVip: () => holdsVip,
  });

  const persist = (next: { role: LivenessRole; term?: number; leader?: string; handover?: boolean; promotion?: Promotion }) => {
    const meta = ctx.meta();
    ctx.save(
      recordLiveness(meta, {
        role: next.role,
        term: next.term ?? meta.term,
        ...(next.leader ? { leader: next.leader } : {}),
        handover: next.handover ?? meta.handover === true,
        ...(next.promotion ? { promotion: next.promotion } : {}),
      }),
    );
  };
  const kineUpstream = (r: LivenessRole) => (r === 'leader' ? '127.0.0.1' : vip);
  const ensurePeerSlot = async () => {
    if (ctx.mode === 'physical') await withAdmin(pg, (db) => ensurePhysicalSlot(db, slotName(ctx.peer.name)));
  };

  /**
   * Carries out one action. `live()` is called after every wait: it throws once the batch was
   * abandoned (past its deadline) or preempted (a step-down), so a call that hung and then returns
   * changes nothing more (a late pg_promote cannot make a fenced node a leader again).
   */
  async function execute(a: Action, now: number, reason: string, live: () => void): Promise<void> {
    switch (a.kind) {
      case 'promote': {
        persist({
          role: 'leader',
          term: a.term,
          leader: ctx.nodeId,
          handover: false,
          promotion: { at: new Date().toISOString(), term: a.term, cause: a.cause, reason },
        });
        promotions[a.cause] += 1;
        handoverSince = undefined;
        // Down before pg_promote, so the new primary takes writes the moment it is one.
        await setFence(pg, false);
        live();
        const inRecovery = await withAdmin(pg, async (db) => (await db.query<{ r: boolean }>('SELECT pg_is_in_recovery() AS r')).rows[0]?.r === true);
        live();
        if (inRecovery) {
          if (ctx.mode === 'logical') await promoteLogicalFollower(pg);
          else {
            await withAdmin(pg, async (db) => {
              live();
              await db.query('SELECT pg_promote(true, 60)');
              // Not cut off here, even if preempted: a promoted primary without this checkpoint
              // would mislead a later pg_rewind against it. It writes no client data.
              // Writes the new timeline into pg_control at once: pg_rewind reads the source's
              // timeline from there and would otherwise answer "no rewind required" to the old leader.
              await db.query('CHECKPOINT');
              live();
            });
          }
        }
        await ensurePeerSlot();
        live();
        role = 'leader';
        ctx.kine.want(kineUpstream(role));
        log.event('warn', 'promoted', { term: a.term, cause: a.cause, fromStandby: inRecovery });
        out.line(`${MARKER} promoted term=${a.term}`);
        return;
      }
      case 'take-vip':
        await bindVip(ctx.ifname, ctx.vipCidr);
        live();
        holdsVip = true;
        log.event('info', 'vip-bound', { vip: ctx.vipCidr, interface: ctx.ifname });
        return;
      case 'release-vip':
        await releaseVip(ctx.vipCidr);
        live();
        holdsVip = false;
        log.event('info', 'vip-released', { vip: ctx.vipCidr });
        return;
      case 'fence': {
        // Writes stop first and the record follows, best-effort: a leader whose disk is failing
        // must still let go (issue 11 point 3). Safe because a leader that restarts starts fenced
        // whatever it recorded (bootRole).
        await releaseVip(ctx.vipCidr);
        live();
        holdsVip = false;
        // Kine off this server first: should the fence files not be writable, pg_hba still admits it.
        ctx.kine.want(kineUpstream('fenced'));
        const fence = await setFence(pg, true);
        live();
        if (fence.unrecorded) log.event('error', 'fence-file-unwritten', { error: fence.unrecorded, message: 'the fence is not on disk' });
        if (fence.unended)
          log.event('error', 'fence-sessions-unended', { error: fence.unended, message: 'the server did not answer: its sessions may still be open' });
        {
          // What this node announces from here on is its position after the fence: every commit it
          // acknowledged, async ones included, is at or below it, so a follower that takes over at
          // this LSN has them all (the tick's sample may predate the fence). Issue 11 point 5.
          const after = await samplePg(pg, ctx.peer.name);
          live();
          if (after.state !== 'down') known = { timeline: after.timeline, lsn: after.lsn };
        }
        role = 'fenced';
        ctx.kine.want(kineUpstream(role));
        try {
          persist({ role: 'fenced' });
        } catch (e) {
          log.event('error', 'fence-unrecorded', { error: (e as Error).message, message: 'fenced, but hostmeta.json could not be written' });
        }
        log.event('warn', 'fenced', { term: ctx.meta().term, lsn: known.lsn });
        out.line(`${MARKER} fenced term=${ctx.meta().term}`);
        return;
      }
      case 'unfence':
        persist({ role: 'leader', leader: ctx.nodeId });
        await setFence(pg, false);
        live();
        await ensurePeerSlot();
        live();
        role = 'leader';
        ctx.kine.want(kineUpstream(role));
        log.event('info', 'unfenced', { term: ctx.meta().term });
        out.line(`${MARKER} unfenced term=${ctx.meta().term}`);
        return;
      case 'degrade-to-async':
        // Announced before it takes effect (announcesAsync; a live peer has echoed it, D1); published
        // again here for the paths that switch without a live peer to tell (issue 11 point 5).
        syncRepNow = false;
        republish();
        await setSynchronousStandby(pg, null);
        live();
        log.event('warn', 'replication-async', { standby: ctx.peer.name, message: 'synchronous replication off: the peer is known down' });
        return;
      case 'restore-sync':
        await setSynchronousStandby(pg, ctx.peer.name);
        live();
        syncRepNow = true;
        log.event('info', 'replication-synchronous', { standby: ctx.peer.name });
        return;
      case 'demote-and-rejoin': {
        persist({ role: 'follower', term: a.term, leader: a.leader, handover: false });
        handoverSince = undefined;
        await releaseVip(ctx.vipCidr);
        live();
        holdsVip = false;
        await setFence(pg, true);
        live();
        role = 'follower';
        ctx.kine.want(kineUpstream(role));
        const r = await rejoinAsStandby({
          pg,
          leader: { host: ctx.peer.address, port: pg.port },
          secrets: ctx.secrets,
          divergentDir: ctx.divergentDir,
          term: a.term,
          follower: ctx.follower,
          log,
        });
        live();
        if (r.divergent) divergent = r.divergent;
        log.event('warn', 'rejoined', {
          leader: a.leader,
          term: a.term,
          method: r.method,
          divergentRows: r.divergent?.rows ?? 0,
          ...(r.divergent ? { divergentRowsFile: r.divergent.file } : {}),
          ...(r.keptAside ? { keptAside: r.keptAside } : {}),
        });
        out.line(
          `${MARKER} rejoined leader=${ctx.peer.name} term=${a.term} method=${r.method}${r.divergent ? ` divergent-rows=${r.divergent.rows} saved=${r.divergent.file}` : ''}`,
        );
        return;
      }
      case 'adopt-term':
        persist({ role, term: a.term });
        return;
      case 'begin-handover':
        // In memory first, the record best-effort: a leader yielding because its disk fails must
        // still tell the follower it may take over (the heartbeat carries handoverForMs).
        handoverSince = now;
        try {
          persist({ role, handover: true });
        } catch (e) {
          log.event('error', 'handover-unrecorded', { error: (e as Error).message });
        }
        switchoverAt = undefined;
        log.event('warn', 'handover-begun', { to: ctx.peer.nodeId });
        return;
      case 'end-handover':
        persist({ role, handover: false });
        handoverSince = undefined;
        log.event('info', 'handover-ended', {});
        return;
      case 'arbiter-lease': {
        if (!ctx.arbiter) throw new Error('no arbiter configured');
        const answer = await ctx.arbiter.client.lease({ term: a.term, alone: a.alone, peerSilent: a.peerSilent }, ARBITER_TIMEOUT_MS);
        arbiterOkAt = performance.now();
        arbiterSeen(answer.state);
        // A refusal is logged as the batch's failure (once, while it repeats), not here as well.
        if (!answer.granted) throw new Error(`the arbiter refused term ${a.term}: ${answer.reason}`);
        log.event('info', 'arbiter-lease', { term: a.term, alone: a.alone, peerSilent: a.peerSilent, granted: true, reason: answer.reason });
        return;
      }
    }
  }

  let arbiterProbing = false;
  /**
   * Asks the arbiter for its state beside the tick, one probe at a time: an arbiter that does not
   * answer must not slow the ticks (it only grows TickInput.arbiter.silentMs).
   */
  function probeArbiter(): void {
    if (!ctx.arbiter || arbiterProbing) return;
    arbiterProbing = true;
    ctx.arbiter.client
      .state(ARBITER_TIMEOUT_MS)
      .then(
        (state) => {
          arbiterOkAt = performance.now();
          arbiterSeen(state);
        },
        () => undefined,
      )
      .finally(() => (arbiterProbing = false));
  }

  function arbiterSeen(state: ArbiterState): void {
    if (ctx.arbiter) arbiterView = arbiterViewAfter(arbiterView, state, ctx.arbiter.selfName, ctx.meta().term);
  }

  /** Which batch may still act: a batch whose number is no longer this was preempted or abandoned. */
  let batchGen = 0;
  /** The batch that holds `busy` (a preempted batch that returns late must not free its successor's). */
  let busyGen = 0;
  let busyKinds: ActionKind[] = [];

  /**
   * The batch that failed last and how often in a row: a batch that fails the same way every tick
   * (an arbiter that does not answer or refuses a takeover) is one event, logged when it starts
   * and then once every REPEAT_LOG_EVERY, not three lines a second.
   */
  let failing: { actions: string; streak: Streak } | undefined;

  function runBatch(actions: Action[], reason: string, now: number): void {
    const gen = ++batchGen;
    const kinds = actions.map((a) => a.kind).join(',');
    const again = failing?.actions === kinds;
    const live = () => {
      if (gen !== batchGen) throw new BatchCutOff(`${actions.map((a) => a.kind).join(',')}: cut off (preempted or past its deadline)`);
    };
    busy = actions.map((a) => a.kind).join(',');
    busyKinds = actions.map((a) => a.kind);
    busyGen = gen;
    const t = performance.now();
    if (!again) log.event('info', 'liveness-actions', { actions: busy, reason });
    void (async () => {
      let ok = true;
      try {
        for (const a of actions) {
          live();
          await withDeadline(execute(a, now, reason, live), ACTION_DEADLINE_MS[a.kind], () => {
            // Abandoned: whatever the hung call does when it returns is cut off at its next step.
            if (gen === batchGen) batchGen += 1;
            return `${a.kind} did not finish within ${ACTION_DEADLINE_MS[a.kind] / 1000} s`;
          });
        }
        if (gen === batchGen) lastError = undefined;
        if (again) log.event('info', 'liveness-actions-succeeded', { actions: kinds, afterFailures: (failing?.streak.repeats ?? 0) + 1, reason });
        failing = undefined;
      } catch (e) {
        ok = false;
        const error = (e as Error).message;
        const streak = streakAfter(again ? failing?.streak : undefined, error);
        failing = { actions: kinds, streak };
        if (logsOccurrence(streak, REPEAT_LOG_EVERY)) {
          log.event(e instanceof BatchCutOff ? 'warn' : 'error', 'liveness-action-failed', {
            actions: kinds,
            error,
            ...(streak.repeats > 0 ? { repeats: streak.repeats, reason } : {}),
          });
        }
        // A preempted batch's failure is not the node's state: the batch that replaced it reports its own.
        if (!(e instanceof BatchCutOff) && busyGen === gen) {
          lastError = `${actions.map((a) => a.kind).join(',')}: ${(e as Error).message}`;
          // Failed or abandoned between recording a role and taking it (a promote whose pg_promote
          // outlived its deadline, an unfence that could not lower the fence): settle as a restart
          // would, fenced unless a follower, and let the next tick decide from there. Otherwise a
          // late pg_promote would leave a writable primary the loop still takes for a standby.
          const recorded = ctx.meta().role;
          if (recorded !== role && recorded !== 'unassigned') {
            role = bootRole(recorded);
            await setFence(pg, true).catch((f: unknown) => log.event('error', 'fence-setup-failed', { error: (f as Error).message }));
            ctx.kine.want(kineUpstream(role));
            log.event('warn', 'liveness-settled', { recorded, role, message: 'an action failed between recording a role and taking it' });
          }
        }
      } finally {
        lastActions = [
          ...lastActions.slice(-9),
          { at: new Date().toISOString(), actions: actions.map((a) => a.kind), ms: Math.round(performance.now() - t), ok },
        ];
        // Only the batch that still owns the loop frees it (a preempting batch may be running).
        if (busyGen === gen) {
          busy = undefined;
          busyKinds = [];
        }
        republish();
      }
    })();
  }

  /** PostgreSQL down while nothing else is touching it: what the core says (core/remedy.ts), carried out. */
  async function keepPgRunning(now: number, peer: Heartbeat | undefined, peerAlive: boolean): Promise<void> {
    if (busy || pgStarting || sample?.state !== 'down' || now < nextPgStart) return;
    const facts = { role, downForMs: badSince === undefined ? 0 : Math.round(now - badSince), ...(peer ? { peer } : {}), peerAlive, wasSync };
    if (waitsForHandover(facts, c)) return;
    const remedy = pgRemedy({ ...facts, serverStopped: (await serverState(pg)) === 'stopped', startFailures, diskFull: await diskFullInLog() }, c);
    if (remedy.kind === 'wait') return;
    if (remedy.kind === 'rebuild-standby') {
      startFailures = 0;
      runRemedy('rebuild-standby', async () => {
        const r = await rejoinAsStandby({
          pg,
          leader: { host: ctx.peer.address, port: pg.port },
          secrets: ctx.secrets,
          divergentDir: ctx.divergentDir,
          term: ctx.meta().term,
          follower: ctx.follower,
          log,
          rebuild: true,
        });
        out.line(`${MARKER} standby rebuilt from leader=${ctx.peer.name} method=${r.method}`);
      });
      return;
    }
    nextPgStart = now + PG_RESTART_BACKOFF_MS;
    pgStarting = true;
    log.event('warn', 'pg-restarting', { role, failuresInARow: startFailures, reason: remedy.reason });
    void startServer(pg)
      .then(
        () => {
          startFailures = 0;
          log.event('info', 'pg-restarted', { role });
          // Its pooled connections and revision bookkeeping belong to the server that died.
          ctx.kine.restart();
        },
        (e: unknown) => {
          startFailures += 1;
          log.event('error', 'pg-restart-failed', { error: (e as Error).message, failuresInARow: startFailures });
        },
      )
      .finally(() => (pgStarting = false));
  }

  /** The last 4 KB of PostgreSQL's log say its disk was full (read from the end: the log may be large). */
  async function diskFullInLog(): Promise<boolean> {
    const tail = await open(pg.paths.logFile, 'r')
      .then(async (f) => {
        try {
          const { size } = await f.stat();
          const buf = Buffer.alloc(Math.min(4000, size));
          await f.read(buf, 0, buf.length, size - buf.length);
          return buf.toString('utf8');
        } finally {
          await f.close();
        }
      })
      .catch(() => '');
    return /No space left on device/.test(tail);
  }

  /** A remedy holds the loop as a batch does, and no step-down preempts it (it rebuilds the standby's data directory). */
  function runRemedy(name: string, fn: () => Promise<void>): void {
    const gen = ++batchGen;
    busy = name;
    busyKinds = ['demote-and-rejoin'];
    busyGen = gen;
    log.event('warn', 'liveness-remedy', { remedy: name });
    void fn()
      .catch((e: unknown) => {
        lastError = `${name}: ${(e as Error).message}`;
        log.event('error', 'liveness-remedy-failed', { remedy: name, error: (e as Error).message });
      })
      .finally(() => {
        if (busyGen !== gen) return;
        busy = undefined;
        busyKinds = [];
      });
  }

  let lastPublished: Parameters<LivenessContext['publish']>[0] | undefined;
  /** The last heartbeat again with the role, term, VIP and handover as they are after an action. */
  function republish(): void {
    if (!lastPublished) return;
    const now = performance.now();
    lastPublished = {
      ...lastPublished,
      role,
      term: ctx.meta().term,
      // An action may have moved it (the fence reads its position after it).
      timeline: known.timeline,
      lsn: known.lsn,
      hb: {
        ...lastPublished.hb,
        syncRep: syncRepNow ?? lastPublished.hb.syncRep,
        holdsVip,
        handoverForMs: handoverSince === undefined ? null : Math.round(now - handoverSince),
      },
    };
    ctx.publish(lastPublished);
  }

  async function tick(): Promise<void> {
    ctx.watchdog.beat('loop');
    ctx.kine.checkHealth();
    ctx.kubernetes?.observe(ctx.kine.healthy);
    probeArbiter();
    const [s, vipHolders] = await Promise.all([samplePg(pg, ctx.peer.name), interfacesWith(ctx.vipCidr).catch(() => undefined)]);
    // After the awaits: a beacon or probe answer that arrived while PostgreSQL was sampled is newer
    // than a time taken before them, and its age would come out negative (the peer then rejects
    // the heartbeat that carries it).
    const now = performance.now();
    sample = s;
    // A sync switch still running knows better than a look taken before it took effect.
    if (!busy) syncRepNow = undefined;
    // An action binding or releasing the VIP right now knows better than a look taken before it.
    if (vipHolders && !busy) holdsVip = vipHolders.length > 0;
    if (s.state !== 'down') {
      // Never backwards on one timeline: a look begun before the fence may end after it, and the
      // position the fence read (everything this node acknowledged) must stay what it announces.
      if (s.timeline !== known.timeline || lsnOrder(s.lsn) >= lsnOrder(known.lsn)) known = { timeline: s.timeline, lsn: s.lsn };
      wasSync = s.syncRep;
    }
    const wanted = role === 'follower' ? 'standby' : 'primary';
    if (s.state === wanted) badSince = undefined;
    else badSince ??= now;
    // A standby catching up counts as there for a while (issue 11 point 5): a reconnect must not
    // read as a standby gone, which degrades to async after degradeAfterMs.
    catchupSince = s.standbyConnected && !s.standbyStreaming ? (catchupSince ?? now) : undefined;
    const standbyCounts = standbyThere(
      { streaming: s.standbyStreaming, connected: s.standbyConnected, catchupForMs: catchupSince === undefined ? 0 : now - catchupSince },
      c,
    );
    if (standbyCounts) standbyStreamAt = now;
    if (s.receiverStreaming) receiverStreamAt = now;
    const t = probes.times;
    const heard = ctx.heartbeat.heard(ctx.peer.nodeId);
    const last = heard ? heartbeatFrom(ctx.peer.nodeId, heard.state) : undefined;
    const peerSilentMs = Math.round(heard && last ? now - heard.at : now - startedAt);
    lastPeerSilentMs = peerSilentMs;
    const witnessSilentMs = Math.round(t.witnessOkAt !== undefined ? now - t.witnessOkAt : now - startedAt);
    const meta = ctx.meta();
    const diskNow = disk.state(now);
    if (diskNow.badForMs > 0 && !diskWasBad) log.event('error', 'state-disk-failing', { dir: ctx.stateDir, error: diskNow.error ?? null });
    else if (diskNow.badForMs === 0 && diskWasBad) log.event('info', 'state-disk-ok', { dir: ctx.stateDir });
    diskWasBad = diskNow.badForMs > 0;
    if (switchoverAt !== undefined && !switchoverStands(now - switchoverAt, c)) {
      switchoverAt = undefined;
      log.event('warn', 'switchover-expired', { message: `the follower was not ready to take over within ${c.switchoverRequestMs / 1000} s` });
    }
    const input: TickInput = {
      self: { nodeId: ctx.nodeId, role, term: meta.term, timeline: known.timeline, lsn: known.lsn },
      // At least 1 while bad: 0 means healthy now.
      pg: { state: s.state, badForMs: badSince === undefined ? 0 : Math.max(1, Math.round(now - badSince)) },
      disk: { badForMs: diskNow.badForMs },
      kineHealthy: ctx.kine.healthy,
      ...(ctx.kubernetes?.apiHealthy() !== undefined ? { kubeApiHealthy: ctx.kubernetes.apiHealthy() } : {}),
      holdsVip,
      peer: { silentMs: peerSilentMs, ...(last ? { last } : {}) },
      witness: {
        configured: t.witnessesProbed.length,
        silentMs: witnessSilentMs,
        okForMs: t.witnessOkAt !== undefined && t.witnessOkSince !== undefined && witnessSilentMs < c.witnessLostMs ? Math.round(now - t.witnessOkSince) : 0,
      },
      vip: { silentMs: Math.round(t.vipAnswerAt !== undefined ? now - t.vipAnswerAt : now - startedAt) },
      replication: {
        // Down, the server commits nothing: its last setting still says whether the standby has every commit.
        syncRep: syncRepNow ?? (s.state === 'down' ? wasSync : s.syncRep),
        standbyStreaming: s.standbyStreaming,
        standbySilentMs: standbyCounts ? 0 : Math.round(now - (standbyStreamAt ?? startedAt)),
        standbyLagBytes: s.standbyLagBytes,
        receiverSilentMs: s.receiverStreaming ? 0 : Math.round(now - (receiverStreamAt ?? startedAt)),
      },
      handover: handoverSince === undefined ? null : { sinceMs: Math.round(now - handoverSince) },
      switchoverRequested: switchoverAt !== undefined,
      ...(ctx.arbiter
        ? {
            arbiter: arbiterTickInput(arbiterView, meta.term, Math.round(arbiterOkAt !== undefined ? Math.max(0, now - arbiterOkAt) : now - startedAt)),
          }
        : {}),
    };
    lastPublished = {
      role,
      term: meta.term,
      timeline: known.timeline,
      lsn: known.lsn,
      // Down, it acknowledges nothing: what it last committed under still describes its history.
      hb: {
        pg: s.state,
        pgHealthy: healthyInRole(input),
        // Announced before it takes effect (D1): a follower that hears it stops counting on every commit.
        syncRep: input.replication.syncRep && !announcesAsync(input, c),
        handoverForMs: input.handover?.sinceMs ?? null,
        peerSilentMs,
        holdsVip,
        heardSyncRep: last?.syncRep ?? null,
      },
    };
    ctx.publish(lastPublished);

    const d = decide(input, c);
    if (d.reason !== lastReason) {
      log.event('info', 'liveness', { role, term: meta.term, reason: d.reason });
      lastReason = d.reason;
    }
    if (d.actions.length > 0 && (!busy || preempts(busyKinds, d.actions))) {
      if (busy) log.event('warn', 'liveness-preempted', { running: busy, by: d.actions.map((a) => a.kind).join(','), reason: d.reason });
      runBatch(d.actions, d.reason, now);
    } else await keepPgRunning(now, last, last !== undefined && peerSilentMs < c.peerDeadMs);
    ctx.kine.want(kineUpstream(role));

    const ready = (role === 'leader' && holdsVip && s.state === 'primary') || (role === 'follower' && s.state === 'standby');
    if (ready && !announcedReady) {
      announcedReady = true;
      log.event('info', 'cluster-ready', { role, term: meta.term });
      out.line(`${MARKER} cluster ready role=${role} term=${meta.term}`);
    }
    ctx.report({
      role,
      term: meta.term,
      ...(lastError ? { lastError } : {}),
      liveness: {
        reason: d.reason,
        busy: busy ?? null,
        peerSilentMs,
        witnessOk: witnessSilentMs < c.witnessLostMs,
        witnesses: t.witnessesProbed,
        vipSilentMs: input.vip.silentMs,
        holdsVip,
        pg: s.state,
        pgBadForMs: input.pg.badForMs,
        disk: diskNow,
        syncRep: s.syncRep,
        standbyStreaming: s.standbyStreaming,
        receiverStreaming: s.receiverStreaming,
        kineHealthy: ctx.kine.healthy,
        handoverForMs: input.handover?.sinceMs ?? null,
        ...(input.arbiter ? { arbiter: input.arbiter } : {}),
        lastActions,
        promotions,
        ...(divergent ? { divergentRowsFile: divergent.file, divergentRows: divergent.rows } : {}),
      },
    });
  }

  const done = (async () => {
    const progress = await readProgress(pg).catch(() => undefined);
    if (progress) known = { timeline: progress.timeline, lsn: progress.lsn };
    // A node that may not take writes keeps the fence up, so whoever starts its PostgreSQL gets it read-only.
    await setFence(pg, role !== 'leader').catch((e: unknown) => log.event('error', 'fence-setup-failed', { error: (e as Error).message }));
    ctx.kine.want(kineUpstream(role));
    log.event('info', 'liveness-started', {
      role,
      term: ctx.meta().term,
      peer: ctx.peer.nodeId,
      witnesses: ctx.witnesses,
      // The site's failover pace, as the thresholds it gave.
      fenceAfterMs: c.fenceAfterMs,
      promoteAfterMs: c.promoteAfterMs,
    });
    while (!ctx.signal.aborted) {
      const t = performance.now();
      try {
        await tick();
      } catch (e) {
        log.event('error', 'liveness-tick-failed', { error: (e as Error).message });
      }
      await new Promise((r) => setTimeout(r, Math.max(50, c.tickMs - (performance.now() - t))));
    }
    probes.stop();
    await disk.stop();
    await ctx.kine.stop();
  })();

  return {
    requestSwitchover() {
      if (role !== 'leader') return { accepted: false, reason: `this node is ${role}; ask the leader` };
      switchoverAt = performance.now();
      log.event('warn', 'switchover-requested', {});
      return { accepted: true, reason: 'the leader fences and hands over once the follower streams; it promotes when caught up' };
    },
    state: () => ({ role, peerSilentMs: lastPeerSilentMs }),
    done,
  };
}

/**
 * A deterministic model of the pair for tests and what-if runs: two nodes and a gateway, stepping
 * in lockstep (one tick = one heartbeat = one VIP probe = 1 s), a writer on the gateway side that
 * puts numbered keys through the VIP, synchronous/async physical replication as a copied history,
 * crashes, PostgreSQL faults and partitions. Both nodes decide on the facts of the same instant
 * (each sees the other's state as of the previous tick), the worst case for races.
 *
 * Not a network simulator: a tick's links are booleans. `l2` is whether ARP passes between the
 * nodes (the VIP probe); it differs from `ab`/`ba` only for an IP-level filter (L2 still up) or a
 * non-transitive LAN fault (L2 down between the nodes while both reach the gateway). With
 * `arbiter`, a third party keeps the lease state (core/arbiter.ts), reached over `ar`/`br`.
 */
import type { PairRole } from '../../core/hostmeta.ts';
import { ARBITER_START, ARBITER_VIEW_START, arbiterTickInput, arbiterViewAfter, leaseAnswer, type ArbiterState, type ArbiterView } from './arbiter.ts';
import { announcesAsync, bootRole, decide } from './decide.ts';
import { pgRemedy } from './remedy.ts';
import { DEFAULT_LIVENESS_CONFIG, type Action, type Heartbeat, type LivenessConfig, type LivenessRole, type PgState, type TickInput } from './types.ts';

export interface Net {
  /** A's packets reach B (heartbeats, replication), and the reverse. */
  ab: boolean;
  ba: boolean;
  /** ARP between A and B (VIP probe). */
  l2: boolean;
  /** Node to gateway (and the writer behind it), both ways. */
  ag: boolean;
  bg: boolean;
  /** Node to the arbiter and back (only with `arbiter`). */
  ar: boolean;
  br: boolean;
}

export const HEALTHY_NET: Readonly<Net> = Object.freeze({ ab: true, ba: true, l2: true, ag: true, bg: true, ar: true, br: true });

export type SimEvent =
  | { kind: 'net'; net: Partial<Net> }
  | { kind: 'crash'; node: 'A' | 'B' }
  | { kind: 'boot'; node: 'A' | 'B' }
  | { kind: 'pg-down'; node: 'A' | 'B' }
  | { kind: 'pg-up'; node: 'A' | 'B' }
  /** The server dies and may start again at once: whether and when the agent starts it is pgRemedy's call. */
  | { kind: 'pg-crash'; node: 'A' | 'B' }
  | { kind: 'switchover'; node: 'A' | 'B' }
  /** The data disk fails (read-only, EIO, stalled) or comes back: PostgreSQL commits nothing on it and the agent records nothing. */
  | { kind: 'disk-bad'; node: 'A' | 'B' }
  | { kind: 'disk-ok'; node: 'A' | 'B' }
  /**
   * The standby's WAL receiver stops (SIGSTOP, a hung write): no WAL flows to it, but its
   * pg_stat_wal_receiver still reads "streaming", so the standby's agent sees nothing wrong, and the
   * primary's walsender reads "streaming" until wal_sender_timeout (fault n).
   */
  | { kind: 'receiver-stall'; node: 'A' | 'B' }
  | { kind: 'receiver-ok'; node: 'A' | 'B' };

export interface SimNode {
  id: 'A' | 'B';
  nodeId: string;
  up: boolean;
  bootAt: number;
  persisted: { role: LivenessRole; term: number };
  role: LivenessRole;
  pg: PgState;
  /** Fault injection: PostgreSQL cannot run (crash, disk full). */
  pgBroken: boolean;
  pgBadSince: number | null;
  /** When the data disk went bad (null: fine). */
  diskBadSince: number | null;
  /** Committed keys in WAL order; the LSN is its length. */
  history: number[];
  timeline: number;
  holdsVip: boolean;
  syncRep: boolean;
  /** Its last tick announced the switch to async (decide.ts announcesAsync): its heartbeat says async. */
  announcingAsync: boolean;
  handoverSince: number | null;
  switchoverRequested: boolean;
  lastHeardAt: number | null;
  lastHb?: Heartbeat;
  witnessOkAt: number | null;
  witnessOkSince: number | null;
  vipOkAt: number | null;
  standbySeenAt: number | null;
  /** Follower: last time its WAL receiver streamed (or read so: receiverStalled). */
  receiverOkAt: number | null;
  /** Fault injection: the WAL receiver is stopped (receiver-stall). */
  receiverStalled: boolean;
  standbyStreaming: boolean;
  /** When WAL last flowed to the standby (the leader's view lags it: WAL_SENDER_TIMEOUT_MS). */
  streamFlowedAt: number | null;
  rejoin: { leader: 'A' | 'B' } | null;
  /** Rows a rewind discarded, saved to disk (reported, not lost silently). */
  saved: number[];
  /** What the agent learned from the arbiter since it started (TickInput.arbiter). */
  arbiterView: ArbiterView;
  arbiterOkAt: number | null;
}

export interface TickLog {
  t: number;
  a: { role: LivenessRole; term: number; actions: string[]; reason: string } | null;
  b: { role: LivenessRole; term: number; actions: string[]; reason: string } | null;
  writable: ('A' | 'B')[];
  ack?: { key: number; node: 'A' | 'B' };
}

export interface SimResult {
  log: TickLog[];
  /** Ticks where both nodes were writable primaries. */
  dualPrimaryTicks: number[];
  acked: number[];
  nodes: { A: SimNode; B: SimNode };
  /** The arbiter's state at the end (ARBITER_START when there is none). */
  arbiter: ArbiterState;
}

const IDS = { A: '1'.repeat(32), B: '2'.repeat(32) } as const;
/** The appliance's wal_sender_timeout (provision/core/pgconf.ts). */
const WAL_SENDER_TIMEOUT_MS = 10_000;

function lsn(n: SimNode): string {
  return `0/${n.history.length.toString(16).toUpperCase()}`;
}

function isPrefix(a: readonly number[], b: readonly number[]): boolean {
  return a.length <= b.length && a.every((v, k) => b[k] === v);
}

function newNode(id: 'A' | 'B', role: PairRole): SimNode {
  return {
    id,
    nodeId: IDS[id],
    up: true,
    bootAt: -100_000,
    persisted: { role, term: 1 },
    role,
    pg: role === 'leader' ? 'primary' : 'standby',
    pgBroken: false,
    pgBadSince: null,
    diskBadSince: null,
    history: [],
    timeline: 1,
    holdsVip: role === 'leader',
    syncRep: true,
    announcingAsync: false,
    handoverSince: null,
    switchoverRequested: false,
    lastHeardAt: -1000,
    witnessOkAt: -1000,
    witnessOkSince: -100_000,
    vipOkAt: -1000,
    standbySeenAt: -1000,
    receiverOkAt: -1000,
    receiverStalled: false,
    standbyStreaming: true,
    streamFlowedAt: -1000,
    rejoin: null,
    saved: [],
    arbiterView: ARBITER_VIEW_START,
    arbiterOkAt: -1000,
  };
}

export interface SimOptions {
  ticks: number;
  /** Events by tick. */
  events?: Record<number, SimEvent[]>;
  config?: LivenessConfig;
  /** Write one key per tick through the VIP (default true). */
  writer?: boolean;
  /** The site has an arbiter (default false). */
  arbiter?: boolean;
}

/** Runs a healthy pair (A leader, B follower, synchronous) through `events`. */
export function simulate(o: SimOptions): SimResult {
  const c = o.config ?? DEFAULT_LIVENESS_CONFIG;
  const nodes = { A: newNode('A', 'leader'), B: newNode('B', 'follower') };
  let net: Net = { ...HEALTHY_NET };
  let arbiter: ArbiterState = { ...ARBITER_START };
  const log: TickLog[] = [];
  const dualPrimaryTicks: number[] = [];
  const acked: number[] = [];
  const other = (n: SimNode) => (n.id === 'A' ? nodes.B : nodes.A);
  const reaches = (from: SimNode, to: SimNode) => (from.id === 'A' ? net.ab : net.ba) && from.up && to.up;
  const reachesG = (n: SimNode) => n.up && (n.id === 'A' ? net.ag : net.bg);

  for (let t = 0; t < o.ticks; t++) {
    const now = t * 1000;
    for (const e of o.events?.[t] ?? []) {
      if (e.kind === 'net') net = { ...net, ...e.net };
      else {
        const n = nodes[e.node];
        if (e.kind === 'crash') {
          n.up = false;
          n.holdsVip = false;
          n.pg = 'down';
          // Every process goes with the box, the stopped receiver too.
          n.receiverStalled = false;
          n.switchoverRequested = false;
        } else if (e.kind === 'boot') {
          n.up = true;
          n.bootAt = now;
          // A handover is persisted: a node that yielded may have been taken over while it was down.
          if (n.handoverSince !== null) n.handoverSince = now;
          n.role = bootRole(n.persisted.role);
          n.pg = n.pgBroken ? 'down' : n.rejoin ? 'down' : n.role === 'follower' ? 'standby' : 'primary';
          n.lastHeardAt = null;
          delete n.lastHb;
          n.witnessOkAt = null;
          n.witnessOkSince = null;
          n.vipOkAt = null;
          n.standbySeenAt = null;
          n.receiverOkAt = null;
          n.standbyStreaming = false;
          n.streamFlowedAt = null;
          n.arbiterView = ARBITER_VIEW_START;
          n.arbiterOkAt = null;
        } else if (e.kind === 'pg-down') {
          n.pgBroken = true;
          n.pg = 'down';
        } else if (e.kind === 'pg-crash') {
          n.pg = 'down';
          n.receiverStalled = false;
        } else if (e.kind === 'pg-up') {
          n.pgBroken = false;
          if (n.up && !n.rejoin) n.pg = n.role === 'follower' ? 'standby' : 'primary';
        } else if (e.kind === 'switchover') n.switchoverRequested = true;
        else if (e.kind === 'disk-bad') n.diskBadSince ??= now;
        else if (e.kind === 'disk-ok') n.diskBadSince = null;
        else if (e.kind === 'receiver-stall') n.receiverStalled = true;
        else if (e.kind === 'receiver-ok') n.receiverStalled = false;
      }
    }
    for (const n of [nodes.A, nodes.B]) {
      if (n.pg === 'down' && n.up) n.pgBadSince ??= now;
      else n.pgBadSince = null;
    }

    // A server that died and can start again is started when the agent's remedy says so (a leader
    // next to a healthy synchronous standby waits for the handover instead).
    for (const n of [nodes.A, nodes.B]) {
      if (!n.up || n.pg !== 'down' || n.pgBroken || n.rejoin) continue;
      const remedy = pgRemedy(
        {
          role: n.role,
          downForMs: now - (n.pgBadSince ?? now),
          serverStopped: true,
          ...(n.lastHb ? { peer: n.lastHb } : {}),
          peerAlive: n.lastHeardAt !== null && now - n.lastHeardAt < c.peerDeadMs,
          wasSync: n.syncRep,
          startFailures: 0,
          diskFull: false,
        },
        c,
      );
      if (remedy.kind === 'restart') n.pg = n.role === 'follower' ? 'standby' : 'primary';
    }

    // Rejoins in progress complete once the leader is reachable both ways.
    for (const n of [nodes.A, nodes.B]) {
      if (!n.up || !n.rejoin || n.pgBroken) continue;
      const l = nodes[n.rejoin.leader];
      if (reaches(n, l) && reaches(l, n) && l.pg === 'primary') {
        n.saved.push(...n.history.filter((k, idx) => l.history[idx] !== k));
        n.history = [...l.history];
        n.timeline = l.timeline;
        n.pg = 'standby';
        n.rejoin = null;
      }
    }

    // Heartbeats of the state as of the end of the previous tick, then probes and replication.
    const hbOf = (n: SimNode): Heartbeat => ({
      nodeId: n.nodeId,
      role: n.role,
      term: n.persisted.term,
      timeline: n.timeline,
      lsn: lsn(n),
      pg: n.pg,
      pgHealthy: n.pg !== 'down' && n.diskBadSince === null,
      syncRep: n.syncRep && !n.announcingAsync,
      handoverForMs: n.handoverSince === null ? null : now - n.handoverSince,
      peerSilentMs: now - (n.lastHeardAt ?? n.bootAt),
      holdsVip: n.holdsVip,
      heardSyncRep: n.lastHb?.syncRep ?? null,
    });
    const hbs = { A: nodes.A.up ? hbOf(nodes.A) : undefined, B: nodes.B.up ? hbOf(nodes.B) : undefined };
    for (const n of [nodes.A, nodes.B]) {
      const p = other(n);
      const hb = hbs[p.id];
      if (hb && reaches(p, n)) {
        n.lastHeardAt = now;
        n.lastHb = hb;
      }
      if (reachesG(n)) {
        if (n.witnessOkAt === null || now - n.witnessOkAt >= c.witnessLostMs) n.witnessOkSince = now;
        n.witnessOkAt = now;
      }
      if (n.up && p.up && p.holdsVip && net.l2) n.vipOkAt = now;
      // The agent's probe of the arbiter each tick: it answers with its state, as in the loop.
      if (o.arbiter && n.up && (n.id === 'A' ? net.ar : net.br)) {
        n.arbiterOkAt = now;
        arbiterSeen(n, arbiter);
      }
    }
    const streams = (primary: SimNode, standby: SimNode) =>
      primary.pg === 'primary' &&
      standby.pg === 'standby' &&
      standby.role === 'follower' &&
      // A standby whose disk failed writes no WAL: it stops acknowledging; nor does a stopped receiver.
      standby.diskBadSince === null &&
      !standby.receiverStalled &&
      reaches(primary, standby) &&
      reaches(standby, primary) &&
      isPrefix(standby.history, primary.history);
    for (const n of [nodes.A, nodes.B]) {
      const p = other(n);
      const flowing = n.up && streams(n, p);
      // What pg_stat_replication shows: a stream cut on the wire or by a dead box (no RST) still
      // reads "streaming" until wal_sender_timeout; one whose standby server stopped ends at once.
      const silentCut = !flowing && n.up && n.pg === 'primary' && (!p.up || !reaches(n, p) || !reaches(p, n) || p.receiverStalled);
      n.standbyStreaming = flowing || (silentCut && n.streamFlowedAt !== null && now - n.streamFlowedAt < WAL_SENDER_TIMEOUT_MS);
      if (flowing) {
        p.history = [...n.history];
        p.timeline = n.timeline;
        n.streamFlowedAt = now;
        p.receiverOkAt = now;
      }
      if (n.standbyStreaming) n.standbySeenAt = now;
      // A stopped receiver's status is never updated: it keeps reading "streaming".
      if (p.up && p.pg === 'standby' && p.receiverStalled) p.receiverOkAt = now;
    }

    // Lockstep decisions.
    const input = (n: SimNode): TickInput => ({
      self: { nodeId: n.nodeId, role: n.role, term: n.persisted.term, timeline: n.timeline, lsn: lsn(n) },
      pg: { state: n.pg, badForMs: n.pgBadSince === null ? 0 : now - n.pgBadSince },
      disk: { badForMs: n.diskBadSince === null ? 0 : Math.max(1, now - n.diskBadSince) },
      kineHealthy: true,
      holdsVip: n.holdsVip,
      peer: { silentMs: now - (n.lastHeardAt ?? n.bootAt), ...(n.lastHb ? { last: n.lastHb } : {}) },
      witness: {
        configured: 1,
        silentMs: now - (n.witnessOkAt ?? n.bootAt),
        okForMs: n.witnessOkAt !== null && n.witnessOkSince !== null && now - n.witnessOkAt < c.witnessLostMs ? now - n.witnessOkSince : 0,
      },
      vip: { silentMs: now - (n.vipOkAt ?? n.bootAt) },
      replication: {
        syncRep: n.syncRep,
        standbyStreaming: n.standbyStreaming,
        standbySilentMs: now - (n.standbySeenAt ?? n.bootAt),
        standbyLagBytes: 0,
        receiverSilentMs: now - (n.receiverOkAt ?? n.bootAt),
      },
      handover: n.handoverSince === null ? null : { sinceMs: now - n.handoverSince },
      switchoverRequested: n.switchoverRequested,
      ...(o.arbiter
        ? {
            arbiter: arbiterTickInput(n.arbiterView, n.persisted.term, now - (n.arbiterOkAt ?? n.bootAt)),
          }
        : {}),
    });
    const decisions = {
      A: nodes.A.up ? decide(input(nodes.A), c) : undefined,
      B: nodes.B.up ? decide(input(nodes.B), c) : undefined,
    };
    for (const n of [nodes.A, nodes.B]) n.announcingAsync = n.up && announcesAsync(input(n), c);
    for (const n of [nodes.A, nodes.B]) {
      const d = decisions[n.id];
      // A batch stops at the first action that fails (an arbiter that refuses or does not answer).
      if (d) for (const a of d.actions) if (!apply(n, a, now)) break;
    }

    // The writer, behind the gateway, writes through whichever node answers for the VIP.
    const entry: TickLog = {
      t,
      a: decisions.A ? { role: nodes.A.role, term: nodes.A.persisted.term, actions: decisions.A.actions.map((x) => x.kind), reason: decisions.A.reason } : null,
      b: decisions.B ? { role: nodes.B.role, term: nodes.B.persisted.term, actions: decisions.B.actions.map((x) => x.kind), reason: decisions.B.reason } : null,
      writable: [nodes.A, nodes.B].filter((n) => n.up && n.role === 'leader' && n.pg === 'primary').map((n) => n.id),
    };
    if (entry.writable.length > 1) dualPrimaryTicks.push(t);
    if (o.writer ?? true) {
      const targets = [nodes.A, nodes.B]
        .filter((n) => n.up && n.role === 'leader' && n.pg === 'primary' && n.holdsVip && reachesG(n))
        .sort((x, y) => y.persisted.term - x.persisted.term);
      const w = targets[0];
      // On a failed disk the commit fails: nothing is written, nothing acknowledged.
      if (w && w.diskBadSince === null) {
        const key = t;
        const p = other(w);
        w.history.push(key);
        if (!w.syncRep) {
          acked.push(key);
          entry.ack = { key, node: w.id };
        } else if (streams(w, p)) {
          p.history = [...w.history];
          acked.push(key);
          entry.ack = { key, node: w.id };
        }
      }
    }
    log.push(entry);
  }
  return { log, dualPrimaryTicks, acked, nodes, arbiter };

  /** Carries out one action; false when it failed (the rest of the batch is not run). */
  function apply(n: SimNode, a: Action, now: number): boolean {
    if (a.kind === 'arbiter-lease') return askArbiter(n, a);
    // A failed disk records nothing. Promoting and demoting record the new role first and stop when
    // they cannot (the loop then settles as after a restart); the rest act, their record lost.
    if (n.diskBadSince !== null) {
      if (a.kind === 'promote' || a.kind === 'demote-and-rejoin') {
        n.role = bootRole(n.persisted.role);
        n.holdsVip = false;
        return false;
      }
      const kept = n.persisted;
      act(n, a, now);
      n.persisted = kept;
      return true;
    }
    act(n, a, now);
    return true;
  }

  function askArbiter(n: SimNode, a: Extract<Action, { kind: 'arbiter-lease' }>): boolean {
    if (!o.arbiter || !(n.id === 'A' ? net.ar : net.br)) return false;
    const answer = leaseAnswer(arbiter, { node: n.id, term: a.term, alone: a.alone, peerSilent: a.peerSilent });
    arbiter = answer.state;
    arbiterSeen(n, answer.state);
    return answer.granted;
  }

  function arbiterSeen(n: SimNode, state: ArbiterState): void {
    n.arbiterView = arbiterViewAfter(n.arbiterView, state, n.id, n.persisted.term);
  }

  function act(n: SimNode, a: Action, now: number): void {
    switch (a.kind) {
      case 'promote':
        n.persisted = { role: 'leader', term: a.term };
        n.role = 'leader';
        if (n.pg === 'standby') {
          n.pg = 'primary';
          n.timeline += 1;
        }
        n.standbySeenAt = now;
        return;
      case 'take-vip':
        n.holdsVip = true;
        return;
      case 'release-vip':
        n.holdsVip = false;
        return;
      case 'fence':
        n.persisted = { ...n.persisted, role: 'fenced' };
        n.role = 'fenced';
        n.holdsVip = false;
        return;
      case 'unfence':
        n.persisted = { ...n.persisted, role: 'leader' };
        n.role = 'leader';
        n.switchoverRequested = false;
        return;
      case 'degrade-to-async':
        n.syncRep = false;
        return;
      case 'restore-sync':
        n.syncRep = true;
        return;
      case 'demote-and-rejoin':
        n.persisted = { role: 'follower', term: Math.max(n.persisted.term, a.term) };
        n.role = 'follower';
        n.holdsVip = false;
        n.pg = 'down';
        n.syncRep = true;
        n.switchoverRequested = false;
        n.rejoin = { leader: a.leader === nodes.A.nodeId ? 'A' : 'B' };
        return;
      case 'adopt-term':
        n.persisted = { ...n.persisted, term: Math.max(n.persisted.term, a.term) };
        return;
      case 'begin-handover':
        n.handoverSince = now;
        return;
      case 'end-handover':
        n.handoverSince = null;
        return;
      case 'arbiter-lease':
        return;
    }
  }
}

/** The pair is back to normal: one writable leader with the VIP, one follower streaming, sync on. */
export function healthyPair(r: SimResult): boolean {
  const { A, B } = r.nodes;
  const [l, f] = A.role === 'leader' ? [A, B] : [B, A];
  return (
    l.role === 'leader' &&
    f.role === 'follower' &&
    l.up &&
    f.up &&
    l.pg === 'primary' &&
    f.pg === 'standby' &&
    l.holdsVip &&
    !f.holdsVip &&
    l.syncRep &&
    l.standbyStreaming
  );
}

/** Acknowledged keys missing from the current leader's data (should be none). */
export function lostAcked(r: SimResult): number[] {
  const { A, B } = r.nodes;
  const leader = A.role === 'leader' ? A : B.role === 'leader' ? B : undefined;
  if (!leader) return [...r.acked];
  const have = new Set(leader.history);
  return r.acked.filter((k) => !have.has(k));
}

/** Ticks from `fromTick` to the first acknowledged write after it (Infinity when none). */
export function timeToWrite(r: SimResult, fromTick: number): number {
  const e = r.log.find((l) => l.t >= fromTick && l.ack);
  return e ? e.t - fromTick : Infinity;
}

/**
 * The failover rules: one pure function of one tick's facts (see types.ts). No I/O, no clock.
 *
 * Safety rests on these rules (timeouts are DEFAULT_LIVENESS_CONFIG's):
 *  F1 A leader that has heard neither the peer nor any witness for 2 s fences.
 *  P1 A follower promotes on its own only when ALL hold: the peer was silent ≥ 5 s, a witness
 *     answered within 2 s, the VIP has not answered its ARP probe for ≥ 2 s, its PostgreSQL is a
 *     healthy standby, the peer's last heartbeat (since this agent started) said "leader/fenced,
 *     synchronous", and the leader cannot have lived on unheard long enough to degrade to async
 *     (judged from the last VIP answer, how long this node itself had the witness, and when its
 *     WAL stream stopped). 5 s ≥ fence (2 s) + one heartbeat + one tick + the fence budget: in a
 *     partition that cuts the leader off, it has fenced before the follower may promote.
 *  P2 A fenced node reclaims the writes alone (new term) only on P1's network conditions and if it
 *     had degraded to async and is not yielding: then the peer cannot have promoted over it.
 *  D1 A leader degrades to async only when the standby is gone ≥ 4 s AND either the peer tells
 *     it so (alive, heartbeats flowing, and echoing the async its leader announced first) or the
 *     peer is silent and a witness answers. It never degrades in isolation, so a cut-off leader
 *     cannot acknowledge a write the follower lacks; and a follower it hears never counts on
 *     holding commits made after the switch.
 *  H1 Between two nodes that hear each other, writes move only by handover: the side that must
 *     give up fences and announces `handover`; the other promotes / unfences only after seeing
 *     that (or, for a fenced node, a follower that heard it recently). The yielding side keeps
 *     off writes (even across a reboot: the handover is persisted) until it times out (15 s) AND
 *     a heartbeat sent after the taker's cutoff (timeout - 3 s) shows the peer still a follower.
 *  R1 A node that hears a leader outranking it (term, timeline, LSN, …) fences and rejoins it.
 *  A1 With an arbiter (core/arbiter.ts), P1, P2 and D1 first take its lease for the term they
 *     write under; without it they do not happen. A leader the arbiter tells of a newer term
 *     fences, and so does one that hears neither the peer nor the arbiter for 2 s (F1 with the
 *     arbiter as the third vote); a leader keeps the arbiter told whether it commits alone, and
 *     claims the term alone once the peer is silent 2 s, before the peer may ask (5 s).
 */
import { lsnOrder } from '../../core/history.ts';
import { outranks, type RankFacts } from './rank.ts';
import {
  DEFAULT_LIVENESS_CONFIG,
  type Action,
  type ActionKind,
  type Decision,
  type Heartbeat,
  type LivenessConfig,
  type LivenessRole,
  type TickInput,
} from './types.ts';

/** The role a node starts in after a boot or an agent restart: a leader starts fenced. */
export function bootRole(persisted: LivenessRole): 'fenced' | 'follower' {
  return persisted === 'follower' ? 'follower' : 'fenced';
}

/** Orderings the safety argument needs; empty when the config is sound. */
export function validateTimeouts(c: LivenessConfig): string[] {
  const errs: string[] = [];
  const need = (ok: boolean, msg: string) => {
    if (!ok) errs.push(msg);
  };
  need(c.witnessLostMs <= c.fenceAfterMs, 'witnessLostMs must be ≤ fenceAfterMs (the leader fences within fenceAfterMs)');
  need(
    c.fenceAfterMs + c.heartbeatIntervalMs + c.tickMs + c.fenceBudgetMs <= c.promoteAfterMs,
    'promoteAfterMs must be ≥ fenceAfterMs + heartbeatIntervalMs + tickMs + fenceBudgetMs (fence before promote)',
  );
  need(c.peerDeadMs >= 2 * c.heartbeatIntervalMs, 'peerDeadMs must cover at least two heartbeats');
  need(c.degradeAfterMs >= c.peerDeadMs, 'degradeAfterMs must be ≥ peerDeadMs');
  need(
    c.degradeAfterMs > 2 * c.heartbeatIntervalMs + c.vipProbeIntervalMs,
    'degradeAfterMs must exceed 2 heartbeats + 1 VIP probe (else a leader that died at once looks as if it may have degraded)',
  );
  need(c.vipSilentMs >= 2 * c.vipProbeIntervalMs, 'vipSilentMs must cover at least two VIP probes');
  need(c.handoverMarginMs >= c.heartbeatIntervalMs + 2 * c.tickMs, 'handoverMarginMs must cover a heartbeat and two ticks');
  need(c.handoverTimeoutMs > c.handoverMarginMs + c.pgHandoverAfterMs, 'handoverTimeoutMs too short');
  need(
    c.peerHearsMeMs + c.tickMs + c.vipProbeIntervalMs < c.promoteAfterMs,
    'peerHearsMeMs + tickMs + vipProbeIntervalMs must be < promoteAfterMs (an unfenced VIP is seen before the peer could promote)',
  );
  need(c.peerHearsMeMs < c.peerDeadMs, 'peerHearsMeMs must be < peerDeadMs');
  return errs;
}

/** The peer's PostgreSQL is healthy and in the state its role needs (a follower's a standby). */
function pgInItsRole(hb: Heartbeat): boolean {
  return hb.pgHealthy && hb.pg === (hb.role === 'follower' ? 'standby' : 'primary');
}

function peerFacts(hb: Heartbeat): RankFacts {
  return {
    nodeId: hb.nodeId,
    role: hb.role,
    term: hb.term,
    timeline: hb.timeline,
    lsn: hb.lsn,
    ...(hb.lastModified !== undefined ? { lastModified: hb.lastModified } : {}),
  };
}

/** Everything decide() derives from the input, exported for tests and the status page. */
export interface Facts {
  /** The peer was heard within peerDeadMs (and a heartbeat exists). */
  peerAlive: boolean;
  witnessOk: boolean;
  /** The VIP is not ours and did not answer for vipSilentMs. */
  vipSilent: boolean;
  /** The last heartbeat shows the peer heard us within peerHearsMeMs (counting its age). */
  peerHearsMe: boolean;
  /** The leader we lost could have stayed alive, unheard, long enough to degrade to async. */
  leaderMayHaveDegraded: boolean;
  /** newTerm for a promotion: max(own term, peer's last term) + 1. */
  nextTerm: number;
}

export function facts(i: TickInput, c: LivenessConfig = DEFAULT_LIVENESS_CONFIG): Facts {
  const hb = i.peer.last;
  const peerAlive = hb !== undefined && i.peer.silentMs < c.peerDeadMs;
  const witnessOk = i.witness.configured > 0 && i.witness.silentMs < c.witnessLostMs;
  const vipSilent = !i.holdsVip && i.vip.silentMs >= c.vipSilentMs;
  const peerHearsMe = hb !== undefined && hb.peerSilentMs + i.peer.silentMs < c.peerHearsMeMs;
  // How long the leader may have stayed alive without hearing us, and so may have degraded to
  // async and acknowledged writes we lack. At its last heartbeat (peer.silentMs ago) it had not
  // heard us for hb.peerSilentMs. After that it may have lived on unseen: up to one probe past the
  // VIP's last answer, and through any time we were off the LAN ourselves (no witness): a leader
  // that can degrade reaches the witness, so while we reach it too its VIP is visible to us.
  const unseenUntilAgoMs = Math.max(0, Math.min(i.vip.silentMs - c.vipProbeIntervalMs, i.witness.okForMs));
  // Likewise it degrades when our stream stopped long enough, even while hearing our heartbeats.
  const leaderMayHaveDegraded =
    hb === undefined ||
    !hb.syncRep ||
    hb.peerSilentMs + i.peer.silentMs - unseenUntilAgoMs >= c.degradeAfterMs ||
    i.replication.receiverSilentMs - unseenUntilAgoMs + c.heartbeatIntervalMs >= c.degradeAfterMs;
  const nextTerm = Math.max(i.self.term, hb?.term ?? 0) + 1;
  return { peerAlive, witnessOk, vipSilent, peerHearsMe, leaderMayHaveDegraded, nextTerm };
}

/**
 * With an arbiter: `actions` preceded by the lease they need (A1). Without one: `actions` as they are.
 */
function leased(i: TickInput, lease: { term: number; alone: boolean; peerSilent: boolean }, actions: Action[]): Action[] {
  return i.arbiter ? [{ kind: 'arbiter-lease', ...lease }, ...actions] : actions;
}

/**
 * D1's trigger: a synchronous leader whose standby is gone ≥ degradeAfterMs. From then on its
 * heartbeats say async (syncRep false) although the switch has not taken effect: a follower that
 * hears this no longer promotes on its own, and its heartbeat echoes it (heardSyncRep false), which
 * is what a leader whose peer is alive waits for before it switches (issue 11 point 5). Without the
 * echo, a leader that went async and died before its next heartbeat arrived would leave a follower
 * that promotes over the writes it acknowledged alone.
 */
export function announcesAsync(i: TickInput, c: LivenessConfig = DEFAULT_LIVENESS_CONFIG): boolean {
  return i.self.role === 'leader' && i.replication.syncRep && !i.replication.standbyStreaming && i.replication.standbySilentMs >= c.degradeAfterMs;
}

/**
 * The peer's heartbeat echoes an async announcement of this episode: it says it heard syncRep
 * false, and it heard that after the announcement began (one tick after the standby had been gone
 * degradeAfterMs at the latest), not a false left from an earlier async spell.
 */
function peerHeardAsync(i: TickInput, hb: Heartbeat, c: LivenessConfig): boolean {
  const heardAgoMs = i.peer.silentMs + hb.peerSilentMs;
  const announcedForMs = i.replication.standbySilentMs - c.degradeAfterMs - c.tickMs;
  return hb.heardSyncRep === false && heardAgoMs < announcedForMs;
}

/** Whether this node is healthy in its role, as its heartbeat says (pgHealthy): PostgreSQL and its disk both fine. */
export function healthyInRole(i: Pick<TickInput, 'pg' | 'disk'>): boolean {
  return i.pg.badForMs === 0 && i.disk.badForMs === 0;
}

export function decide(input: TickInput, c: LivenessConfig = DEFAULT_LIVENESS_CONFIG): Decision {
  // A failing disk is a PostgreSQL in trouble: the rules for a bad PostgreSQL (hand over to a
  // healthy synchronous follower, never promote, stay fenced) apply to it as they are.
  const i: TickInput = input.disk.badForMs > input.pg.badForMs ? { ...input, pg: { ...input.pg, badForMs: input.disk.badForMs } } : input;
  const f = facts(i, c);
  const d = i.self.role === 'leader' ? decideLeader(i, c, f) : i.self.role === 'fenced' ? decideFenced(i, c, f) : decideFollower(i, c, f);
  const notes: string[] = [];
  if (i.disk.badForMs > 0) notes.push(`state disk failing for ${i.disk.badForMs} ms (counts as PostgreSQL in trouble)`);
  if (!i.kineHealthy) notes.push('kine unhealthy (restarted locally, not a failover trigger)');
  if (i.kubeApiHealthy === false) notes.push('Kubernetes API unhealthy (not a failover trigger)');
  return notes.length ? { actions: d.actions, reason: `${d.reason}; ${notes.join('; ')}` } : d;
}

function decideLeader(i: TickInput, c: LivenessConfig, f: Facts): Decision {
  const hb = f.peerAlive ? i.peer.last : undefined;
  const me: RankFacts = i.self;
  const stepDown = (why: string, extra: Action[]): Decision => ({ actions: [{ kind: 'fence' }, ...extra], reason: why });

  // F1: cut off from the peer and every witness: stop taking writes (always safe, so checked first).
  if (i.peer.silentMs >= c.fenceAfterMs && !f.witnessOk) {
    return stepDown(`no heartbeat for ${i.peer.silentMs} ms and no witness for ${i.witness.silentMs} ms (${i.witness.configured} configured): fence`, []);
  }
  // F1 with an arbiter: it is the third vote, so a leader that hears neither it nor the peer
  // fences, whatever the gateway says (the peer may be taking the next term's lease right now).
  if (i.arbiter && i.peer.silentMs >= c.fenceAfterMs && i.arbiter.silentMs >= c.witnessLostMs) {
    return stepDown(`no heartbeat for ${i.peer.silentMs} ms and no answer from the arbiter for ${i.arbiter.silentMs} ms: fence`, []);
  }
  // A1: the arbiter leased a newer term to the peer: it may be writing, or about to.
  const newer = i.arbiter?.newerTerm ?? null;
  if (newer !== null && newer > i.self.term) return stepDown(`the arbiter leased term ${newer} to the peer (mine is ${i.self.term}): fence`, []);

  if (hb) {
    // R1: two leaders that see each other (a healed split): the outranked one steps down.
    if (hb.role === 'leader' && outranks(peerFacts(hb), me)) {
      return stepDown(`peer ${hb.nodeId} leads at term ${hb.term} and outranks me (term ${i.self.term}): fence and rejoin it`, [
        { kind: 'demote-and-rejoin', term: hb.term, leader: hb.nodeId },
      ]);
    }
    // H1: a peer holding newer history (fenced, or a follower with a higher term) gets the writes;
    // not a follower whose PostgreSQL is still the primary it is rewinding (its history is the stale one).
    // Nor a follower on my term and timeline: it streams from me, and a walsender sends only WAL
    // already flushed here, so a higher LSN in its heartbeat only means my own look is older than
    // its (a sample that timed out on a loaded box left it behind), not that it holds more.
    const streamsFromMe = hb.role === 'follower' && hb.term === i.self.term && hb.timeline === i.self.timeline;
    if (hb.role !== 'leader' && !streamsFromMe && outranks(peerFacts(hb), me) && pgInItsRole(hb)) {
      return stepDown(`peer ${hb.nodeId} (${hb.role}, term ${hb.term}, ${hb.lsn}) outranks me: fence and hand over`, [{ kind: 'begin-handover' }]);
    }
  }
  const healthyFollower = hb !== undefined && hb.role === 'follower' && hb.pg === 'standby' && hb.pgHealthy;
  if (i.switchoverRequested && healthyFollower && i.replication.standbyStreaming) {
    return stepDown(`planned switchover to ${hb.nodeId}: fence, wait for it to catch up and promote`, [{ kind: 'begin-handover' }]);
  }
  if (i.pg.state !== 'primary' || i.pg.badForMs > 0) {
    if (i.pg.badForMs >= c.pgHandoverAfterMs && healthyFollower && i.replication.syncRep) {
      return stepDown(`PostgreSQL bad for ${i.pg.badForMs} ms (${i.pg.state}); healthy follower ${hb.nodeId} has every commit: hand over`, [
        { kind: 'begin-handover' },
      ]);
    }
  }

  const actions: Action[] = [];
  const why: string[] = [];
  if (i.pg.state !== 'primary' || i.pg.badForMs > 0)
    why.push(`PostgreSQL ${i.pg.state}, bad for ${i.pg.badForMs} ms; no follower to hand over to: keep leading`);
  if (!i.holdsVip) actions.push({ kind: 'take-vip' });
  // D1: async only when the peer is known down.
  if (announcesAsync(i, c)) {
    const degrade = leased(i, { term: i.self.term, alone: true, peerSilent: !f.peerAlive }, [{ kind: 'degrade-to-async' }]);
    if (f.peerAlive && hb && peerHeardAsync(i, hb, c)) {
      actions.push(...degrade);
      why.push(`peer alive but not streaming for ${i.replication.standbySilentMs} ms, and it heard me announce async: degrade to async`);
    } else if (f.peerAlive) {
      why.push(`peer alive but not streaming for ${i.replication.standbySilentMs} ms: async announced, waiting for the peer to hear it (writes wait)`);
    } else if (i.peer.silentMs >= c.degradeAfterMs && f.witnessOk) {
      actions.push(...degrade);
      why.push(`peer silent ${i.peer.silentMs} ms, witness reachable: degrade to async`);
    } else {
      why.push('standby gone but the peer is not known down: stay synchronous (writes wait)');
    }
  } else if (
    !i.replication.syncRep &&
    hb &&
    hb.role === 'follower' &&
    i.replication.standbyStreaming &&
    i.replication.standbyLagBytes <= c.restoreSyncMaxLagBytes
  ) {
    actions.push({ kind: 'restore-sync' });
    why.push(`follower ${hb.nodeId} streaming, lag ${i.replication.standbyLagBytes} B: restore synchronous replication`);
  }
  // A1: the arbiter knows this term is mine and whether I commit alone (after a restart, a restore
  // of sync, a handover), so that it refuses the peer a takeover only while that is so. A peer
  // silent for fenceAfterMs counts as alone already: the claim must reach the arbiter before the
  // peer may ask for the next term (promoteAfterMs), not when this side's walsender finally times
  // out and it would go async; else the peer takes over while this side still looks writable.
  // Last: a refusal stops nothing else (the next tick fences on the newer term it learned).
  const lease = i.arbiter?.lease;
  const alone = !i.replication.syncRep || i.peer.silentMs >= c.fenceAfterMs;
  if (i.arbiter && !actions.some((a) => a.kind === 'arbiter-lease') && (lease?.term !== i.self.term || lease.alone !== alone)) {
    actions.push({ kind: 'arbiter-lease', term: i.self.term, alone, peerSilent: !f.peerAlive });
    why.push(`tell the arbiter: term ${i.self.term}, ${alone ? (i.replication.syncRep ? 'peer silent, claiming it alone' : 'alone') : 'synchronous'}`);
  }
  if (hb === undefined) why.push(`leader; peer silent ${i.peer.silentMs} ms, witness ${f.witnessOk ? 'reachable' : 'lost'}`);
  else if (hb.role === 'leader') why.push(`leader; peer ${hb.nodeId} also claims leadership but I outrank it: it must step down`);
  else why.push('leader; peer alive');
  return { actions, reason: why.join('; ') };
}

/** A node that is not leading must not hold the VIP (a fence cut short, a stale boot state). */
function withVipRelease(i: TickInput, actions: Action[], reason: string): Decision {
  const keeps = actions.some((a) => a.kind === 'take-vip');
  return { actions: i.holdsVip && !keeps ? [{ kind: 'release-vip' }, ...actions] : actions, reason };
}

function decideFenced(i: TickInput, c: LivenessConfig, f: Facts): Decision {
  const hb = f.peerAlive ? i.peer.last : undefined;
  const me: RankFacts = i.self;
  const done = (actions: Action[], reason: string): Decision => withVipRelease(i, actions, reason);
  const pgOk = i.pg.state === 'primary' && i.pg.badForMs === 0;

  if (hb && hb.role === 'leader') {
    const end: Action[] = i.handover ? [{ kind: 'end-handover' }] : [];
    if (outranks(peerFacts(hb), me) || i.handover) {
      return done(
        [{ kind: 'demote-and-rejoin', term: hb.term, leader: hb.nodeId }, ...end],
        `peer ${hb.nodeId} leads at term ${hb.term}: rejoin it as follower`,
      );
    }
    return done([], `peer ${hb.nodeId} leads but I outrank it: stay fenced until it steps down`);
  }
  if (i.handover) {
    // Stop yielding only on the word of a peer that is still a follower in a heartbeat sent after
    // it stopped considering the takeover (handoverTimeoutMs - handoverMarginMs): a peer that went
    // silent may have promoted, so then stay fenced until it is heard again.
    const sentAtAge = i.handover.sinceMs - i.peer.silentMs;
    if (i.handover.sinceMs >= c.handoverTimeoutMs && hb && sentAtAge >= c.handoverTimeoutMs - c.handoverMarginMs + c.tickMs) {
      return done([{ kind: 'end-handover' }], `handover not taken within ${i.handover.sinceMs} ms and ${hb.nodeId} is still ${hb.role}: stop yielding`);
    }
    return done([], `yielding to the peer for ${i.handover.sinceMs} ms${hb ? '' : ' (peer silent: it may have taken over, stay fenced until heard)'}`);
  }
  if (hb) {
    // hb.role is follower or fenced.
    const peerOutranks = outranks(peerFacts(hb), me);
    // A follower can take over from a broken primary only when it provably has every commit.
    const pgHandover = !pgOk && i.pg.badForMs >= c.pgHandoverAfterMs && hb.role === 'follower' && hb.pg === 'standby' && hb.pgHealthy && i.replication.syncRep;
    if ((peerOutranks && pgInItsRole(hb)) || pgHandover) {
      if (hb.handoverForMs !== null) return done([], `both sides yielding; wait for a handover to time out`);
      return done(
        [{ kind: 'begin-handover' }],
        pgOk ? `peer ${hb.nodeId} outranks me: hand over` : `my PostgreSQL is ${i.pg.state} for ${i.pg.badForMs} ms: hand over to ${hb.nodeId}`,
      );
    }
    if (!pgOk) return done([], `my PostgreSQL is ${i.pg.state}${i.pg.badForMs ? ` for ${i.pg.badForMs} ms` : ''}: stay fenced until it is a healthy primary`);
    if (peerOutranks) return done([], `peer ${hb.nodeId} outranks me but its PostgreSQL is not healthy: stay fenced`);
    if (hb.role === 'fenced' && hb.handoverForMs === null) return done([], `peer ${hb.nodeId} is fenced too and I outrank it: wait for it to yield`);
    if (!f.peerHearsMe) return done([], `peer ${hb.nodeId} has not heard me recently: stay fenced`);
    // A1: the peer took a newer term's lease but did not lead under it (its promotion failed):
    // lead again under a term after it, with the peer's word (it hears me).
    const newer = i.arbiter?.newerTerm ?? null;
    if (newer !== null && newer > i.self.term) {
      const term = Math.max(newer, f.nextTerm - 1) + 1;
      return done(
        leased(i, { term, alone: !i.replication.syncRep, peerSilent: false }, [
          { kind: 'promote', term, cause: 'reclaim' },
          { kind: 'unfence' },
          { kind: 'take-vip' },
        ]),
        `peer ${hb.nodeId} (${hb.role}) hears me and I outrank it, but the arbiter leased term ${newer}: lead at term ${term}`,
      );
    }
    return done([{ kind: 'unfence' }, { kind: 'take-vip' }], `peer ${hb.nodeId} (${hb.role}) hears me and I outrank it: unfence`);
  }
  // Peer silent. Reclaim alone only when the peer cannot have promoted over me: I had degraded
  // to async (it knew it could not take over), and otherwise as for a follower's promotion.
  const missing: string[] = [];
  if (i.peer.silentMs < c.promoteAfterMs) missing.push(`peer silent only ${i.peer.silentMs} ms`);
  if (!f.witnessOk) missing.push('no witness');
  if (!f.vipSilent) missing.push('the VIP answers');
  if (i.replication.syncRep) missing.push('I was synchronous, so the peer may have promoted');
  if (!pgOk) missing.push(`PostgreSQL ${i.pg.state}`);
  if (missing.length) return done([], `fenced: ${missing.join(', ')}`);
  return done(
    leased(i, { term: f.nextTerm, alone: true, peerSilent: true }, [
      { kind: 'promote', term: f.nextTerm, cause: 'reclaim' },
      { kind: 'unfence' },
      { kind: 'take-vip' },
    ]),
    `peer silent ${i.peer.silentMs} ms, witness reachable, VIP silent, I was async: reclaim at term ${f.nextTerm}`,
  );
}

function decideFollower(i: TickInput, c: LivenessConfig, f: Facts): Decision {
  const hb = i.peer.last;
  const done = (actions: Action[], reason: string): Decision => withVipRelease(i, actions, reason);
  const standbyOk = i.pg.state === 'standby' && i.pg.badForMs === 0;

  if (f.peerAlive && hb) {
    if (hb.role === 'leader') {
      if (i.pg.state === 'primary' && outranks(peerFacts(hb), i.self)) {
        return done([{ kind: 'demote-and-rejoin', term: hb.term, leader: hb.nodeId }], `my PostgreSQL is still a primary: finish rejoining ${hb.nodeId}`);
      }
      if (hb.term > i.self.term) return done([{ kind: 'adopt-term', term: hb.term }], `following ${hb.nodeId} at its term ${hb.term}`);
      return done([], `following ${hb.nodeId}`);
    }
    if (hb.role === 'fenced' && hb.handoverForMs !== null) {
      const age = hb.handoverForMs + i.peer.silentMs;
      const caughtUp = hb.pgHealthy ? lsnOrder(i.self.lsn) >= lsnOrder(hb.lsn) && lsnOrder(hb.lsn) >= 0n : hb.syncRep;
      const missing: string[] = [];
      if (!standbyOk) missing.push(`my PostgreSQL is ${i.pg.state}`);
      if (!caughtUp) missing.push(hb.pgHealthy ? `not caught up (${i.self.lsn} < ${hb.lsn})` : 'peer was async and its PostgreSQL is down');
      if (age + c.handoverMarginMs >= c.handoverTimeoutMs) missing.push(`handover ${age} ms old, too close to its timeout`);
      // The yielding side is fenced (no writes) whatever the VIP does; its word that it let go of
      // the VIP is enough, no need to wait for ARP probes to time out.
      if (hb.holdsVip) missing.push('it still holds the VIP');
      if (missing.length) return done([], `peer yields but: ${missing.join(', ')}`);
      const actions: Action[] = [{ kind: 'promote', term: f.nextTerm, cause: 'handover' }, { kind: 'take-vip' }];
      // Its PostgreSQL is down (known down, by its own report): do not make writes wait for it.
      if (!hb.pgHealthy && i.replication.syncRep)
        actions.push(...leased(i, { term: f.nextTerm, alone: true, peerSilent: false }, [{ kind: 'degrade-to-async' }]));
      return done(actions, `peer ${hb.nodeId} yields to me and I have every commit: promote at term ${f.nextTerm}`);
    }
    return done([], `peer ${hb.nodeId} is ${hb.role}; waiting for it`);
  }
  // P1: the peer is silent.
  const missing: string[] = [];
  if (i.peer.silentMs < c.promoteAfterMs) missing.push(`peer silent only ${i.peer.silentMs} ms`);
  if (!f.witnessOk) missing.push(i.witness.configured === 0 ? 'no witness configured' : `no witness for ${i.witness.silentMs} ms`);
  if (!f.vipSilent) missing.push(`the VIP answered ${i.vip.silentMs} ms ago (leader alive on the LAN)`);
  if (!standbyOk) missing.push(`my PostgreSQL is ${i.pg.state}${i.pg.badForMs ? ` (bad for ${i.pg.badForMs} ms)` : ''}`);
  if (hb === undefined) missing.push('no heartbeat since start, so I cannot know I have every commit');
  else if (hb.role === 'follower') missing.push('the peer was a follower');
  else if (f.leaderMayHaveDegraded) missing.push(hb.syncRep ? 'the leader may have degraded to async unheard' : 'the leader was async');
  if (missing.length) return done([], `not promoting: ${missing.join(', ')}`);
  const actions: Action[] = [{ kind: 'promote', term: f.nextTerm, cause: 'leader-lost' }, { kind: 'take-vip' }];
  if (i.replication.syncRep) actions.push({ kind: 'degrade-to-async' });
  return done(
    // Alone either way: no standby streams to a node that just took over from a silent leader.
    leased(i, { term: f.nextTerm, alone: true, peerSilent: true }, actions),
    `peer silent ${i.peer.silentMs} ms, witness reachable, VIP silent ${i.vip.silentMs} ms, I hold every commit: promote at term ${f.nextTerm}`,
  );
}

/** Whether a planned switchover asked `requestedForMs` ago still stands: one the follower was not ready for in time is dropped. */
export function switchoverStands(requestedForMs: number, c: LivenessConfig = DEFAULT_LIVENESS_CONFIG): boolean {
  return requestedForMs <= c.switchoverRequestMs;
}

/** The actions that step a node down: it stops being a writer the moment one has run. */
const STEP_DOWN: readonly ActionKind[] = ['fence', 'release-vip', 'demote-and-rejoin'];

/**
 * Whether a decision cuts short the batch still running: a step-down never waits behind a hung
 * promote, sync switch or VIP bind (the fence's budget is a second), but one step-down does not
 * interrupt another (a long rejoin is not restarted by the next tick's repeat of it).
 */
export function preempts(running: readonly ActionKind[], next: readonly Action[]): boolean {
  return next.some((a) => STEP_DOWN.includes(a.kind)) && !running.some((k) => STEP_DOWN.includes(k));
}

/** The role and term a node has after carrying out `actions` (the persisted part). */
export function applyToRole(state: { role: LivenessRole; term: number }, actions: readonly Action[]): { role: LivenessRole; term: number } {
  let { role, term } = state;
  for (const a of actions) {
    if (a.kind === 'promote') {
      role = 'leader';
      term = a.term;
    } else if (a.kind === 'fence') role = 'fenced';
    else if (a.kind === 'unfence') role = 'leader';
    else if (a.kind === 'demote-and-rejoin') {
      role = 'follower';
      term = Math.max(term, a.term);
    } else if (a.kind === 'adopt-term') term = Math.max(term, a.term);
  }
  return { role, term };
}

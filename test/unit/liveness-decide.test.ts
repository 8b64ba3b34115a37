import test from 'ava';
import {
  announcesAsync,
  applyToRole,
  bootRole,
  decide,
  facts,
  healthyInRole,
  preempts,
  switchoverStands,
  validateTimeouts,
} from '../../firstboot/src/liveness/core/decide.ts';
import { compareRank, outranks, type RankFacts } from '../../firstboot/src/liveness/core/rank.ts';
import {
  ACTION_DEADLINE_MS,
  DEFAULT_LIVENESS_CONFIG as C,
  pacedLivenessConfig,
  type ActionKind,
  type Heartbeat,
  type LivenessRole,
  type PgState,
  type TickInput,
} from '../../firstboot/src/liveness/core/types.ts';

const A = '1'.repeat(32);
const B = '2'.repeat(32);

function hb(over: Partial<Heartbeat> = {}): Heartbeat {
  return {
    nodeId: B,
    role: 'leader',
    term: 3,
    timeline: 2,
    lsn: '0/100',
    pg: 'primary',
    pgHealthy: true,
    syncRep: true,
    handoverForMs: null,
    peerSilentMs: 0,
    holdsVip: true,
    heardSyncRep: true,
    ...over,
  };
}

type Over = { [K in keyof TickInput]?: TickInput[K] extends object ? Partial<TickInput[K]> : TickInput[K] };

/** A healthy follower hearing its leader, overridable field group by field group. */
function input(o: Over = {}): TickInput {
  const base: TickInput = {
    self: { nodeId: A, role: 'follower', term: 3, timeline: 2, lsn: '0/100' },
    pg: { state: 'standby', badForMs: 0 },
    disk: { badForMs: 0 },
    kineHealthy: true,
    holdsVip: false,
    peer: { silentMs: 500, last: hb() },
    witness: { configured: 1, silentMs: 500, okForMs: 600_000 },
    vip: { silentMs: 500 },
    replication: { syncRep: true, standbyStreaming: false, standbySilentMs: 0, standbyLagBytes: 0, receiverSilentMs: 0 },
    handover: null,
    switchoverRequested: false,
  };
  const r = { ...base, ...o } as TickInput;
  for (const k of ['self', 'pg', 'peer', 'witness', 'vip', 'replication'] as const)
    (r as unknown as Record<string, unknown>)[k] = { ...base[k], ...(o[k] as object | undefined) };
  return r;
}

const kinds = (i: TickInput) => decide(i).actions.map((a) => a.kind);

/** Group-wise merge of overrides (later wins per field). */
function merge(...os: Over[]): Over {
  const r: Record<string, unknown> = {};
  for (const o of os)
    for (const [k, v] of Object.entries(o)) {
      const prev = r[k];
      r[k] = v !== null && typeof v === 'object' && prev !== null && typeof prev === 'object' && !('sinceMs' in v) ? { ...prev, ...v } : v;
    }
  return r as Over;
}

test('the default timeouts satisfy every ordering the safety argument needs; broken ones are named', (t) => {
  t.deepEqual(validateTimeouts(C), []);
  t.true(C.fenceAfterMs + C.heartbeatIntervalMs + C.tickMs + C.fenceBudgetMs <= C.promoteAfterMs);
  const errs = validateTimeouts({ ...C, promoteAfterMs: 4000 });
  t.true(errs.some((e) => /fence before promote/.test(e)));
  t.true(validateTimeouts({ ...C, degradeAfterMs: 3000 }).some((e) => /degradeAfterMs must exceed/.test(e)));
});

test('a leader restarts fenced, a follower as follower', (t) => {
  t.is(bootRole('leader'), 'fenced');
  t.is(bootRole('fenced'), 'fenced');
  t.is(bootRole('follower'), 'follower');
});

test('rank: symmetric total order — term, timeline, LSN, then was-leader, lastModified, node id', (t) => {
  const roles: LivenessRole[] = ['leader', 'follower', 'fenced'];
  const all: RankFacts[] = [];
  for (const nodeId of [A, B])
    for (const role of roles)
      for (const term of [1, 2])
        for (const timeline of [1, 2])
          for (const lsn of ['0/0', '0/FF', '1/0'])
            for (const lastModified of [undefined, 5, 9])
              all.push({ nodeId, role, term, timeline, lsn, ...(lastModified !== undefined ? { lastModified } : {}) });
  for (const a of all)
    for (const b of all) {
      const ab = compareRank(a, b);
      t.is(Math.sign(ab) + Math.sign(compareRank(b, a)), 0);
      if (a.nodeId !== b.nodeId) t.not(ab, 0);
    }
  const x: RankFacts = { nodeId: A, role: 'follower', term: 3, timeline: 1, lsn: '0/10' };
  t.true(outranks({ ...x, term: 4, lsn: '0/0' }, x), 'term first');
  t.true(outranks({ ...x, nodeId: B, lsn: '0/11' }, x), 'then LSN');
  t.true(outranks({ ...x, nodeId: B, role: 'fenced' }, x), 'was-leader beats follower on equal data');
  t.true(outranks({ ...x, nodeId: B, lastModified: 2 }, { ...x, lastModified: 1 }), 'lastModified only then');
  t.true(outranks(x, { ...x, nodeId: B }), 'lower node id last');
});

test('follower: a leader that just died is replaced after 5 s with witness and silent VIP', (t) => {
  const dead = (ms: number) => input({ peer: { silentMs: ms }, vip: { silentMs: ms }, replication: { receiverSilentMs: ms } });
  t.deepEqual(kinds(dead(4999)), []);
  const d = decide(dead(5000));
  t.deepEqual(d.actions, [{ kind: 'promote', term: 4, cause: 'leader-lost' }, { kind: 'take-vip' }, { kind: 'degrade-to-async' }]);
  t.regex(d.reason, /promote at term 4/);
  // a peer that was ahead in term: the new term exceeds both
  t.deepEqual(
    decide(input({ self: { term: 2 }, peer: { silentMs: 6000, last: hb({ term: 7 }) }, vip: { silentMs: 6000 }, replication: { receiverSilentMs: 6000 } }))
      .actions[0],
    { kind: 'promote', term: 8, cause: 'leader-lost' },
  );
});

test('follower: no promotion without a witness, while the VIP answers, or when the leader may have gone async', (t) => {
  const base = { peer: { silentMs: 9000 }, vip: { silentMs: 9000 }, replication: { receiverSilentMs: 9000 } };
  t.deepEqual(kinds(input({ ...base, witness: { silentMs: 2000, okForMs: 0 } })), []);
  t.deepEqual(kinds(input({ ...base, witness: { configured: 0 } })), []);
  // both still on the LAN, the heartbeat path is cut: the leader's VIP answers our ARP probe
  t.regex(decide(input({ ...base, vip: { silentMs: 500 } })).reason, /VIP answered/);
  // the leader's last heartbeat said async (it had degraded): our copy may be missing commits
  t.regex(decide(input({ ...base, peer: { silentMs: 9000, last: hb({ syncRep: false }) } })).reason, /async/);
  // the VIP answered for 4 s after the heartbeats stopped: the leader lived on and may have degraded
  t.regex(decide(input({ ...base, vip: { silentMs: 5000 } })).reason, /may have degraded/);
  // we were off the LAN ourselves until 1 s ago: the leader may have lived on unseen
  t.regex(decide(input({ ...base, witness: { okForMs: 1000 } })).reason, /may have degraded/);
  // our WAL stream stopped long before the heartbeats did
  t.regex(decide(input({ ...base, replication: { receiverSilentMs: 20_000 } })).reason, /may have degraded/);
  // never heard since start (both restarted): cannot know we hold every commit
  t.regex(decide(input({ ...base, peer: { silentMs: 60_000, last: undefined } })).reason, /no heartbeat since start/);
  t.regex(decide(input({ ...base, pg: { state: 'down', badForMs: 9000 } })).reason, /PostgreSQL is down/);
});

test('leader: fences after 2 s without peer and witness; degrades only when the peer is known down', (t) => {
  const leader = (o: Over) =>
    input(
      merge(
        {
          self: { role: 'leader' },
          pg: { state: 'primary' },
          holdsVip: true,
          peer: { last: hb({ role: 'follower', pg: 'standby', holdsVip: false, term: 3, lsn: '0/F0' }) },
        },
        o,
      ),
    );
  t.deepEqual(kinds(leader({ peer: { silentMs: 2000 }, witness: { silentMs: 2000, okForMs: 0 } })), ['fence']);
  t.deepEqual(kinds(leader({ peer: { silentMs: 1999 }, witness: { silentMs: 2000, okForMs: 0 } })), []);
  // peer gone, witness answers: stay leader; after 4 s without a standby, async
  t.deepEqual(kinds(leader({ peer: { silentMs: 4000 }, replication: { standbySilentMs: 4000 } })), ['degrade-to-async']);
  t.deepEqual(kinds(leader({ peer: { silentMs: 3000 }, replication: { standbySilentMs: 4000 } })), []);
  // peer alive but its PostgreSQL is not streaming (disk full): known down by its own report, and
  // async once the peer echoes the announcement (see the next test)
  const heardAsync = hb({ role: 'follower', pg: 'standby', holdsVip: false, term: 3, lsn: '0/F0', heardSyncRep: false, peerSilentMs: 300 });
  t.deepEqual(kinds(leader({ peer: { silentMs: 0, last: heardAsync }, replication: { standbySilentMs: 6000 } })), ['degrade-to-async']);
  // back and streaming, caught up: synchronous again
  t.deepEqual(kinds(leader({ replication: { syncRep: false, standbyStreaming: true, standbyLagBytes: 100 } })), ['restore-sync']);
  t.deepEqual(kinds(leader({ replication: { syncRep: false, standbyStreaming: true, standbyLagBytes: 10 * 1024 * 1024 } })), []);
  t.deepEqual(kinds(leader({ holdsVip: false })), ['take-vip']);
});

test('leader: the switch to async is announced first, and made only once the live peer echoes it (issue 11 point 5)', (t) => {
  const follower = (o: Partial<Heartbeat>) => hb({ role: 'follower', pg: 'standby', holdsVip: false, term: 3, lsn: '0/F0', ...o });
  const leader = (o: Over) => input(merge({ self: { role: 'leader' }, pg: { state: 'primary' }, holdsVip: true, peer: { silentMs: 200 } }, o));
  const gone = { standbySilentMs: 4000 };
  t.false(announcesAsync(leader({ replication: { standbySilentMs: 3999 } })), 'the standby gone < 4 s: not yet');
  t.true(announcesAsync(leader({ replication: gone })), 'gone 4 s: heartbeats say async from now on');
  t.false(announcesAsync(leader({ replication: { ...gone, syncRep: false } })), 'already async: nothing to announce');
  t.false(announcesAsync(input({ replication: gone })), 'a follower announces nothing');
  // The peer has not heard it yet: writes wait (a follower that did not hear it would still promote).
  const waiting = decide(leader({ peer: { last: follower({ heardSyncRep: true }) }, replication: gone }));
  t.deepEqual(waiting.actions, []);
  t.regex(waiting.reason, /async announced, waiting for the peer to hear it/);
  t.deepEqual(kinds(leader({ peer: { last: follower({ heardSyncRep: null }) }, replication: { standbySilentMs: 60_000 } })), [], 'a peer that echoes nothing');
  // It heard async 1.5 s ago: before this announcement began (gone 6 s = announced for at most 1 s), a leftover.
  t.deepEqual(kinds(leader({ peer: { last: follower({ heardSyncRep: false, peerSilentMs: 1300 }) }, replication: { standbySilentMs: 6000 } })), []);
  // It heard async 0.5 s ago, within this announcement: switch.
  t.deepEqual(kinds(leader({ peer: { last: follower({ heardSyncRep: false, peerSilentMs: 300 }) }, replication: { standbySilentMs: 6000 } })), [
    'degrade-to-async',
  ]);
  // The follower side: a leader heartbeat saying async keeps it from promoting.
  const follows = (syncRep: boolean) =>
    decide(
      input({
        peer: { silentMs: 6000, last: hb({ syncRep }) },
        witness: { silentMs: 0, okForMs: 60_000 },
        vip: { silentMs: 6000 },
        replication: { receiverSilentMs: 0 },
      }),
    );
  t.is(follows(true).actions[0]?.kind, 'promote');
  t.regex(follows(false).reason, /the leader was async/);
});

test('leader: hands over on a broken PostgreSQL or a switchover; steps down to a higher term', (t) => {
  const follower = hb({ role: 'follower', pg: 'standby', holdsVip: false, lsn: '0/F0' });
  const leader = (o: Over) => input(merge({ self: { role: 'leader' }, pg: { state: 'primary' }, holdsVip: true, peer: { last: follower } }, o));
  t.deepEqual(kinds(leader({ pg: { state: 'down', badForMs: 3000 } })), ['fence', 'begin-handover']);
  t.deepEqual(kinds(leader({ pg: { state: 'down', badForMs: 2000 } })), []);
  // async: the follower may lack commits, so the broken primary is restarted instead
  t.deepEqual(kinds(leader({ pg: { state: 'down', badForMs: 9000 }, replication: { syncRep: false } })), []);
  t.deepEqual(kinds(leader({ switchoverRequested: true, replication: { standbyStreaming: true } })), ['fence', 'begin-handover']);
  const d = decide(leader({ peer: { last: hb({ term: 4 }) } }));
  t.deepEqual(d.actions, [{ kind: 'fence' }, { kind: 'demote-and-rejoin', term: 4, leader: B }]);
});

test('follower takes a handover only when it has every commit and well before the timeout', (t) => {
  const yielding = (o: Partial<Heartbeat>) => hb({ role: 'fenced', holdsVip: false, handoverForMs: 1000, ...o });
  t.deepEqual(kinds(input({ peer: { last: yielding({}) } })), ['promote', 'take-vip']);
  t.like(decide(input({ peer: { last: yielding({}) } })).actions[0], { kind: 'promote', cause: 'handover' });
  t.deepEqual(kinds(input({ self: { lsn: '0/FF' }, peer: { last: yielding({}) } })), [], 'not caught up');
  t.deepEqual(kinds(input({ peer: { last: yielding({ holdsVip: true }) } })), []);
  t.deepEqual(kinds(input({ peer: { last: yielding({ handoverForMs: 11_500 }) } })), [], 'too close to the timeout');
  // broken primary: its LSN is unreliable, its synchronous mode vouches for our copy
  t.deepEqual(kinds(input({ self: { lsn: '0/1' }, peer: { last: yielding({ pg: 'down', pgHealthy: false }) } })), ['promote', 'take-vip', 'degrade-to-async']);
  t.deepEqual(kinds(input({ self: { lsn: '0/1' }, peer: { last: yielding({ pg: 'down', pgHealthy: false, syncRep: false }) } })), []);
});

test('fenced: rejoins a leader that outranks it, unfences next to a follower that hears it, reclaims alone only if it was async', (t) => {
  const fenced = (o: Over) => input(merge({ self: { role: 'fenced', lsn: '0/200' }, pg: { state: 'primary' } }, o));
  t.deepEqual(decide(fenced({ peer: { last: hb({ term: 4, timeline: 3 }) } })).actions, [{ kind: 'demote-and-rejoin', term: 4, leader: B }]);
  const follower = hb({ role: 'follower', pg: 'standby', holdsVip: false });
  t.deepEqual(kinds(fenced({ peer: { last: follower } })), ['unfence', 'take-vip']);
  t.deepEqual(kinds(fenced({ peer: { silentMs: 1500, last: { ...follower, peerSilentMs: 1000 } } })), [], 'peer has not heard me');
  t.deepEqual(kinds(fenced({ self: { lsn: '0/1' }, peer: { last: follower } })), ['begin-handover'], 'the follower holds newer data');
  const alone = { peer: { silentMs: 9000, last: follower }, vip: { silentMs: 9000 } };
  t.deepEqual(kinds(fenced(alone)), [], 'was synchronous: the peer may have promoted');
  t.deepEqual(decide(fenced({ ...alone, replication: { syncRep: false } })).actions, [
    { kind: 'promote', term: 4, cause: 'reclaim' },
    { kind: 'unfence' },
    { kind: 'take-vip' },
  ]);
  t.deepEqual(kinds(fenced({ ...alone, replication: { syncRep: false }, handover: { sinceMs: 60_000 } })), [], 'a yielding node never reclaims alone');
  t.deepEqual(kinds(fenced({ holdsVip: true, peer: { silentMs: 9000 } })), ['release-vip']);
});

test('fenced: a handover ends only on a fresh word from a peer that stayed follower', (t) => {
  const follower = hb({ role: 'follower', pg: 'standby', holdsVip: false });
  const yielding = (sinceMs: number, silentMs: number) =>
    input({ self: { role: 'fenced' }, pg: { state: 'primary' }, handover: { sinceMs }, peer: { silentMs, last: follower } });
  t.deepEqual(kinds(yielding(14_000, 0)), []);
  t.deepEqual(kinds(yielding(15_000, 0)), ['end-handover']);
  t.deepEqual(kinds(yielding(15_000, 2500)), [], 'its last word predates its cutoff');
  t.deepEqual(kinds(yielding(60_000, 5000)), [], 'silent peer: it may have taken over');
  t.deepEqual(decide(input({ self: { role: 'fenced' }, pg: { state: 'primary' }, handover: { sinceMs: 2000 }, peer: { last: hb({ term: 4 }) } })).actions, [
    { kind: 'demote-and-rejoin', term: 4, leader: B },
    { kind: 'end-handover' },
  ]);
});

test('applyToRole tracks the persisted role and term', (t) => {
  t.deepEqual(applyToRole({ role: 'follower', term: 3 }, [{ kind: 'promote', term: 4, cause: 'leader-lost' }, { kind: 'take-vip' }]), {
    role: 'leader',
    term: 4,
  });
  t.deepEqual(applyToRole({ role: 'leader', term: 4 }, [{ kind: 'fence' }]), { role: 'fenced', term: 4 });
  t.deepEqual(applyToRole({ role: 'fenced', term: 4 }, [{ kind: 'demote-and-rejoin', term: 6, leader: B }]), { role: 'follower', term: 6 });
  t.deepEqual(applyToRole({ role: 'follower', term: 4 }, [{ kind: 'adopt-term', term: 5 }]), { role: 'follower', term: 5 });
});

// ---- exhaustive grid: invariants of one node's decision ---------------------------------------

function* grid(): Generator<TickInput> {
  const roles: LivenessRole[] = ['leader', 'follower', 'fenced'];
  const pgs: [PgState, number][] = [
    ['primary', 0],
    ['standby', 0],
    ['down', 1000],
    ['down', 5000],
  ];
  const peerRoles: (LivenessRole | undefined)[] = [undefined, 'leader', 'follower', 'fenced'];
  for (const role of roles)
    for (const [state, badForMs] of pgs)
      for (const silentMs of [0, 1000, 2000, 3000, 5000, 60_000])
        for (const peerRole of peerRoles)
          for (const peerTerm of [2, 3, 4])
            for (const peerLsn of ['0/F0', '0/100', '0/110'])
              for (const witnessSilent of [0, 2000])
                for (const vipSilent of [0, 5000, 60_000])
                  for (const syncRep of [true, false])
                    for (const handover of [null, 2000, 20_000])
                      for (const peerHandover of [null, 1000])
                        for (const holdsVip of [false, true]) {
                          if (handover !== null && role !== 'fenced') continue;
                          const last =
                            peerRole === undefined
                              ? undefined
                              : hb({
                                  role: peerRole,
                                  term: peerTerm,
                                  lsn: peerLsn,
                                  pg: peerRole === 'follower' ? 'standby' : 'primary',
                                  holdsVip: peerRole === 'leader',
                                  syncRep,
                                  handoverForMs: peerRole === 'fenced' ? peerHandover : null,
                                });
                          yield input({
                            self: { role, term: 3 },
                            pg: { state, badForMs },
                            holdsVip,
                            peer: { silentMs, ...(last ? { last } : { last: undefined }) },
                            witness: { silentMs: witnessSilent, okForMs: witnessSilent ? 0 : 600_000 },
                            vip: { silentMs: vipSilent },
                            replication: { syncRep, standbySilentMs: silentMs, receiverSilentMs: silentMs, standbyStreaming: silentMs === 0 },
                            handover: handover === null ? null : { sinceMs: handover },
                            switchoverRequested: holdsVip && syncRep,
                          });
                        }
}

test('exhaustive grid: every decision obeys the safety rules', (t) => {
  let n = 0;
  const promotions = { follower: 0, fenced: 0 };
  for (const i of grid()) {
    n++;
    const d = decide(i);
    const k = d.actions.map((a) => a.kind);
    const has = (x: ActionKind) => k.includes(x);
    const f = facts(i);
    const ctx = () => JSON.stringify({ i, d });
    t.true(d.reason.length > 0);
    t.deepEqual(decide(structuredClone(i)), d, 'deterministic');
    t.is(new Set(k).size, k.length, `no duplicate action ${ctx()}`);
    if (has('take-vip') && (has('release-vip') || has('fence'))) t.fail(`VIP both ways ${ctx()}`);
    if (has('fence') && has('unfence')) t.fail(ctx());
    if (has('degrade-to-async') && has('restore-sync')) t.fail(ctx());
    // a leader never promotes; a follower never fences or unfences
    if (i.self.role === 'leader' && has('promote')) t.fail(ctx());
    if (i.self.role === 'follower' && (has('fence') || has('unfence'))) t.fail(ctx());
    // F1: a leader without peer and witness for fenceAfterMs always fences
    if (i.self.role === 'leader' && i.peer.silentMs >= C.fenceAfterMs && !f.witnessOk) t.true(has('fence'), ctx());
    // D1: never async in isolation
    if (has('degrade-to-async') && !f.peerAlive && !f.witnessOk) t.fail(`degraded in isolation ${ctx()}`);
    // writes taken back (promote/unfence) only with one of the justifications
    if (has('promote') || has('unfence')) {
      const hbk = i.peer.last;
      t.not(hbk?.role === 'leader' && f.peerAlive, true, `took writes next to a live leader ${ctx()}`);
      t.is(i.handover, null, `took writes while yielding ${ctx()}`);
      const alone = !f.peerAlive && i.peer.silentMs >= C.promoteAfterMs && f.witnessOk && f.vipSilent;
      const handover = f.peerAlive && hbk?.role === 'fenced' && hbk.handoverForMs !== null;
      const nextToFollower = f.peerAlive && i.self.role === 'fenced' && f.peerHearsMe;
      t.true(alone || handover || nextToFollower, `unjustified ${ctx()}`);
      if (alone && i.self.role === 'follower') t.false(f.leaderMayHaveDegraded, ctx());
      if (alone && i.self.role === 'fenced') t.false(i.replication.syncRep, ctx());
    }
    for (const a of d.actions) {
      if (a.kind === 'promote') {
        t.true(a.term > i.self.term && a.term > (i.peer.last?.term ?? 0), ctx());
        promotions[i.self.role === 'fenced' ? 'fenced' : 'follower']++;
      }
    }
  }
  t.true(n > 100_000, `grid size ${n}`);
  t.true(promotions.follower > 0 && promotions.fenced > 0, 'the grid reaches both promotion paths');
});

// ---- exhaustive pairs: two nodes that hear each other never end a step with two writers ---------

interface NodeState {
  nodeId: string;
  role: LivenessRole;
  term: number;
  lsn: string;
  pg: PgState;
  syncRep: boolean;
  handover: number | null;
}

function heartbeatOf(s: NodeState, silentMs: number): Heartbeat {
  return {
    nodeId: s.nodeId,
    role: s.role,
    term: s.term,
    timeline: 1,
    lsn: s.lsn,
    pg: s.pg,
    pgHealthy: s.pg !== 'down',
    syncRep: s.syncRep,
    handoverForMs: s.handover,
    peerSilentMs: silentMs,
    holdsVip: s.role === 'leader',
    heardSyncRep: null,
  };
}

function inputOf(s: NodeState, peer: NodeState, silentMs: number): TickInput {
  return input({
    self: { nodeId: s.nodeId, role: s.role, term: s.term, timeline: 1, lsn: s.lsn },
    pg: { state: s.pg, badForMs: s.pg === 'down' ? 5000 : 0 },
    holdsVip: s.role === 'leader',
    peer: { silentMs, last: heartbeatOf(peer, silentMs) },
    vip: { silentMs: peer.role === 'leader' ? 0 : 5000 },
    replication: {
      syncRep: s.syncRep,
      standbyStreaming: s.role === 'leader' && peer.role === 'follower' && peer.pg === 'standby',
      standbySilentMs: 0,
      receiverSilentMs: 0,
    },
    handover: s.handover === null ? null : { sinceMs: s.handover },
  });
}

test('exhaustive pairs in lockstep: hearing each other, a step never creates a second writer', (t) => {
  const states = (nodeId: string): NodeState[] => {
    const out: NodeState[] = [];
    for (const role of ['leader', 'follower', 'fenced'] as LivenessRole[])
      for (const term of [3, 4])
        for (const lsn of ['0/10', '0/20'])
          for (const pg of ['primary', 'standby', 'down'] as PgState[])
            for (const syncRep of [true, false])
              for (const handover of role === 'fenced' ? [null, 1000, 16_000] : [null]) out.push({ nodeId, role, term, lsn, pg, syncRep, handover });
    return out;
  };
  const writable = (s: { role: LivenessRole }) => s.role === 'leader';
  let pairs = 0;
  for (const a of states(A))
    for (const b of states(B))
      for (const silentMs of [0, 1000]) {
        pairs++;
        const da = decide(inputOf(a, b, silentMs));
        const db = decide(inputOf(b, a, silentMs));
        const na = applyToRole(a, da.actions);
        const nb = applyToRole(b, db.actions);
        const before = Number(writable(a)) + Number(writable(b));
        const after = Number(writable(na)) + Number(writable(nb));
        if (after > 1 && before <= 1) t.fail(`second writer: ${JSON.stringify({ a, b, da, db })}`);
        if (before === 2 && after === 2 && a.term !== b.term) t.fail(`split not resolved: ${JSON.stringify({ a, b, da, db })}`);
      }
  t.true(pairs > 1000);
});

test('a follower still rewinding its old primary never outranks the leader into handing over', (t) => {
  // The returning node reports a higher LSN from its stale primary while it rejoins.
  const rejoining = hb({ role: 'follower', term: 3, lsn: '0/900', pg: 'primary', pgHealthy: false, holdsVip: false, syncRep: false });
  const leader = input({ self: { role: 'leader', term: 3, lsn: '0/500' }, pg: { state: 'primary' }, holdsVip: true, peer: { last: rejoining } });
  t.false(kinds(leader).includes('fence'));
  // The same peer as a healthy standby with newer history does get the writes.
  t.deepEqual(kinds(input({ ...leader, peer: { silentMs: 500, last: { ...rejoining, term: 4, pg: 'standby', pgHealthy: true } } })), [
    'fence',
    'begin-handover',
  ]);
});

test("a leader whose own LSN look is older than its follower's heartbeat keeps the writes: the follower's WAL came from it", (t) => {
  // Seen under emulation: the leader's samples timed out while Kine kept writing, so its known LSN
  // lagged the position its synchronous standby then reported; it handed over a healthy primary.
  const streaming = hb({ role: 'follower', term: 3, timeline: 2, lsn: '0/900', pg: 'standby', holdsVip: false });
  const leader = input({ self: { role: 'leader', term: 3, timeline: 2, lsn: '0/500' }, pg: { state: 'primary' }, holdsVip: true, peer: { last: streaming } });
  t.deepEqual(kinds(leader), []);
  // A follower on a newer timeline (it was promoted since) still gets the writes.
  t.deepEqual(kinds(input({ ...leader, peer: { silentMs: 500, last: { ...streaming, timeline: 3 } } })), ['fence', 'begin-handover']);
  // So does a fenced peer holding more WAL than this leader (a healed split: its history is not mine).
  t.deepEqual(kinds(input({ ...leader, peer: { silentMs: 500, last: { ...streaming, role: 'fenced', pg: 'primary' } } })), ['fence', 'begin-handover']);
});

test('a step-down preempts a running batch, never another step-down; every action has a deadline', (t) => {
  t.true(preempts(['promote'], [{ kind: 'fence' }]), 'a hung pg_promote does not hold the fence');
  t.true(preempts(['restore-sync'], [{ kind: 'release-vip' }]));
  t.true(preempts(['take-vip'], [{ kind: 'demote-and-rejoin', term: 4, leader: 'b'.repeat(32) }]));
  t.false(preempts(['demote-and-rejoin'], [{ kind: 'demote-and-rejoin', term: 4, leader: 'b'.repeat(32) }]), 'a long rejoin is not restarted');
  t.false(preempts(['fence'], [{ kind: 'fence' }]));
  t.false(preempts(['degrade-to-async'], [{ kind: 'promote', term: 3, cause: 'leader-lost' }]), 'only step-downs preempt');
  t.false(preempts([], []));
  const kinds = [
    'promote',
    'take-vip',
    'release-vip',
    'fence',
    'unfence',
    'degrade-to-async',
    'restore-sync',
    'demote-and-rejoin',
    'adopt-term',
    'begin-handover',
    'end-handover',
    'arbiter-lease',
  ] as const;
  t.deepEqual(Object.keys(ACTION_DEADLINE_MS).sort(), [...kinds].sort());
  for (const k of kinds) t.true(ACTION_DEADLINE_MS[k] > 0 && Number.isFinite(ACTION_DEADLINE_MS[k]), k);
});

test('a planned switchover stands for switchoverRequestMs, then is dropped', (t) => {
  t.true(switchoverStands(0, C));
  t.true(switchoverStands(C.switchoverRequestMs, C));
  t.false(switchoverStands(C.switchoverRequestMs + 1, C));
});

test('a failing state disk counts as a PostgreSQL in trouble: the leader hands over, a follower neither promotes nor claims health', (t) => {
  const follower = hb({ role: 'follower', pg: 'standby', holdsVip: false, lsn: '0/F0' });
  const leader = (o: Over) => input(merge({ self: { role: 'leader' }, pg: { state: 'primary' }, holdsVip: true, peer: { last: follower } }, o));
  t.deepEqual(kinds(leader({ disk: { badForMs: 3000 } })), ['fence', 'begin-handover']);
  t.deepEqual(kinds(leader({ disk: { badForMs: 1000 } })), [], 'one slow or failed write is not yet a handover');
  t.regex(decide(leader({ disk: { badForMs: 1000 } })).reason, /state disk failing for 1000 ms/);
  // The leader is gone: a follower whose own disk fails does not take over.
  const lost = input({ peer: { silentMs: 9000 }, vip: { silentMs: 9000 }, disk: { badForMs: 5000 } });
  t.deepEqual(kinds(lost), []);
  t.regex(decide(lost).reason, /my PostgreSQL is standby \(bad for 5000 ms\)/);
  t.false(healthyInRole({ pg: { state: 'standby', badForMs: 0 }, disk: { badForMs: 1 } }));
  t.true(healthyInRole({ pg: { state: 'standby', badForMs: 0 }, disk: { badForMs: 0 } }));
});

test('a paced config multiplies every silence and deadline, keeps the intervals, and keeps every safety ordering', (t) => {
  for (const scale of [1, 1.5, 2, 3, 7.3, 10]) {
    const p = pacedLivenessConfig(scale);
    t.deepEqual(validateTimeouts(p), [], `scale ${scale}`);
    t.is(p.fenceAfterMs, Math.round(C.fenceAfterMs * scale));
    t.is(p.promoteAfterMs, Math.round(C.promoteAfterMs * scale));
    t.is(p.catchupGraceMs, Math.round(C.catchupGraceMs * scale));
    t.is(p.tickMs, C.tickMs);
    t.is(p.heartbeatIntervalMs, C.heartbeatIntervalMs);
    t.is(p.vipProbeIntervalMs, C.vipProbeIntervalMs);
    t.is(p.restoreSyncMaxLagBytes, C.restoreSyncMaxLagBytes);
  }
  t.deepEqual(pacedLivenessConfig(1), { ...C });
  for (const bad of [0, 0.5, 11, Number.NaN]) t.throws(() => pacedLivenessConfig(bad), { message: /failover\.timeScale must be from 1 to 10/ });
});

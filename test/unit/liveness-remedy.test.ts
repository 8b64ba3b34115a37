import test from 'ava';
import {
  HANDOVER_GRACE_MS,
  pgRemedy,
  STANDBY_REBUILD_AFTER_FAILURES,
  standbyThere,
  waitsForHandover,
  type PgRemedyInput,
} from '../../firstboot/src/liveness/core/remedy.ts';
import { DEFAULT_LIVENESS_CONFIG as C, type Heartbeat } from '../../firstboot/src/liveness/core/types.ts';

const peer = (over: Partial<Heartbeat>): Heartbeat => ({
  nodeId: '2'.repeat(32),
  role: 'follower',
  term: 3,
  timeline: 2,
  lsn: '0/100',
  pg: 'standby',
  pgHealthy: true,
  syncRep: false,
  handoverForMs: null,
  peerSilentMs: 0,
  holdsVip: false,
  heardSyncRep: true,
  ...over,
});

const down = (over: Partial<PgRemedyInput>): PgRemedyInput => ({
  role: 'leader',
  downForMs: 1000,
  serverStopped: true,
  peer: peer({}),
  peerAlive: true,
  wasSync: true,
  startFailures: 0,
  diskFull: false,
  ...over,
});

test('a leader whose primary died next to a healthy synchronous standby waits for the handover, then restarts it anyway', (t) => {
  t.is(pgRemedy(down({}), C).kind, 'wait');
  t.is(pgRemedy(down({ downForMs: C.pgHandoverAfterMs + HANDOVER_GRACE_MS }), C).kind, 'restart', 'the handover did not happen in time');
  t.is(pgRemedy(down({ wasSync: false }), C).kind, 'restart', 'an async standby lacks commits: come back in place');
  t.is(pgRemedy(down({ peerAlive: false }), C).kind, 'restart');
  t.is(pgRemedy(down({ peer: peer({ pgHealthy: false }) }), C).kind, 'restart');
  t.is(pgRemedy(down({ role: 'fenced' }), C).kind, 'restart', 'a fenced primary comes back read-only');
});

test('a server process that still runs (hung, stopping) is left alone', (t) => {
  t.is(pgRemedy(down({ role: 'follower', serverStopped: false, peer: peer({ role: 'leader' }) }), C).kind, 'wait');
});

test('a standby that keeps failing is copied afresh from a heard leader, unless its disk was full', (t) => {
  const follower = { role: 'follower' as const, peer: peer({ role: 'leader', pg: 'primary' }) };
  t.is(pgRemedy(down({ ...follower, startFailures: STANDBY_REBUILD_AFTER_FAILURES - 1 }), C).kind, 'restart');
  t.is(pgRemedy(down({ ...follower, startFailures: STANDBY_REBUILD_AFTER_FAILURES }), C).kind, 'rebuild-standby');
  const full = pgRemedy(down({ ...follower, startFailures: STANDBY_REBUILD_AFTER_FAILURES, diskFull: true }), C);
  t.is(full.kind, 'restart');
  t.regex(full.reason, /disk was full/);
  t.is(pgRemedy(down({ ...follower, startFailures: 20, peerAlive: false }), C).kind, 'restart', 'no leader heard: nothing to copy from');
});

test('the handover wait is decided from heartbeat facts alone, before the loop looks at the server or its log', (t) => {
  const { serverStopped: _s, startFailures: _f, diskFull: _d, ...facts } = down({});
  t.true(waitsForHandover(facts, C));
  t.false(waitsForHandover({ ...facts, downForMs: C.pgHandoverAfterMs + HANDOVER_GRACE_MS }, C));
  t.false(waitsForHandover({ ...facts, role: 'follower' }, C));
  // The same answer pgRemedy gives whatever the server looks like.
  t.is(pgRemedy(down({ serverStopped: false, diskFull: true }), C).kind, 'wait');
});

test('a standby catching up counts as there for catchupGraceMs, then as gone', (t) => {
  t.true(standbyThere({ streaming: true, connected: true, catchupForMs: 0 }, C));
  t.true(standbyThere({ streaming: false, connected: true, catchupForMs: C.catchupGraceMs - 1 }, C), 'a reconnect catching up is not a standby gone');
  t.false(standbyThere({ streaming: false, connected: true, catchupForMs: C.catchupGraceMs }, C), 'one that never catches up is');
  t.false(standbyThere({ streaming: false, connected: false, catchupForMs: 0 }, C));
});

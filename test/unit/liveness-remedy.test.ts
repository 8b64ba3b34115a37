import test from 'ava';
import { HANDOVER_GRACE_MS, pgRemedy, STANDBY_REBUILD_AFTER_FAILURES, type PgRemedyInput } from '../../firstboot/src/liveness/core/remedy.ts';
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

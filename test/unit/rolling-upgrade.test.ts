import test from 'ava';
import { boxView, pairProblems, planRolling, stepVerdict, unreachable } from '../../builder/src/remote/core/rolling.ts';

const status = (role: string, version: string, o: { sync?: boolean; streaming?: boolean; last?: object; trial?: boolean } = {}) => ({
  name: `node-${role}`,
  phase: 'provisioned',
  role,
  term: 3,
  liveness: {
    syncRep: o.sync ?? role === 'leader',
    standbyStreaming: role === 'leader' && (o.streaming ?? true),
    receiverStreaming: role === 'follower' && (o.streaming ?? true),
  },
  upgrade: {
    version,
    busy: false,
    slots: o.trial ? { booted: 'b', committed: 'a', trying: 'b' } : { booted: 'a', committed: 'a', trying: null },
    ...(o.last ? { last: o.last } : {}),
  },
});
const A = '192.0.2.11';
const B = '192.0.2.12';

test('a healthy pair plans follower, switchover, old leader; boxes already on the target are skipped', (t) => {
  const boxes = [boxView(A, status('leader', '0.1.0')), boxView(B, status('follower', '0.1.0'))];
  t.deepEqual(pairProblems(boxes), []);
  t.deepEqual(planRolling(boxes, '0.2.0'), [
    { kind: 'upgrade', host: B, from: '0.1.0' },
    { kind: 'switchover', from: A, to: B },
    { kind: 'upgrade', host: A, from: '0.1.0' },
  ]);
  // Resumed after the follower was done: only the switchover and the leader are left.
  const half = [boxView(A, status('leader', '0.1.0')), boxView(B, status('follower', '0.2.0'))];
  t.deepEqual(
    planRolling(half, '0.2.0').map((s) => s.kind),
    ['switchover', 'upgrade'],
  );
  t.deepEqual(planRolling([boxView(A, status('leader', '0.2.0')), boxView(B, status('follower', '0.2.0'))], '0.2.0'), []);
});

test('an unhealthy pair is refused before anything changes, naming each problem', (t) => {
  t.deepEqual(pairProblems([boxView(A, status('leader', '0.1.0', { sync: false })), boxView(B, status('follower', '0.1.0'))]), [
    `${A}: replication is asynchronous (the leader is not waiting for its standby)`,
  ]);
  t.deepEqual(pairProblems([boxView(A, status('leader', '0.1.0')), unreachable(B, 'connect ETIMEDOUT')]), [`${B}: connect ETIMEDOUT`]);
  t.deepEqual(pairProblems([boxView(A, status('leader', '0.1.0')), boxView(B, status('follower', '0.1.0', { streaming: false, trial: true }))]), [
    `node-follower (${B}): not streaming from the leader`,
    `node-follower (${B}): a trial slot is not committed yet`,
  ]);
});

test('an upgrade step waits for the commit and the pair in sync, and fails on a rollback', (t) => {
  const step = { kind: 'upgrade' as const, host: B };
  const leader = boxView(A, status('leader', '0.1.0'));
  t.is(stepVerdict(step, [leader, unreachable(B, 'ECONNREFUSED')], '0.2.0').state, 'wait');
  const trial = boxView(B, status('follower', '0.2.0', { trial: true, last: { state: 'trying', to: { version: '0.2.0' } } }));
  t.like(stepVerdict(step, [leader, trial], '0.2.0'), { state: 'wait', why: `${B} runs 0.2.0 on trial (health gate)` });
  const committed = boxView(B, status('follower', '0.2.0', { last: { state: 'committed', to: { version: '0.2.0' } } }));
  t.deepEqual(stepVerdict(step, [leader, committed], '0.2.0'), { state: 'done' });
  const asyncLeader = boxView(A, status('leader', '0.1.0', { sync: false }));
  t.is(stepVerdict(step, [asyncLeader, committed], '0.2.0').state, 'wait');
  const rolledBack = boxView(B, status('follower', '0.1.0', { last: { state: 'rolled-back', reason: 'health gate not passed', to: { version: '0.2.0' } } }));
  t.deepEqual(stepVerdict(step, [leader, rolledBack], '0.2.0'), {
    state: 'failed',
    reason: `${B}: the upgrade to 0.2.0 was rolled back: health gate not passed`,
  });
});

test('a switchover is done when the other box leads and the pair is whole again', (t) => {
  const step = { kind: 'switchover' as const, from: A, to: B };
  t.is(stepVerdict(step, [boxView(A, status('leader', '0.1.0')), boxView(B, status('follower', '0.2.0'))], '0.2.0').state, 'wait');
  t.deepEqual(stepVerdict(step, [boxView(A, status('follower', '0.1.0')), boxView(B, status('leader', '0.2.0'))], '0.2.0'), { state: 'done' });
});

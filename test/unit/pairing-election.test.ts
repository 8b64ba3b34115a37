import test from 'ava';
import { compareHistory, parseLsn } from '../../firstboot/src/core/history.ts';
import { decideLeader, decidePair, shouldDial, type Candidate } from '../../firstboot/src/pairing/core/election.ts';

const A = '1'.repeat(32);
const B = '2'.repeat(32);

function cand(nodeId: string, over: Partial<Candidate> = {}): Candidate {
  return { nodeId, committed: false, term: 0, timeline: 0, lsn: '0/0', ...over };
}

test('LSNs parse as 64-bit positions and compare numerically, not as text', (t) => {
  t.is(parseLsn('0/0'), 0n);
  t.is(parseLsn('1/0'), 1n << 32n);
  t.is(parseLsn('16/B374D848'), (0x16n << 32n) | 0xb374d848n);
  t.true(parseLsn('0/A0000000') > parseLsn('0/9FFFFFFF'));
  t.true(parseLsn('0/10') > parseLsn('0/9'));
  for (const bad of ['', '0', '0/', '/0', '0/0/0', 'g/0', '123456789/0', ' 0/0']) t.throws(() => parseLsn(bad), undefined, bad);
});

test('committed state beats uncommitted, whatever the other fields say', (t) => {
  const a = cand(A, { term: 9, timeline: 9, lsn: 'F/0' });
  const b = cand(B, { committed: true, term: 1 });
  t.is(decideLeader(a, b), B);
  t.is(decideLeader(a, b, A), B);
});

test('between committed nodes the higher term, then timeline, then LSN wins', (t) => {
  const base = { committed: true, term: 3, timeline: 2, lsn: '0/5000000' };
  t.is(decideLeader(cand(A, base), cand(B, { ...base, term: 4 })), B);
  t.is(decideLeader(cand(A, { ...base, timeline: 3 }), cand(B, base)), A);
  t.is(decideLeader(cand(A, base), cand(B, { ...base, lsn: '0/5000001' })), B);
  t.is(decideLeader(cand(A, { ...base, term: 5, timeline: 1, lsn: '0/0' }), cand(B, { ...base, term: 4, timeline: 9, lsn: 'F/0' })), A);
  // progress beats the preferred leader
  t.is(decideLeader(cand(A, base), cand(B, { ...base, lsn: '1/0' }), A), B);
});

test('then the preferred leader (by node name or node id), then the lower node id', (t) => {
  t.is(decideLeader(cand(A), cand(B)), A);
  t.is(decideLeader(cand(A, { name: 'edge-1' }), cand(B, { name: 'edge-2' }), 'edge-2'), B);
  t.is(decideLeader(cand(A), cand(B), B), B);
  t.is(decideLeader(cand(A, { name: 'x' }), cand(B, { name: 'x' }), 'x'), A, 'both preferred: falls through to the node id');
  t.is(decideLeader(cand(A), cand(B), 'nobody'), A);
  const equal = { committed: true, term: 2, timeline: 1, lsn: '0/1' };
  t.is(decideLeader(cand(A, equal), cand(B, { ...equal, name: 'p' }), 'p'), B);
});

test('identical node ids are refused (cloned disk)', (t) => {
  t.throws(() => decideLeader(cand(A), cand(A)), { message: /cloned/ });
});

test('exhaustive: symmetric, returns one of the two, and agrees with the stated rule order', (t) => {
  const ids = ['0'.repeat(32), `${'8'.repeat(31)}0`, 'f'.repeat(32)];
  const names = [undefined, 'n1', 'n2'];
  const lsns = ['0/0', '0/FF', '1/0'];
  const cands: Candidate[] = [];
  for (const nodeId of ids)
    for (const committed of [false, true])
      for (const term of [0, 1, 2])
        for (const timeline of [0, 1])
          for (const lsn of lsns) for (const name of names) cands.push(cand(nodeId, { committed, term, timeline, lsn, ...(name ? { name } : {}) }));
  let checked = 0;
  for (const a of cands) {
    for (const b of cands) {
      if (a.nodeId === b.nodeId) continue;
      for (const pref of [undefined, 'n1', ids[2]]) {
        const w = decideLeader(a, b, pref);
        if (w !== decideLeader(b, a, pref)) return t.fail(`asymmetric for ${JSON.stringify([a, b, pref])}`);
        if (w !== a.nodeId && w !== b.nodeId) return t.fail('winner is neither candidate');
        const [win, lose] = w === a.nodeId ? [a, b] : [b, a];
        // Rule 1: never lose to an uncommitted node while committed; never lose committed progress.
        if (lose.committed && !win.committed) return t.fail('uncommitted beat committed');
        if (win.committed && lose.committed && compareHistory(win, lose) < 0) return t.fail('less progress won');
        const tied = win.committed === lose.committed && (!win.committed || compareHistory(win, lose) === 0);
        const pw = pref !== undefined && (win.nodeId === pref || win.name === pref);
        const pl = pref !== undefined && (lose.nodeId === pref || lose.name === pref);
        if (tied && pl && !pw) return t.fail('preferred leader lost a tie');
        if (tied && pw === pl && win.nodeId > lose.nodeId) return t.fail('higher node id won a full tie');
        const d1 = decidePair(a, b, pref);
        const d2 = decidePair(b, a, pref);
        if (JSON.stringify(d1) !== JSON.stringify(d2)) return t.fail('decidePair asymmetric');
        checked++;
      }
    }
  }
  t.true(checked > 100_000, `${checked} combinations`);
});

test('decidePair: a fresh pair gets max(term) + 1; committed state and a persisted agreement are re-confirmed', (t) => {
  t.deepEqual(decidePair(cand(A), cand(B)), { leader: A, follower: B, term: 1 });
  t.deepEqual(decidePair(cand(A, { term: 3 }), cand(B, { term: 1 })), { leader: A, follower: B, term: 4 });
  // both persisted the agreement (crash after persisting, before provisioning): same answer, same term
  const agreed = { term: 1, leader: A };
  t.deepEqual(decidePair(cand(A, agreed), cand(B, agreed)), { leader: A, follower: B, term: 1 });
  // only one persisted it: a new term, but still the same leader
  t.deepEqual(decidePair(cand(A, agreed), cand(B)), { leader: A, follower: B, term: 2 });
  // provisioned cluster: B committed at term 4, re-confirmed at term 4 even though A is preferred
  t.deepEqual(decidePair(cand(A, { term: 2 }), cand(B, { committed: true, term: 4, timeline: 1, lsn: '0/3000060' }), A), { leader: B, follower: A, term: 4 });
});

test('the lower node id dials', (t) => {
  t.true(shouldDial(A, B));
  t.false(shouldDial(B, A));
});

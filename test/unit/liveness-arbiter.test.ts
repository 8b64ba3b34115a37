import test from 'ava';
import { ARBITER_START, leaseAnswer, type ArbiterState, type LeaseRequest } from '../../firstboot/src/liveness/core/arbiter.ts';

const ask = (s: ArbiterState, node: string, term: number, o: Partial<LeaseRequest> = {}) =>
  leaseAnswer(s, { node, term, alone: false, peerSilent: true, ...o });

test('one lease per term: the first asker of a newer term gets it, the other is refused and learns the term', (t) => {
  const first = ask(ARBITER_START, 'node-b', 2, { alone: true });
  t.true(first.granted);
  t.deepEqual(first.state, { term: 2, holder: 'node-b', alone: true });
  const late = ask(first.state, 'node-a', 2);
  t.false(late.granted);
  t.is(late.state, first.state, 'a refusal changes nothing');
  t.regex(late.reason, /term 2 is leased to node-b/);
  const older = ask(first.state, 'node-a', 1, { alone: true });
  t.false(older.granted, 'a leader of an older term may not go async');
  t.is(older.state.term, 2);
});

test('a holder that commits alone blocks a takeover by a node that does not hear it, until it reports sync again', (t) => {
  const alone = ask(ARBITER_START, 'node-a', 1, { alone: true }).state;
  const takeover = ask(alone, 'node-b', 2, { alone: true, peerSilent: true });
  t.false(takeover.granted);
  t.regex(takeover.reason, /node-a leads term 1 without its standby/);
  t.true(ask(alone, 'node-b', 2, { peerSilent: false }).granted, 'a handover (the requester hears the holder) passes');
  const synced = ask(alone, 'node-a', 1, { alone: false });
  t.true(synced.granted, 'the holder renews its own term');
  t.true(ask(synced.state, 'node-b', 2, { alone: true }).granted, 'then a takeover is allowed: the standby had every commit');
});

test('a holder renews its own term, and may take a newer one itself', (t) => {
  const s = ask(ARBITER_START, 'node-a', 3).state;
  t.true(ask(s, 'node-a', 3, { alone: true }).granted);
  t.deepEqual(ask(s, 'node-a', 4).state, { term: 4, holder: 'node-a', alone: false });
});

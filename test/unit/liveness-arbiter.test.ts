import test from 'ava';
import {
  ARBITER_START,
  leaseAnswer,
  type ArbiterState,
  type LeaseRequest,
  ARBITER_VIEW_START,
  arbiterTickInput,
  arbiterViewAfter,
} from '../../firstboot/src/liveness/core/arbiter.ts';

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

test("a node's view of the arbiter: its own lease clears a newer term; another's newer term is kept only while above its own", (t) => {
  let view = arbiterViewAfter(ARBITER_VIEW_START, { term: 3, holder: 'b', alone: false }, 'a', 2);
  t.deepEqual(view, { lease: null, newerTerm: 3 }, 'b holds a newer term than a');
  t.deepEqual(arbiterViewAfter(view, { term: 2, holder: 'b', alone: false }, 'a', 2), view, 'an older answer changes nothing');
  t.deepEqual(arbiterTickInput(view, 2, 40), { lease: null, newerTerm: 3, silentMs: 40 });
  t.is(arbiterTickInput(view, 3, 0).newerTerm, null, 'a caught up with term 3 (it followed b): no newer term');
  view = arbiterViewAfter(view, { term: 4, holder: 'a', alone: true }, 'a', 3);
  t.deepEqual(view, { lease: { term: 4, alone: true }, newerTerm: null }, 'a lease of its own supersedes what it knew');
});

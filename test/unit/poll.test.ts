import test from 'ava';
import { eventually } from '../helpers/poll.ts';

test('eventually retries through undefined and throws until check returns a value', async (t) => {
  let calls = 0;
  const v = await eventually(
    'the third call',
    1000,
    () => {
      calls++;
      if (calls === 1) throw new Error('not yet');
      return calls === 3 ? 'done' : undefined;
    },
    1,
  );
  t.is(v, 'done');
  t.is(calls, 3);
});

test('eventually times out naming what it waited for and the last error, folded to one line', async (t) => {
  const err = await t.throwsAsync(eventually('the impossible', 20, () => Promise.reject(new Error('refused\n  by peer')), 5));
  t.is(err?.message, 'timed out after 0.02 s waiting for the impossible (last error: refused by peer)');
});

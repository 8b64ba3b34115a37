import test from 'ava';
import { logsOccurrence, streakAfter, type Streak } from '../../firstboot/src/core/streak.ts';

/** Feeds keys in order; returns which occurrences would be logged (by index) and the last streak. */
function feed(keys: string[], every: number): { logged: number[]; last: Streak | undefined } {
  let s: Streak | undefined;
  const logged: number[] = [];
  keys.forEach((k, i) => {
    s = streakAfter(s, k);
    if (logsOccurrence(s, every)) logged.push(i);
  });
  return { logged, last: s };
}

test('the same event 130 times in a row is logged at its first occurrence and then every 60th repeat', (t) => {
  const { logged, last } = feed(
    Array.from({ length: 130 }, () => 'arbiter unreachable'),
    60,
  );
  t.deepEqual(logged, [0, 60, 120]);
  t.deepEqual(last, { key: 'arbiter unreachable', repeats: 129 });
});

test('a different event starts a new streak and is logged at once', (t) => {
  const { logged, last } = feed(['a', 'a', 'a', 'b', 'b', 'a'], 60);
  t.deepEqual(logged, [0, 3, 5]);
  t.deepEqual(last, { key: 'a', repeats: 0 });
});

test('every = 1 logs every occurrence', (t) => {
  t.deepEqual(feed(['x', 'x', 'x'], 1).logged, [0, 1, 2]);
});

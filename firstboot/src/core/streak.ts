/**
 * The same event repeating in a row (a batch failing the same way every tick, an arbiter refusing
 * the same node the same lease): counted, and logged at its first occurrence and then once every
 * `every` repeats, so a fault that lasts a minute is a handful of log lines, not hundreds. Pure:
 * the liveness loop and the arbiter keep their streaks, this decides.
 */
export interface Streak {
  /** What repeats (an error text, a refusal): a different key starts a new streak. */
  key: string;
  /** Occurrences after the first. */
  repeats: number;
}

/** The streak after one more occurrence of `key`. */
export function streakAfter(prev: Streak | undefined, key: string): Streak {
  return prev?.key === key ? { key, repeats: prev.repeats + 1 } : { key, repeats: 0 };
}

/** Whether this occurrence is logged: the first, then every `every`th repeat. */
export function logsOccurrence(s: Streak, every: number): boolean {
  return s.repeats % every === 0;
}

/**
 * A queue that runs asynchronous steps one after the other, never interleaved, whatever the one
 * before did (resolved or threw): the VIP's bind and release, the arbiter's read-decide-write of
 * its lease state.
 */
export type Serial = <T>(step: () => T | Promise<T>) => Promise<T>;

export function serialQueue(): Serial {
  let tail: Promise<unknown> = Promise.resolve();
  return <T>(step: () => T | Promise<T>): Promise<T> => {
    const next = tail.then(step, step);
    tail = next.catch(() => undefined);
    return next;
  };
}

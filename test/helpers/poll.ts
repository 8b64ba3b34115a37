/**
 * Waiting for a condition in tests and benches. Node builtins only: the fault writer child
 * (test/helpers/fault-matrix.ts) imports it and must start fast.
 */
import { setTimeout as sleep } from 'node:timers/promises';

/**
 * Polls `check` every `everyMs` until it returns a value (not undefined). A throw counts as "not
 * yet"; the timeout error names `what` and the last one.
 */
export async function eventually<T>(what: string, timeoutMs: number, check: () => Promise<T | undefined> | T | undefined, everyMs = 250): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last = '';
  for (;;) {
    try {
      const v = await check();
      if (v !== undefined) return v;
    } catch (e) {
      last = (e instanceof Error ? e.message : String(e)).replace(/\s+/g, ' ').trim();
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs / 1000} s waiting for ${what}${last ? ` (last error: ${last})` : ''}`);
    await sleep(everyMs);
  }
}

import type { Level, Logger } from '../../adapters/output.ts';

/**
 * Logs an event at most once per key per interval (monotonic clock), counting what it
 * suppressed. Keeps a flood of bad datagrams from flooding the journal.
 */
export class RateLimitedLog {
  #last = new Map<string, { at: number; suppressed: number }>();
  constructor(
    private readonly log: Logger,
    private readonly intervalMs = 30_000,
    private readonly maxKeys = 1024,
  ) {}

  event(key: string, level: Level, event: string, fields: Record<string, unknown>): void {
    const now = performance.now();
    const prev = this.#last.get(key);
    if (prev && now - prev.at < this.intervalMs) {
      prev.suppressed++;
      return;
    }
    if (this.#last.size >= this.maxKeys) this.#last.clear();
    this.#last.set(key, { at: now, suppressed: 0 });
    this.log.event(level, event, prev && prev.suppressed > 0 ? { ...fields, suppressed: prev.suppressed } : fields);
  }
}

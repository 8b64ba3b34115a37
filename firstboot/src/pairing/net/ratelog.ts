import type { Level, Logger } from '../../adapters/output.ts';

/**
 * Logs an event at most once per key per interval (monotonic clock), and at most `maxLines` lines
 * per interval in all, counting what it suppressed. Keeps a flood of bad datagrams (from any number
 * of forged source addresses, each a new key) from flooding the journal.
 */
export class RateLimitedLog {
  #last = new Map<string, { at: number; suppressed: number }>();
  #windowStart = 0;
  #lines = 0;
  #overflow = 0;
  constructor(
    private readonly log: Logger,
    private readonly intervalMs = 30_000,
    private readonly maxKeys = 1024,
    private readonly maxLines = 20,
  ) {}

  event(key: string, level: Level, event: string, fields: Record<string, unknown>): void {
    const now = performance.now();
    if (now - this.#windowStart >= this.intervalMs) {
      if (this.#overflow > 0) this.log.event('warn', 'log-lines-suppressed', { suppressed: this.#overflow, intervalMs: this.intervalMs });
      this.#windowStart = now;
      this.#lines = 0;
      this.#overflow = 0;
    }
    const prev = this.#last.get(key);
    if (prev && now - prev.at < this.intervalMs) {
      prev.suppressed++;
      return;
    }
    if (this.#lines >= this.maxLines) {
      this.#overflow++;
      return;
    }
    this.#lines++;
    if (this.#last.size >= this.maxKeys) this.#last.clear();
    this.#last.set(key, { at: now, suppressed: 0 });
    this.log.event(level, event, prev && prev.suppressed > 0 ? { ...fields, suppressed: prev.suppressed } : fields);
  }
}

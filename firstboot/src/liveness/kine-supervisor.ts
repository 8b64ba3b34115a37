/**
 * Keeps one Kine running against the current primary, as the liveness loop wants it: on the leader
 * its local PostgreSQL, elsewhere the VIP. A change of upstream restarts Kine, because its pooled
 * connections to a dead primary would hang until TCP gives up; a Kine that exits is started again.
 * Reconciliation runs in the background (a start waits for Kine to answer), never in a tick.
 */
import type { Logger } from '../adapters/output.ts';
import { kineHealth, startKine, type KineOptions, type KineProcess } from '../provision/kine.ts';

export interface KineSupervisorOptions extends Omit<KineOptions, 'db'> {
  port: number;
  log: Logger;
}

export class KineSupervisor {
  #proc: KineProcess | undefined;
  #exited = new WeakSet<KineProcess>();
  #upstream: string | undefined;
  #wanted: string | null = null;
  #running = false;
  #stopped = false;
  #retryAt = 0;
  healthy = false;

  constructor(private readonly o: KineSupervisorOptions) {}

  /** Takes over a Kine started during provisioning. */
  adopt(proc: KineProcess, upstreamHost: string): void {
    this.#track(proc, upstreamHost);
    this.#wanted = upstreamHost;
  }

  #track(proc: KineProcess, upstreamHost: string): void {
    this.#proc = proc;
    this.#upstream = upstreamHost;
    void proc.exited.then((how) => {
      this.#exited.add(proc);
      if (this.#proc === proc && !this.#stopped) {
        this.o.log.event('warn', 'kine-exited', { upstream: upstreamHost, ...how });
        this.want(this.#wanted);
      }
    });
  }

  get upstream(): string | undefined {
    return this.#proc ? this.#upstream : undefined;
  }

  /** Kine should run against `host` (null: not at all). Cheap; call every tick. */
  want(host: string | null): void {
    this.#wanted = host;
    if (!this.#running) void this.#reconcile();
  }

  /** Restart even with the same upstream (its connections may be stuck on a primary that went away). */
  restart(): void {
    this.#upstream = undefined;
    this.want(this.#wanted);
  }

  #checking = false;

  /** Refreshes `healthy` in the background (a Kine whose primary is gone answers only at its timeout). */
  checkHealth(): void {
    if (this.#checking) return;
    const proc = this.#proc;
    if (!proc) {
      this.healthy = false;
      return;
    }
    this.#checking = true;
    void kineHealth(proc.client, 1500)
      .then((h) => (this.healthy = h.ok && this.#proc === proc))
      .finally(() => (this.#checking = false));
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    await this.#proc?.stop();
    this.#proc = undefined;
  }

  async #reconcile(): Promise<void> {
    this.#running = true;
    try {
      while (!this.#stopped) {
        const wanted = this.#wanted;
        const proc = this.#proc;
        if (proc && (wanted !== this.#upstream || this.#exited.has(proc))) {
          this.#proc = undefined;
          // Killed, not asked: its pooled connections lead to a primary that is gone or moved, so
          // its graceful shutdown (up to 2 s of Kine's own) only delays the one that replaces it.
          await proc.stop(0);
          this.o.log.event('info', 'kine-stopped', { upstream: this.#upstream ?? null, wanted });
          continue;
        }
        if (proc || wanted === null || performance.now() < this.#retryAt) return;
        try {
          const started = await startKine({
            ...this.o,
            db: { host: wanted, port: this.o.port },
            // Against the VIP the primary may be moving: give up sooner, a newer wish may be waiting.
            startTimeoutMs: this.o.startTimeoutMs ?? (wanted === '127.0.0.1' ? 15_000 : 5000),
          });
          this.#track(started, wanted);
          this.o.log.event('info', 'kine-started', { upstream: `${wanted}:${this.o.port}`, pid: started.pid });
        } catch (e) {
          this.#retryAt = performance.now() + 2000;
          this.o.log.event('warn', 'kine-start-failed', { upstream: `${wanted}:${this.o.port}`, error: (e as Error).message });
          return;
        }
      }
    } finally {
      this.#running = false;
    }
  }
}

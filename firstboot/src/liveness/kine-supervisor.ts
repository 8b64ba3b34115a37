/**
 * The one owner of this box's Kine, from its first start at provisioning to the agent's stop: keeps
 * one Kine running against the current primary, as the agent wants it (on the leader its local
 * PostgreSQL, elsewhere the VIP). A change of upstream restarts Kine, because its pooled
 * connections to a dead primary would hang until TCP gives up; a Kine that exits is started again.
 * Reconciliation runs in the background (a start waits for Kine to answer), never in a tick.
 */
import type { Logger } from '../adapters/output.ts';
import { startKine, type KineOptions, type KineProcess } from '../provision/kine.ts';

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

  /**
   * Wants Kine against `host` and resolves once one runs against it and answers (provisioning
   * announces the cluster ready only then). Failed starts are retried meanwhile; rejects after
   * `timeoutMs` or when `signal` aborts.
   */
  async running(host: string, timeoutMs: number, signal: AbortSignal): Promise<void> {
    // A first start creates Kine's tables: no failover waits on it, so give each try more time.
    this.#firstStart = true;
    try {
      this.want(host);
      const deadline = performance.now() + timeoutMs;
      while (!(this.#proc && this.#upstream === host && !this.#exited.has(this.#proc))) {
        if (signal.aborted) throw new Error('stopped while starting Kine');
        if (performance.now() > deadline)
          throw new Error(`Kine did not start against ${host}:${this.o.port} within ${timeoutMs / 1000} s${this.#lastError ? `: ${this.#lastError}` : ''}`);
        await new Promise((r) => setTimeout(r, 250));
        this.want(host);
      }
    } finally {
      this.#firstStart = false;
    }
  }

  #lastError: string | undefined;
  #firstStart = false;

  /** Restart even with the same upstream (its connections may be stuck on a primary that went away). */
  restart(): void {
    this.#upstream = undefined;
    this.want(this.#wanted);
  }

  #held = false;

  /**
   * Stops Kine and keeps it stopped whatever want() asks (the liveness loop asks every tick) until
   * release(): a restore replaces the tables under it. Resolves once no Kine of ours runs.
   */
  async hold(timeoutMs = 15_000): Promise<void> {
    this.#held = true;
    this.want(this.#wanted);
    const deadline = performance.now() + timeoutMs;
    while (this.#proc) {
      if (performance.now() > deadline) throw new Error(`Kine did not stop within ${timeoutMs / 1000} s`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  /** Lets Kine run again (started at once against what is wanted). */
  release(): void {
    this.#held = false;
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
    void proc
      .health(1500)
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
        const wanted = this.#held ? null : this.#wanted;
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
            startTimeoutMs: this.o.startTimeoutMs ?? (this.#firstStart ? 30_000 : wanted === '127.0.0.1' ? 15_000 : 5000),
          });
          this.#track(started, wanted);
          this.#lastError = undefined;
          this.o.log.event('info', 'kine-started', { upstream: `${wanted}:${this.o.port}`, pid: started.pid });
        } catch (e) {
          this.#retryAt = performance.now() + 2000;
          this.#lastError = (e as Error).message;
          this.o.log.event('warn', 'kine-start-failed', { upstream: `${wanted}:${this.o.port}`, error: (e as Error).message });
          return;
        }
      }
    } finally {
      this.#running = false;
    }
  }
}

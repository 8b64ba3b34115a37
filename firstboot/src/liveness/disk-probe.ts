/**
 * Is the node's state disk still writable? A small write and fsync every couple of seconds into the
 * agent's state directory, at most one in flight: an error (EROFS, EIO, ENOSPC) makes the disk bad
 * from that moment, and so does a write still pending after `stallMs` (a stalled device). The
 * liveness core decides what that means (core/decide.ts: it counts as a PostgreSQL in trouble).
 */
import { open, rm } from 'node:fs/promises';
import { join } from 'node:path';

export interface DiskProbe {
  /** ms the disk has been bad (0 when the last probe went through), and the last error. */
  state(now: number): { badForMs: number; error?: string };
  stop(): Promise<void>;
}

export const DISK_PROBE_FILE = '.disk-probe';

/** `stallMs` is the liveness config's diskStallMs: it follows the site's pace. */
export function startDiskProbe(dir: string, o: { intervalMs?: number; stallMs: number }): DiskProbe {
  const intervalMs = o.intervalMs ?? 2000;
  const { stallMs } = o;
  const file = join(dir, DISK_PROBE_FILE);
  let badSince: number | undefined;
  let error: string | undefined;
  let inFlightSince: number | undefined;
  let stopped = false;
  const probe = async () => {
    if (inFlightSince !== undefined || stopped) return;
    const started = performance.now();
    inFlightSince = started;
    try {
      const f = await open(file, 'w', 0o600);
      try {
        await f.write(`${Date.now()}\n`);
        await f.sync();
      } finally {
        await f.close();
      }
      badSince = undefined;
      error = undefined;
    } catch (e) {
      badSince ??= started;
      error = (e as NodeJS.ErrnoException).code ?? (e as Error).message;
    } finally {
      inFlightSince = undefined;
    }
  };
  const timer = setInterval(() => void probe(), intervalMs);
  timer.unref();
  void probe();
  return {
    state(now) {
      const stalledSince = inFlightSince !== undefined && now - inFlightSince >= stallMs ? inFlightSince : undefined;
      const since = badSince ?? stalledSince;
      if (since === undefined) return { badForMs: 0 };
      return {
        badForMs: Math.max(1, Math.round(now - since)),
        ...(error ? { error } : stalledSince !== undefined ? { error: `write pending for ${Math.round(now - stalledSince)} ms` } : {}),
      };
    },
    async stop() {
      stopped = true;
      clearInterval(timer);
      await rm(file, { force: true }).catch(() => undefined);
    },
  };
}

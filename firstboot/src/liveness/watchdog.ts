/**
 * systemd watchdog (WatchdogSec= in geminik8s-agent.service). Until the liveness loop runs, a
 * responsive event loop is proof enough (the agent may wait days for its peer); from the loop's
 * first tick on only its ticks count, so a wedged loop, not just a dead process, gets the agent
 * restarted. Node has no unix datagram sockets, hence systemd-notify with the agent's pid
 * (NotifyAccess=all). Outside systemd (tests) it only records beats.
 */
import { runTool } from '../adapters/exec.ts';
import type { Logger } from '../adapters/output.ts';

export interface Watchdog {
  /** `idle`: the event loop turned; `loop`: the liveness loop ticked (from then on idle beats are ignored). */
  beat(source: 'idle' | 'loop'): void;
  stop(): void;
}

export function startWatchdog(env: NodeJS.ProcessEnv, log: Logger): Watchdog {
  let lastBeat = performance.now();
  let loopOwns = false;
  let notifier: NodeJS.Timeout | undefined;
  const idle = setInterval(() => watchdog.beat('idle'), 1000);
  idle.unref();
  const watchdog: Watchdog = {
    beat(source) {
      if (source === 'loop') loopOwns = true;
      else if (loopOwns) return;
      lastBeat = performance.now();
    },
    stop: () => {
      clearInterval(idle);
      if (notifier) clearInterval(notifier);
    },
  };
  const usec = Number(env.WATCHDOG_USEC ?? '');
  if (!env.NOTIFY_SOCKET || !Number.isFinite(usec) || usec <= 0) return watchdog;
  const periodMs = Math.max(1000, Math.floor(usec / 1000 / 3));
  log.event('info', 'watchdog-enabled', { periodMs, timeoutMs: Math.floor(usec / 1000) });
  notifier = setInterval(() => {
    const staleMs = performance.now() - lastBeat;
    if (staleMs > periodMs) {
      log.event('error', 'watchdog-withheld', { staleMs: Math.round(staleMs), owner: loopOwns ? 'liveness loop' : 'agent' });
      return;
    }
    runTool('systemd-notify', [`--pid=${process.pid}`, 'WATCHDOG=1'], { timeoutMs: periodMs }).catch((e: unknown) =>
      log.event('warn', 'watchdog-notify-failed', { error: (e as Error).message }),
    );
  }, periodMs);
  notifier.unref();
  return watchdog;
}

/**
 * systemd watchdog (WatchdogSec= in geminik8s-agent.service): the agent proves it is not hung by
 * sending WATCHDOG=1, but only while its liveness loop keeps ticking, so a wedged loop (not just a
 * dead process) gets the agent restarted. Node has no unix datagram sockets, hence systemd-notify
 * with the agent's pid (NotifyAccess=all). Outside systemd (tests) it does nothing.
 */
import { runTool } from '../adapters/exec.ts';
import type { Logger } from '../adapters/output.ts';

export function startWatchdog(env: NodeJS.ProcessEnv, lastTickAt: () => number, log: Logger): () => void {
  const usec = Number(env.WATCHDOG_USEC ?? '');
  if (!env.NOTIFY_SOCKET || !Number.isFinite(usec) || usec <= 0) return () => undefined;
  const periodMs = Math.max(1000, Math.floor(usec / 1000 / 3));
  log.event('info', 'watchdog-enabled', { periodMs, timeoutMs: Math.floor(usec / 1000) });
  const timer = setInterval(() => {
    const staleMs = performance.now() - lastTickAt();
    if (staleMs > periodMs) {
      log.event('error', 'watchdog-withheld', { staleMs: Math.round(staleMs) });
      return;
    }
    runTool('systemd-notify', [`--pid=${process.pid}`, 'WATCHDOG=1'], { timeoutMs: periodMs }).catch((e: unknown) =>
      log.event('warn', 'watchdog-notify-failed', { error: (e as Error).message }),
    );
  }, periodMs);
  return () => clearInterval(timer);
}

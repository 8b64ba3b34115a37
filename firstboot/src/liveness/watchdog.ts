/**
 * systemd watchdog (WatchdogSec= in geminik8s-agent.service). Until the liveness loop runs, a
 * responsive event loop is proof enough (the agent may wait days for its peer); from the loop's
 * first tick on only its ticks count, so a wedged loop, not just a dead process, gets the agent
 * restarted. Node has no unix datagram sockets, hence systemd-notify with the agent's pid
 * (NotifyAccess=all). Outside systemd (tests) it only records beats.
 *
 * Two deadlines: the unit's WatchdogSec is a start-up allowance (Node's start and the first local
 * steps on a slow or loaded CPU: under emulation the agent once used 23 s of CPU before its first
 * ping and was killed at a 30 s limit), and the first ping after the liveness loop takes over
 * tightens it to `loopTimeoutMs` (WATCHDOG_USEC=), what a wedged loop may cost.
 */
import { runTool } from '../adapters/exec.ts';
import type { Logger } from '../adapters/output.ts';

export interface Watchdog {
  /** `idle`: the event loop turned; `loop`: the liveness loop ticked (from then on idle beats are ignored). */
  beat(source: 'idle' | 'loop'): void;
  stop(): void;
}

/** How long the liveness loop may go without a tick before systemd restarts the agent. */
export const LOOP_WATCHDOG_MS = 30_000;

export function startWatchdog(env: NodeJS.ProcessEnv, log: Logger, loopTimeoutMs = LOOP_WATCHDOG_MS): Watchdog {
  let lastBeat = performance.now();
  let loopOwns = false;
  let tightened = false;
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
  const socket = env.NOTIFY_SOCKET;
  if (!socket || !Number.isFinite(usec) || usec <= 0) return watchdog;
  const startupMs = Math.floor(usec / 1000);
  const periodMs = Math.max(1000, Math.floor(Math.min(startupMs, loopTimeoutMs) / 3));
  log.event('info', 'watchdog-enabled', { periodMs, startupTimeoutMs: startupMs, loopTimeoutMs });
  const ping = () => {
    const staleMs = performance.now() - lastBeat;
    if (staleMs > periodMs) {
      log.event('error', 'watchdog-withheld', { staleMs: Math.round(staleMs), owner: loopOwns ? 'liveness loop' : 'agent' });
      return;
    }
    const tighten = loopOwns && !tightened;
    if (tighten) {
      tightened = true;
      log.event('info', 'watchdog-tightened', { timeoutMs: loopTimeoutMs });
    }
    runTool('systemd-notify', [`--pid=${process.pid}`, 'WATCHDOG=1', ...(tighten ? [`WATCHDOG_USEC=${loopTimeoutMs * 1000}`] : [])], {
      // Given here only: the agent's other children must not inherit it (see withoutNotifySocket).
      env: { NOTIFY_SOCKET: socket },
      timeoutMs: periodMs,
    }).catch((e: unknown) => log.event('warn', 'watchdog-notify-failed', { error: (e as Error).message }));
  };
  // At once: the start-up allowance counts from the agent's start, not from its first period.
  ping();
  notifier = setInterval(ping, periodMs);
  notifier.unref();
  return watchdog;
}

/**
 * The unit's notify socket and watchdog settings, removed from the agent's environment once the
 * watchdog has read them, so no child inherits them. The unit has NotifyAccess=all (the agent pings
 * through systemd-notify, a child), so systemd takes any process of the unit for the agent: a
 * PostgreSQL built with systemd support sends STOPPING=1 when the agent stops it (a rejoin, a
 * restart), systemd then holds the whole agent for stopping, sends nothing, and SIGKILLs it
 * TimeoutStopSec later ("State 'stop-sigterm' timed out", result 'timeout', no "Stopping" line).
 */
export function withoutNotifySocket(env: NodeJS.ProcessEnv): void {
  delete env.NOTIFY_SOCKET;
  delete env.WATCHDOG_USEC;
  delete env.WATCHDOG_PID;
}

/**
 * Long-running programs the agent starts (Kine, the Kubernetes programs), found again after the
 * agent itself restarted. They outlive an agent crash (the unit's KillMode=process), so their pids
 * cannot be trusted to have been recorded anywhere: a crash may fall between a spawn and any write.
 * They are found by what they run instead: the executable path (argv[0]) in this network
 * namespace (the nodes of a test pair share a host, each in its own namespace).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { closeSync, openSync, readFileSync, readdirSync, readlinkSync } from 'node:fs';

export interface RunningProcess {
  pid: number;
  argv: string[];
}

/** Processes in this network namespace whose argv[0] is `binary`. */
export function processesRunning(binary: string): RunningProcess[] {
  const ownNet = readlinkSync('/proc/self/ns/net');
  const found: RunningProcess[] = [];
  for (const entry of readdirSync('/proc')) {
    const pid = Number(entry);
    if (!Number.isInteger(pid) || pid <= 1 || pid === process.pid) continue;
    try {
      const argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
      if (argv.at(-1) === '') argv.pop();
      if (argv[0] !== binary || readlinkSync(`/proc/${pid}/ns/net`) !== ownNet || isZombie(pid)) continue;
      found.push({ pid, argv });
    } catch {
      // exited meanwhile
    }
  }
  return found;
}

function isZombie(pid: number): boolean {
  try {
    return readFileSync(`/proc/${pid}/stat`, 'utf8').includes(') Z ');
  } catch {
    return true;
  }
}

/** True once `pid` has exited (a zombie counts: it holds no socket, no file lock). */
export function hasExited(pid: number): boolean {
  return isZombie(pid);
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/**
 * Stops processes by pid: SIGTERM, SIGKILL after `graceMs`, and resolves once all are gone (a
 * listening socket is freed only at exit; a successor started sooner fails to bind).
 */
export async function stopProcesses(pids: number[], graceMs = 5000): Promise<void> {
  const signal = (sig: NodeJS.Signals) => {
    for (const pid of pids) {
      try {
        process.kill(pid, sig);
      } catch {
        // already gone
      }
    }
  };
  signal(graceMs > 0 ? 'SIGTERM' : 'SIGKILL');
  const killAt = Date.now() + graceMs;
  let killed = graceMs <= 0;
  // Bounded: a process in uninterruptible sleep may outlast SIGKILL; give up after 10 s more.
  for (const until = killAt + 10_000; !pids.every(hasExited) && Date.now() < until; ) {
    if (!killed && Date.now() >= killAt) {
      signal('SIGKILL');
      killed = true;
    }
    await sleep(50);
  }
}

export interface Daemon {
  pid: number;
  /** True when found running at start (started by an earlier agent), not spawned by this one. */
  adopted: boolean;
  /** Settles when the process is gone (for an adopted one, noticed within a second); `error` when it could not be started at all. */
  exited: Promise<DaemonExit>;
  stop(graceMs?: number): Promise<void>;
}

export interface DaemonExit {
  code: number | null;
  signal: NodeJS.Signals | null;
  error?: string;
}

export interface DaemonSpec {
  binary: string;
  args: string[];
  env?: Record<string, string>;
  /** stdout and stderr are appended here (default: discarded). */
  logFile?: string;
  runAs?: { uid: number; gid: number };
  /**
   * Added to the agent's own niceness before the program starts (through nice(1), so every thread
   * the program makes has it; it still runs as `binary`, which is how it is found again).
   */
  niceness?: number;
}

/** Starts `spec` as a child of the agent (it survives the agent under KillMode=process). */
export function spawnDaemon(spec: DaemonSpec): Daemon {
  const fd = spec.logFile ? openSync(spec.logFile, 'a', 0o640) : undefined;
  let child: ChildProcess;
  const [command, argv] = spec.niceness ? ['nice', ['-n', String(spec.niceness), spec.binary, ...spec.args]] : [spec.binary, spec.args];
  try {
    child = spawn(command, argv, { stdio: ['ignore', fd ?? 'ignore', fd ?? 'ignore'], env: { ...process.env, ...spec.env }, ...(spec.runAs ?? {}) });
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
  const exited = new Promise<DaemonExit>((resolve) => {
    child.once('exit', (code, signal) => resolve({ code, signal }));
    child.once('error', (e) => resolve({ code: null, signal: null, error: e.message }));
  });
  const pid = child.pid ?? -1;
  return { pid, adopted: false, exited, stop: (graceMs) => (pid > 0 ? stopProcesses([pid], graceMs) : Promise.resolve()) };
}

/** Watches a process this agent did not spawn (found by processesRunning). */
export function adoptDaemon(pid: number): Daemon {
  const exited = (async () => {
    // unref: watching an adopted process must not keep a stopping agent alive.
    while (!hasExited(pid)) await new Promise((r) => setTimeout(r, 1000).unref());
    return { code: null, signal: null };
  })();
  return { pid, adopted: true, exited, stop: (graceMs) => stopProcesses([pid], graceMs) };
}

/**
 * geminik8s-agent: entry point, run by systemd as geminik8s-agent.service on every boot.
 * `grow-data-partition` is the pre-mount step (geminik8s-grow-data.service);
 * `--version` prints the agent and embedded Node versions.
 */
import { agentPaths, runLocalSteps, runPartitionGrowth } from './agent.ts';
import { runCluster } from './cluster/run.ts';
import { clusterSettings } from './cluster/settings.ts';
import { MARKER } from './core/report.ts';
import { jsonLogger, openConsole } from './adapters/output.ts';
import { startWatchdog } from './liveness/watchdog.ts';
import { AGENT_VERSION } from './version.ts';

/**
 * Resolves on SIGTERM/SIGINT. Signal listeners do not keep Node's event loop alive, so a referenced
 * timer holds it open while the agent idles; it is cleared when the signal arrives.
 */
function shutdownSignal(controller: AbortController): Promise<NodeJS.Signals> {
  return new Promise((resolve) => {
    const keepAlive = setInterval(() => undefined, 2 ** 30);
    const stop = (signal: NodeJS.Signals) => {
      clearInterval(keepAlive);
      controller.abort();
      resolve(signal);
    };
    process.once('SIGTERM', stop);
    process.once('SIGINT', stop);
  });
}

async function main(args: string[]): Promise<number> {
  if (args.includes('--version')) {
    process.stdout.write(`geminik8s-agent ${AGENT_VERSION} (node ${process.version} ${process.arch})\n`);
    return 0;
  }
  const log = jsonLogger();
  const paths = agentPaths(process.env);
  if (args.length === 1 && args[0] === 'grow-data-partition') {
    const out = openConsole(paths.consolePath, log);
    const result = await runPartitionGrowth(paths, log, out);
    out.close();
    // A failed growth must not keep /data from mounting: the box works, only smaller.
    return result.kind === 'failed' ? 1 : 0;
  }
  if (args.length > 0) {
    process.stderr.write(`geminik8s-agent: unknown arguments: ${args.join(' ')} (usage: geminik8s-agent [--version | grow-data-partition])\n`);
    return 2;
  }
  log.event('info', 'start', { version: AGENT_VERSION, node: process.version, pid: process.pid, ...paths });
  const out = openConsole(paths.consolePath, log);
  const controller = new AbortController();
  const stopped = shutdownSignal(controller);
  const watchdog = startWatchdog(process.env, log);
  const fail = (e: unknown): number => {
    const message = (e as Error).message;
    log.event('error', 'fatal', { error: message, stack: (e as Error).stack });
    out.line(`${MARKER} failed ${message.replace(/\s+/g, ' ')}`);
    out.close();
    // systemd restarts the agent (Restart=on-failure); every stage resumes from hostmeta.json.
    return 1;
  };
  try {
    const local = await runLocalSteps(paths, log, out);
    if (local.site) {
      await runCluster({ settings: clusterSettings(process.env, paths.stateDir), site: local.site, stateDir: paths.stateDir, log, out, signal: controller.signal, watchdog }, local.meta);
    }
  } catch (e) {
    if (!controller.signal.aborted) return fail(e);
  }
  const signal = await stopped;
  log.event('info', 'stop', { signal });
  out.close();
  return 0;
}

// In a single-executable build argv is [binary, binary, ...args]; under node/tsx it is [node, script, ...args].
main(process.argv.slice(2)).then(
  (code) => {
    // Explicit: the idle keep-alive timer and a stopping Kine child must not hold the process.
    process.exit(code);
  },
  (e: unknown) => {
    process.stderr.write(`geminik8s-agent: ${(e as Error).stack ?? String(e)}\n`);
    process.exitCode = 1;
  },
);

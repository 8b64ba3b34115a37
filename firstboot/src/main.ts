/**
 * geminik8s-agent: entry point, run by systemd as geminik8s-agent.service on every boot.
 * `--version` prints the agent and embedded Node versions.
 */
import { agentPaths, runLocalSteps } from './agent.ts';
import { MARKER } from './core/report.ts';
import { jsonLogger, openConsole } from './adapters/output.ts';
import { AGENT_VERSION } from './version.ts';

/**
 * Resolves on SIGTERM/SIGINT. Signal listeners do not keep Node's event loop alive, so a referenced
 * timer holds it open while the agent idles; it is cleared when the signal arrives.
 */
function shutdownSignal(): Promise<NodeJS.Signals> {
  return new Promise((resolve) => {
    const keepAlive = setInterval(() => undefined, 2 ** 30);
    const stop = (signal: NodeJS.Signals) => {
      clearInterval(keepAlive);
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
  if (args.length > 0) {
    process.stderr.write(`geminik8s-agent: unknown arguments: ${args.join(' ')} (only --version is accepted)\n`);
    return 2;
  }
  const log = jsonLogger();
  const paths = agentPaths(process.env);
  log.event('info', 'start', { version: AGENT_VERSION, node: process.version, pid: process.pid, ...paths });
  const out = openConsole(paths.consolePath, log);
  try {
    await runLocalSteps(paths, log, out);
  } catch (e) {
    const message = (e as Error).message;
    log.event('error', 'fatal', { error: message, stack: (e as Error).stack });
    out.line(`${MARKER} failed ${message.replace(/\s+/g, ' ')}`);
    out.close();
    return 1;
  }
  const signal = await shutdownSignal();
  log.event('info', 'stop', { signal });
  out.close();
  return 0;
}

// In a single-executable build argv is [binary, binary, ...args]; under node/tsx it is [node, script, ...args].
main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (e: unknown) => {
    process.stderr.write(`geminik8s-agent: ${(e as Error).stack ?? String(e)}\n`);
    process.exitCode = 1;
  },
);

/**
 * geminik8s-agent: entry point, run by systemd as geminik8s-agent.service on every boot.
 * `grow-data-partition` is the pre-mount step (geminik8s-grow-data.service);
 * `etcd-client-cert --name <name>` issues a client certificate for a remote etcd client of Kine
 * (run as root on a paired box, e.g. over SSH); `--version` prints the agent and embedded Node versions.
 */
import { agentPaths, runLocalSteps, runPartitionGrowth } from './agent.ts';
import { runCluster } from './cluster/run.ts';
import { clusterSettings, secretsDirOf } from './cluster/settings.ts';
import { MARKER } from './core/report.ts';
import { jsonLogger, openConsole } from './adapters/output.ts';
import { startWatchdog } from './liveness/watchdog.ts';
import { issueClientCert, loadSecrets } from './provision/secrets.ts';
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
  if (args[0] === 'etcd-client-cert') return printEtcdClientCert(args.slice(1), secretsDirOf(paths.stateDir));
  if (args.length > 0) {
    process.stderr.write(
      `geminik8s-agent: unknown arguments: ${args.join(' ')} (usage: geminik8s-agent [--version | grow-data-partition | etcd-client-cert --name <name>])\n`,
    );
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
      await runCluster(
        { settings: clusterSettings(process.env, paths.stateDir), site: local.site, stateDir: paths.stateDir, log, out, signal: controller.signal, watchdog },
        local.meta,
      );
    }
  } catch (e) {
    if (!controller.signal.aborted) return fail(e);
  }
  const signal = await stopped;
  log.event('info', 'stop', { signal });
  out.close();
  return 0;
}

const CLIENT_NAME_RE = /^[a-z0-9]([a-z0-9.-]{0,61}[a-z0-9])?$/;

/**
 * Prints `{"ca", "cert", "key"}` (PEM) on stdout: a client-only certificate from the pair CA, which
 * Kine requires from etcd clients on other hosts, and the CA that signed Kine's server certificate.
 * The key goes only to stdout (the operator's SSH session), never to a file or log on the box.
 */
async function printEtcdClientCert(args: string[], secretsDir: string): Promise<number> {
  const usage = 'usage: geminik8s-agent etcd-client-cert --name <name>   (name: 1-63 of a-z, 0-9, ".", "-")';
  const name = args.length === 2 && args[0] === '--name' ? args[1] : undefined;
  if (name === undefined || !CLIENT_NAME_RE.test(name)) {
    process.stderr.write(`geminik8s-agent: ${name === undefined ? 'missing --name' : `invalid client name ${JSON.stringify(name)}`}\n${usage}\n`);
    return 2;
  }
  const secrets = loadSecrets(secretsDir);
  if (!secrets) {
    process.stderr.write(`geminik8s-agent: no cluster secrets in ${secretsDir}: this box has not paired yet, so there is no pair CA to issue from\n`);
    return 3;
  }
  const issued = await issueClientCert(secrets.ca, name);
  process.stdout.write(`${JSON.stringify({ name, ca: secrets.ca.certPem, cert: issued.certPem, key: issued.keyPem })}\n`);
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

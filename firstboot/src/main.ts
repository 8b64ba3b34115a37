/**
 * geminik8s-agent: entry point, run by systemd as geminik8s-agent.service on every boot.
 * `grow-data-partition` is the pre-mount step (geminik8s-grow-data.service);
 * `status` prints the running agent's GET /status; `switchover` asks it (the leader) for a planned
 * switchover; `replace-node [--cancel]` asks it (the survivor of a dead peer) to admit one new box in
 * the peer's place, or to stop; `upgrade apply <bundle>` / `upgrade status` ask the running agent (its socket) to apply an update
 * bundle or show the slots; `upgrade-deadline` is geminik8s-upgrade-deadline.timer's check;
 * `logs [--lines N]` prints the running agent's newest events (JSON lines); `kubeconfig` prints the
 * admin kubeconfig for the VIP (root only: it holds the pair's admin key); `backup` writes Kine's
 * database (pg_dump archive) to stdout on the leader; `restore` has the running agent replace it;
 * `etcd-client-cert --name <name>` issues a client certificate for a remote etcd client of Kine
 * (run as root on a paired box, e.g. over SSH); `arbiter-cert --address <ip>` prints the arbiter's
 * TLS bundle and `arbiter --listen <ip>[:<port>] --dir <dir>` runs the arbiter on a third device
 * (liveness/arbiter-command.ts); `--version` prints the agent and embedded Node versions.
 */
import { agentPaths, runLocalSteps, runPartitionGrowth } from './agent.ts';
import { IdentityRefused } from './adapters/hostmeta-store.ts';
import { RestartRequested, runCluster } from './cluster/run.ts';
import { clusterSettings, loadImageFacts, secretsDirOf, statusSocketPath } from './cluster/settings.ts';
import { MARKER } from './core/report.ts';
import { type ConsoleOut, eventRing, jsonLogger, type Logger, openConsole } from './adapters/output.ts';
import { startWatchdog, withoutNotifySocket } from './liveness/watchdog.ts';
import { arbiterCommand, printArbiterCert } from './liveness/arbiter-command.ts';
import { issueClientCert, loadSecrets } from './provision/secrets.ts';
import { AGENT_VERSION } from './version.ts';
import { uptime } from 'node:os';
import { join, resolve } from 'node:path';
import { runTool } from './adapters/exec.ts';
import { readEvents, readStatus, requestReplaceNode, requestRestore, requestSwitchover, requestUpgrade } from './net/status-server.ts';
import { dumpKineDatabase } from './provision/postgres.ts';
import { createWriteStream } from 'node:fs';
import { mkdir, readFile, rm } from 'node:fs/promises';
import { pipeline } from 'node:stream/promises';
import { slotBackendFor } from './upgrade/slot-backend.ts';
import { enforceDeadline, UpgradeService, type UpgradeServiceOptions } from './upgrade/service.ts';

/** EX_CONFIG: the agent cannot go on without a person (geminik8s-agent.service does not restart it on this code). */
const EXIT_NEEDS_OPERATOR = 78;
/** EX_TEMPFAIL: the agent ends its run on purpose to be started again (RestartRequested); systemd restarts it on failure codes. */
const EXIT_RESTART = 75;

const UPDATE_KEYS_DIR = '/etc/geminik8s/update-keys';

/** The box's A/B upgrades: the running image's facts, its baked-in keys, grub's slots. */
function upgradeOptions(stateDir: string, log: Logger, out: ConsoleOut): UpgradeServiceOptions {
  const facts = loadImageFacts(process.env);
  const backend = slotBackendFor(facts.bootloader);
  return {
    stateDir,
    keysDir: UPDATE_KEYS_DIR,
    image: { version: facts.version ?? 'unknown', arch: facts.arch ?? 'unknown', hardware: facts.hardware ?? 'unknown', policy: facts.upgrade },
    backend,
    log,
    out,
    reboot: async () => {
      await runTool('systemctl', ['reboot', ...(await backend.rebootArguments())]);
    },
    uptimeSeconds: uptime,
  };
}

const UPGRADE_USAGE = `usage: geminik8s-agent upgrade apply <bundle-file> [--allow-downgrade] [--no-reboot] [--only-as-follower] [--json]
       geminik8s-agent upgrade status [--json]
Applies an update bundle (copied onto this box, e.g. /var/lib/geminik8s/updates/) through the
running agent: it is verified against the image's keys, written to the inactive slot and tried at
the next boot (a reboot follows unless --no-reboot; --only-as-follower: only if this box is still
the pair's follower once the slot is written); the new slot is committed once its health gate
passes, else the box goes back to this one. Exit codes: 0 installed, 2 refused (nothing written), 1 failed.`;

/** The operator's side of POST /upgrade and the slot part of GET /status. */
async function upgradeCommand(args: string[]): Promise<number> {
  const json = args.includes('--json');
  const rest = args.filter((a) => a !== '--json');
  const socket = statusSocketPath(process.env);
  if (rest[0] === 'status' && rest.length === 1) {
    const status = (await readStatus(socket)) as { upgrade?: unknown };
    process.stdout.write(`${JSON.stringify(status.upgrade ?? null, null, json ? undefined : 2)}\n`);
    return 0;
  }
  const flags = new Set(rest.slice(2));
  const unknown = [...flags].filter((f) => f !== '--allow-downgrade' && f !== '--no-reboot' && f !== '--only-as-follower');
  if (rest[0] !== 'apply' || rest[1] === undefined || rest[1].startsWith('-') || unknown.length > 0) {
    process.stderr.write(`${unknown.length > 0 ? `unknown option ${unknown.join(' ')}\n` : ''}${UPGRADE_USAGE}\n`);
    return 2;
  }
  const body = {
    bundle: resolve(rest[1]),
    allowDowngrade: flags.has('--allow-downgrade'),
    reboot: !flags.has('--no-reboot'),
    onlyAsFollower: flags.has('--only-as-follower'),
  };
  let lastPercent = -1;
  const result = await requestUpgrade(socket, body, (line) => {
    if (json) return void process.stdout.write(`${JSON.stringify(line)}\n`);
    if (typeof line.doneBytes === 'number' && typeof line.totalBytes === 'number') {
      const percent = Math.floor((100 * line.doneBytes) / Math.max(1, line.totalBytes));
      if (percent !== lastPercent && percent % 10 === 0) process.stderr.write(`${line.step} ${percent}%\n`);
      lastPercent = percent;
    } else process.stderr.write(`${line.step} slot ${String(line.slot)}\n`);
  });
  if (json) process.stdout.write(`${JSON.stringify(result)}\n`);
  else if (result.result === 'installed')
    process.stderr.write(
      `installed ${String(result.version)} into slot ${String(result.slot)}${result.rebooting ? '; rebooting into it' : `; to try it, reboot with: ${String(result.rebootWith)}`}\n`,
    );
  else process.stderr.write(`${String(result.result)}: ${String(result.message)}\n`);
  return result.result === 'installed' ? 0 : result.result === 'refused' ? 2 : 1;
}

/** Events the running agent keeps for `logs` (about a day of a quiet pair, minutes of a busy one). */
const EVENT_RING_LINES = 2000;

/** `logs [--lines N]`: the running agent's newest events, one JSON object per line. */
async function logsCommand(args: string[]): Promise<number> {
  const lines = args.length === 0 ? 200 : args.length === 2 && args[0] === '--lines' ? Number(args[1]) : Number.NaN;
  if (!Number.isInteger(lines) || lines < 1) {
    process.stderr.write('usage: geminik8s-agent logs [--lines N]   (N >= 1; the agent keeps its newest 2000 events, journald all of them)\n');
    return 2;
  }
  for (const line of await readEvents(statusSocketPath(process.env), lines)) process.stdout.write(`${line}\n`);
  return 0;
}

/**
 * `backup`: Kine's database as a pg_dump archive on stdout (the operator's `geminik8s backup` reads
 * it over SSH and encrypts it on its side). From the leader only: its primary has every commit.
 */
async function backupCommand(stateDir: string): Promise<number> {
  const status = (await readStatus(statusSocketPath(process.env))) as { role?: string };
  if (status.role !== 'leader') {
    process.stderr.write(`geminik8s-agent: this box is ${status.role ?? 'unknown'}: back up from the leader\n`);
    return 3;
  }
  const settings = clusterSettings(process.env, stateDir);
  await dumpKineDatabase({ paths: settings.pg, port: settings.pgPort }, process.stdout);
  return 0;
}

/**
 * `restore - | restore <archive> | restore --restart-only`: through the running agent, which owns
 * Kine. `-` reads the archive from stdin (the operator's `geminik8s restore` streams it over SSH)
 * into a root-only file under the state folder, removed once restored.
 */
async function restoreCommand(args: string[], stateDir: string): Promise<number> {
  const arg = args.length === 1 ? args[0]! : undefined;
  if (arg === undefined || (arg.startsWith('-') && arg !== '-' && arg !== '--restart-only')) {
    process.stderr.write(
      'usage: geminik8s-agent restore - (the archive on stdin) | restore <pg_dump archive on this box>   (on the leader)\n       geminik8s-agent restore --restart-only   (on the follower, after the leader restored)\n',
    );
    return 2;
  }
  let received: string | undefined;
  if (arg === '-') {
    const dir = join(stateDir, 'restore');
    await mkdir(dir, { recursive: true, mode: 0o700 });
    received = join(dir, 'kine.dump');
    await pipeline(process.stdin, createWriteStream(received, { mode: 0o600 }));
  }
  try {
    const request = arg === '--restart-only' ? { restartOnly: true } : { file: received ?? resolve(arg) };
    const answer = (await requestRestore(statusSocketPath(process.env), request)) as { result?: string; message?: string };
    process.stdout.write(`${JSON.stringify(answer)}\n`);
    return answer.result === 'restored' || answer.result === 'restarted' ? 0 : answer.result === 'refused' ? 2 : 1;
  } finally {
    if (received) await rm(received, { force: true });
  }
}

/** `kubeconfig`: the admin kubeconfig the running agent wrote for the VIP. */
async function kubeconfigCommand(): Promise<number> {
  const status = (await readStatus(statusSocketPath(process.env))) as { kubernetes?: { adminKubeconfig?: string } };
  const file = status.kubernetes?.adminKubeconfig;
  if (!file) {
    process.stderr.write('geminik8s-agent: this box runs no Kubernetes (its profile is edge-datastore), or its control plane has not started yet\n');
    return 3;
  }
  const text = await readFile(file, 'utf8').catch((e: NodeJS.ErrnoException) => {
    if (e.code === 'ENOENT') return undefined;
    throw e;
  });
  if (text === undefined) {
    process.stderr.write(`geminik8s-agent: ${file} is not written yet: the API server has not been ready on this box since it paired\n`);
    return 3;
  }
  process.stdout.write(text);
  return 0;
}

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
  const events = eventRing(EVENT_RING_LINES);
  const log = jsonLogger((line) => {
    process.stdout.write(line);
    events.push(line);
  });
  const paths = agentPaths(process.env);
  if (args.length === 1 && args[0] === 'grow-data-partition') {
    const out = openConsole(paths.consolePath, log);
    const result = await runPartitionGrowth(paths, log, out);
    out.close();
    // A failed growth must not keep /data from mounting: the box works, only smaller.
    return result.kind === 'failed' ? 1 : 0;
  }
  if (args[0] === 'etcd-client-cert') return printEtcdClientCert(args.slice(1), secretsDirOf(paths.stateDir));
  if (args[0] === 'arbiter-cert') return printArbiterCert(args.slice(1), secretsDirOf(paths.stateDir));
  if (args[0] === 'arbiter') return arbiterCommand(args.slice(1), log, shutdownSignal(new AbortController()));
  if (args[0] === 'upgrade') return upgradeCommand(args.slice(1));
  if (args[0] === 'status' && args.length <= 2 && (args[1] === undefined || args[1] === '--json')) {
    // Everything GET /status has: the operator CLI reads it over SSH (builder/src/remote).
    process.stdout.write(`${JSON.stringify(await readStatus(statusSocketPath(process.env)), null, args[1] === '--json' ? undefined : 2)}\n`);
    return 0;
  }
  if (args[0] === 'logs') return logsCommand(args.slice(1));
  if (args.length === 1 && args[0] === 'backup') return backupCommand(paths.stateDir);
  if (args[0] === 'restore') return restoreCommand(args.slice(1), paths.stateDir);
  if (args.length === 1 && args[0] === 'kubeconfig') return kubeconfigCommand();
  if (args.length === 1 && args[0] === 'switchover') {
    const answer = (await requestSwitchover(statusSocketPath(process.env))) as { accepted?: boolean; reason?: string };
    process.stdout.write(`${JSON.stringify(answer)}\n`);
    return answer.accepted === true ? 0 : 1;
  }
  if (args[0] === 'replace-node' && (args.length === 1 || (args.length === 2 && args[1] === '--cancel'))) {
    const answer = (await requestReplaceNode(statusSocketPath(process.env), args[1] === '--cancel' ? { cancel: true } : {})) as {
      accepted?: boolean;
      reason?: string;
    };
    process.stdout.write(`${JSON.stringify(answer)}\n`);
    return answer.accepted === true ? 0 : 2;
  }
  if (args.length === 1 && args[0] === 'upgrade-deadline') {
    const out = openConsole(paths.consolePath, log);
    const done = await enforceDeadline(upgradeOptions(paths.stateDir, log, out));
    out.close();
    process.stdout.write(`${done}\n`);
    return 0;
  }
  if (args.length > 0) {
    process.stderr.write(
      `geminik8s-agent: unknown arguments: ${args.join(' ')} (usage: geminik8s-agent [--version | status [--json] | switchover | replace-node [--cancel] | logs [--lines N] | kubeconfig | backup | restore <archive>|--restart-only | grow-data-partition | etcd-client-cert --name <name> | arbiter-cert --address <ip> | arbiter --listen <ip>[:<port>] --dir <dir> | upgrade apply|status | upgrade-deadline])\n`,
    );
    return 2;
  }
  log.event('info', 'start', { version: AGENT_VERSION, node: process.version, pid: process.pid, ...paths });
  const out = openConsole(paths.consolePath, log);
  const controller = new AbortController();
  const stopped = shutdownSignal(controller);
  const watchdog = startWatchdog(process.env, log);
  withoutNotifySocket(process.env);
  const fail = (e: unknown): number => {
    const message = (e as Error).message;
    if (e instanceof RestartRequested) {
      log.event('warn', 'restart', { reason: message });
      out.line(`${MARKER} restarting: ${message}`);
      out.close();
      return EXIT_RESTART;
    }
    log.event('error', 'fatal', { error: message, stack: (e as Error).stack });
    out.line(`${MARKER} failed ${message.replace(/\s+/g, ' ')}`);
    out.close();
    // A box that needs an operator stays down with its console line (RestartPreventExitStatus=78):
    // restarting cannot help, and a restart loop would end in the reboot StartLimitAction= orders.
    if (e instanceof IdentityRefused) return EXIT_NEEDS_OPERATOR;
    // Otherwise systemd restarts the agent (Restart=on-failure); every stage resumes from hostmeta.json.
    return 1;
  };
  try {
    const local = await runLocalSteps(paths, log, out);
    const upgrades = new UpgradeService(upgradeOptions(paths.stateDir, log, out));
    // The last upgrade is settled beside the cluster: its gate watches the cluster come back.
    void upgrades.settle(controller.signal).catch((e: unknown) => log.event('error', 'upgrade-settle-failed', { error: (e as Error).message }));
    if (local.site) {
      await runCluster(
        {
          settings: clusterSettings(process.env, paths.stateDir),
          site: local.site,
          stateDir: paths.stateDir,
          log,
          out,
          signal: controller.signal,
          watchdog,
          upgrades,
          events,
        },
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

/**
 * Throwaway Linux network-namespace topologies for pair tests (needs root and iproute2).
 *
 *   gw namespace:  bridge gk8s-br<id>, address 10.77.X.1/24 (the site gateway / witness)
 *   node i:        eth0 = veth into the bridge, 10.77.X.(11+i)/24, default route via .1, lo up
 *
 * Namespace names carry the creating process id (`gk8s-<pid>-<id>-gw`, `…-n1`), so a later run can
 * sweep what a killed run left behind without touching namespaces of runs still alive. Traffic
 * never leaves these namespaces.
 */
import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { execa } from 'execa';
import { access, constants } from 'node:fs/promises';
import { shellQuote } from '../../builder/src/remote/ssh.ts';
import { isAlive } from '../../builder/src/util/process.ts';

export const NETNS_PREFIX = 'gk8s-';
const NAME_RE = /^gk8s-(\d+)-([0-9a-f]{6})-(gw|n\d+)$/;

export interface ExecResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs argv (no shell) through execa, the tests' one runner; resolves with its output whatever the exit code, rejects on spawn failure or timeout. */
export async function run(argv: readonly string[], opts: { timeoutMs?: number; input?: string } = {}): Promise<ExecResult> {
  const [cmd, ...args] = argv;
  if (cmd === undefined) throw new Error('empty command');
  const timeoutMs = opts.timeoutMs ?? 10_000;
  const r = await execa(cmd, args, {
    reject: false,
    timeout: timeoutMs,
    killSignal: 'SIGKILL',
    stripFinalNewline: false,
    ...(opts.input === undefined ? { stdin: 'ignore' } : { input: opts.input }),
  });
  if (r.timedOut) throw new Error(`${argv.join(' ')} timed out after ${timeoutMs} ms`);
  if (r.exitCode === undefined && r.signal === undefined) throw new Error(r.originalMessage || r.message);
  return { code: r.exitCode ?? null, stdout: String(r.stdout), stderr: String(r.stderr) };
}

/** Runs argv and returns its stdout; a non-zero exit throws, naming `what` it was for, the command and its error output. */
export async function must(argv: readonly string[], o: { timeoutMs?: number; what?: string } = {}): Promise<string> {
  const r = await run(argv, { timeoutMs: o.timeoutMs ?? 15_000 });
  if (r.code !== 0) throw new Error(`${o.what ? `${o.what}: ` : ''}${argv.join(' ')} failed (${r.code}): ${(r.stderr || r.stdout).trim().slice(-1500)}`);
  return r.stdout;
}

function ip(args: readonly string[]): Promise<string> {
  return must(['ip', ...args], { timeoutMs: 10_000 });
}

/** Fails (never skips) with what to install or how to run when namespaces cannot be used here. */
export async function requireNetns(): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error('network-namespace tests need root (ip netns add): run the suite as root');
  for (const p of ['/usr/sbin/ip', '/bin/ip', '/sbin/ip']) {
    if (
      await access(p, constants.X_OK).then(
        () => true,
        () => false,
      )
    )
      return;
  }
  throw new Error('`ip` is missing: apt-get install iproute2');
}

async function listNamespaces(): Promise<string[]> {
  const out = await ip(['netns', 'list']);
  return out
    .split('\n')
    .map((l) => l.trim().split(/\s+/)[0] ?? '')
    .filter((n) => n.length > 0);
}

/** Kills the processes inside a namespace (those a test started there), then deletes it. */
async function deleteNamespace(ns: string): Promise<void> {
  // A survivor keeps the namespace busy; deleting it anyway is still the best left to do.
  await killNamespaceProcesses(ns).catch(() => undefined);
  await run(['ip', 'netns', 'delete', ns]);
}

/** Deletes namespaces left by earlier test runs that were killed (their creating process is gone). */
export async function sweepStaleNamespaces(): Promise<string[]> {
  const stale = (await listNamespaces()).filter((n) => {
    const m = NAME_RE.exec(n);
    return m !== null && Number(m[1]) !== process.pid && !isAlive(Number(m[1]));
  });
  for (const ns of stale) await deleteNamespace(ns);
  return stale;
}

export interface NetnsNode {
  index: number;
  ns: string;
  /** Interface inside the node namespace. */
  ifname: 'eth0';
  address: string;
  cidr: string;
  /** The veth end attached to the bridge (in the gw namespace). */
  bridgePort: string;
}

export interface Topology {
  id: string;
  /** First three octets, e.g. "10.77.42". */
  subnet: string;
  broadcast: string;
  bridge: string;
  gw: { ns: string; address: string };
  nodes: NetnsNode[];
  /** Runs a command inside a namespace and waits for it. */
  exec(ns: string, argv: readonly string[], opts?: { timeoutMs?: number }): Promise<ExecResult>;
  /** Starts a long-running command inside a namespace; killed by destroy() if still running. */
  spawn(ns: string, argv: readonly string[], opts?: SpawnOptions): ChildProcess;
  /**
   * DHCP for the bridge's L2 (VMs on taps): dnsmasq in the gw namespace leasing .100–.150, the gw
   * as router, leases in `leaseFile`; its last output for a failure report. Stopped by destroy().
   */
  serveDhcp(leaseFile: string): { log(): string };
  /** A tap device on the bridge (in the gw namespace) for VM number `index`; returns its name. Deleted with the namespace. */
  addTap(index: number): Promise<string>;
  /**
   * ssh as root from the gw namespace with an operator's key, batch mode, the host key pinned on
   * first contact in `knownHosts` and checked after. `command` is an argv: each word is quoted for
   * the remote shell, so a script goes as `['sh', '-c', script]`.
   */
  ssh(o: { key: string; knownHosts: string }, host: string, command: string[], timeoutMs?: number): Promise<ExecResult>;
  /** Copies local `files` to `remoteDir` on `host` with scp, with the same key and pinned host key as ssh(). */
  copyTo(o: { key: string; knownHosts: string }, host: string, files: string[], remoteDir: string, timeoutMs?: number): Promise<ExecResult>;
  linkDown(node: number): Promise<void>;
  linkUp(node: number): Promise<void>;
  /** Kills everything started in the namespaces and deletes them. Idempotent; never throws. */
  destroy(): Promise<void>;
}

/** ssh/scp options: the operator's key only, batch mode, the host key pinned on first contact in `knownHosts`. */
export function sshOptions(o: { key: string; knownHosts: string }): string[] {
  const options = ['IdentitiesOnly=yes', 'StrictHostKeyChecking=accept-new', `UserKnownHostsFile=${o.knownHosts}`, 'BatchMode=yes', 'ConnectTimeout=20'];
  return ['-F', '/dev/null', '-i', o.key, ...options.flatMap((x) => ['-o', x])];
}

/**
 * Builds a gw namespace with a bridge and `nodeCount` node namespaces attached to it. On any
 * failure half-way everything created so far is removed before the error propagates.
 */
export async function createTopology(nodeCount: number): Promise<Topology> {
  await requireNetns();
  await sweepStaleNamespaces();
  const id = randomBytes(3).toString('hex');
  const third = 1 + (parseInt(id, 16) % 254);
  const subnet = `10.77.${third}`;
  const base = `${NETNS_PREFIX}${process.pid}-${id}`;
  const bridge = `gk8s-br${id}`;
  const gw = { ns: `${base}-gw`, address: `${subnet}.1` };
  const nodes: NetnsNode[] = Array.from({ length: nodeCount }, (_, i) => ({
    index: i,
    ns: `${base}-n${i + 1}`,
    ifname: 'eth0',
    address: `${subnet}.${11 + i}`,
    cidr: `${subnet}.${11 + i}/24`,
    bridgePort: `gk8s-v${id}n${i + 1}`,
  }));
  const children = new Set<ChildProcess>();
  let destroyed = false;

  const destroy = async (): Promise<void> => {
    if (destroyed) return;
    destroyed = true;
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    for (const ns of [...nodes.map((n) => n.ns), gw.ns]) {
      try {
        await deleteNamespace(ns);
      } catch {
        /* best effort: the sweep of a later run retries */
      }
    }
  };

  try {
    await ip(['netns', 'add', gw.ns]);
    await ip(['-n', gw.ns, 'link', 'set', 'lo', 'up']);
    await ip(['-n', gw.ns, 'link', 'add', bridge, 'type', 'bridge', 'stp_state', '0', 'forward_delay', '0']);
    await ip(['-n', gw.ns, 'addr', 'add', `${gw.address}/24`, 'broadcast', `${subnet}.255`, 'dev', bridge]);
    await ip(['-n', gw.ns, 'link', 'set', bridge, 'up']);
    for (const n of nodes) {
      await ip(['netns', 'add', n.ns]);
      await ip(['-n', n.ns, 'link', 'set', 'lo', 'up']);
      await ip(['-n', gw.ns, 'link', 'add', n.bridgePort, 'type', 'veth', 'peer', 'name', n.ifname, 'netns', n.ns]);
      await ip(['-n', gw.ns, 'link', 'set', n.bridgePort, 'master', bridge]);
      await ip(['-n', gw.ns, 'link', 'set', n.bridgePort, 'up']);
      await ip(['-n', n.ns, 'addr', 'add', n.cidr, 'broadcast', `${subnet}.255`, 'dev', n.ifname]);
      await ip(['-n', n.ns, 'link', 'set', n.ifname, 'up']);
      await ip(['-n', n.ns, 'route', 'add', 'default', 'via', gw.address]);
    }
  } catch (e) {
    await destroy();
    throw e;
  }

  const spawnIn = (ns: string, argv: readonly string[], opts: SpawnOptions = {}): ChildProcess => {
    if (destroyed) throw new Error(`topology ${id} is destroyed`);
    const child = spawn('ip', ['netns', 'exec', ns, ...argv], { stdio: ['ignore', 'pipe', 'pipe'], ...opts });
    children.add(child);
    child.on('exit', () => children.delete(child));
    return child;
  };

  const nodeAt = (i: number): NetnsNode => {
    const n = nodes[i];
    if (!n) throw new Error(`no node ${i} in topology ${id}`);
    return n;
  };

  return {
    id,
    subnet,
    broadcast: `${subnet}.255`,
    bridge,
    gw,
    nodes,
    exec: (ns, argv, opts) => run(['ip', 'netns', 'exec', ns, ...argv], opts),
    spawn: spawnIn,
    serveDhcp(leaseFile) {
      const dnsmasq = spawnIn(gw.ns, [
        'dnsmasq',
        '--no-daemon',
        '--conf-file=/dev/null',
        `--interface=${bridge}`,
        '--bind-interfaces',
        '--port=0',
        `--dhcp-range=${subnet}.100,${subnet}.150,255.255.255.0,1h`,
        `--dhcp-option=3,${gw.address}`,
        `--dhcp-leasefile=${leaseFile}`,
      ]);
      let log = '';
      const keep = (d: Buffer): void => {
        log = (log + d.toString()).slice(-3000);
      };
      dnsmasq.stderr?.on('data', keep);
      dnsmasq.stdout?.on('data', keep);
      return { log: () => log };
    },
    async addTap(index) {
      const tap = `gk8s-t${id}${index}`;
      await ip(['-n', gw.ns, 'tuntap', 'add', 'mode', 'tap', 'name', tap]);
      await ip(['-n', gw.ns, 'link', 'set', tap, 'master', bridge, 'up']);
      return tap;
    },
    ssh(o, host, command, timeoutMs = 120_000) {
      const argv = ['ssh', ...sshOptions(o), `root@${host}`, ...command.map(shellQuote)];
      return run(['ip', 'netns', 'exec', gw.ns, ...argv], { timeoutMs });
    },
    copyTo(o, host, files, remoteDir, timeoutMs = 600_000) {
      return run(['ip', 'netns', 'exec', gw.ns, 'scp', '-q', ...sshOptions(o), ...files, `root@${host}:${remoteDir}/`], { timeoutMs });
    },
    linkDown: (i) => ip(['-n', nodeAt(i).ns, 'link', 'set', 'eth0', 'down']).then(() => undefined),
    async linkUp(i) {
      await ip(['-n', nodeAt(i).ns, 'link', 'set', 'eth0', 'up']);
      // the kernel dropped the default route with the link
      await ip(['-n', nodeAt(i).ns, 'route', 'replace', 'default', 'via', gw.address]);
    },
    destroy,
  };
}

/** Every process in a network namespace, SIGKILLed until none is left (bounded). */
export async function killNamespaceProcesses(ns: string): Promise<void> {
  for (let round = 0; round < 20; round++) {
    const pids = (await run(['ip', 'netns', 'pids', ns])).stdout
      .split('\n')
      .map(Number)
      .filter((n) => Number.isInteger(n) && n > 1);
    if (pids.length === 0) return;
    for (const pid of pids) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* already gone */
      }
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`processes in ${ns} survived SIGKILL for 2 s`);
}

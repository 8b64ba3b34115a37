/**
 * Real geminik8s agents in network namespaces (test/helpers/netns.ts): each node gets its own OEM,
 * state, run and PostgreSQL folders, the same site file, and Kine from the component cache. A
 * small supervisor restarts an agent that exits with an error, as systemd does on the appliance.
 *
 * Fault helpers per agent (the fault matrix, test/helpers/fault-matrix.ts): power off / on the
 * whole node, crash its PostgreSQL, down its link, detach it from the bridge, fill its PostgreSQL
 * disk (a size-limited tmpfs, `pgTmpfsMb`), ask it for a planned switchover.
 *
 * With `kubernetes: true` each node's image.yaml also asks for upstream Kubernetes and the agent
 * gets the multi-call binary from the component cache (test/helpers/components.ts; never built
 * here): it runs kube-apiserver on its local Kine and writes an admin kubeconfig for the VIP.
 */
import type { ChildProcess } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { access, chmod, mkdir, mkdtemp, readFile, readdir, rename, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { stringify } from 'yaml';
import { kineSpec, resolveComponent, type ResolvedComponent } from '../../builder/src/components/resolve.ts';
import { isAlive } from '../../builder/src/util/process.ts';
import { readStatus } from '../../firstboot/src/net/status-server.ts';
import { KINE_VERSION, resolveTestComponent } from './components.ts';
import { issueEtcdClientCert, type EtcdClientFiles } from './etcd-client.ts';
import { createTopology, killNamespaceProcesses, must, run, type Topology } from './netns.ts';
import type { ImageFacts } from '../../firstboot/src/core/image-facts.ts';

const REPO = fileURLToPath(new URL('../..', import.meta.url));
const AGENT_ENTRY = path.join(REPO, 'firstboot/src/main.ts');

export interface PairAgent {
  index: number;
  ns: string;
  address: string;
  dirs: { root: string; oem: string; state: string; run: string; pg: string };
  consoleFile: string;
  logFile: string;
  /** The agent's environment (its folders, ports and binaries), for its CLI run as on this node. */
  env: Readonly<Record<string, string>>;
  start(): void;
  /** SIGKILL, as a power cut would (PostgreSQL and Kine stay up unless killed too). */
  kill(): Promise<void>;
  stop(): Promise<void>;
  console(): Promise<string>;
  log(): Promise<Record<string, unknown>[]>;
  status(): Promise<Record<string, unknown>>;
  /** psql as postgres on this node's unix socket (works from the host: sockets ignore netns). */
  sql(query: string, database?: string): Promise<string>;
  /** Runs a command inside this node's namespace. */
  exec(argv: string[], timeoutMs?: number): Promise<{ code: number | null; stdout: string; stderr: string }>;

  // --- faults -----------------------------------------------------------------------------------
  /**
   * The whole node dies: eth0 goes down (a dead box answers no ARP for the VIP it held) while the
   * agent is SIGKILLed (no supervisor restart), then every process in the node's namespace
   * (PostgreSQL, Kine, Kubernetes, anything else) is. The disk (PostgreSQL folder, state) stays as it was.
   */
  powerOff(): Promise<void>;
  /** Boots the node again: the VIP and /run are gone (a reboot loses them), link up, agent started. */
  powerOn(): Promise<void>;
  /**
   * The powered-off box is swapped for a freshly flashed one stamped with the same site file: its
   * state, PostgreSQL and run folders are emptied (a new node id at its next start); the OEM
   * folder keeps the site file. powerOn() boots it.
   */
  wipe(): Promise<void>;
  /** SIGKILLs the postmaster (first line of <pg>/data/postmaster.pid); resolves with its pid. */
  crashPostgres(): Promise<number>;
  /**
   * Hangs PostgreSQL without killing it: SIGSTOP to the postmaster and every process it forked, as
   * a stalled disk or a wedged server would leave it (connections are accepted by the kernel and
   * never answered). thawPostgres() sends SIGCONT to the same processes.
   */
  freezePostgres(): Promise<number[]>;
  thawPostgres(): Promise<void>;
  /** The agent's state folder turns read-only (a bind mount over it), as a failing disk remounted ro would; stateWritable() lifts it. */
  stateReadOnly(): Promise<void>;
  stateWritable(): Promise<void>;
  /** eth0 down / up (carrier lost; linkUp restores the default route). */
  linkDown(): Promise<void>;
  linkUp(): Promise<void>;
  /**
   * Takes the node's bridge port out of the bridge: carrier stays up, nothing passes (it loses the
   * peer and the gateway). attach() puts it back.
   */
  detach(): Promise<void>;
  attach(): Promise<void>;
  /** Fills the PostgreSQL tmpfs (createPair `pgTmpfsMb`) with a file until ENOSPC. */
  fillDisk(): Promise<void>;
  /** Deletes the file fillDisk() wrote. */
  releaseDisk(): Promise<void>;
  /** POST /switchover to this agent's socket (a planned switchover; ask the leader). */
  switchover(): Promise<unknown>;
  /** Faults currently applied through the helpers above. */
  faults(): { poweredOff: boolean; linkDown: boolean; detached: boolean; diskFilled: boolean; frozen: boolean; stateReadOnly: boolean };
  /** Undoes every fault still applied (attach, link up, release the disk, thaw, state writable, power on). */
  heal(): Promise<void>;
  /**
   * PostgreSQL takes writes: a primary whose default_transaction_read_only is off. undefined when
   * it does not answer (down, hung, socket gone) within about a second.
   */
  writable(): Promise<boolean | undefined>;
}

export interface Pair {
  topology: Topology;
  vip: string;
  agents: PairAgent[];
  /** The nodes run Kubernetes (createPair `kubernetes`). */
  kubernetes: boolean;
  /**
   * The admin kubeconfig the agents write (`<state>/kubernetes/admin.kubeconfig`), from the first
   * node that has one; rejects naming each node's reason when none has.
   */
  adminKubeconfig(): Promise<string>;
  /**
   * Runs `geminik8s-agent arbiter` in the gateway namespace with the bundle the real
   * `arbiter-cert` issues on the first node that has secrets (createPair `arbiter`). Its state()
   * reads the lease state it keeps on disk.
   */
  startArbiter(): Promise<{ state(): Promise<{ term: number; holder: string | null; alone: boolean } | undefined>; log(): Promise<string> }>;
  /**
   * Cuts the two boxes apart at L2 while both still reach the gateway (their bridge ports isolated
   * from each other: a non-transitive LAN fault), or undoes it.
   */
  isolateNodes(on: boolean): Promise<void>;
  /**
   * A client certificate for Kine from the pair CA (issued once by the real `etcd-client-cert` on
   * the first node that has secrets), as a remote Kubernetes server would hold one.
   */
  etcdClient(): Promise<EtcdClientFiles>;
  destroy(): Promise<void>;
}

const PG_BIN = '/usr/lib/postgresql/15/bin';
/** tmpfs mounts carry the creating process id as their source, so a later run can sweep a killed run's. */
const MOUNT_SOURCE_RE = /^gk8s-pg-(\d+)$/;
const FILL_FILE = 'fault-fill.bin';
/** Beside each node's folders: `<run>/kubernetes` as the last power-off left it (powerOn() empties /run). */
export const PREVIOUS_RUN_KUBERNETES = 'run-kubernetes-before-power-on';

async function unmount(dir: string): Promise<void> {
  const r = await run(['umount', dir], { timeoutMs: 15_000 }).catch(() => undefined);
  if (r?.code !== 0) await run(['umount', '-l', dir], { timeoutMs: 15_000 }).catch(() => undefined);
}

/** Unmounts PostgreSQL tmpfs mounts left by earlier runs that were killed (their creating process is gone). */
export async function sweepStaleMounts(): Promise<string[]> {
  const text = await readFile('/proc/self/mounts', 'utf8').catch(() => '');
  const stale: string[] = [];
  for (const line of text.split('\n')) {
    const [source, target, fstype] = line.split(' ');
    const m = MOUNT_SOURCE_RE.exec(source ?? '');
    if (fstype !== 'tmpfs' || !m || !target || Number(m[1]) === process.pid || isAlive(Number(m[1]))) continue;
    // /proc/self/mounts escapes blanks as octal; our targets never contain any.
    await unmount(target);
    stale.push(target);
  }
  return stale;
}

/**
 * The PostgreSQL behind a unix socket directory takes writes: a primary whose
 * default_transaction_read_only is off. undefined when it does not answer (down, hung, socket
 * gone) within about a second. The fault matrix's and bench-peers' dual-primary probe.
 */
export async function postgresWritable(socketDir: string): Promise<boolean | undefined> {
  const c = new pg.Client({
    host: socketDir,
    port: 5432,
    user: 'postgres',
    database: 'postgres',
    connectionTimeoutMillis: 1000,
    query_timeout: 1000,
    application_name: 'gk8s-fault-checker',
  });
  c.on('error', () => undefined);
  try {
    await c.connect();
    const r = await c.query<{ w: boolean }>("SELECT NOT pg_is_in_recovery() AND current_setting('default_transaction_read_only') = 'off' AS w");
    const w = r.rows[0]?.w;
    return typeof w === 'boolean' ? w : undefined;
  } catch {
    return undefined;
  } finally {
    void c.end().catch(() => undefined);
  }
}

export function siteYaml(siteId: string, secret: string, vipCidr: string, gateway: string, arbiter?: { address: string; port: number }): string {
  return stringify({
    apiVersion: 'geminik8s/v1',
    kind: 'Site',
    site: { id: siteId },
    pair: { secret },
    network: { vip: vipCidr, addressing: 'dhcp', gateway },
    ...(arbiter ? { arbiter } : {}),
  });
}

/** Where the pair's arbiter listens, in the gateway namespace (a router is where a site would run it). */
export const ARBITER_PORT = 7950;

/**
 * `nodeIds` pre-seeds each node's identity (hostmeta.json, as an earlier boot would have left it),
 * which makes the roles predictable: with nothing committed, the lower node id leads.
 */
export interface PairOptions {
  nodes?: number;
  secret?: string;
  secrets?: string[];
  nodeIds?: string[];
  /**
   * Mount a tmpfs of this many MiB on each node's PostgreSQL folder before the agents start (a
   * small disk that fillDisk() can fill); unmounted by destroy().
   */
  pgTmpfsMb?: number;
  /**
   * The image fact `kine.remoteClients` (default true, as the edge-datastore profile the tests use):
   * Kine on the LAN with mTLS; false: loopback only.
   */
  kineRemoteClients?: boolean;
  /**
   * Run upstream Kubernetes on both nodes (the image fact `kubernetes`, and GEMINIK8S_KUBERNETES_BIN
   * from the component cache: a cache miss fails, naming the command that builds it). Default false.
   */
  kubernetes?: boolean;
  /**
   * The site file names an arbiter on the gateway (ARBITER_PORT); Pair.startArbiter() runs it once
   * the pair has its CA. Until then the agents find it silent. Default false.
   */
  arbiter?: boolean;
}

/**
 * The image's description (/etc/geminik8s/image.yaml) for an agent run outside an image, which it
 * refuses to run without; Kubernetes as the edge-standard profile has it (upstream), control plane only.
 */
export function imageFactsYaml(o: { kineRemoteClients: boolean; kubernetesVersion?: string }): string {
  const facts: ImageFacts = {
    postgresql: { replication: 'physical' },
    kine: { remoteClients: o.kineRemoteClients },
    upgrade: { gateSeconds: 600, healthChecks: [] },
    ...(o.kubernetesVersion
      ? {
          kubernetes: {
            distribution: 'upstream',
            version: o.kubernetesVersion,
            clusterCidr: '10.42.0.0/16',
            serviceCidr: '10.43.0.0/16',
            worker: false,
            disable: [],
          },
        }
      : {}),
    cluster: { preferredLeader: '' },
  };
  return stringify(facts);
}

/** Where an agent keeps the admin kubeconfig (the contract with firstboot/src/kubernetes). */
export const adminKubeconfigPath = (a: PairAgent): string => path.join(a.dirs.state, 'kubernetes', 'admin.kubeconfig');

export async function createPair(opts: PairOptions = {}): Promise<Pair> {
  const count = opts.nodes ?? 2;
  const kine = await resolveComponent(kineSpec(KINE_VERSION), { arch: 'amd64', cacheDir: path.join(REPO, '.cache') });
  const kubernetes: ResolvedComponent | undefined = opts.kubernetes ? await resolveTestComponent('kubernetes', { build: false }) : undefined;
  if (opts.pgTmpfsMb !== undefined) await sweepStaleMounts();
  const topology = await createTopology(count);
  const root = await mkdtemp(path.join(os.tmpdir(), 'gk8s-pair-'));
  // PostgreSQL runs as the postgres user and must traverse into its folder.
  await chmod(root, 0o755);
  const vipCidr = `${topology.subnet}.10/24`;
  const vip = vipCidr.split('/')[0] ?? '';
  const defaultSecret = opts.secret ?? Buffer.from(Array.from({ length: 32 }, (_, i) => (i * 37 + 11) % 256)).toString('base64url');
  const agents: PairAgent[] = [];
  const children = new Map<number, ChildProcess>();
  const mounts: string[] = [];

  const destroy = async (): Promise<void> => {
    for (const a of agents) await a.kill().catch(() => undefined);
    // PostgreSQL (pg_ctl daemon) and Kine outlive the agent process: stop them before the namespaces go.
    for (const a of agents) {
      await topology
        .exec(a.ns, ['runuser', '-u', 'postgres', '--', `${PG_BIN}/pg_ctl`, '-D', path.join(a.dirs.pg, 'data'), 'stop', '-m', 'immediate'], {
          timeoutMs: 20_000,
        })
        .catch(() => undefined);
    }
    await topology.destroy();
    for (const m of mounts.splice(0)) await unmount(m);
    await rm(root, { recursive: true, force: true });
  };

  try {
    for (const node of topology.nodes) {
      const base = path.join(root, `n${node.index + 1}`);
      const dirs = { root: base, oem: path.join(base, 'oem'), state: path.join(base, 'state'), run: path.join(base, 'run'), pg: path.join(base, 'pg') };
      for (const d of Object.values(dirs)) await mkdir(d, { recursive: true, mode: 0o755 });
      if (opts.pgTmpfsMb !== undefined) {
        await must(['mount', '-t', 'tmpfs', '-o', `size=${opts.pgTmpfsMb}m,mode=0755`, `gk8s-pg-${process.pid}`, dirs.pg]);
        mounts.push(dirs.pg);
      }
      const secret = opts.secrets?.[node.index] ?? defaultSecret;
      const arbiter = opts.arbiter ? { address: topology.gw.address, port: ARBITER_PORT } : undefined;
      await writeFile(path.join(dirs.oem, 'site.yaml'), siteYaml('lab-pair', secret, vipCidr, topology.gw.address, arbiter), { mode: 0o600 });
      const nodeId = opts.nodeIds?.[node.index];
      if (nodeId) {
        const at = new Date().toISOString();
        const meta = { schemaVersion: 1, nodeId, bootCount: 0, firstBootAt: at, lastBootAt: at, phase: 'waiting-for-site', term: 0, role: 'unassigned' };
        await writeFile(path.join(dirs.state, 'hostmeta.json'), `${JSON.stringify(meta)}\n`);
      }
      const imageFile = path.join(base, 'image.yaml');
      await writeFile(
        imageFile,
        imageFactsYaml({ kineRemoteClients: opts.kineRemoteClients ?? true, ...(kubernetes ? { kubernetesVersion: kubernetes.version } : {}) }),
      );
      const consoleFile = path.join(base, 'console.log');
      const logFile = path.join(base, 'agent.log');
      const env: Record<string, string> = {
        PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin',
        GEMINIK8S_OEM_DIR: dirs.oem,
        GEMINIK8S_STATE_DIR: dirs.state,
        GEMINIK8S_RUN_DIR: dirs.run,
        GEMINIK8S_PG_ROOT: dirs.pg,
        GEMINIK8S_DATA_DIR: path.join(base, 'no-data-mount'),
        GEMINIK8S_CONSOLE: consoleFile,
        GEMINIK8S_KINE_BIN: kine.path,
        GEMINIK8S_BROADCAST: topology.broadcast,
        GEMINIK8S_IMAGE_FILE: imageFile,
        ...(kubernetes ? { GEMINIK8S_KUBERNETES_BIN: kubernetes.path } : {}),
      };
      let wanted = false;
      const launch = (): void => {
        const child = topology.spawn(
          node.ns,
          ['env', '-i', ...Object.entries(env).map(([k, v]) => `${k}=${v}`), process.execPath, '--import', 'tsx', AGENT_ENTRY],
          { cwd: REPO, stdio: ['ignore', 'pipe', 'pipe'] },
        );
        children.set(node.index, child);
        // One ordered stream per agent run: separate un-awaited appends could interleave lines.
        const sink = createWriteStream(logFile, { flags: 'a' });
        child.stdout?.pipe(sink, { end: false });
        child.stderr?.pipe(sink, { end: false });
        child.once('close', () => sink.end());
        child.once('exit', (code) => {
          if (children.get(node.index) === child) children.delete(node.index);
          // Restart=on-failure with RestartSec, like the unit on the appliance.
          if (wanted && code !== 0 && code !== null) setTimeout(() => wanted && !children.has(node.index) && launch(), 2000);
        });
      };
      /** Stops the supervisor restarting it, signals the agent, and SIGKILLs it after 10 s. */
      const terminate = async (signal: NodeJS.Signals): Promise<void> => {
        wanted = false;
        const c = children.get(node.index);
        if (!c) return;
        const gone = new Promise((r) => c.once('exit', r));
        c.kill(signal);
        await Promise.race([gone, new Promise((r) => setTimeout(r, 10_000))]);
        c.kill('SIGKILL');
      };
      const socketDir = path.join(dirs.pg, 'run');
      const fillFile = path.join(dirs.pg, FILL_FILE);
      const state = { poweredOff: false, linkDown: false, detached: false, diskFilled: false, frozen: false, stateReadOnly: false };
      let frozenPids: number[] = [];
      let stateMountedIn: number | undefined;
      const gwIp = (args: string[]) => must(['ip', '-n', topology.gw.ns, ...args]);
      const agent: PairAgent = {
        index: node.index,
        ns: node.ns,
        address: node.address,
        dirs,
        consoleFile,
        logFile,
        env,
        start() {
          wanted = true;
          launch();
        },
        kill: () => terminate('SIGKILL'),
        stop: () => terminate('SIGTERM'),
        console: () => readFile(consoleFile, 'utf8').catch(() => ''),
        async log() {
          const text = await readFile(logFile, 'utf8').catch(() => '');
          // stderr (a crash trace) shares the file; only whole JSON lines are events.
          return text.split('\n').flatMap((l) => {
            if (!l.startsWith('{')) return [];
            try {
              return [JSON.parse(l) as Record<string, unknown>];
            } catch {
              return [];
            }
          });
        },
        status: async () => (await readStatus(path.join(dirs.run, 'agent.sock'))) as Record<string, unknown>,
        async sql(query, database = 'postgres') {
          const r = await topology.exec(
            node.ns,
            ['runuser', '-u', 'postgres', '--', 'psql', '-X', '-h', socketDir, '-p', '5432', '-d', database, '-Atc', query],
            { timeoutMs: 15_000 },
          );
          if (r.code !== 0) throw new Error(`psql on node ${node.index + 1} failed: ${r.stderr.trim()}`);
          return r.stdout.trim();
        },
        exec: (argv, timeoutMs = 15_000) => topology.exec(node.ns, argv, { timeoutMs }),

        async powerOff() {
          state.poweredOff = true;
          // All at once, as a power cut: the link goes down while the agent is killed, not after
          // the rest of the namespace. Killing the rest takes time (54 processes with Kubernetes:
          // ~0.7 s before the link went down), during which the node's kernel still answered ARP
          // for the VIP and its PostgreSQL still streamed: to the peer, a leader alive but unheard.
          await Promise.all([topology.linkDown(node.index), terminate('SIGKILL')]);
          await killNamespaceProcesses(node.ns);
        },
        async powerOn() {
          // A reboot loses the addresses it held and everything under /run.
          const addrs = await must(['ip', '-n', node.ns, '-4', '-o', 'addr', 'show', 'dev', node.ifname]);
          if (addrs.includes(`inet ${vip}/`)) await must(['ip', '-n', node.ns, 'addr', 'del', vipCidr, 'dev', node.ifname]);
          // Kubernetes' program logs live under /run too: keep the last boot's for the failure dumps.
          await rm(path.join(base, PREVIOUS_RUN_KUBERNETES), { recursive: true, force: true });
          await rename(path.join(dirs.run, 'kubernetes'), path.join(base, PREVIOUS_RUN_KUBERNETES)).catch(() => undefined);
          for (const entry of await readdir(dirs.run).catch(() => [] as string[])) await rm(path.join(dirs.run, entry), { recursive: true, force: true });
          await topology.linkUp(node.index);
          state.linkDown = false;
          state.poweredOff = false;
          agent.start();
        },
        async wipe() {
          if (!state.poweredOff) throw new Error(`node ${node.index + 1}: power it off before wiping it`);
          for (const dir of [dirs.state, dirs.pg, dirs.run])
            for (const entry of await readdir(dir)) await rm(path.join(dir, entry), { recursive: true, force: true });
        },
        async crashPostgres() {
          const text = await readFile(path.join(dirs.pg, 'data', 'postmaster.pid'), 'utf8');
          const pid = Number(text.split('\n')[0]);
          if (!Number.isInteger(pid) || pid <= 1) throw new Error(`node ${node.index + 1}: no postmaster pid in postmaster.pid`);
          process.kill(pid, 'SIGKILL');
          return pid;
        },
        async freezePostgres() {
          const text = await readFile(path.join(dirs.pg, 'data', 'postmaster.pid'), 'utf8');
          const postmaster = Number(text.split('\n')[0]);
          if (!Number.isInteger(postmaster) || postmaster <= 1) throw new Error(`node ${node.index + 1}: no postmaster pid in postmaster.pid`);
          // The postmaster first: once stopped it forks nothing new, so its children read next are all of them.
          process.kill(postmaster, 'SIGSTOP');
          // Every child (backends, walsender, checkpointer...): the kernel lists them per task.
          const children = await readFile(`/proc/${postmaster}/task/${postmaster}/children`, 'utf8');
          frozenPids = [postmaster, ...children.split(/\s+/).filter(Boolean).map(Number)];
          for (const pid of frozenPids.slice(1)) process.kill(pid, 'SIGSTOP');
          state.frozen = true;
          return frozenPids;
        },
        // In the agent's own mount namespace (`ip netns exec` gave it one, which does not see
        // mounts made here later): its children, PostgreSQL included, share it.
        async stateReadOnly() {
          const pid = children.get(node.index)?.pid;
          if (pid === undefined) throw new Error(`node ${node.index + 1}: no agent running`);
          const inAgent = ['nsenter', `--target=${pid}`, '--mount', '--'];
          await must([...inAgent, 'mount', '--bind', dirs.state, dirs.state]);
          state.stateReadOnly = true;
          stateMountedIn = pid;
          await must([...inAgent, 'mount', '-o', 'remount,bind,ro', dirs.state]);
        },
        async stateWritable() {
          // The namespace lives on with the agent that had it; an agent started since has its own, without the mount.
          if (stateMountedIn !== undefined && isAlive(stateMountedIn))
            await must(['nsenter', `--target=${stateMountedIn}`, '--mount', '--', 'umount', dirs.state]);
          stateMountedIn = undefined;
          state.stateReadOnly = false;
        },
        async thawPostgres() {
          for (const pid of frozenPids) {
            try {
              process.kill(pid, 'SIGCONT');
            } catch {
              // Gone meanwhile (a SIGKILL by the agent's stop): nothing to wake.
            }
          }
          frozenPids = [];
          state.frozen = false;
        },
        async linkDown() {
          state.linkDown = true;
          await topology.linkDown(node.index);
        },
        async linkUp() {
          await topology.linkUp(node.index);
          state.linkDown = false;
        },
        async detach() {
          state.detached = true;
          await gwIp(['link', 'set', node.bridgePort, 'nomaster']);
        },
        async attach() {
          await gwIp(['link', 'set', node.bridgePort, 'master', topology.bridge]);
          state.detached = false;
        },
        async fillDisk() {
          if (opts.pgTmpfsMb === undefined) throw new Error('fillDisk() needs createPair({ pgTmpfsMb })');
          state.diskFilled = true;
          // Appends, so a second call tops up what PostgreSQL freed meanwhile.
          const r = await run(['dd', 'if=/dev/zero', `of=${fillFile}`, 'bs=4096', 'oflag=append', 'conv=notrunc'], { timeoutMs: 120_000 });
          if (!/No space left on device/.test(r.stderr)) throw new Error(`filling ${dirs.pg} did not reach ENOSPC (dd exit ${r.code}): ${r.stderr.trim()}`);
        },
        async releaseDisk() {
          await rm(fillFile, { force: true });
          state.diskFilled = false;
        },
        async switchover() {
          // Imported when used: the rest of the harness does not depend on this export.
          const { requestSwitchover } = await import('../../firstboot/src/net/status-server.ts');
          return requestSwitchover(path.join(dirs.run, 'agent.sock'));
        },
        faults: () => ({ ...state }),
        async heal() {
          if (state.detached) await agent.attach();
          if (state.linkDown && !state.poweredOff) await agent.linkUp();
          if (state.diskFilled) await agent.releaseDisk();
          if (state.frozen) await agent.thawPostgres();
          if (state.stateReadOnly) await agent.stateWritable();
          if (state.poweredOff) await agent.powerOn();
        },
        writable: () => postgresWritable(socketDir),
      };
      agents.push(agent);
    }
  } catch (e) {
    await destroy();
    throw e;
  }

  let client: Promise<EtcdClientFiles> | undefined;
  const etcdClient = (): Promise<EtcdClientFiles> => {
    client ??= (async () => {
      const errors: string[] = [];
      for (const a of agents) {
        try {
          return await issueEtcdClientCert(a.dirs.state, path.join(root, 'etcd-client'));
        } catch (e) {
          errors.push((e as Error).message);
        }
      }
      client = undefined;
      throw new Error(`no node could issue an etcd client certificate: ${errors.join('; ')}`);
    })();
    return client;
  };
  const adminKubeconfig = async (): Promise<string> => {
    if (!kubernetes) throw new Error('adminKubeconfig() needs createPair({ kubernetes: true })');
    const why: string[] = [];
    for (const a of agents) {
      const file = adminKubeconfigPath(a);
      const ok = await access(file).then(
        () => true,
        (e: NodeJS.ErrnoException) => void why.push(`node ${a.index + 1}: ${e.code ?? e.message}`),
      );
      if (ok) return file;
    }
    throw new Error(`no node has written ${path.join('<state>', 'kubernetes', 'admin.kubeconfig')} yet (${why.join(', ')})`);
  };
  const arbiterDir = path.join(root, 'arbiter');
  const startArbiter: Pair['startArbiter'] = async () => {
    if (!opts.arbiter) throw new Error('startArbiter() needs createPair({ arbiter: true })');
    const errors: string[] = [];
    let bundle: string | undefined;
    for (const a of agents) {
      const r = await run(
        [
          'env',
          '-i',
          ...Object.entries(a.env).map(([k, v]) => `${k}=${v}`),
          process.execPath,
          '--import',
          'tsx',
          AGENT_ENTRY,
          'arbiter-cert',
          '--address',
          topology.gw.address,
        ],
        {
          timeoutMs: 60_000,
        },
      );
      if (r.code === 0) {
        bundle = r.stdout;
        break;
      }
      errors.push(`node ${a.index + 1}: ${r.stderr.trim()}`);
    }
    if (bundle === undefined) throw new Error(`no node could issue the arbiter's certificate: ${errors.join('; ')}`);
    await mkdir(arbiterDir, { recursive: true, mode: 0o700 });
    await writeFile(path.join(arbiterDir, 'arbiter-tls.json'), bundle, { mode: 0o600 });
    const logFile = path.join(root, 'arbiter.log');
    const child = topology.spawn(
      topology.gw.ns,
      [process.execPath, '--import', 'tsx', AGENT_ENTRY, 'arbiter', '--listen', `${topology.gw.address}:${ARBITER_PORT}`, '--dir', arbiterDir],
      { cwd: REPO, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    const sink = createWriteStream(logFile, { flags: 'a' });
    child.stdout?.pipe(sink);
    child.stderr?.pipe(sink);
    return {
      state: async () => {
        const text = await readFile(path.join(arbiterDir, 'arbiter-state.json'), 'utf8').catch(() => undefined);
        return text === undefined ? undefined : (JSON.parse(text) as { term: number; holder: string | null; alone: boolean });
      },
      log: () => readFile(logFile, 'utf8').catch(() => ''),
    };
  };
  const isolateNodes: Pair['isolateNodes'] = async (on) => {
    for (const node of topology.nodes)
      await must(['ip', 'netns', 'exec', topology.gw.ns, 'bridge', 'link', 'set', 'dev', node.bridgePort, 'isolated', on ? 'on' : 'off']);
  };
  return { topology, vip, agents, kubernetes: kubernetes !== undefined, adminKubeconfig, etcdClient, startArbiter, isolateNodes, destroy };
}

/**
 * Real geminik8s agents in network namespaces (test/helpers/netns.ts): each node gets its own OEM,
 * state, run and PostgreSQL folders, the same site file, and Kine from the component cache. A
 * small supervisor restarts an agent that exits with an error, as systemd does on the appliance.
 */
import type { ChildProcess } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { chmod, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { stringify } from 'yaml';
import { kineSpec, resolveComponent } from '../../builder/src/components/resolve.ts';
import { readStatus } from '../../firstboot/src/net/status-server.ts';
import { createTopology, type Topology } from './netns.ts';

const REPO = fileURLToPath(new URL('../..', import.meta.url));
const AGENT_ENTRY = path.join(REPO, 'firstboot/src/main.ts');

export interface PairAgent {
  index: number;
  ns: string;
  address: string;
  dirs: { root: string; oem: string; state: string; run: string; pg: string };
  consoleFile: string;
  logFile: string;
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
}

export interface Pair {
  topology: Topology;
  vip: string;
  agents: PairAgent[];
  destroy(): Promise<void>;
}

export function siteYaml(siteId: string, secret: string, vipCidr: string, gateway: string): string {
  return stringify({ apiVersion: 'geminik8s/v1', kind: 'Site', site: { id: siteId }, pair: { secret }, network: { vip: vipCidr, addressing: 'dhcp', gateway } });
}

/**
 * `nodeIds` pre-seeds each node's identity (hostmeta.json, as an earlier boot would have left it),
 * which makes the roles predictable: with nothing committed, the lower node id leads.
 */
export async function createPair(opts: { nodes?: number; secret?: string; secrets?: string[]; nodeIds?: string[] } = {}): Promise<Pair> {
  const count = opts.nodes ?? 2;
  const kine = await resolveComponent(kineSpec('v0.17.5'), { arch: 'amd64', cacheDir: path.join(REPO, '.cache') });
  const topology = await createTopology(count);
  const root = await mkdtemp(path.join(os.tmpdir(), 'gk8s-pair-'));
  // PostgreSQL runs as the postgres user and must traverse into its folder.
  await chmod(root, 0o755);
  const vipCidr = `${topology.subnet}.10/24`;
  const defaultSecret = opts.secret ?? Buffer.from(Array.from({ length: 32 }, (_, i) => (i * 37 + 11) % 256)).toString('base64url');
  const agents: PairAgent[] = [];
  const children = new Map<number, ChildProcess>();

  for (const node of topology.nodes) {
    const base = path.join(root, `n${node.index + 1}`);
    const dirs = { root: base, oem: path.join(base, 'oem'), state: path.join(base, 'state'), run: path.join(base, 'run'), pg: path.join(base, 'pg') };
    for (const d of Object.values(dirs)) await mkdir(d, { recursive: true, mode: 0o755 });
    const secret = opts.secrets?.[node.index] ?? defaultSecret;
    await writeFile(path.join(dirs.oem, 'site.yaml'), siteYaml('lab-pair', secret, vipCidr, topology.gw.address), { mode: 0o600 });
    const nodeId = opts.nodeIds?.[node.index];
    if (nodeId) {
      const at = new Date().toISOString();
      const meta = { schemaVersion: 1, nodeId, bootCount: 0, firstBootAt: at, lastBootAt: at, phase: 'waiting-for-site', term: 0, role: 'unassigned' };
      await writeFile(path.join(dirs.state, 'hostmeta.json'), `${JSON.stringify(meta)}\n`);
    }
    const consoleFile = path.join(base, 'console.log');
    const logFile = path.join(base, 'agent.log');
    const env: Record<string, string> = {
      PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin',
      GEMINIK8S_OEM_DIR: dirs.oem, GEMINIK8S_STATE_DIR: dirs.state, GEMINIK8S_RUN_DIR: dirs.run, GEMINIK8S_PG_ROOT: dirs.pg,
      GEMINIK8S_DATA_DIR: path.join(base, 'no-data-mount'), GEMINIK8S_CONSOLE: consoleFile, GEMINIK8S_KINE_BIN: kine.path,
      GEMINIK8S_BROADCAST: topology.broadcast, GEMINIK8S_IMAGE_FILE: path.join(base, 'no-image.yaml'),
    };
    let wanted = false;
    const launch = (): void => {
      const child = topology.spawn(node.ns, ['env', '-i', ...Object.entries(env).map(([k, v]) => `${k}=${v}`), process.execPath, '--import', 'tsx', AGENT_ENTRY], { cwd: REPO, stdio: ['ignore', 'pipe', 'pipe'] });
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
    const agent: PairAgent = {
      index: node.index, ns: node.ns, address: node.address, dirs, consoleFile, logFile,
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
        const r = await topology.exec(node.ns, ['runuser', '-u', 'postgres', '--', 'psql', '-X', '-h', path.join(dirs.pg, 'run'), '-p', '5432', '-d', database, '-Atc', query], { timeoutMs: 15_000 });
        if (r.code !== 0) throw new Error(`psql on node ${node.index + 1} failed: ${r.stderr.trim()}`);
        return r.stdout.trim();
      },
      exec: (argv, timeoutMs = 15_000) => topology.exec(node.ns, argv, { timeoutMs }),
    };
    agents.push(agent);
  }

  return {
    topology, vip: vipCidr.split('/')[0] ?? '', agents,
    async destroy() {
      for (const a of agents) await a.kill().catch(() => undefined);
      // PostgreSQL (pg_ctl daemon) and Kine outlive the agent process: stop them before the namespaces go.
      for (const a of agents) {
        await topology.exec(a.ns, ['runuser', '-u', 'postgres', '--', '/usr/lib/postgresql/15/bin/pg_ctl', '-D', path.join(a.dirs.pg, 'data'), 'stop', '-m', 'immediate'], { timeoutMs: 20_000 }).catch(() => undefined);
      }
      await topology.destroy();
      await rm(root, { recursive: true, force: true });
    },
  };
}

/** Polls `check` until it returns a value (not undefined) or the time is up. */
export async function eventually<T>(what: string, timeoutMs: number, check: () => Promise<T | undefined>): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last = '';
  for (;;) {
    try {
      const v = await check();
      if (v !== undefined) return v;
    } catch (e) {
      last = (e as Error).message || String(e);
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs / 1000} s waiting for ${what}${last ? ` (last error: ${last})` : ''}`);
    await new Promise((r) => setTimeout(r, 500));
  }
}

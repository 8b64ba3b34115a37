/**
 * The systems users would pick instead of geminik8s, run for bench/peers.ts on the same kind of
 * network namespaces as our pair (test/helpers/netns.ts): two database nodes n1 and n2 on the
 * bridge, and a third namespace n3 for what each needs besides them.
 *
 *  - Patroni (Debian's `patroni`) with Debian's `etcd-server` as its DCS, one etcd member in n3:
 *    once with Patroni's default timings (ttl 30 s, loop_wait 10 s, retry_timeout 10 s) and once
 *    as tight as its documentation allows (ttl 20, loop_wait 1, retry_timeout 3: the documented
 *    minimums, which keep loop_wait + 2 * retry_timeout <= ttl). synchronous_mode on, pg_rewind on.
 *  - pg_auto_failover (Debian's `postgresql-15-auto-failover`): the monitor in n3, default timings;
 *    two nodes give one synchronous standby (`ANY 1`).
 *
 * How clients write: neither offers a VIP of its own (Patroni has callbacks a site would script; the
 * project points clients at a multi-host connection string), so the writer reaches each through
 * a Kine in the gateway namespace whose datastore endpoint is the multi-host connection string
 * `postgres://postgres@n1:5432,n2:5432/kine?target_session_attrs=read-write&connect_timeout=1`:
 * the way a Kubernetes server in front of either would. connect_timeout is 1 s, not more: pgx tries
 * the hosts in order, and a dead first host must not eat the writer's whole 2 s put deadline on
 * every new connection (with 2 s no put got through after a failover). The writer and the read-back then are
 * the fault matrix's own (etcd puts through Kine over mTLS), and the dual-primary sampler too.
 *
 * The databases trust the bridge's subnet (no passwords): these namespaces are private to the
 * bench and nothing but the bench reaches them. PostgreSQL data lives on a tmpfs, as under our
 * pair in the fault matrix. Everything is killed and removed by destroy().
 */
import type { ChildProcess } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { chown, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { stringify } from 'yaml';
import { generateCa, issueClientCert, issueServerCert } from '../firstboot/src/provision/secrets.ts';
import { resolveTestComponent } from '../test/helpers/components.ts';
import type { EtcdClientFiles } from '../test/helpers/etcd-client.ts';
import { etcdctlFlags } from '../test/helpers/etcd-client.ts';
import { createTopology, killNamespaceProcesses, must, run, type Topology } from '../test/helpers/netns.ts';
import { postgresWritable } from '../test/helpers/pair-agents.ts';
import { eventually } from '../test/helpers/poll.ts';

export const PEER_SYSTEMS = [
  { id: 'patroni', title: 'Patroni + etcd, default timings (ttl 30, loop_wait 10, retry_timeout 10)' },
  { id: 'patroni-tight', title: 'Patroni + etcd, tightest documented timings (ttl 20, loop_wait 1, retry_timeout 3)' },
  { id: 'pg_auto_failover', title: 'pg_auto_failover, monitor in a third namespace, default timings' },
] as const;
export type PeerSystemId = (typeof PEER_SYSTEMS)[number]['id'];
export const isPeerSystemId = (s: string): s is PeerSystemId => PEER_SYSTEMS.some((p) => p.id === s);

const PG_BIN = '/usr/lib/postgresql/15/bin';
const errText = (e: unknown): string => (e instanceof Error ? e.message : String(e)).replace(/\s+/g, ' ').trim();

interface DbNode {
  index: number;
  ns: string;
  address: string;
  dir: string;
  data: string;
  socketDir: string;
  /** The node's daemon (patroni or pg_autoctl run), while it runs. */
  daemon?: ChildProcess;
}

/** One peer system on its namespaces, with a Kine in the gateway namespace in front of it. */
export interface PeerCluster {
  system: PeerSystemId;
  topology: Topology;
  /** The two database nodes, n1 and n2. */
  nodes: readonly { index: number; address: string }[];
  /** Kine in the gateway namespace: the writer's target host, and its client certificate. */
  kineHost: string;
  client: EtcdClientFiles;
  /** Where destroy() leaves the daemons' and Kine's logs. */
  logsDir: string;
  /** Node i's PostgreSQL takes writes (undefined: no answer). */
  writable(i: number): Promise<boolean | undefined>;
  /** psql -Atc on node i's `kine` database, over its unix socket; what it printed, or its error. */
  kineSql(i: number, sql: string): Promise<string>;
  /** The node whose PostgreSQL is primary with a synchronous standby streaming, and Kine takes a put; or what is missing. */
  healthy(): Promise<{ primary: number } | { missing: string }>;
  /** A power cut: the link goes down and every process in the node's namespace is killed. */
  powerOff(i: number): Promise<void>;
  /** The link back up and the node's daemon started again, as after a reboot. */
  powerOn(i: number): Promise<void>;
  linkDown(i: number): Promise<void>;
  linkUp(i: number): Promise<void>;
  destroy(): Promise<void>;
}

/** Throws one error naming every missing package (never skips). */
export async function requirePeerPrereqs(system: PeerSystemId): Promise<void> {
  const need: [string, string][] =
    system === 'pg_auto_failover'
      ? [
          ['/usr/bin/pg_autoctl', 'postgresql-15-auto-failover'],
          [`${PG_BIN}/initdb`, 'postgresql-15'],
        ]
      : [
          ['/usr/bin/patroni', 'patroni'],
          ['/usr/bin/etcd', 'etcd-server'],
          [`${PG_BIN}/initdb`, 'postgresql-15'],
        ];
  const missing: string[] = [];
  for (const [file, pkg] of need) if ((await run(['test', '-x', file])).code !== 0) missing.push(`${file} (apt-get install ${pkg})`);
  if (missing.length > 0) throw new Error(`${system} cannot run here; missing: ${missing.join('; ')}`);
}

/** Creates the namespaces, starts the system and the Kine in front of it; resolves once healthy. */
export async function createPeerCluster(
  system: PeerSystemId,
  log: (line: string) => void = () => undefined,
  /** Told how to tear down what exists so far, before anything is created (a signal during the start-up must not leak namespaces or the tmpfs). */
  onTeardown: (destroy: () => Promise<void>) => void = () => undefined,
): Promise<PeerCluster> {
  await requirePeerPrereqs(system);
  const kine = await resolveTestComponent('kine', { build: true, log });
  const topology = await createTopology(3);
  const base = await mkdtemp(path.join(os.tmpdir(), `gk8s-peers-${system}-`));
  let mounted = false;
  const kineLog = path.join(base, 'kine.log');
  // The daemons' and Kine's logs outlive the tmpfs, for a post-mortem.
  const logsDir = path.join(os.tmpdir(), `${path.basename(base)}-logs`);
  const destroy = async (): Promise<void> => {
    await topology.destroy();
    await run(['sh', '-c', 'mkdir -p "$2" && cd "$1" && find . -name "*.log" -exec cp --parents {} "$2" \\;', 'keep-logs', base, logsDir]);
    if (mounted) await run(['umount', '-l', base]);
    await rm(base, { recursive: true, force: true });
  };
  onTeardown(destroy);
  try {
    await must(['mount', '-t', 'tmpfs', '-o', 'size=3g,mode=0755', `gk8s-peers-${process.pid}`, base], { what: 'a tmpfs for the data' });
    mounted = true;
    const pgUser = await must(['id', '-u', 'postgres'], { what: 'the postgres user' });
    const pgGroup = await must(['id', '-g', 'postgres'], { what: 'the postgres group' });
    const own = (p: string): Promise<void> => chown(p, Number(pgUser.trim()), Number(pgGroup.trim()));
    const subnet = `${topology.subnet}.0/24`;
    const third = topology.nodes[2];
    if (!third) throw new Error('no third namespace');
    const nodes: DbNode[] = [];
    for (const n of topology.nodes.slice(0, 2)) {
      const dir = path.join(base, `n${n.index + 1}`);
      const node: DbNode = { index: n.index, ns: n.ns, address: n.address, dir, data: path.join(dir, 'data'), socketDir: path.join(dir, 'sock') };
      for (const d of [dir, node.socketDir]) {
        await mkdir(d, { recursive: true, mode: 0o700 });
        await own(d);
      }
      nodes.push(node);
    }
    const nodeAt = (i: number): DbNode => {
      const n = nodes[i];
      if (!n) throw new Error(`no database node ${i}`);
      return n;
    };
    const daemonLog = (n: DbNode, name: string): NodeJS.WritableStream => createWriteStream(path.join(n.dir, `${name}.log`), { flags: 'a' });
    const spawnAsPostgres = (ns: string, argv: string[], env: Record<string, string>, logTo: NodeJS.WritableStream): ChildProcess => {
      const child = topology.spawn(ns, ['runuser', '-u', 'postgres', '--', 'env', ...Object.entries(env).map(([k, v]) => `${k}=${v}`), ...argv]);
      child.stdout?.pipe(logTo);
      child.stderr?.pipe(logTo);
      return child;
    };

    // ---- the system
    let startNode: (n: DbNode) => void;
    if (system === 'pg_auto_failover') {
      const mon = { dir: path.join(base, 'monitor'), sock: path.join(base, 'monitor', 'sock') };
      for (const d of [mon.dir, mon.sock]) {
        await mkdir(d, { recursive: true, mode: 0o700 });
        await own(d);
      }
      // pg_autoctl keeps its state under XDG directories keyed by PGDATA, and refuses root.
      const autoctlEnv = (dir: string, sock: string): Record<string, string> => ({
        HOME: dir,
        XDG_CONFIG_HOME: path.join(dir, 'config'),
        XDG_DATA_HOME: path.join(dir, 'share'),
        XDG_RUNTIME_DIR: path.join(dir, 'run'),
        PG_REGRESS_SOCK_DIR: sock,
        // Its own local connections (CREATE EXTENSION in the node's database) go to PGHOST.
        PGHOST: sock,
        PATH: `${PG_BIN}:/usr/bin:/bin`,
      });
      const monLog = createWriteStream(path.join(mon.dir, 'pg_autoctl.log'), { flags: 'a' });
      spawnAsPostgres(
        third.ns,
        [
          'pg_autoctl',
          'create',
          'monitor',
          '--pgdata',
          path.join(mon.dir, 'data'),
          '--pgport',
          '5432',
          '--hostname',
          third.address,
          '--auth',
          'trust',
          '--no-ssl',
          '--run',
        ],
        autoctlEnv(mon.dir, mon.sock),
        monLog,
      );
      const monitorUri = `postgres://autoctl_node@${third.address}:5432/pg_auto_failover?sslmode=disable`;
      await eventually('the pg_auto_failover monitor to answer', 120_000, async () => {
        const r = await run(['ip', 'netns', 'exec', third.ns, 'psql', monitorUri, '-Atc', 'SELECT 1']);
        if (r.code !== 0) throw new Error(r.stderr.trim());
        return r.stdout.trim() === '1' || undefined;
      });
      let created = new Set<number>();
      startNode = (n) => {
        const env = autoctlEnv(n.dir, n.socketDir);
        // First boot creates the node (registering it, initdb or pg_basebackup); later boots run it.
        n.daemon = created.has(n.index)
          ? spawnAsPostgres(n.ns, ['pg_autoctl', 'run', '--pgdata', n.data], env, daemonLog(n, 'pg_autoctl'))
          : spawnAsPostgres(
              n.ns,
              [
                'pg_autoctl',
                'create',
                'postgres',
                '--pgdata',
                n.data,
                '--pgport',
                '5432',
                '--hostname',
                n.address,
                '--name',
                `n${n.index + 1}`,
                '--dbname',
                'kine',
                '--monitor',
                monitorUri,
                '--auth',
                'trust',
                '--pg-hba-lan',
                '--no-ssl',
                '--run',
              ],
              env,
              daemonLog(n, 'pg_autoctl'),
            );
        created = new Set([...created, n.index]);
      };
      startNode(nodeAt(0));
      await eventually('n1 to be a primary', 180_000, async () => (await postgresWritable(nodeAt(0).socketDir)) || undefined);
      startNode(nodeAt(1));
    } else {
      const timings = system === 'patroni' ? { ttl: 30, loop_wait: 10, retry_timeout: 10 } : { ttl: 20, loop_wait: 1, retry_timeout: 3 };
      const etcdDir = path.join(base, 'etcd');
      await mkdir(etcdDir, { recursive: true, mode: 0o700 });
      const etcd = topology.spawn(third.ns, [
        'etcd',
        '--name',
        'dcs',
        '--data-dir',
        etcdDir,
        '--listen-client-urls',
        `http://${third.address}:2379`,
        '--advertise-client-urls',
        `http://${third.address}:2379`,
        '--listen-peer-urls',
        'http://127.0.0.1:2380',
        '--initial-advertise-peer-urls',
        'http://127.0.0.1:2380',
        '--initial-cluster',
        'dcs=http://127.0.0.1:2380',
      ]);
      const etcdLog = createWriteStream(path.join(etcdDir, '..', 'etcd.log'), { flags: 'a' });
      etcd.stdout?.pipe(etcdLog);
      etcd.stderr?.pipe(etcdLog);
      await eventually('etcd to answer', 60_000, async () => {
        const r = await run(['ip', 'netns', 'exec', third.ns, 'etcdctl', `--endpoints=http://${third.address}:2379`, 'endpoint', 'health']);
        if (r.code !== 0) throw new Error(r.stderr.trim());
        return true;
      });
      const hba = ['local all all trust', `host all all ${subnet} trust`, `host replication all ${subnet} trust`];
      for (const n of nodes) {
        const config = {
          scope: 'bench',
          namespace: '/service/',
          name: `n${n.index + 1}`,
          restapi: { listen: `${n.address}:8008`, connect_address: `${n.address}:8008` },
          etcd3: { hosts: [`${third.address}:2379`] },
          bootstrap: {
            dcs: {
              ...timings,
              maximum_lag_on_failover: 1048576,
              synchronous_mode: true,
              postgresql: { use_pg_rewind: true, parameters: { wal_log_hints: 'on', max_wal_senders: 10, max_replication_slots: 10 } },
            },
            initdb: [{ encoding: 'UTF8' }],
            pg_hba: hba,
          },
          postgresql: {
            listen: `${n.address}:5432`,
            connect_address: `${n.address}:5432`,
            data_dir: n.data,
            bin_dir: PG_BIN,
            pgpass: path.join(n.dir, 'pgpass'),
            // Trusted on the bench's private subnet; Patroni still wants the roles named.
            authentication: { superuser: { username: 'postgres' }, replication: { username: 'replicator' }, rewind: { username: 'postgres' } },
            parameters: { unix_socket_directories: n.socketDir },
            pg_hba: hba,
          },
        };
        const file = path.join(n.dir, 'patroni.yml');
        await writeFile(file, stringify(config), { mode: 0o600 });
        await own(file);
      }
      startNode = (n) => {
        n.daemon = spawnAsPostgres(n.ns, ['patroni', path.join(n.dir, 'patroni.yml')], { HOME: n.dir, PATH: '/usr/bin:/bin' }, daemonLog(n, 'patroni'));
      };
      startNode(nodeAt(0));
      await eventually('n1 to be a primary', 180_000, async () => (await postgresWritable(nodeAt(0).socketDir)) || undefined);
      startNode(nodeAt(1));
    }

    // ---- Kine in front, on the gateway, over the multi-host connection string
    const tls = path.join(base, 'tls');
    await mkdir(tls, { recursive: true, mode: 0o700 });
    const ca = await generateCa('bench-peers CA');
    const server = await issueServerCert(ca, 'kine', [`IP:${topology.gw.address}`]);
    const clientPem = await issueClientCert(ca, 'bench-writer');
    const client: EtcdClientFiles = { caFile: path.join(tls, 'ca.crt'), certFile: path.join(tls, 'client.crt'), keyFile: path.join(tls, 'client.key') };
    await writeFile(client.caFile, ca.certPem, { mode: 0o600 });
    await writeFile(client.certFile, clientPem.certPem, { mode: 0o600 });
    await writeFile(client.keyFile, clientPem.keyPem, { mode: 0o600 });
    await writeFile(path.join(tls, 'server.crt'), server.certPem, { mode: 0o600 });
    await writeFile(path.join(tls, 'server.key'), server.keyPem, { mode: 0o600 });
    const hosts = nodes.map((n) => `${n.address}:5432`).join(',');
    const k = topology.spawn(topology.gw.ns, [
      kine.path,
      '--endpoint',
      `postgres://postgres@${hosts}/kine?sslmode=disable&target_session_attrs=read-write&connect_timeout=1`,
      '--listen-address',
      `${topology.gw.address}:2379`,
      '--metrics-bind-address',
      '0',
      '--server-cert-file',
      path.join(tls, 'server.crt'),
      '--server-key-file',
      path.join(tls, 'server.key'),
      '--trusted-ca-file',
      client.caFile,
    ]);
    const kineOut = createWriteStream(kineLog, { flags: 'a' });
    k.stdout?.pipe(kineOut);
    k.stderr?.pipe(kineOut);

    const writable = (i: number): Promise<boolean | undefined> => postgresWritable(nodeAt(i).socketDir);
    const cluster: PeerCluster = {
      system,
      topology,
      nodes: nodes.map((n) => ({ index: n.index, address: n.address })),
      kineHost: topology.gw.address,
      client,
      logsDir,
      writable,
      async kineSql(i, sql) {
        const r = await run(['psql', '-h', nodeAt(i).socketDir, '-U', 'postgres', '-d', 'kine', '-Atc', sql], { timeoutMs: 10_000 });
        return r.code === 0 ? r.stdout.trim() : `(${r.stderr.trim() || `exit ${r.code}`})`;
      },
      async healthy() {
        const states = await Promise.all(nodes.map((n) => writable(n.index)));
        const primary = states.indexOf(true);
        const seen = states.map((s, i) => `n${i + 1} ${s === undefined ? 'no answer' : s ? 'primary' : 'standby'}`).join(', ');
        if (primary < 0 || states.filter((s) => s === false).length !== 1) return { missing: `one primary and one standby (${seen})` };
        const p = nodeAt(primary);
        const rows = await run(['psql', '-h', p.socketDir, '-U', 'postgres', '-d', 'postgres', '-Atc', 'SELECT state, sync_state FROM pg_stat_replication'], {
          timeoutMs: 10_000,
        });
        if (!/^streaming\|(sync|quorum)$/m.test(rows.stdout))
          return {
            missing: `a synchronous standby streaming from n${primary + 1} (pg_stat_replication: ${rows.stdout.trim().replace(/\n/g, '; ') || rows.stderr.trim() || 'none'})`,
          };
        const put = await run(
          [
            'ip',
            'netns',
            'exec',
            topology.gw.ns,
            'etcdctl',
            ...etcdctlFlags(topology.gw.address, client),
            '--dial-timeout=2s',
            '--command-timeout=3s',
            'put',
            '/peers/health',
            String(Date.now()),
          ],
          { timeoutMs: 10_000 },
        );
        if (put.code !== 0) return { missing: `Kine taking a put (${put.stderr.trim() || `exit ${put.code}`})` };
        return { primary };
      },
      async powerOff(i) {
        const n = nodeAt(i);
        await Promise.all([topology.linkDown(i), killNamespaceProcesses(n.ns)]);
        await killNamespaceProcesses(n.ns);
        n.daemon = undefined;
      },
      async powerOn(i) {
        await topology.linkUp(i);
        startNode(nodeAt(i));
      },
      linkDown: (i) => topology.linkDown(i),
      linkUp: (i) => topology.linkUp(i),
      destroy,
    };
    await waitPeerHealthy(cluster, 300_000);
    return cluster;
  } catch (e) {
    const logs = await run(['sh', '-c', `tail -n 15 ${base}/*.log ${base}/*/*.log 2>/dev/null`]).catch(() => ({ stdout: '' }));
    await destroy();
    throw new Error(`${system} did not come up: ${errText(e)}\n${logs.stdout.slice(-4000)}`);
  }
}

/** Polls healthy() until it names a primary; the timeout error says what was still missing. */
export function waitPeerHealthy(c: PeerCluster, timeoutMs: number): Promise<{ primary: number; at: number }> {
  return eventually(
    `${c.system} healthy behind Kine`,
    timeoutMs,
    async () => {
      const h = await c.healthy();
      if ('missing' in h) throw new Error(h.missing);
      return { primary: h.primary, at: Date.now() };
    },
    500,
  );
}

/**
 * What the cluster code needs to know about this box, from the image (/etc/geminik8s/image.yaml,
 * rendered from the profile at build time) and the environment (tests run several agents on one
 * host, each in its own network namespace, with their own directories and ports).
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ConfigError } from '../core/config-file.ts';
import { parseImageFacts, type ImageFacts, type KubernetesFacts } from '../core/image-facts.ts';
import { isIPv4 } from '../core/subnet.ts';
import { appliancePgPaths, type PgPaths } from '../provision/postgres.ts';
import type { ReplicationMode } from '../provision/core/pgconf.ts';

export interface ClusterSettings {
  replication: ReplicationMode;
  preferredLeader?: string;
  pg: PgPaths;
  pgPort: number;
  kineBinary: string;
  kinePort: number;
  /** Kine serves remote etcd clients on the LAN with mTLS (else loopback only). */
  kineRemoteClients: boolean;
  /** The Kubernetes this image runs (absent: a datastore-only image). */
  kubernetes?: KubernetesFacts;
  /** The distribution's binary: upstream's multi-call binary, or k3s. */
  kubernetesBinary: string;
  kubeApiPort: number;
  /** The read-only status page and Prometheus metrics on the LAN (Patroni's REST port, where scrapers of Patroni already look). */
  statusPagePort: number;
  /** Kine's own Prometheus metrics, on loopback only: the status page server appends them to /metrics. */
  kineMetricsPort: number;
  discoveryPort: number;
  channelPort: number;
  /** Broadcast target of the beacons (tests may narrow it to their bridge). */
  broadcastAddress: string;
  secretsDir: string;
  runDir: string;
}

/** Where the pair's secrets live (the etcd-client-cert command needs only this, not the image's description). */
export function secretsDirOf(stateDir: string): string {
  return join(stateDir, 'secrets');
}

/** The agent runs this box's worker (containerd, kubelet, kube-proxy, pod network): upstream images whose boxes run pods. */
export function runsUpstreamWorker(s: Pick<ClusterSettings, 'kubernetes'>): boolean {
  return s.kubernetes?.distribution === 'upstream' && s.kubernetes.worker;
}

/** The image's description, validated; a missing or malformed file stops the agent with a clear message (the image is broken). */
function readImageFacts(file: string): ImageFacts {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new Error(
      `${file}: cannot read the image's description (${(e as NodeJS.ErrnoException).code ?? (e as Error).message}): this image was not built by geminik8s build, or its root is damaged`,
    );
  }
  const parsed = parseImageFacts(text, file);
  if (!parsed.ok) throw new ConfigError(parsed.issues);
  return parsed.value;
}

/**
 * The environment overrides, each declared once: tests run several agents on one host, each in its
 * own network namespace with its own directories and ports. A malformed value is an error, never a
 * silent fallback to the default.
 */
function envPort(env: NodeJS.ProcessEnv, name: string, fallback: number): number {
  const v = env[name];
  if (v === undefined || v === '') return fallback;
  if (!/^[0-9]+$/.test(v) || Number(v) < 1 || Number(v) > 65535)
    throw new Error(`${name}: found ${JSON.stringify(v)}; expected a TCP/UDP port 1-65535 (unset: ${fallback})`);
  return Number(v);
}

function envAddress(env: NodeJS.ProcessEnv, name: string, fallback: string): string {
  const v = env[name];
  if (v === undefined || v === '') return fallback;
  if (!isIPv4(v)) throw new Error(`${name}: found ${JSON.stringify(v)}; expected an IPv4 address (unset: ${fallback})`);
  return v;
}

function envPath(env: NodeJS.ProcessEnv, name: string, fallback: string): string {
  const v = env[name];
  if (v === undefined || v === '') return fallback;
  if (!v.startsWith('/')) throw new Error(`${name}: found ${JSON.stringify(v)}; expected an absolute path (unset: ${fallback})`);
  return v;
}

/** The running image's description (GEMINIK8S_IMAGE_FILE, default /etc/geminik8s/image.yaml). */
export function loadImageFacts(env: NodeJS.ProcessEnv): ImageFacts {
  return readImageFacts(envPath(env, 'GEMINIK8S_IMAGE_FILE', '/etc/geminik8s/image.yaml'));
}

/** Where the agent's status socket is (GEMINIK8S_RUN_DIR, default /run/geminik8s). */
export function statusSocketPath(env: NodeJS.ProcessEnv): string {
  return join(envPath(env, 'GEMINIK8S_RUN_DIR', '/run/geminik8s'), 'agent.sock');
}

/** PostgreSQL's paths: GEMINIK8S_PG_ROOT moves every one under one folder (tests); the appliance uses Debian's. */
export function pgPathsOf(env: NodeJS.ProcessEnv): PgPaths {
  const pg = appliancePgPaths();
  const root = envPath(env, 'GEMINIK8S_PG_ROOT', '') || undefined;
  return root
    ? { binDir: pg.binDir, dataDir: join(root, 'data'), confDir: join(root, 'conf'), socketDir: join(root, 'run'), logFile: join(root, 'postgresql.log') }
    : pg;
}

export function clusterSettings(env: NodeJS.ProcessEnv, stateDir: string): ClusterSettings {
  const image = loadImageFacts(env);
  const kubernetes = image.kubernetes;
  return {
    replication: image.postgresql.replication,
    ...(image.cluster.preferredLeader ? { preferredLeader: image.cluster.preferredLeader } : {}),
    pg: pgPathsOf(env),
    pgPort: envPort(env, 'GEMINIK8S_PG_PORT', 5432),
    kineBinary: envPath(env, 'GEMINIK8S_KINE_BIN', '/usr/lib/geminik8s/bin/kine'),
    kinePort: envPort(env, 'GEMINIK8S_KINE_PORT', 2379),
    kineRemoteClients: image.kine.remoteClients,
    ...(kubernetes ? { kubernetes } : {}),
    // Where the builder installs them (builder/src/pipeline/root-tree.ts INSTALL_PATHS).
    kubernetesBinary: envPath(env, 'GEMINIK8S_KUBERNETES_BIN', kubernetes?.distribution === 'k3s' ? '/usr/local/bin/k3s' : '/usr/lib/geminik8s/bin/kubernetes'),
    kubeApiPort: envPort(env, 'GEMINIK8S_KUBE_API_PORT', 6443),
    statusPagePort: envPort(env, 'GEMINIK8S_STATUS_PAGE_PORT', 8008),
    kineMetricsPort: envPort(env, 'GEMINIK8S_KINE_METRICS_PORT', 8009),
    discoveryPort: envPort(env, 'GEMINIK8S_DISCOVERY_PORT', 7946),
    channelPort: envPort(env, 'GEMINIK8S_CHANNEL_PORT', 7946),
    broadcastAddress: envAddress(env, 'GEMINIK8S_BROADCAST', '255.255.255.255'),
    secretsDir: secretsDirOf(stateDir),
    runDir: envPath(env, 'GEMINIK8S_RUN_DIR', '/run/geminik8s'),
  };
}

/**
 * What the cluster code needs to know about this box, from the image (/etc/geminik8s/image.yaml,
 * rendered from the profile at build time) and the environment (tests run several agents on one
 * host, each in its own network namespace, with their own directories and ports).
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse } from 'yaml';
import { parseCidr } from '../core/subnet.ts';
import { appliancePgPaths, type PgPaths } from '../provision/postgres.ts';
import type { ReplicationMode } from '../provision/core/pgconf.ts';

export interface ClusterSettings {
  replication: ReplicationMode;
  synchronous: boolean;
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
  discoveryPort: number;
  channelPort: number;
  /** Broadcast target of the beacons (tests may narrow it to their bridge). */
  broadcastAddress: string;
  secretsDir: string;
  runDir: string;
}

export interface KubernetesFacts {
  distribution: 'upstream' | 'k3s';
  version: string;
  clusterCidr: string;
  serviceCidr: string;
  /** K3s add-ons left out. */
  disable: string[];
  /** The boxes run pods too (image.yaml `worker: true`); the tests' agents run the control plane only. */
  worker: boolean;
}

/** The agent runs this box's worker (containerd, kubelet, kube-proxy, pod network): upstream images whose boxes run pods. */
export function runsUpstreamWorker(s: Pick<ClusterSettings, 'kubernetes'>): boolean {
  return s.kubernetes?.distribution === 'upstream' && s.kubernetes.worker;
}

interface ImageFacts {
  postgresql?: { replication?: string; synchronous?: boolean };
  kine?: { remoteClients?: boolean };
  kubernetes?: Record<string, unknown>;
  cluster?: { preferredLeader?: string };
}

function readImageFacts(file: string): ImageFacts {
  try {
    return (parse(readFileSync(file, 'utf8')) as ImageFacts | null) ?? {};
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return {};
    throw new Error(`${file}: ${(e as Error).message}`);
  }
}

/** The image's kubernetes block, checked field by field: the builder wrote it, but a hand-edited or truncated file must not start a half-configured cluster. */
function kubernetesFacts(raw: Record<string, unknown> | undefined, file: string): KubernetesFacts | undefined {
  if (raw === undefined || raw === null) return undefined;
  const bad = (field: string, expected: string): never => {
    throw new Error(`${file}: kubernetes.${field}: found ${JSON.stringify(raw[field])}; expected ${expected}`);
  };
  const { distribution, version, clusterCidr, serviceCidr, disable = [], worker = false } = raw;
  if (distribution !== 'upstream' && distribution !== 'k3s') bad('distribution', '"upstream" or "k3s"');
  if (typeof version !== 'string' || !/^v\d+\.\d+\.\d+/.test(version)) bad('version', 'a version like v1.37.2');
  if (typeof clusterCidr !== 'string' || !parseCidr(clusterCidr)) bad('clusterCidr', 'an IPv4 CIDR like 10.42.0.0/16');
  if (typeof serviceCidr !== 'string' || !parseCidr(serviceCidr)) bad('serviceCidr', 'an IPv4 CIDR like 10.43.0.0/16');
  if (!Array.isArray(disable) || !disable.every((d) => typeof d === 'string')) bad('disable', 'a list of add-on names');
  if (typeof worker !== 'boolean') bad('worker', 'true or false');
  return { distribution, version, clusterCidr, serviceCidr, disable, worker } as KubernetesFacts;
}

const intFrom = (v: string | undefined, fallback: number): number => (v && /^[0-9]+$/.test(v) ? Number(v) : fallback);

export function clusterSettings(env: NodeJS.ProcessEnv, stateDir: string): ClusterSettings {
  const imageFile = env.GEMINIK8S_IMAGE_FILE || '/etc/geminik8s/image.yaml';
  const image = readImageFacts(imageFile);
  const kubernetes = kubernetesFacts(image.kubernetes, imageFile);
  const pg = appliancePgPaths();
  const root = env.GEMINIK8S_PG_ROOT;
  return {
    replication: image.postgresql?.replication === 'logical' ? 'logical' : 'physical',
    synchronous: image.postgresql?.synchronous ?? true,
    ...(image.cluster?.preferredLeader ? { preferredLeader: image.cluster.preferredLeader } : {}),
    // GEMINIK8S_PG_ROOT moves every PostgreSQL path under one folder (tests); the appliance uses Debian's.
    pg: root ? { binDir: pg.binDir, dataDir: join(root, 'data'), confDir: join(root, 'conf'), socketDir: join(root, 'run'), logFile: join(root, 'postgresql.log') } : pg,
    pgPort: intFrom(env.GEMINIK8S_PG_PORT, 5432),
    kineBinary: env.GEMINIK8S_KINE_BIN || '/usr/lib/geminik8s/bin/kine',
    kinePort: intFrom(env.GEMINIK8S_KINE_PORT, 2379),
    kineRemoteClients: image.kine?.remoteClients === true,
    ...(kubernetes ? { kubernetes } : {}),
    // Where the builder installs them (builder/src/pipeline/root-tree.ts INSTALL_PATHS).
    kubernetesBinary: env.GEMINIK8S_KUBERNETES_BIN || (kubernetes?.distribution === 'k3s' ? '/usr/local/bin/k3s' : '/usr/lib/geminik8s/bin/kubernetes'),
    kubeApiPort: intFrom(env.GEMINIK8S_KUBE_API_PORT, 6443),
    discoveryPort: intFrom(env.GEMINIK8S_DISCOVERY_PORT, 7946),
    channelPort: intFrom(env.GEMINIK8S_CHANNEL_PORT, 7946),
    broadcastAddress: env.GEMINIK8S_BROADCAST || '255.255.255.255',
    secretsDir: join(stateDir, 'secrets'),
    runDir: env.GEMINIK8S_RUN_DIR || '/run/geminik8s',
  };
}

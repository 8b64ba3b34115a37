/**
 * What the cluster code needs to know about this box, from the image (/etc/geminik8s/image.yaml,
 * rendered from the profile at build time) and the environment (tests run several agents on one
 * host, each in its own network namespace, with their own directories and ports).
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse } from 'yaml';
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
  discoveryPort: number;
  channelPort: number;
  /** Broadcast target of the beacons (tests may narrow it to their bridge). */
  broadcastAddress: string;
  secretsDir: string;
  runDir: string;
}

interface ImageFacts {
  postgresql?: { replication?: string; synchronous?: boolean };
  kine?: { remoteClients?: boolean };
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

const intFrom = (v: string | undefined, fallback: number): number => (v && /^[0-9]+$/.test(v) ? Number(v) : fallback);

export function clusterSettings(env: NodeJS.ProcessEnv, stateDir: string): ClusterSettings {
  const image = readImageFacts(env.GEMINIK8S_IMAGE_FILE || '/etc/geminik8s/image.yaml');
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
    discoveryPort: intFrom(env.GEMINIK8S_DISCOVERY_PORT, 7946),
    channelPort: intFrom(env.GEMINIK8S_CHANNEL_PORT, 7946),
    broadcastAddress: env.GEMINIK8S_BROADCAST || '255.255.255.255',
    secretsDir: join(stateDir, 'secrets'),
    runDir: env.GEMINIK8S_RUN_DIR || '/run/geminik8s',
  };
}

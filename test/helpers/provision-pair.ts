/**
 * A leader/follower pair of real PostgreSQL 15 servers on 127.0.0.1 (different ports and directories)
 * for the provisioning integration tests, plus the Kine binary from the builder's component cache.
 */
import type { ExecutionContext } from 'ava';
import { accessSync, chmodSync, constants, existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { kineSpec, resolveComponent } from '../../builder/src/components/resolve.ts';
import { stopServer, type PgPaths } from '../../firstboot/src/provision/postgres.ts';
import type { ProvisionConfig } from '../../firstboot/src/provision/provision.ts';
import type { KineProcess } from '../../firstboot/src/provision/kine.ts';
import type { ReplicationMode } from '../../firstboot/src/provision/core/pgconf.ts';
import type { Logger } from '../../firstboot/src/adapters/output.ts';

export const PG_BIN = process.env.PG_BIN ?? '/usr/lib/postgresql/15/bin';
const repoRoot = fileURLToPath(new URL('../..', import.meta.url));

/** Every prerequisite with the Debian package that ships it; a missing one is a test failure. */
export function missingPrerequisites(): string[] {
  const need: [string, string][] = [
    [join(PG_BIN, 'initdb'), 'postgresql-15'],
    [join(PG_BIN, 'pg_ctl'), 'postgresql-15'],
    [join(PG_BIN, 'pg_basebackup'), 'postgresql-client-15'],
    [join(PG_BIN, 'pg_dump'), 'postgresql-client-15'],
    [join(PG_BIN, 'psql'), 'postgresql-client-15'],
    ['/usr/bin/etcdctl', 'etcd-client'],
    ['/usr/bin/openssl', 'openssl'],
    ['/usr/sbin/runuser', 'util-linux'],
  ];
  const out = need
    .filter(([p]) => {
      try {
        accessSync(p, constants.X_OK);
        return false;
      } catch {
        return true;
      }
    })
    .map(([p, pkg]) => `${p} missing: install the Debian package ${pkg}`);
  if (process.getuid?.() !== 0) out.push('these tests run PostgreSQL as the postgres OS user and must run as root');
  if (!existsSync('/etc/passwd') || !/^postgres:/m.test(readFileSync('/etc/passwd', 'utf8')))
    out.push('no postgres OS user: install the Debian package postgresql-15');
  return out;
}

export async function kineBinary(): Promise<string> {
  const cacheDir = process.env.GEMINIK8S_CACHE ?? join(repoRoot, '.cache');
  const k = await resolveComponent(kineSpec(process.env.KINE_VERSION ?? 'v0.17.5'), { arch: 'amd64', cacheDir, repoRoot });
  return k.path;
}

export interface TestNode {
  name: string;
  base: string;
  paths: PgPaths;
  secretsDir: string;
  port: number;
}

export interface TestPair {
  root: string;
  leader: TestNode;
  follower: TestNode;
  leaderConfig(extra?: Partial<ProvisionConfig>): ProvisionConfig;
  followerConfig(extra?: Partial<ProvisionConfig>): ProvisionConfig;
  kines: KineProcess[];
  cleanup(): Promise<void>;
}

function node(root: string, name: string, port: number): TestNode {
  const base = join(root, name);
  return {
    name,
    base,
    port,
    secretsDir: join(base, 'secrets'),
    paths: {
      binDir: PG_BIN,
      dataDir: join(base, 'pg', 'data'),
      confDir: join(base, 'conf'),
      socketDir: join(base, 'run'),
      logFile: join(base, 'log', 'postgresql.log'),
    },
  };
}

export function makePair(label: string, leaderPort: number, mode: ReplicationMode = 'physical', log?: Logger): TestPair {
  const root = mkdtempSync(join(tmpdir(), `geminik8s-${label}-`));
  chmodSync(root, 0o755); // the postgres user must traverse it
  const leader = node(root, 'node-a', leaderPort);
  const follower = node(root, 'node-b', leaderPort + 1);
  const ip = '127.0.0.1';
  const common = (n: TestNode, role: 'leader' | 'follower', peer: TestNode): ProvisionConfig => ({
    role,
    mode,
    self: { name: n.name, ip },
    peer: { name: peer.name, ip },
    port: n.port,
    paths: n.paths,
    secretsDir: n.secretsDir,
    siteId: 'test-site',
    log,
  });
  const pair: TestPair = {
    root,
    leader,
    follower,
    kines: [],
    leaderConfig: (extra = {}) => ({ ...common(leader, 'leader', follower), ...extra }),
    followerConfig: (extra = {}) => ({ ...common(follower, 'follower', leader), upstream: { host: ip, port: leader.port }, ...extra }),
    async cleanup() {
      for (const k of pair.kines) await k.stop(1000).catch(() => undefined);
      for (const n of [follower, leader]) await stopServer({ paths: n.paths, port: n.port }, 'immediate').catch(() => undefined);
      rmSync(root, { recursive: true, force: true });
    },
  };
  return pair;
}

export function requirePrerequisites(t: ExecutionContext): boolean {
  const missing = missingPrerequisites();
  if (missing.length) t.fail(missing.join('; '));
  return missing.length === 0;
}

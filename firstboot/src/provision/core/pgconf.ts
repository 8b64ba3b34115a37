/**
 * PostgreSQL configuration rendered by the agent: the include file (postgresql.geminik8s.conf), pg_hba,
 * pg_ident, pgpass, libpq conninfo strings and Kine's endpoint URL. Pure: text in, text out.
 *
 * The include file and pg_hba live outside the data directory (confDir), so a base backup copied from
 * the peer carries no node-specific settings: each node renders its own, and postgresql.conf only
 * holds one `include` line that the agent (re)points at its own file.
 */
export type ReplicationMode = 'physical' | 'logical';

export interface PgConfOptions {
  port: number;
  /** Addresses to listen on (node IP, 127.0.0.1, VIP); deduplicated here. */
  listenAddresses: string[];
  socketDir: string;
  hbaFile: string;
  identFile: string;
  /** Server cert/key and CA (TLS dir, owned by postgres, key 0600). */
  sslCertFile: string;
  sslKeyFile: string;
  sslCaFile: string;
  mode: ReplicationMode;
  /** Default 10. */
  maxWalSenders?: number;
  /** Default 10. */
  maxReplicationSlots?: number;
  /** WAL kept for a lagging standby beyond the slot (MB); slot WAL is capped by maxSlotWalKeepSizeMb. Default 256. */
  walKeepSizeMb?: number;
  /** Cap on WAL a slot may retain (MB), so a dead peer cannot fill the data partition. Default 4096. */
  maxSlotWalKeepSizeMb?: number;
  /**
   * Included last when it exists: the liveness agent writes FENCE_CONF there whenever this node
   * must not take writes, so a server (re)started by anyone in that state comes up read-only.
   */
  fenceFile?: string;
}

/**
 * The fence file's content: new transactions read-only. That alone is a client's courtesy (any
 * session may `SET default_transaction_read_only = off` or `BEGIN READ WRITE`), so the fence is
 * enforced by pg_hba (fencedHba): the application role cannot hold a session at all. This setting
 * stays as the guard for the superuser sessions the agents keep (fence, rewind, promotion).
 */
export const FENCE_CONF = '# Written by geminik8s-agent: this node is fenced or following. Do not edit.\ndefault_transaction_read_only = on\n';

/** The rows a fence puts first in pg_hba (first match wins): every connection as the kine role is rejected, local or not. */
const FENCE_HBA = ['# fence: this node takes no writes (geminik8s-agent)', 'local\tall\tkine\treject', 'host\tall\tkine\tall\treject'];

/** pg_hba with the fence's rows first (`on`) or without them; the rest of the file is kept as it is. */
export function fencedHba(text: string, on: boolean): string {
  const lines = text.split('\n').filter((l) => !FENCE_HBA.includes(l));
  const at = lines.findIndex((l) => !l.startsWith('#'));
  if (on) lines.splice(at < 0 ? lines.length : at, 0, ...FENCE_HBA);
  return lines.join('\n');
}

/** Single-quoted value for postgresql.conf. */
export function confString(v: string): string {
  return `'${v.replaceAll('\\', '\\\\').replaceAll("'", "''")}'`;
}

/** The generated include file. synchronous_standby_names is deliberately absent: it is switched at
 * runtime with ALTER SYSTEM (postgresql.auto.conf), see setSynchronousStandby(). */
export function renderPostgresConf(o: PgConfOptions): string {
  const listen = [...new Set(o.listenAddresses)];
  const lines: [string, string | number][] = [
    ['listen_addresses', confString(listen.join(','))],
    ['port', o.port],
    ['unix_socket_directories', confString(o.socketDir)],
    ['hba_file', confString(o.hbaFile)],
    ['ident_file', confString(o.identFile)],
    ['ssl', 'on'],
    ['ssl_cert_file', confString(o.sslCertFile)],
    ['ssl_key_file', confString(o.sslKeyFile)],
    ['ssl_ca_file', confString(o.sslCaFile)],
    ['ssl_min_protocol_version', confString('TLSv1.2')],
    ['password_encryption', confString('scram-sha-256')],
    ['wal_level', o.mode === 'logical' ? 'logical' : 'replica'],
    ['max_wal_senders', o.maxWalSenders ?? 10],
    ['max_replication_slots', o.maxReplicationSlots ?? 10],
    ['wal_keep_size', confString(`${o.walKeepSizeMb ?? 256}MB`)],
    ['max_slot_wal_keep_size', confString(`${o.maxSlotWalKeepSizeMb ?? 4096}MB`)],
    ['hot_standby', 'on'],
    ['hot_standby_feedback', 'on'],
    ['wal_log_hints', 'on'],
    ['synchronous_commit', 'on'],
    ['wal_receiver_status_interval', confString('1s')],
    ['wal_sender_timeout', confString('10s')],
    ['wal_receiver_timeout', confString('10s')],
    ['max_logical_replication_workers', 4],
    ['logging_collector', 'off'],
    ['log_line_prefix', confString('%m [%p] %q%u@%d ')],
    ['log_connections', 'off'],
    ['log_statement', confString('none')],
  ];
  const fence = o.fenceFile ? `include_if_exists ${confString(o.fenceFile)}\n` : '';
  return `# Written by geminik8s-agent; rewritten on every provisioning run. Do not edit.\n${lines.map(([k, v]) => `${k} = ${v}`).join('\n')}\n${fence}`;
}

export interface HbaOptions {
  /** The other node's IP: the only source allowed to replicate (and to run pg_rewind as postgres). */
  peerIp: string;
  /** This node's IP: its own Kine reaching the VIP while this node holds it comes from there. */
  selfIp?: string;
  vip?: string;
  mode: ReplicationMode;
}

/**
 * First match wins. Local: the postgres role by peer auth (the agent as root is mapped to it in
 * pg_ident), everything else scram. Network: TLS only, scram only, per-source rules.
 */
export function renderPgHba(o: HbaOptions): string {
  const kineSources = [...new Set(['127.0.0.1', o.peerIp, ...(o.selfIp ? [o.selfIp] : []), ...(o.vip ? [o.vip] : [])])];
  const rows: string[][] = [
    ['local', 'all', 'postgres', '', 'peer map=geminik8s'],
    ['local', 'all', 'all', '', 'scram-sha-256'],
    ['hostssl', 'replication', 'replicator', `${o.peerIp}/32`, 'scram-sha-256'],
    ...(o.mode === 'logical' ? [['hostssl', 'kine', 'replicator', `${o.peerIp}/32`, 'scram-sha-256']] : []),
    ...kineSources.map((s) => ['hostssl', 'kine', 'kine', `${s}/32`, 'scram-sha-256']),
    ['hostssl', 'all', 'postgres', `${o.peerIp}/32`, 'scram-sha-256'],
    ['hostssl', 'postgres', 'postgres', '127.0.0.1/32', 'scram-sha-256'],
  ];
  return `# Written by geminik8s-agent. Do not edit.\n${rows.map((r) => r.filter((c, i) => c !== '' || i !== 3).join('\t')).join('\n')}\n`;
}

/** root (the agent) and postgres may connect locally as the postgres role. */
export function renderPgIdent(): string {
  return '# Written by geminik8s-agent. Do not edit.\ngeminik8s\tpostgres\tpostgres\ngeminik8s\troot\tpostgres\n';
}

/** A libpq conninfo value, quoted when needed. */
export function conninfoValue(v: string | number): string {
  const s = String(v);
  return /^[A-Za-z0-9_.:/-]+$/.test(s) ? s : `'${s.replaceAll('\\', '\\\\').replaceAll("'", "\\'")}'`;
}

export function conninfo(params: Record<string, string | number | undefined>): string {
  return Object.entries(params)
    .filter((e): e is [string, string | number] => e[1] !== undefined)
    .map(([k, v]) => `${k}=${conninfoValue(v)}`)
    .join(' ');
}

export interface UpstreamOptions {
  /** The primary as reached from this node: the VIP on an appliance, the leader IP in tests. */
  host: string;
  port: number;
  /** This node's name (application_name: what synchronous_standby_names refers to). */
  applicationName: string;
  sslRootCert: string;
  /** pgpass file holding the replicator password (owned by postgres, 0600). */
  passfile: string;
  user?: string;
  dbname?: string;
}

/** primary_conninfo / subscription conninfo: TLS with full verification, password from a passfile. */
export function upstreamConninfo(o: UpstreamOptions): string {
  return conninfo({
    host: o.host,
    port: o.port,
    user: o.user ?? 'replicator',
    dbname: o.dbname,
    application_name: o.applicationName,
    sslmode: 'verify-full',
    sslrootcert: o.sslRootCert,
    passfile: o.passfile,
    connect_timeout: 5,
    keepalives_idle: 5,
    keepalives_interval: 2,
    keepalives_count: 3,
  });
}

function pgpassField(v: string): string {
  return v.replaceAll('\\', '\\\\').replaceAll(':', '\\:');
}

export function renderPgpass(entries: { host: string; port: number | '*'; database: string; user: string; password: string }[]): string {
  return `${entries.map((e) => [e.host, String(e.port), e.database, e.user, e.password].map(pgpassField).join(':')).join('\n')}\n`;
}

/** `include` line pointing at this node's generated file; other geminik8s include lines are dropped. */
export const INCLUDE_MARK = '# geminik8s-agent include';
export function ensureIncludeLine(postgresqlConf: string, includePath: string): string {
  const kept = postgresqlConf.split('\n').filter((l) => !l.endsWith(INCLUDE_MARK));
  while (kept.length && kept[kept.length - 1] === '') kept.pop();
  return `${kept.join('\n')}\ninclude ${confString(includePath)} ${INCLUDE_MARK}\n`;
}

/** Drops settings from a postgresql.auto.conf text (e.g. the leader's synchronous_standby_names copied by a base backup). */
export function dropAutoConfSettings(autoConf: string, names: readonly string[]): string {
  const drop = new Set(names.map((n) => n.toLowerCase()));
  return autoConf
    .split('\n')
    .filter((l) => {
      const m = /^\s*([A-Za-z_][A-Za-z0-9_.]*)\s*=/.exec(l);
      return !(m && drop.has((m[1] ?? '').toLowerCase()));
    })
    .join('\n');
}

/** Value for synchronous_standby_names: one named standby, or '' (async). */
export function synchronousStandbyNames(standby: string | null): string {
  if (standby === null) return '';
  return `FIRST 1 (${quoteIdent(standby)})`;
}

export function quoteIdent(s: string): string {
  return `"${s.replaceAll('"', '""')}"`;
}

export function quoteLiteral(s: string): string {
  return `'${s.replaceAll("'", "''")}'`;
}

/** Physical slot name for a standby node (slot names: lower-case letters, digits, underscore). */
export function slotName(nodeName: string): string {
  const s = `geminik8s_${nodeName.toLowerCase().replace(/[^a-z0-9_]/g, '_')}`;
  return s.slice(0, 63);
}

export interface KineEndpointOptions {
  host: string;
  port: number;
  password: string;
  sslRootCert: string;
  user?: string;
  database?: string;
}

/** Kine's --endpoint (pass it through KINE_ENDPOINT, never argv: it holds the password). */
export function kineEndpoint(o: KineEndpointOptions): string {
  const user = encodeURIComponent(o.user ?? 'kine');
  const db = encodeURIComponent(o.database ?? 'kine');
  const host = o.host.includes(':') ? `[${o.host}]` : o.host;
  const q = new URLSearchParams({ sslmode: 'verify-full', sslrootcert: o.sslRootCert });
  return `postgres://${user}:${encodeURIComponent(o.password)}@${host}:${o.port}/${db}?${q.toString()}`;
}

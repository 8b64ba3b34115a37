/**
 * Cluster secrets of a geminik8s pair: what they are, how the random parts are made, how a stored
 * bundle is validated, and the SCRAM verifiers sent to PostgreSQL instead of plaintext passwords.
 *
 * Pure: randomness is injected, no I/O. Certificates are made by the openssl adapter
 * (../secrets.ts) from the requests rendered here. No function here ever puts a secret value in an
 * error message.
 */
import { createHash, createHmac, pbkdf2Sync } from 'node:crypto';

export const SECRETS_FORMAT = 1;

export interface NodeIdentity {
  /** Node name, also the PostgreSQL application_name and replication slot suffix. */
  name: string;
  /** The node's IPv4 address on the LAN (no prefix). */
  ip: string;
}

export interface PemPair {
  certPem: string;
  keyPem: string;
}

export interface ClusterCredentials {
  /** Password of the `postgres` superuser (remote use: pg_rewind from the peer). */
  superuserPassword: string;
  /** Password of the `replicator` role (physical streaming, logical subscription). */
  replicationPassword: string;
  /** Password of the `kine` role. */
  kinePassword: string;
  /** K3s cluster token (`--token`). */
  k3sToken: string;
}

export interface ClusterSecrets extends ClusterCredentials {
  format: typeof SECRETS_FORMAT;
  /** The pair's CA: both nodes hold its key, so either can issue a cert for a replacement node. */
  ca: PemPair;
  /** One server/client certificate per node name; SANs cover the node IP, the VIP, 127.0.0.1, localhost, the name. */
  nodes: Record<string, PemPair & { sans: string[] }>;
  /**
   * The key both Kubernetes API servers sign service-account tokens with (EC P-256, PEM): shared,
   * so a token issued by one server is honoured by the other after a failover.
   */
  serviceAccountKeyPem: string;
  /**
   * The node whose pods use the first /24 of the cluster range, once a replace-node recorded it
   * (kubernetes/core/worker.ts firstRangeHolder); absent: the first name in order.
   */
  podRangeFirst?: string;
}

export type RandomBytes = (n: number) => Buffer;

/** URL- and conninfo-safe secret: base64url of `bytes` random bytes (no quoting ever needed). */
export function randomSecret(random: RandomBytes, bytes = 32): string {
  return random(bytes).toString('base64url');
}

export function generateCredentials(random: RandomBytes): ClusterCredentials {
  return {
    superuserPassword: randomSecret(random),
    replicationPassword: randomSecret(random),
    kinePassword: randomSecret(random),
    // K3s accepts any string; the K10<hash>::server:<secret> form is produced by k3s itself.
    k3sToken: random(32).toString('hex'),
  };
}

/** subjectAltName entries for a node certificate (deduplicated, stable order). */
export function nodeSans(node: NodeIdentity, vip: string | undefined): string[] {
  const ips = [node.ip, ...(vip ? [vip] : []), '127.0.0.1'];
  const out = [...new Set(ips)].map((ip) => `IP:${ip}`);
  out.push('DNS:localhost');
  if (node.name !== 'localhost') out.push(`DNS:${node.name}`);
  return out;
}

/**
 * `openssl ca` configuration. Validity runs from 1970 to 9999: the boxes may have no RTC and no NTP,
 * so a certificate must verify whatever the clock says (the CA never leaves the pair; revocation is
 * re-keying the pair).
 */
export function renderOpensslCaConfig(sans: readonly string[]): string {
  for (const s of sans) if (!/^(IP|DNS):[A-Za-z0-9.:-]+$/.test(s)) throw new Error(`invalid subjectAltName entry ${JSON.stringify(s)}`);
  return [
    '[ca]',
    'default_ca = g',
    '[g]',
    'database = index.txt',
    'new_certs_dir = .',
    'serial = serial',
    'default_md = sha256',
    'policy = p',
    'copy_extensions = none',
    'unique_subject = no',
    '[p]',
    // Kubernetes reads a client certificate's organisation as its group (system:masters, system:nodes).
    'organizationName = optional',
    'commonName = supplied',
    '[v3_ca]',
    'basicConstraints = critical,CA:TRUE,pathlen:0',
    'keyUsage = critical,keyCertSign,cRLSign',
    'subjectKeyIdentifier = hash',
    '[v3_node]',
    'basicConstraints = critical,CA:FALSE',
    'keyUsage = critical,digitalSignature,keyEncipherment',
    'extendedKeyUsage = serverAuth,clientAuth',
    `subjectAltName = ${sans.length ? sans.join(',') : 'DNS:localhost'}`,
    'authorityKeyIdentifier = keyid',
    // The Kubernetes API server's serving certificate: server authentication only, so it cannot
    // log in to Kine or PostgreSQL, which trust the same CA.
    '[v3_server]',
    'basicConstraints = critical,CA:FALSE',
    'keyUsage = critical,digitalSignature,keyEncipherment',
    'extendedKeyUsage = serverAuth',
    `subjectAltName = ${sans.length ? sans.join(',') : 'DNS:localhost'}`,
    'authorityKeyIdentifier = keyid',
    // Remote etcd clients of Kine (a Kubernetes server elsewhere): client authentication only, so a
    // leaked client certificate cannot impersonate a node's PostgreSQL or Kine server.
    '[v3_client]',
    'basicConstraints = critical,CA:FALSE',
    'keyUsage = critical,digitalSignature',
    'extendedKeyUsage = clientAuth',
    'authorityKeyIdentifier = keyid',
    '',
  ].join('\n');
}

export const CERT_START = '19700101000000Z';
export const CERT_END = '99991231235959Z';

const SECRET_RE = /^[A-Za-z0-9_-]{16,}$/;
const PEM_CERT_RE = /^-----BEGIN CERTIFICATE-----\n[\s\S]+\n-----END CERTIFICATE-----\n?$/;
const PEM_KEY_RE = /^-----BEGIN (EC |)PRIVATE KEY-----\n[\s\S]+\n-----END (EC |)PRIVATE KEY-----\n?$/;

/**
 * Validates a parsed secrets bundle. Errors name the field and what is wrong, never the value.
 */
export function validateSecrets(value: unknown, source = 'secrets'): ClusterSecrets {
  const fail = (field: string, why: string): never => {
    throw new Error(`${source}: ${field}: ${why}`);
  };
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return fail('(document)', 'not a JSON object');
  const v = value as Record<string, unknown>;
  if (v.format !== SECRETS_FORMAT) fail('format', `unsupported format (expected ${SECRETS_FORMAT})`);
  for (const k of ['superuserPassword', 'replicationPassword', 'kinePassword', 'k3sToken'] as const) {
    if (typeof v[k] !== 'string' || !SECRET_RE.test(v[k] as string)) fail(k, 'missing or not a well-formed secret');
  }
  const pair = (field: string, p: unknown): void => {
    if (typeof p !== 'object' || p === null) {
      fail(field, 'missing');
      return;
    }
    const q = p as Record<string, unknown>;
    if (typeof q.certPem !== 'string' || !PEM_CERT_RE.test(q.certPem)) fail(`${field}.certPem`, 'not a PEM certificate');
    if (typeof q.keyPem !== 'string' || !PEM_KEY_RE.test(q.keyPem)) fail(`${field}.keyPem`, 'not a PEM private key');
  };
  pair('ca', v.ca);
  if (typeof v.serviceAccountKeyPem !== 'string' || !PEM_KEY_RE.test(v.serviceAccountKeyPem)) fail('serviceAccountKeyPem', 'not a PEM private key');
  if (typeof v.nodes !== 'object' || v.nodes === null) fail('nodes', 'missing');
  const nodes = v.nodes as Record<string, unknown>;
  if (Object.keys(nodes).length === 0) fail('nodes', 'no node certificate');
  for (const [name, n] of Object.entries(nodes)) {
    pair(`nodes.${name}`, n);
    const sans = (n as Record<string, unknown>).sans;
    if (!Array.isArray(sans) || !sans.every((s) => typeof s === 'string')) fail(`nodes.${name}.sans`, 'not a list of strings');
  }
  if (v.podRangeFirst !== undefined && (typeof v.podRangeFirst !== 'string' || !(v.podRangeFirst in nodes)))
    fail('podRangeFirst', 'not the name of a node of the bundle');
  return value as ClusterSecrets;
}

/** Every secret string of a bundle (for "never logged" checks and redaction). */
export function secretValues(s: ClusterSecrets): string[] {
  return [
    s.superuserPassword,
    s.replicationPassword,
    s.kinePassword,
    s.k3sToken,
    s.ca.keyPem,
    s.serviceAccountKeyPem,
    ...Object.values(s.nodes).map((n) => n.keyPem),
  ];
}

/**
 * PostgreSQL's SCRAM-SHA-256 verifier (RFC 5802/7677 as stored in pg_authid): sent in
 * CREATE/ALTER ROLE … PASSWORD so the plaintext never reaches the server, its logs or its WAL.
 */
export function scramVerifier(password: string, salt: Buffer, iterations = 4096): string {
  const salted = pbkdf2Sync(password.normalize('NFKC'), salt, iterations, 32, 'sha256');
  const clientKey = createHmac('sha256', salted).update('Client Key').digest();
  const storedKey = createHash('sha256').update(clientKey).digest();
  const serverKey = createHmac('sha256', salted).update('Server Key').digest();
  return `SCRAM-SHA-256$${iterations}:${salt.toString('base64')}$${storedKey.toString('base64')}:${serverKey.toString('base64')}`;
}

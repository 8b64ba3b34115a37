/**
 * Cluster secrets: generation (passwords, K3s token, the service-account signing key, an EC P-256 CA and one certificate per node via the
 * openssl CLI) and the persistent store (`<secretsDir>/cluster.json`, 0600 in a 0700 directory,
 * written atomically).
 *
 * Both node certificates are issued up front on the leader from both node identities; the whole
 * bundle, CA key included, goes to the follower over the pairing channel, so either node can later
 * issue a certificate for a replacement box ({@link issueNodeCert}). Nothing here logs or throws a
 * secret value; keys only touch disk in a private temporary directory that is removed afterwards.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  CERT_END,
  CERT_START,
  SECRETS_FORMAT,
  generateCredentials,
  nodeSans,
  renderOpensslCaConfig,
  validateSecrets,
  type ClusterSecrets,
  type NodeIdentity,
  type PemPair,
} from './core/secrets.ts';
import { ensureDir, pathExists } from './files.ts';
import { NodeKey } from '../pairing/core/keys.ts';
import { writeFileAtomic } from '../adapters/atomic-file.ts';
import { runTool } from '../adapters/exec.ts';

export const SECRETS_FILE = 'cluster.json';
export const NODE_KEY_FILE = 'node-key.pem';

/**
 * This box's identity key (pairing/core/keys.ts NodeKey), made on first use and kept 0600 beside the
 * cluster secrets. It must survive restarts: the peer pinned its public half at pairing.
 */
export function loadOrCreateNodeKey(dir: string): NodeKey {
  const path = join(dir, NODE_KEY_FILE);
  if (pathExists(path)) {
    try {
      return NodeKey.fromPem(readFileSync(path, 'utf8'));
    } catch {
      throw new Error(`${path}: not an X25519 private key; the peer pinned this box's key at pairing, so a new one would need replace-node`);
    }
  }
  ensureDir(dir, 0o700);
  const key = NodeKey.generate();
  writeFileAtomic(path, key.toPem(), 0o600);
  return key;
}

async function withPrivateDir<T>(fn: (dir: string) => Promise<T>): Promise<T> {
  const dir = mkdtempSync(join(tmpdir(), 'geminik8s-pki-')); // mkdtemp: 0700
  try {
    return await fn(dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

async function genKey(dir: string, name: string): Promise<string> {
  const path = join(dir, name);
  await runTool('openssl', ['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', path]);
  return path;
}

async function signCsr(
  dir: string,
  o: { csr: string; cn: string; sans: string[]; ca?: { cert: string; key: string }; selfKey?: string; extensions: string; out: string },
): Promise<string> {
  writeFileSync(join(dir, 'ca.cnf'), renderOpensslCaConfig(o.sans));
  writeFileSync(join(dir, 'index.txt'), '');
  writeFileSync(join(dir, 'serial'), `${randomBytes(16).toString('hex').replace(/^0/, '1')}\n`);
  const signer = o.ca ? ['-cert', o.ca.cert, '-keyfile', o.ca.key] : ['-selfsign', '-keyfile', o.selfKey ?? ''];
  await runTool(
    'openssl',
    [
      'ca',
      '-batch',
      '-notext',
      '-config',
      'ca.cnf',
      ...signer,
      '-in',
      o.csr,
      '-extensions',
      o.extensions,
      '-startdate',
      CERT_START,
      '-enddate',
      CERT_END,
      '-out',
      o.out,
    ],
    { cwd: dir },
  );
  return readFileSync(join(dir, o.out), 'utf8');
}

export async function generateCa(commonName = 'geminik8s pair CA'): Promise<PemPair> {
  return withPrivateDir(async (dir) => {
    const key = await genKey(dir, 'ca.key');
    await runTool('openssl', ['req', '-new', '-key', key, '-subj', `/CN=${commonName}`, '-out', join(dir, 'ca.csr')]);
    const certPem = await signCsr(dir, { csr: 'ca.csr', cn: commonName, sans: [], selfKey: key, extensions: 'v3_ca', out: 'ca.crt' });
    return { certPem, keyPem: readFileSync(key, 'utf8') };
  });
}

/** Issues a server+client certificate for `node` from the pair CA (SANs: node IP, VIP, 127.0.0.1, localhost, name). */
export async function issueNodeCert(ca: PemPair, node: NodeIdentity, vip?: string): Promise<PemPair & { sans: string[] }> {
  const sans = nodeSans(node, vip);
  return { ...(await issueCert(ca, node.name, sans, 'v3_node')), sans };
}

/**
 * A client-only certificate from the pair CA (common name `name`, and `organization`, which
 * Kubernetes reads as a group): a remote etcd client of Kine, or a Kubernetes user.
 */
export function issueClientCert(ca: PemPair, name: string, organization?: string): Promise<PemPair> {
  return issueCert(ca, name, [], 'v3_client', organization);
}

/** A server-only certificate from the pair CA for `sans` (the Kubernetes API server's). */
export function issueServerCert(ca: PemPair, name: string, sans: string[]): Promise<PemPair> {
  return issueCert(ca, name, sans, 'v3_server');
}

/** What a subject may hold: openssl -subj parses '/' and '=' itself. */
const SUBJECT_PART = /^[A-Za-z0-9 :._@-]+$/;

async function issueCert(ca: PemPair, cn: string, sans: string[], extensions: 'v3_node' | 'v3_client' | 'v3_server', organization?: string): Promise<PemPair> {
  for (const part of [cn, ...(organization ? [organization] : [])])
    if (!SUBJECT_PART.test(part)) throw new Error(`certificate subject ${JSON.stringify(part)}: only letters, digits, spaces and : . _ @ - are allowed`);
  return withPrivateDir(async (dir) => {
    writeFileSync(join(dir, 'ca.crt'), ca.certPem, { mode: 0o600 });
    writeFileSync(join(dir, 'ca.key'), ca.keyPem, { mode: 0o600 });
    const key = await genKey(dir, 'cert.key');
    await runTool('openssl', ['req', '-new', '-key', key, '-subj', `${organization ? `/O=${organization}` : ''}/CN=${cn}`, '-out', join(dir, 'cert.csr')]);
    const certPem = await signCsr(dir, { csr: 'cert.csr', cn, sans, ca: { cert: 'ca.crt', key: 'ca.key' }, extensions, out: 'cert.crt' });
    return { certPem, keyPem: readFileSync(key, 'utf8') };
  });
}

export interface GenerateSecretsInput {
  /** Both nodes of the pair (leader and follower). */
  nodes: NodeIdentity[];
  /** The VIP (no prefix), put in every node certificate. */
  vip?: string;
  siteId?: string;
}

export async function generateClusterSecrets(input: GenerateSecretsInput, random: (n: number) => Buffer = randomBytes): Promise<ClusterSecrets> {
  const ca = await generateCa(input.siteId ? `geminik8s ${input.siteId} CA` : undefined);
  const nodes: ClusterSecrets['nodes'] = {};
  for (const n of input.nodes) nodes[n.name] = await issueNodeCert(ca, n, input.vip);
  return { format: SECRETS_FORMAT, ...generateCredentials(random), ca, nodes, serviceAccountKeyPem: await generateKeyPem() };
}

/** A fresh EC P-256 private key (PEM), e.g. the service-account signing key. */
async function generateKeyPem(): Promise<string> {
  return withPrivateDir(async (dir) => readFileSync(await genKey(dir, 'key.pem'), 'utf8'));
}

export function storeSecrets(dir: string, s: ClusterSecrets): string {
  validateSecrets(s, 'secrets to store');
  ensureDir(dir, 0o700);
  const path = join(dir, SECRETS_FILE);
  writeFileAtomic(path, `${JSON.stringify(s, null, 2)}\n`, 0o600);
  return path;
}

/** The stored bundle, or undefined when none was stored yet. A damaged file throws (naming the field, never a value). */
export function loadSecrets(dir: string): ClusterSecrets | undefined {
  const path = join(dir, SECRETS_FILE);
  if (!pathExists(path)) return undefined;
  let parsed: unknown;
  try {
    parsed = JSON.parse(readFileSync(path, 'utf8'));
  } catch {
    throw new Error(`${path}: not valid JSON`);
  }
  return validateSecrets(parsed, path);
}

/**
 * Leader: the stored bundle, completed with a certificate for any node that lacks one; generated and
 * stored when absent. Idempotent: a second call returns the same secrets.
 */
export async function ensureClusterSecrets(
  dir: string,
  input: GenerateSecretsInput,
  o: { replacing?: string; podRangeFirst?: string } = {},
): Promise<ClusterSecrets> {
  const existing = loadSecrets(dir);
  if (!existing) {
    const s = await generateClusterSecrets(input);
    storeSecrets(dir, s);
    return s;
  }
  let changed = false;
  // A replaced box's certificate and key leave the bundle: a new box under the same name gets its
  // own, and one under another name is not handed the dead box's key.
  if (o.replacing !== undefined && existing.nodes[o.replacing]) {
    delete existing.nodes[o.replacing];
    changed = true;
  }
  if (o.podRangeFirst !== undefined && existing.podRangeFirst !== o.podRangeFirst) {
    existing.podRangeFirst = o.podRangeFirst;
    changed = true;
  }
  for (const n of input.nodes) {
    const have = existing.nodes[n.name];
    const want = nodeSans(n, input.vip);
    if (!have || have.sans.join(',') !== want.join(',')) {
      existing.nodes[n.name] = await issueNodeCert(existing.ca, n, input.vip);
      changed = true;
    }
  }
  if (changed) storeSecrets(dir, existing);
  return existing;
}

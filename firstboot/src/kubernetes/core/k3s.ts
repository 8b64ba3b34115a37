/**
 * The K3s server of one appliance, configured the K3s way: one YAML file whose keys are the
 * `k3s server` flags without their leading dashes, read with `k3s server --config <file>`. Pure:
 * the shell renders this text into K3S_APPLIANCE.configFile (mode 0600) before every start.
 *
 * Both appliances run `k3s server` on their own Kine (which reaches the primary PostgreSQL), so
 * they share one datastore. K3s then requires the cluster-wide settings to be identical on every
 * server (its docs' "critical configuration values": token, cluster and service CIDRs, the
 * disabled add-ons…); they are all derived here from values the pair shares (the pair secrets and
 * /etc/geminik8s/image.yaml), never from anything one box chose alone.
 *
 * The token is the only secret. It is written once, under `token`, in a file under /run (never on
 * a disk); argv carries only the config file's path, since any user can read /proc/<pid>/cmdline.
 * No error here ever quotes the token.
 */
import { isIPv4 } from 'node:net';
import { stringify } from 'yaml';
import { parseCidr } from '../../core/subnet.ts';

/** Where the K3s distribution keeps things on the appliance (overlays/k3s points /etc/rancher/k3s at them). */
export const K3S_APPLIANCE = {
  /** Installed by the builder (builder/src/pipeline/root-tree.ts INSTALL_PATHS.k3s). */
  binary: '/usr/local/bin/k3s',
  /**
   * Rendered by the agent at run time, in its runtime directory: the file holds the token, and
   * /run never reaches a disk. /etc/rancher/k3s/config.yaml links here, because every `k3s`
   * subcommand (kubectl, crictl, ctr) reads its data-dir from that file.
   */
  configFile: '/run/geminik8s/k3s/config.yaml',
  /**
   * K3s' own default, under /var, whose writable layer is on the data partition. K3s imports every
   * image archive in `<dataDir>/agent/images/` at start, so an air-gap images archive baked into
   * the image goes in its /var/lib/rancher/k3s/agent/images/. Nothing else may go there: K3s reads
   * a .txt file there as a list of images to pull, which a site without a registry cannot.
   */
  dataDir: '/var/lib/rancher/k3s',
  /**
   * The admin kubeconfig K3s writes (0600, server https://127.0.0.1:6443: this box's own API
   * server) on the data partition, since /etc is read-only. /etc/rancher/k3s/k3s.yaml links here,
   * where `k3s kubectl` looks for it.
   */
  kubeconfigFile: '/data/k3s/k3s.yaml',
  /**
   * K3s keeps this node's password (its proof of identity when it registers with the servers) in
   * /etc/rancher/node/password and makes a new one if that file is missing; a node whose password
   * changed is refused. /etc/rancher/node links here, under /var (written to the data partition),
   * so the password outlives a reboot. The link's target must exist: the shell creates it (0700)
   * before each start.
   */
  nodePasswordDir: '/var/lib/rancher/node',
} as const;

/** flannel's VXLAN port, K3s' default pod network between nodes (the host firewall opens it to the peer). */
export const K3S_FLANNEL_VXLAN_PORT = 8472;

export interface K3sServerInput {
  node: { name: string; ip: string };
  /** The VIP, no prefix: the API's address for clients, whichever box holds it. */
  vip: string;
  /** The cluster token: ClusterSecrets.k3sToken of the pair secrets. */
  token: string;
  /** This box's Kine; `tls` when Kine serves remote etcd clients (then with mTLS, also on loopback). */
  kine: { port: number; tls?: { caFile: string; certFile: string; keyFile: string } };
  /** From /etc/geminik8s/image.yaml (the profile): the same on both boxes. */
  clusterCidr: string;
  serviceCidr: string;
  /** K3s add-ons left out (`disable` in the profile), e.g. traefik. */
  disable: readonly string[];
  dataDir: string;
  kubeconfigFile: string;
}

/** Mode of the kubeconfig K3s writes: it holds the cluster admin's credentials. */
export const K3S_KUBECONFIG_MODE = '0600';

/** A Kubernetes node name (RFC 1123 subdomain). */
const NODE_NAME_RE = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
/** K3s add-on names: traefik, servicelb, metrics-server, local-storage, coredns… */
const ADDON_RE = /^[a-z][a-z0-9-]*$/;
/** Printable ASCII without spaces: what survives a YAML scalar and K3s' token parsing unchanged. */
const TOKEN_RE = /^[\x21-\x7e]+$/;

function fail(field: string, why: string): never {
  throw new Error(`k3s server config: ${field}: ${why}`);
}

function checkCidr(field: string, v: string): void {
  if (!parseCidr(v)) fail(field, `${JSON.stringify(v)} is not an IPv4 CIDR like 10.42.0.0/16`);
}

function checkPath(field: string, v: string): void {
  if (!v.startsWith('/') || /[\s\0]/.test(v)) fail(field, `${JSON.stringify(v)} is not an absolute path without spaces`);
}

function validate(i: K3sServerInput): void {
  if (i.node.name.length > 253 || !NODE_NAME_RE.test(i.node.name))
    fail('node.name', `${JSON.stringify(i.node.name)} is not a Kubernetes node name (lower-case letters, digits, '-' and '.')`);
  if (!isIPv4(i.node.ip)) fail('node.ip', `${JSON.stringify(i.node.ip)} is not an IPv4 address`);
  if (!isIPv4(i.vip)) fail('vip', `${JSON.stringify(i.vip)} is not an IPv4 address (no prefix)`);
  if (i.vip === i.node.ip) fail('vip', 'equals the node address: the VIP must be an address of its own');
  if (!TOKEN_RE.test(i.token)) fail('token', "empty, or not printable ASCII without spaces (expected the pair secrets' k3sToken)");
  if (!Number.isInteger(i.kine.port) || i.kine.port < 1 || i.kine.port > 65535) fail('kine.port', `${i.kine.port} is not a TCP port`);
  if (i.kine.tls) for (const [k, v] of Object.entries(i.kine.tls)) checkPath(`kine.tls.${k}`, v);
  checkCidr('clusterCidr', i.clusterCidr);
  checkCidr('serviceCidr', i.serviceCidr);
  for (const a of i.disable) if (!ADDON_RE.test(a)) fail('disable', `${JSON.stringify(a)} is not a K3s add-on name`);
  if (new Set(i.disable).size !== i.disable.length) fail('disable', 'lists an add-on twice');
  checkPath('dataDir', i.dataDir);
  checkPath('kubeconfigFile', i.kubeconfigFile);
}

/**
 * Every value double-quoted: K3s reads the file as YAML 1.1, where an unquoted 0600 is an octal
 * number (384) and yes/no/on/off are booleans; a quoted scalar reaches the flag as written.
 */
const yamlBlock = (values: Record<string, string | readonly string[]>): string =>
  stringify(values, { defaultStringType: 'QUOTE_DOUBLE', defaultKeyType: 'PLAIN', lineWidth: 0 });

/** The text of the server's config file. Throws, naming the field, on a value K3s would misread. */
export function renderK3sConfig(i: K3sServerInput): string {
  validate(i);
  const scheme = i.kine.tls ? 'https' : 'http';
  const clusterWide: Record<string, string | readonly string[]> = {
    token: i.token,
    // Each server on its own Kine, on loopback: Kine itself follows the primary PostgreSQL.
    'datastore-endpoint': `${scheme}://127.0.0.1:${i.kine.port}`,
    ...(i.kine.tls ? { 'datastore-cafile': i.kine.tls.caFile, 'datastore-certfile': i.kine.tls.certFile, 'datastore-keyfile': i.kine.tls.keyFile } : {}),
    'cluster-cidr': i.clusterCidr,
    'service-cidr': i.serviceCidr,
    ...(i.disable.length ? { disable: [...i.disable] } : {}),
    'write-kubeconfig-mode': K3S_KUBECONFIG_MODE,
  };
  const thisNode: Record<string, string | readonly string[]> = {
    // Both boxes boot the same image, hence the same hostname, K3s' default node name.
    'node-name': i.node.name,
    'node-ip': i.node.ip,
    // The address the `kubernetes` Service's endpoints list: this box's own, reachable whichever box holds the VIP.
    'advertise-address': i.node.ip,
    // Clients reach the API on the VIP; K3s adds loopback, the node name and kubernetes.default itself.
    'tls-san': [...new Set([i.vip, i.node.ip])],
    'data-dir': i.dataDir,
    'write-kubeconfig': i.kubeconfigFile,
  };
  return [
    '# Written by geminik8s-agent before every start of `k3s server`: edits here are lost.',
    '# Identical on both servers of the pair (K3s requires it on a shared datastore):',
    yamlBlock(clusterWide).trimEnd(),
    '# This server:',
    yamlBlock(thisNode),
  ].join('\n');
}

/** The arguments after the k3s binary. Only the file's path: everything else, the token too, is in the file. */
export function k3sServerArgv(configFile: string): string[] {
  checkPath('configFile', configFile);
  return ['server', '--config', configFile];
}

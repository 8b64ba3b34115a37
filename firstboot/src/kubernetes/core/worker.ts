/**
 * The worker half of an upstream-Kubernetes appliance, as data: the container runtime's
 * configuration, the pod network, and the kubelet's and kube-proxy's configuration. Pure: the shell
 * (../control-plane.ts) writes these files and starts the units overlays/kubernetes installs.
 *
 * Both boxes are workers. The pod network needs no overlay and no agent of its own: the cluster
 * range is split into one /24 per box, in the order of the two node names (the same on both boxes,
 * nothing to agree on), each box bridges its own range (the CNI `bridge` plugin with `host-local`
 * addresses) and routes the peer's range to the peer's LAN address; pods reach each other
 * unmasqueraded, and what leaves the cluster range leaves as the box (the firewall's nat chain).
 * kube-proxy (nftables mode) implements Services; CoreDNS (./addons.ts) answers cluster DNS.
 *
 * Who reaches what:
 *  - kubelet serves its API on the node address, port 10250: TLS with a serving certificate from
 *    the pair CA, clients authenticate with a pair-CA client certificate (the API servers' kubelet
 *    client) and are authorised by the API server (webhook); anonymous refused, no read-only port.
 *    The host firewall opens 10250 to the peer's address only. Its health port is on 127.0.0.1.
 *  - kube-proxy serves health and metrics on 127.0.0.1 only.
 *  - containerd's socket is root-only (/run/containerd).
 *  - Pods reach the API server through the `kubernetes` Service (the firewall accepts the cluster
 *    range on the API port); nothing else on the host is open to them.
 */
import { isIP, isIPv4 } from 'node:net';
import { stringify } from 'yaml';
import { requireCidr, subRange } from '../../core/subnet.ts';
import type { CertificateRequest } from './control-plane.ts';

export const KUBELET_PORT = 10250;
/** Each box's share of the cluster range. */
export const POD_RANGE_PREFIX = 24;
export const CLUSTER_DOMAIN = 'cluster.local';

/**
 * Where the worker lives on the appliance. containerd's and the kubelet's state are on the data
 * partition itself, not under /var: /var is an overlay there, and overlayfs refuses an overlayfs
 * as the upper layer containerd's snapshotter mounts for every container.
 */
export const WORKER_APPLIANCE = {
  /** The multi-call binary's links (builder/src/pipeline/root-tree.ts). */
  kubelet: '/usr/lib/geminik8s/bin/kubelet',
  kubeProxy: '/usr/lib/geminik8s/bin/kube-proxy',
  containerdRoot: '/data/containerd',
  containerdSocket: '/run/containerd/containerd.sock',
  kubeletRoot: '/data/kubelet',
  /** Debian's containernetworking-plugins. */
  cniBinDir: '/usr/lib/cni',
  /** Root-only: the worker's certificates, kubeconfigs and configuration (the units read them here). */
  nodeDir: '/run/geminik8s/kubernetes/node',
  cniConfDir: '/run/geminik8s/cni/net.d',
  cniStateDir: '/run/geminik8s/cni/networks',
  /**
   * The units overlays/kubernetes installs, in start order; each reads what the agent wrote under
   * /run/geminik8s and does not start (ConditionPathExists) before it is there.
   */
  units: ['containerd.service', 'geminik8s-images.service', 'geminik8s-kubelet.service', 'geminik8s-kube-proxy.service'],
} as const;

export interface WorkerInput {
  node: { name: string; ip: string };
  peer: { name: string; ip: string };
  /**
   * The node whose pods use the first /24, when the pair recorded one (a replace-node keeps the
   * survivor's range); else the first of the two names in order.
   */
  podRangeFirst?: string;
  /** The LAN interface the peer is reached on. */
  lanInterface: string;
  clusterCidr: string;
  serviceCidr: string;
  /** The cluster DNS Service address (./addons.ts clusterDnsIp). */
  clusterDns: string;
  /** The sandbox ("pause") image every pod starts with: baked in, never pulled. */
  pauseImage: string;
  /** The nameservers pods with the node's DNS (CoreDNS itself) forward to: {@link upstreamNameservers}. */
  upstreamDns: string[];
  /** Root-only folder of the worker's certificates, kubeconfigs and configuration files. */
  nodeDir: string;
  /** The folder the runtime reads the pod network's configuration from (under /run: rewritten every boot). */
  cniConfDir: string;
  /** host-local's address leases: under /run, so a reboot (which ends every pod) frees them. */
  cniStateDir: string;
  apiPort: number;
}

/** systemd-resolved's list of the box's real DNS servers (its stub's upstreams). */
export const RESOLVED_UPSTREAMS = '/run/systemd/resolve/resolv.conf';

/**
 * The nameservers of the pods that use the node's DNS (CoreDNS forwards there): systemd-resolved's
 * upstreams (the text of /run/systemd/resolve/resolv.conf), loopback ones left out since inside a
 * pod they are the pod itself; with none (a LAN whose DHCP names no DNS server, a static site),
 * the box's gateway, which on a small site is its DNS forwarder. Without any, CoreDNS would fall
 * back to 127.0.0.1, find itself in a loop and exit, taking cluster DNS down with it; a gateway
 * that answers no DNS only fails the lookups of names outside the cluster.
 */
export function upstreamNameservers(resolvedConf: string, gateway: string | undefined): string[] {
  const found = resolvedConf
    .split('\n')
    .map((l) => /^\s*nameserver\s+(\S+)/.exec(l)?.[1])
    .filter((ns): ns is string => ns !== undefined && isIP(ns) !== 0 && !/^127\.|^::1$/.test(ns));
  const unique = [...new Set(found)].slice(0, 3);
  if (unique.length > 0) return unique;
  return gateway && isIPv4(gateway) ? [gateway] : [];
}

const NODE_NAME_RE = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$/;
/** An image reference as the builder names baked images (registry/name:tag), nothing a TOML string could break. */
const IMAGE_RE = /^[a-z0-9.-]+(:[0-9]+)?(\/[a-z0-9._-]+)+:[A-Za-z0-9._+-]+$/;
const IFNAME_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$/;

function fail(field: string, what: string): never {
  throw new Error(`kubernetes worker ${field}: ${what}`);
}

function validate(i: WorkerInput): void {
  for (const [field, n] of [
    ['node', i.node],
    ['peer', i.peer],
  ] as const) {
    if (!NODE_NAME_RE.test(n.name) || n.name.length > 253)
      fail(`${field}.name`, `${JSON.stringify(n.name)} is not a Kubernetes node name (lower-case letters, digits, '-' and '.')`);
    if (!isIPv4(n.ip)) fail(`${field}.ip`, `${JSON.stringify(n.ip)} is not an IPv4 address`);
  }
  if (i.node.name === i.peer.name) fail('peer.name', `${JSON.stringify(i.peer.name)} is this node's name too: the two boxes need different names`);
  if (!IFNAME_RE.test(i.lanInterface)) fail('lanInterface', `${JSON.stringify(i.lanInterface)} is not an interface name`);
  const cluster = requireCidr('clusterCidr', i.clusterCidr);
  if (cluster.prefix > POD_RANGE_PREFIX - 1)
    fail('clusterCidr', `${i.clusterCidr} is too small: each box gets a /${POD_RANGE_PREFIX} of it (use a /23 or larger)`);
  requireCidr('serviceCidr', i.serviceCidr);
  if (!isIPv4(i.clusterDns)) fail('clusterDns', `${JSON.stringify(i.clusterDns)} is not an IPv4 address`);
  if (!IMAGE_RE.test(i.pauseImage)) fail('pauseImage', `${JSON.stringify(i.pauseImage)} is not an image reference like geminik8s.local/pause:3.10`);
  for (const [field, p] of [
    ['nodeDir', i.nodeDir],
    ['cniConfDir', i.cniConfDir],
    ['cniStateDir', i.cniStateDir],
  ] as const) {
    if (!p.startsWith('/') || /[\s\0"\\]/.test(p)) fail(field, `${JSON.stringify(p)} is not an absolute path without spaces or quotes`);
  }
}

/** The node whose pods use the first /24 of the cluster range (the other's use the second). */
export function firstRangeHolder(i: Pick<WorkerInput, 'node' | 'peer' | 'podRangeFirst'>): string {
  return i.podRangeFirst ?? [i.node.name, i.peer.name].sort()[0]!;
}

/**
 * Who holds the first /24 once `newPeer` replaces the peer (replace-node): the survivor keeps the
 * range its running pods have addresses in, whatever the new name's order; the new box takes the other.
 */
export function firstRangeHolderAfterReplacement(i: Pick<WorkerInput, 'node' | 'peer' | 'podRangeFirst'>, newPeer: string): string {
  return firstRangeHolder(i) === i.node.name ? i.node.name : newPeer;
}

/** The two boxes' pod ranges: the first and second /24 of the cluster range (firstRangeHolder). */
export function podRanges(i: Pick<WorkerInput, 'node' | 'peer' | 'clusterCidr' | 'podRangeFirst'>): { own: string; peer: string } {
  const first = firstRangeHolder(i) === i.node.name;
  return {
    own: subRange('clusterCidr', i.clusterCidr, POD_RANGE_PREFIX, first ? 0 : 1),
    peer: subRange('clusterCidr', i.clusterCidr, POD_RANGE_PREFIX, first ? 1 : 0),
  };
}

/** The route this box needs to the peer's pods; the shell installs it with `ip route replace`. */
export function peerPodRoute(i: WorkerInput): { destination: string; via: string; dev: string } {
  return { destination: podRanges(i).peer, via: i.peer.ip, dev: i.lanInterface };
}

/**
 * The worker's identities from the pair CA. The kubelet's client certificate names the node the
 * way the API server's Node authoriser and NodeRestriction admission expect (system:node:<name>,
 * group system:nodes): a box can change only its own Node and its own pods' objects.
 */
export function workerCertificateRequests(i: Pick<WorkerInput, 'node'>): CertificateRequest[] {
  return [
    { file: 'kubelet-client', commonName: `system:node:${i.node.name}`, organization: 'system:nodes', usage: 'client', sans: [] },
    { file: 'kubelet-serving', commonName: i.node.name, usage: 'server', sans: [`IP:${i.node.ip}`, `DNS:${i.node.name}`] },
    { file: 'kube-proxy', commonName: 'system:kube-proxy', usage: 'client', sans: [] },
  ];
}

/** The kubelet's resolvConf in nodeDir: the nameservers of pods with the node's DNS, CoreDNS among them. */
export const UPSTREAM_RESOLV_CONF = 'resolv.conf';

export function upstreamResolvConf(nameservers: readonly string[]): string {
  return nameservers.map((ns) => `nameserver ${ns}\n`).join('');
}

export interface WorkerFile {
  /** Base name in nodeDir, or an absolute path (the CNI configuration). */
  path: string;
  text: string;
}

/** Every configuration file of the worker (the kubeconfigs come with the control plane's). */
export function workerFiles(i: WorkerInput): WorkerFile[] {
  validate(i);
  const at = (f: string): string => `${i.nodeDir}/${f}`;
  const kubelet = {
    apiVersion: 'kubelet.config.k8s.io/v1beta1',
    kind: 'KubeletConfiguration',
    address: i.node.ip,
    port: KUBELET_PORT,
    readOnlyPort: 0,
    healthzBindAddress: '127.0.0.1',
    authentication: { anonymous: { enabled: false }, webhook: { enabled: true }, x509: { clientCAFile: at('ca.crt') } },
    authorization: { mode: 'Webhook' },
    tlsCertFile: at('kubelet-serving.crt'),
    tlsPrivateKeyFile: at('kubelet-serving.key'),
    // containerd 1.6 (Debian bookworm) cannot tell the kubelet its cgroup driver (the CRI
    // RuntimeConfig call came with 2.0); both use systemd's, as containerd's config below says.
    cgroupDriver: 'systemd',
    containerRuntimeEndpoint: `unix://${WORKER_APPLIANCE.containerdSocket}`,
    clusterDNS: [i.clusterDns],
    clusterDomain: CLUSTER_DOMAIN,
    // The box's real upstreams (upstreamNameservers): systemd-resolved's stub (127.0.0.53) would be
    // a loop inside a pod.
    resolvConf: at(UPSTREAM_RESOLV_CONF),
    // The images are imported from the image's archives and cannot be pulled again: never collect them.
    imageGCHighThresholdPercent: 100,
    imageGCLowThresholdPercent: 99,
    // An appliance's data partition can be small; keep the defaults' intent at sizes that fit.
    evictionHard: { 'memory.available': '100Mi', 'nodefs.available': '5%', 'imagefs.available': '5%' },
    failSwapOn: false,
    rotateCertificates: false,
    serverTLSBootstrap: false,
    registerNode: true,
  };
  const kubeProxy = {
    apiVersion: 'kubeproxy.config.k8s.io/v1alpha1',
    kind: 'KubeProxyConfiguration',
    clientConnection: { kubeconfig: at('kube-proxy.kubeconfig') },
    hostnameOverride: i.node.name,
    // nftables: the host firewall is nftables too (its own table), and no iptables is installed.
    mode: 'nftables',
    clusterCIDR: i.clusterCidr,
    bindAddress: i.node.ip,
    healthzBindAddress: '127.0.0.1:10256',
    metricsBindAddress: '127.0.0.1:10249',
    nodePortAddresses: [`${i.node.ip}/32`],
  };
  // Only `bridge` (with `host-local` addresses). Debian's plugins (1.1) masquerade and map host
  // ports with iptables, which the appliance does not carry: pods' traffic leaving the cluster
  // range is masqueraded by the host firewall's own nftables table instead (net/core/firewall.ts),
  // and host ports (the portmap plugin) are not offered.
  const cni = {
    cniVersion: '1.0.0',
    name: 'geminik8s',
    plugins: [
      {
        type: 'bridge',
        bridge: 'cni0',
        isGateway: true,
        ipMasq: false,
        hairpinMode: true,
        ipam: { type: 'host-local', ranges: [[{ subnet: podRanges(i).own }]], routes: [{ dst: '0.0.0.0/0' }], dataDir: i.cniStateDir },
      },
    ],
  };
  const containerd = [
    '# Written by the geminik8s agent at every start (firstboot/src/kubernetes/core/worker.ts).',
    'version = 2',
    `root = "${WORKER_APPLIANCE.containerdRoot}"`,
    'state = "/run/containerd"',
    '',
    '[plugins."io.containerd.grpc.v1.cri"]',
    `  sandbox_image = "${i.pauseImage}"`,
    '[plugins."io.containerd.grpc.v1.cri".containerd]',
    '  default_runtime_name = "runc"',
    '[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]',
    '  runtime_type = "io.containerd.runc.v2"',
    '[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]',
    '  SystemdCgroup = true',
    '[plugins."io.containerd.grpc.v1.cri".cni]',
    `  bin_dir = "${WORKER_APPLIANCE.cniBinDir}"`,
    `  conf_dir = "${i.cniConfDir}"`,
    '',
  ].join('\n');
  const kubeletArgs = [
    `--config=${at('kubelet.yaml')}`,
    `--kubeconfig=${at('kubelet.kubeconfig')}`,
    `--root-dir=${WORKER_APPLIANCE.kubeletRoot}`,
    `--hostname-override=${i.node.name}`,
    `--node-ip=${i.node.ip}`,
  ];
  return [
    { path: 'kubelet.yaml', text: stringify(kubelet) },
    { path: UPSTREAM_RESOLV_CONF, text: upstreamResolvConf(i.upstreamDns) },
    // Read by geminik8s-kubelet.service (EnvironmentFile): the flags KubeletConfiguration has no field for.
    { path: 'kubelet.env', text: `KUBELET_ARGS=${kubeletArgs.join(' ')}\n` },
    { path: 'kube-proxy.yaml', text: stringify(kubeProxy) },
    { path: 'containerd.toml', text: containerd },
    { path: `${i.cniConfDir}/10-geminik8s.conflist`, text: `${JSON.stringify(cni, null, 2)}\n` },
  ];
}

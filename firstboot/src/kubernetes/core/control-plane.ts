/**
 * The upstream Kubernetes control plane of one appliance, as data: which certificates it needs,
 * the kubeconfigs its programs and the operator use, and the exact command line of each program.
 * Pure: the shell (../control-plane.ts) issues the certificates, writes the files and runs the
 * programs; every choice is made here, where unit tests reach it.
 *
 * Both appliances run the same three programs on their own Kine (which reaches the primary
 * PostgreSQL), so either API server answers on the VIP after a failover. Controller-manager and
 * scheduler elect one active instance per pair through Leases in the API.
 *
 * Who reaches what:
 *  - kube-apiserver listens on every address, port 6443 (the VIP and the node address): TLS with a
 *    serving certificate from the pair CA; clients authenticate with a client certificate from
 *    the pair CA (the operator's admin kubeconfig: group system:masters) or a service-account
 *    token; anonymous requests are refused, RBAC authorises. Node certificates and Kine client
 *    certificates also chain to the pair CA but carry no group, so RBAC grants them nothing.
 *  - controller-manager and scheduler serve their health and metrics on 127.0.0.1 only.
 */

import { rangeAddress } from '../../core/subnet.ts';
import { workerCertificateRequests, type WorkerInput } from './worker.ts';

export const KUBE_API_PORT = 6443;
export const CONTROL_PLANE_PROGRAMS = ['kube-apiserver', 'kube-controller-manager', 'kube-scheduler'] as const;
export type ControlPlaneProgram = (typeof CONTROL_PLANE_PROGRAMS)[number];

/**
 * How much lower than the agent (and the PostgreSQL and Kine it runs) the Kubernetes programs it
 * starts run. The pair's safety rests on the agent's liveness loop answering within its
 * thresholds; under emulation a starting control plane and worker starved it for 20 s and its
 * peer took it for dead. Kubernetes waits; the datastore and its guardian do not.
 */
export const KUBERNETES_NICENESS = 10;

/** The programs that serve the API (upstream's, and K3s's single server process). */
const API_SERVERS: ReadonlySet<string> = new Set(['kube-apiserver', 'k3s-server']);

/**
 * Whether `program` may be started now. The API server first; the programs that only talk to it
 * once it has answered ready since the agent started the control plane (as K3s orders its own).
 * Started together, on a slow box (a Pi, or emulation) they spend the CPU the API server's start
 * needs on their own start and on retries against an API server that cannot answer yet, and the
 * API server missed its datastore deadline. A program already running is never held back.
 */
export function mayStart(program: string, apiServerReadyOnce: boolean): boolean {
  return API_SERVERS.has(program) || apiServerReadyOnce;
}

export interface ControlPlaneInput {
  node: { name: string; ip: string };
  /** The VIP, no prefix. */
  vip: string;
  /** Kine's etcd endpoint as the API server reaches it (on this box). */
  etcdEndpoint: string;
  /**
   * Kine requires a client certificate (the image also serves remote etcd clients): the API server
   * gets one of its own from the pair CA.
   */
  etcdTls?: boolean;
  clusterCidr: string;
  serviceCidr: string;
  /** Where the control plane's certificates and kubeconfigs live (private to its user). */
  pkiDir: string;
  apiPort?: number;
  /** The site's failover pace (core/site.ts failoverPace): Kubernetes' own leader elections and node grace follow it. */
  timeScale: number;
  /** This box is also a worker (upstream on the appliance): kubelet, kube-proxy, pod network. */
  worker?: WorkerInput;
}

/** What a certificate of the control plane is for; the shell issues one per entry from the pair CA. */
export interface CertificateRequest {
  /** Base name of `<pkiDir>/<file>.crt` and `.key`. */
  file: string;
  commonName: string;
  organization?: string;
  usage: 'server' | 'client';
  /** subjectAltName entries (server certificates only), e.g. "IP:10.0.0.1", "DNS:kubernetes". */
  sans: string[];
}

/** The first address of the Service range: the `kubernetes` Service's ClusterIP, which pods dial. */
export function kubernetesServiceIp(serviceCidr: string): string {
  return rangeAddress('serviceCidr', serviceCidr, 1);
}

/** The names clients use for the API: the VIP, this node, loopback and the in-cluster Service. */
export function apiServerSans(i: Pick<ControlPlaneInput, 'node' | 'vip' | 'serviceCidr'>): string[] {
  const ips = [...new Set([i.vip, i.node.ip, kubernetesServiceIp(i.serviceCidr), '127.0.0.1'])];
  const dns = ['kubernetes', 'kubernetes.default', 'kubernetes.default.svc', 'kubernetes.default.svc.cluster.local', 'localhost', i.node.name];
  return [...ips.map((ip) => `IP:${ip}`), ...[...new Set(dns)].map((d) => `DNS:${d}`)];
}

/**
 * The certificates one node needs. The serving certificate is per node (its own address in the
 * SANs); the client identities are the same on both nodes, issued locally from the shared CA.
 */
export function certificateRequests(i: ControlPlaneInput): CertificateRequest[] {
  return [
    { file: 'apiserver', commonName: 'kube-apiserver', usage: 'server', sans: apiServerSans(i) },
    { file: 'admin', commonName: 'geminik8s-admin', organization: 'system:masters', usage: 'client', sans: [] },
    { file: 'kube-controller-manager', commonName: 'system:kube-controller-manager', usage: 'client', sans: [] },
    { file: 'kube-scheduler', commonName: 'system:kube-scheduler', usage: 'client', sans: [] },
    ...(i.etcdTls ? [{ file: 'etcd-client', commonName: 'kube-apiserver-etcd-client', usage: 'client' as const, sans: [] }] : []),
    // The API server's identity towards kubelets (logs, exec, port-forward): kubelets authorise it
    // by asking the API server, and system:masters may do anything.
    { file: 'apiserver-kubelet-client', commonName: 'kube-apiserver-kubelet-client', organization: 'system:masters', usage: 'client', sans: [] },
    ...(i.worker ? workerCertificateRequests(i.worker) : []),
  ];
}

/** A kubeconfig with everything embedded (one file to copy, nothing to resolve relative to it). */
export function renderKubeconfig(o: { server: string; caPem: string; certPem: string; keyPem: string; user: string; cluster?: string }): string {
  const b64 = (s: string): string => Buffer.from(s).toString('base64');
  const cluster = o.cluster ?? 'geminik8s';
  return [
    'apiVersion: v1',
    'kind: Config',
    'clusters:',
    `- name: ${cluster}`,
    '  cluster:',
    `    server: ${o.server}`,
    `    certificate-authority-data: ${b64(o.caPem)}`,
    'users:',
    `- name: ${o.user}`,
    '  user:',
    `    client-certificate-data: ${b64(o.certPem)}`,
    `    client-key-data: ${b64(o.keyPem)}`,
    'contexts:',
    `- name: ${o.user}@${cluster}`,
    '  context:',
    `    cluster: ${cluster}`,
    `    user: ${o.user}`,
    `current-context: ${o.user}@${cluster}`,
    '',
  ].join('\n');
}

/**
 * The kubeconfigs: every program talks to its own node's API server (it answers while the local
 * Kine reaches the primary, whichever box holds the VIP), the operator to the VIP. `dir` says
 * whose folder it goes to: the control plane's (pkiDir) or the worker's (root-only nodeDir).
 */
export function kubeconfigPlan(i: ControlPlaneInput): { file: string; certificate: string; server: string; dir: 'pki' | 'node' }[] {
  const port = i.apiPort ?? KUBE_API_PORT;
  const local = `https://127.0.0.1:${port}`;
  return [
    { file: 'admin.kubeconfig', certificate: 'admin', server: `https://${i.vip}:${port}`, dir: 'pki' },
    { file: 'kube-controller-manager.kubeconfig', certificate: 'kube-controller-manager', server: local, dir: 'pki' },
    { file: 'kube-scheduler.kubeconfig', certificate: 'kube-scheduler', server: local, dir: 'pki' },
    ...(i.worker
      ? [
          { file: 'kubelet.kubeconfig', certificate: 'kubelet-client', server: local, dir: 'node' as const },
          { file: 'kube-proxy.kubeconfig', certificate: 'kube-proxy', server: local, dir: 'node' as const },
        ]
      : []),
  ];
}

/** Command lines (program name first, as the multi-call binary dispatches on it). Nothing secret: keys are files. */
export function programArgs(i: ControlPlaneInput): Record<ControlPlaneProgram, string[]> {
  const pki = (f: string): string => `${i.pkiDir}/${f}`;
  // Upstream's defaults (15 s, 10 s, 2 s; 50 s) times the site's pace. A controller manager or
  // scheduler that cannot renew its Lease within the deadline exits, and on a box slow enough to
  // need a slower pace its API server answers slowly too: at the defaults both restarted every
  // minute under emulation and no pod was ever created.
  const k = i.timeScale;
  const ms = (seconds: number): string => `${Math.round(seconds * 1000 * k)}ms`;
  const leaderElection = [
    '--leader-elect=true',
    `--leader-elect-lease-duration=${ms(15)}`,
    `--leader-elect-renew-deadline=${ms(10)}`,
    `--leader-elect-retry-period=${ms(2)}`,
  ];
  const port = i.apiPort ?? KUBE_API_PORT;
  const kubeconfig = (f: string): string[] => [`--kubeconfig=${pki(f)}`, `--authentication-kubeconfig=${pki(f)}`, `--authorization-kubeconfig=${pki(f)}`];
  return {
    'kube-apiserver': [
      'kube-apiserver',
      `--etcd-servers=${i.etcdEndpoint}`,
      ...(i.etcdTls ? [`--etcd-cafile=${pki('ca.crt')}`, `--etcd-certfile=${pki('etcd-client.crt')}`, `--etcd-keyfile=${pki('etcd-client.key')}`] : []),
      // Every address: the VIP moves between the boxes and operators and the peer reach the API on
      // the LAN. Nothing is served unauthenticated: TLS with the pair CA's serving certificate,
      // client certificates from the pair CA or service-account tokens, anonymous refused (below),
      // RBAC. The host firewall opens this port to the LAN only when the image runs Kubernetes.
      '--bind-address=0.0.0.0',
      `--secure-port=${port}`,
      `--advertise-address=${i.node.ip}`,
      `--service-cluster-ip-range=${i.serviceCidr}`,
      `--tls-cert-file=${pki('apiserver.crt')}`,
      `--tls-private-key-file=${pki('apiserver.key')}`,
      `--client-ca-file=${pki('ca.crt')}`,
      '--anonymous-auth=false',
      '--authorization-mode=Node,RBAC',
      '--enable-admission-plugins=NodeRestriction',
      '--allow-privileged=true',
      '--profiling=false',
      '--service-account-issuer=https://kubernetes.default.svc.cluster.local',
      `--service-account-key-file=${pki('service-account.pub')}`,
      `--service-account-signing-key-file=${pki('service-account.key')}`,
      // Kine compacts its own table; the API server's periodic compaction requests are redundant.
      '--etcd-compaction-interval=0',
      // Logs, exec and port-forward go to the kubelet on the node's address, whose serving
      // certificate the pair CA signed.
      `--kubelet-client-certificate=${pki('apiserver-kubelet-client.crt')}`,
      `--kubelet-client-key=${pki('apiserver-kubelet-client.key')}`,
      `--kubelet-certificate-authority=${pki('ca.crt')}`,
      '--kubelet-preferred-address-types=InternalIP',
    ],
    'kube-controller-manager': [
      'kube-controller-manager',
      ...kubeconfig('kube-controller-manager.kubeconfig'),
      '--bind-address=127.0.0.1',
      ...leaderElection,
      // A node whose kubelet has not posted its status for this long is NotReady.
      `--node-monitor-grace-period=${ms(50)}`,
      '--use-service-account-credentials=true',
      `--service-account-private-key-file=${pki('service-account.key')}`,
      `--root-ca-file=${pki('ca.crt')}`,
      // Each box's pod range is fixed by the pair (core/worker.ts podRanges), not allocated.
      '--allocate-node-cidrs=false',
      `--service-cluster-ip-range=${i.serviceCidr}`,
      '--profiling=false',
    ],
    'kube-scheduler': ['kube-scheduler', ...kubeconfig('kube-scheduler.kubeconfig'), '--bind-address=127.0.0.1', ...leaderElection, '--profiling=false'],
  };
}

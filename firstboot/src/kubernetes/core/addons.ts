/**
 * The cluster add-ons the agent applies to the API, as data: CoreDNS (the cluster DNS the kubelets
 * point pods at) and the REST path each object is applied at. Pure: the shell (../api.ts) sends
 * them with server-side apply, so applying the same objects again changes nothing.
 */
import { rangeAddress } from '../../core/subnet.ts';

/** The fields every object needs to be applied: what it is and where it lives. */
export interface KubeObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string> };
  [field: string]: unknown;
}

/** The ClusterIP of the kube-dns Service: what every kubelet gives its pods as their resolver (`clusterDNS`). */
export function clusterDnsIp(serviceCidr: string): string {
  return rangeAddress('serviceCidr', serviceCidr, 10);
}

export interface CoreDnsInput {
  /** The image reference, as the runtime knows the baked archive (e.g. geminik8s.local/coredns:v1.15.0). */
  image: string;
  serviceCidr: string;
  /** The cluster's DNS domain, e.g. cluster.local (the kubelets' `clusterDomain`). */
  clusterDomain: string;
  replicas: number;
}

/** A DNS name: dot-separated labels of lower-case letters, digits and inner '-', each at most 63 long. */
const DNS_NAME_RE = /^(?=.{1,253}$)[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)*$/;

const NAMESPACE = 'kube-system';
const APP_LABELS = { 'k8s-app': 'kube-dns' };
const HEALTH_PORT = 8080;
const READY_PORT = 8181;
const METRICS_PORT = 9153;
/** The uid/gid the server runs as (the image's default is root, see builder/src/images/baked.ts). */
const COREDNS_USER = 65532;

function checkCoreDnsInput(o: CoreDnsInput): void {
  const fail = (field: string, why: string): never => {
    throw new Error(`CoreDNS: ${field}: ${why}`);
  };
  if (typeof o.image !== 'string' || o.image.trim() === '' || /\s/.test(o.image)) fail('image', `${JSON.stringify(o.image)} is not an image reference`);
  if (!Number.isInteger(o.replicas) || o.replicas < 1) fail('replicas', `${o.replicas} is not a whole number of at least 1`);
  if (typeof o.clusterDomain !== 'string' || !DNS_NAME_RE.test(o.clusterDomain))
    fail('clusterDomain', `${JSON.stringify(o.clusterDomain)} is not a DNS name like cluster.local`);
}

/** The Corefile: answers for the cluster domain and reverse zones from the API, forwards the rest upstream. */
export function renderCorefile(clusterDomain: string): string {
  return [
    '.:53 {',
    '    errors',
    // lameduck: a replica being stopped keeps answering while the endpoints drop it.
    `    health :${HEALTH_PORT} {`,
    '        lameduck 5s',
    '    }',
    `    ready :${READY_PORT}`,
    `    kubernetes ${clusterDomain} in-addr.arpa ip6.arpa {`,
    '        pods insecure',
    '        fallthrough in-addr.arpa ip6.arpa',
    '        ttl 30',
    '    }',
    // What the Service's metrics port serves.
    `    prometheus :${METRICS_PORT}`,
    '    forward . /etc/resolv.conf',
    '    cache 30',
    '    loop',
    '    reload',
    '    loadbalance',
    '}',
    '',
  ].join('\n');
}

/**
 * CoreDNS in kube-system: its account and read access to Services and endpoints, the Corefile,
 * the Deployment and the kube-dns Service on clusterDnsIp. Throws, naming the field, on bad input.
 */
export function coreDnsObjects(o: CoreDnsInput): KubeObject[] {
  checkCoreDnsInput(o);
  const dnsIp = clusterDnsIp(o.serviceCidr);
  const meta = (name: string): KubeObject['metadata'] => ({ name, namespace: NAMESPACE, labels: APP_LABELS });
  return [
    { apiVersion: 'v1', kind: 'ServiceAccount', metadata: meta('coredns') },
    {
      apiVersion: 'rbac.authorization.k8s.io/v1',
      kind: 'ClusterRole',
      metadata: { name: 'system:coredns', labels: APP_LABELS },
      rules: [
        { apiGroups: [''], resources: ['endpoints', 'services', 'pods', 'namespaces'], verbs: ['list', 'watch'] },
        { apiGroups: ['discovery.k8s.io'], resources: ['endpointslices'], verbs: ['list', 'watch'] },
      ],
    },
    {
      apiVersion: 'rbac.authorization.k8s.io/v1',
      kind: 'ClusterRoleBinding',
      metadata: { name: 'system:coredns', labels: APP_LABELS },
      roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: 'system:coredns' },
      subjects: [{ kind: 'ServiceAccount', name: 'coredns', namespace: NAMESPACE }],
    },
    { apiVersion: 'v1', kind: 'ConfigMap', metadata: meta('coredns'), data: { Corefile: renderCorefile(o.clusterDomain) } },
    {
      apiVersion: 'apps/v1',
      kind: 'Deployment',
      metadata: meta('coredns'),
      spec: {
        replicas: o.replicas,
        selector: { matchLabels: APP_LABELS },
        template: {
          metadata: { labels: APP_LABELS },
          spec: {
            serviceAccountName: 'coredns',
            priorityClassName: 'system-cluster-critical',
            // The node's resolvers, not CoreDNS itself: `forward . /etc/resolv.conf` must leave the cluster.
            dnsPolicy: 'Default',
            // One replica per box when both are up, so DNS survives losing either.
            affinity: {
              podAntiAffinity: {
                preferredDuringSchedulingIgnoredDuringExecution: [
                  { weight: 100, podAffinityTerm: { labelSelector: { matchLabels: APP_LABELS }, topologyKey: 'kubernetes.io/hostname' } },
                ],
              },
            },
            securityContext: {
              runAsNonRoot: true,
              runAsUser: COREDNS_USER,
              runAsGroup: COREDNS_USER,
              // A non-root process loses an added capability at exec unless its binary carries it as a
              // file capability, which the baked image's does not: this namespaced (safe) sysctl of the
              // pod's own network is what lets it bind port 53.
              sysctls: [{ name: 'net.ipv4.ip_unprivileged_port_start', value: '53' }],
            },
            containers: [
              {
                name: 'coredns',
                image: o.image,
                // The appliance has no registry: the image is imported from the archive baked into the OS image.
                imagePullPolicy: 'Never',
                args: ['-conf', '/etc/coredns/Corefile'],
                ports: [
                  { name: 'dns', containerPort: 53, protocol: 'UDP' },
                  { name: 'dns-tcp', containerPort: 53, protocol: 'TCP' },
                  { name: 'metrics', containerPort: METRICS_PORT, protocol: 'TCP' },
                ],
                resources: { requests: { cpu: '50m', memory: '70Mi' }, limits: { memory: '170Mi' } },
                securityContext: {
                  allowPrivilegeEscalation: false,
                  readOnlyRootFilesystem: true,
                  // NET_BIND_SERVICE for an image whose binary does carry it (e.g. upstream's, given
                  // instead through the profile's image archives); every other capability dropped.
                  capabilities: { add: ['NET_BIND_SERVICE'], drop: ['ALL'] },
                },
                livenessProbe: {
                  httpGet: { path: '/health', port: HEALTH_PORT, scheme: 'HTTP' },
                  initialDelaySeconds: 60,
                  timeoutSeconds: 5,
                  failureThreshold: 5,
                },
                readinessProbe: { httpGet: { path: '/ready', port: READY_PORT, scheme: 'HTTP' } },
                volumeMounts: [{ name: 'config-volume', mountPath: '/etc/coredns', readOnly: true }],
              },
            ],
            volumes: [{ name: 'config-volume', configMap: { name: 'coredns', items: [{ key: 'Corefile', path: 'Corefile' }] } }],
          },
        },
      },
    },
    {
      apiVersion: 'v1',
      kind: 'Service',
      metadata: meta('kube-dns'),
      spec: {
        selector: APP_LABELS,
        clusterIP: dnsIp,
        ports: [
          { name: 'dns', port: 53, targetPort: 53, protocol: 'UDP' },
          { name: 'dns-tcp', port: 53, targetPort: 53, protocol: 'TCP' },
          { name: 'metrics', port: METRICS_PORT, targetPort: METRICS_PORT, protocol: 'TCP' },
        ],
      },
    },
  ];
}

/** The kinds the agent applies: their API group, resource (plural) and whether they live in a namespace. */
const KINDS: Record<string, { group: string; resource: string; namespaced: boolean }> = {
  Namespace: { group: '', resource: 'namespaces', namespaced: false },
  ServiceAccount: { group: '', resource: 'serviceaccounts', namespaced: true },
  ConfigMap: { group: '', resource: 'configmaps', namespaced: true },
  Service: { group: '', resource: 'services', namespaced: true },
  Pod: { group: '', resource: 'pods', namespaced: true },
  Deployment: { group: 'apps', resource: 'deployments', namespaced: true },
  ClusterRole: { group: 'rbac.authorization.k8s.io', resource: 'clusterroles', namespaced: false },
  ClusterRoleBinding: { group: 'rbac.authorization.k8s.io', resource: 'clusterrolebindings', namespaced: false },
};

/** A path segment the API accepts as a name (no '/', not '.' or '..'). */
function nameSegment(field: string, what: string, v: unknown): string {
  if (typeof v !== 'string' || v === '' || v === '.' || v === '..' || v.includes('/')) throw new Error(`${what}: ${field} ${JSON.stringify(v)} is not a name`);
  return encodeURIComponent(v);
}

/** The REST path of one object (no query), e.g. /apis/apps/v1/namespaces/kube-system/deployments/coredns. */
export function objectPath(obj: KubeObject): string {
  const what = `${obj.kind} ${JSON.stringify(obj.metadata?.name)}`;
  const kind = Object.hasOwn(KINDS, obj.kind) ? KINDS[obj.kind] : undefined;
  if (!kind) throw new Error(`${what}: kind ${JSON.stringify(obj.kind)} is not one the agent applies (${Object.keys(KINDS).join(', ')})`);
  const slash = obj.apiVersion.indexOf('/');
  const group = slash < 0 ? '' : obj.apiVersion.slice(0, slash);
  const version = obj.apiVersion.slice(slash + 1);
  if (group !== kind.group || !/^v\d+((alpha|beta)\d+)?$/.test(version)) {
    throw new Error(
      `${what}: apiVersion ${JSON.stringify(obj.apiVersion)} is not one of ${obj.kind}'s (expected ${kind.group ? `${kind.group}/` : ''}<version>)`,
    );
  }
  const prefix = group === '' ? `/api/${version}` : `/apis/${group}/${version}`;
  const name = nameSegment('metadata.name', what, obj.metadata.name);
  if (!kind.namespaced) {
    if (obj.metadata.namespace !== undefined)
      throw new Error(`${what}: ${obj.kind} is cluster-wide, yet metadata.namespace is ${JSON.stringify(obj.metadata.namespace)}`);
    return `${prefix}/${kind.resource}/${name}`;
  }
  const namespace = nameSegment('metadata.namespace', what, obj.metadata.namespace);
  return `${prefix}/namespaces/${namespace}/${kind.resource}/${name}`;
}

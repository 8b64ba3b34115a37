/**
 * The cluster add-ons (firstboot/src/kubernetes/core/addons.ts): the Service range's addresses,
 * CoreDNS's objects as the agent applies them, and the REST path each object is applied at.
 */
import test from 'ava';
import { rangeAddress } from '../../firstboot/src/core/subnet.ts';
import { clusterDnsIp, coreDnsObjects, objectPath, renderCorefile, type CoreDnsInput, type KubeObject } from '../../firstboot/src/kubernetes/core/addons.ts';

const input: CoreDnsInput = { image: 'geminik8s.local/coredns:v1.15.0', serviceCidr: '10.43.0.0/16', clusterDomain: 'cluster.local', replicas: 2 };

/** A field deep inside an object, by its path. */
function at(o: unknown, ...keys: (string | number)[]): unknown {
  return keys.reduce<unknown>((v, k) => (v as Record<string | number, unknown> | undefined)?.[k], o);
}

function find(objects: KubeObject[], kind: string): KubeObject {
  const o = objects.find((x) => x.kind === kind);
  if (!o) throw new Error(`no ${kind}`);
  return o;
}

test('Service range addresses: the nth after the network address; cluster DNS is the 10th', (t) => {
  t.is(rangeAddress('serviceCidr', '10.43.0.0/16', 1), '10.43.0.1');
  t.is(clusterDnsIp('10.43.0.0/16'), '10.43.0.10');
  t.is(clusterDnsIp('10.96.0.0/12'), '10.96.0.10');
  // A range written with host bits set still counts from its network address.
  t.is(clusterDnsIp('10.43.7.9/16'), '10.43.0.10');
  t.is(rangeAddress('serviceCidr', '172.16.5.0/24', 254), '172.16.5.254');
  t.is(rangeAddress('serviceCidr', '10.0.0.0/8', 256), '10.0.1.0');
  t.is(rangeAddress('serviceCidr', '10.43.0.0/30', 2), '10.43.0.2');
});

test('Service range addresses: a malformed range, and an address the range does not hold, are refused naming serviceCidr', (t) => {
  t.throws(() => clusterDnsIp('10.43.0.0'), { message: /^serviceCidr: "10\.43\.0\.0" is not an IPv4 CIDR/ });
  t.throws(() => clusterDnsIp('10.43.0.256/16'), { message: /^serviceCidr: "10\.43\.0\.256\/16" is not an IPv4 CIDR/ });
  t.throws(() => rangeAddress('serviceCidr', '10.43.0.0/31', 1), { message: /has no host address number 1/ });
  t.throws(() => clusterDnsIp('10.43.0.0/29'), { message: /^serviceCidr: 10\.43\.0\.0\/29 has no host address number 10/ });
  t.throws(() => rangeAddress('serviceCidr', '10.43.0.0/24', 255), { message: /no host address number 255/ }, 'the broadcast address');
  t.throws(() => rangeAddress('serviceCidr', '10.43.0.0/24', 0), { message: /no host address number 0/ }, 'the network address');
  t.throws(() => rangeAddress('serviceCidr', '10.43.0.0/24', 1.5), { message: /no host address number 1\.5/ });
});

test('CoreDNS: every object in kube-system or cluster-wide, in an order the API accepts (account and config before the Deployment)', (t) => {
  const objects = coreDnsObjects(input);
  t.deepEqual(
    objects.map((o) => `${o.kind}/${o.metadata.name}`),
    [
      'ServiceAccount/coredns',
      'ClusterRole/system:coredns',
      'ClusterRoleBinding/system:coredns',
      'ConfigMap/coredns',
      'Deployment/coredns',
      'Service/kube-dns',
    ],
  );
  for (const o of objects) t.is(o.metadata.namespace, o.kind.startsWith('Cluster') ? undefined : 'kube-system', o.kind);
  // Plain JSON: what apply sends is exactly this.
  t.deepEqual(JSON.parse(JSON.stringify(objects)), objects);
});

test("CoreDNS: the kube-dns Service sits on the 10th Service address and selects the Deployment's pods", (t) => {
  const objects = coreDnsObjects({ ...input, serviceCidr: '10.96.0.0/12' });
  const svc = find(objects, 'Service');
  t.is(at(svc, 'spec', 'clusterIP'), '10.96.0.10');
  t.deepEqual(at(svc, 'spec', 'selector'), { 'k8s-app': 'kube-dns' });
  t.deepEqual(at(svc, 'spec', 'ports'), [
    { name: 'dns', port: 53, targetPort: 53, protocol: 'UDP' },
    { name: 'dns-tcp', port: 53, targetPort: 53, protocol: 'TCP' },
    { name: 'metrics', port: 9153, targetPort: 9153, protocol: 'TCP' },
  ]);
  const deployment = find(objects, 'Deployment');
  t.deepEqual(at(deployment, 'spec', 'selector', 'matchLabels'), { 'k8s-app': 'kube-dns' });
  t.deepEqual(at(deployment, 'spec', 'template', 'metadata', 'labels'), { 'k8s-app': 'kube-dns' });
});

test('CoreDNS: the Deployment runs the baked image without pulling, non-root, one replica per box if it can', (t) => {
  const deployment = find(coreDnsObjects({ ...input, replicas: 3 }), 'Deployment');
  t.is(at(deployment, 'spec', 'replicas'), 3);
  const pod = at(deployment, 'spec', 'template', 'spec');
  t.is(at(pod, 'serviceAccountName'), 'coredns');
  t.is(at(pod, 'priorityClassName'), 'system-cluster-critical');
  t.is(at(pod, 'dnsPolicy'), 'Default');
  t.like(at(pod, 'securityContext') as object, {
    runAsNonRoot: true,
    runAsUser: 65532,
    sysctls: [{ name: 'net.ipv4.ip_unprivileged_port_start', value: '53' }],
  });
  t.deepEqual(at(pod, 'affinity', 'podAntiAffinity', 'preferredDuringSchedulingIgnoredDuringExecution', 0, 'podAffinityTerm'), {
    labelSelector: { matchLabels: { 'k8s-app': 'kube-dns' } },
    topologyKey: 'kubernetes.io/hostname',
  });
  t.is(
    at(pod, 'affinity', 'podAntiAffinity', 'requiredDuringSchedulingIgnoredDuringExecution'),
    undefined,
    'preferred only: one box alone still runs every replica',
  );
  const containers = at(pod, 'containers') as unknown[];
  t.is(containers.length, 1);
  const c = containers[0];
  t.is(at(c, 'image'), 'geminik8s.local/coredns:v1.15.0');
  t.is(at(c, 'imagePullPolicy'), 'Never');
  t.deepEqual(at(c, 'args'), ['-conf', '/etc/coredns/Corefile']);
  t.deepEqual(at(c, 'securityContext'), {
    allowPrivilegeEscalation: false,
    readOnlyRootFilesystem: true,
    capabilities: { add: ['NET_BIND_SERVICE'], drop: ['ALL'] },
  });
  t.deepEqual(at(c, 'ports'), [
    { name: 'dns', containerPort: 53, protocol: 'UDP' },
    { name: 'dns-tcp', containerPort: 53, protocol: 'TCP' },
    { name: 'metrics', containerPort: 9153, protocol: 'TCP' },
  ]);
  t.deepEqual(at(c, 'resources'), { requests: { cpu: '50m', memory: '70Mi' }, limits: { memory: '170Mi' } });
  t.like(at(c, 'livenessProbe', 'httpGet') as object, { path: '/health', port: 8080 });
  t.like(at(c, 'readinessProbe', 'httpGet') as object, { path: '/ready', port: 8181 });
  // The Corefile the args name is the ConfigMap's, mounted where they look.
  t.deepEqual(at(c, 'volumeMounts'), [{ name: 'config-volume', mountPath: '/etc/coredns', readOnly: true }]);
  t.deepEqual(at(pod, 'volumes'), [{ name: 'config-volume', configMap: { name: 'coredns', items: [{ key: 'Corefile', path: 'Corefile' }] } }]);
});

test('CoreDNS: its account may list and watch what the kubernetes plugin reads, nothing more', (t) => {
  const objects = coreDnsObjects(input);
  t.deepEqual(at(find(objects, 'ClusterRole'), 'rules'), [
    { apiGroups: [''], resources: ['endpoints', 'services', 'pods', 'namespaces'], verbs: ['list', 'watch'] },
    { apiGroups: ['discovery.k8s.io'], resources: ['endpointslices'], verbs: ['list', 'watch'] },
  ]);
  const binding = find(objects, 'ClusterRoleBinding');
  t.deepEqual(at(binding, 'roleRef'), { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: 'system:coredns' });
  t.deepEqual(at(binding, 'subjects'), [{ kind: 'ServiceAccount', name: 'coredns', namespace: 'kube-system' }]);
});

test("CoreDNS: the Corefile serves the cluster domain and reverse zones from the API and forwards the rest to the node's resolvers", (t) => {
  const corefile = at(find(coreDnsObjects({ ...input, clusterDomain: 'edge.example' }), 'ConfigMap'), 'data', 'Corefile');
  t.is(corefile, renderCorefile('edge.example'));
  const lines = String(corefile)
    .split('\n')
    .map((l) => l.trim());
  t.is(lines[0], '.:53 {');
  t.true(lines.includes('kubernetes edge.example in-addr.arpa ip6.arpa {'));
  t.false(String(corefile).includes('cluster.local'));
  for (const want of [
    'errors',
    'health :8080 {',
    'lameduck 5s',
    'ready :8181',
    'pods insecure',
    'fallthrough in-addr.arpa ip6.arpa',
    'ttl 30',
    'prometheus :9153',
    'forward . /etc/resolv.conf',
    'cache 30',
    'loop',
    'reload',
    'loadbalance',
  ]) {
    t.true(lines.includes(want), want);
  }
  // Every block closed.
  t.is(String(corefile).split('{').length, String(corefile).split('}').length);
});

test('CoreDNS: bad input is refused naming the field', (t) => {
  t.throws(() => coreDnsObjects({ ...input, image: '' }), { message: /^CoreDNS: image: "" is not an image reference/ });
  t.throws(() => coreDnsObjects({ ...input, image: 'a b' }), { message: /^CoreDNS: image:/ });
  t.throws(() => coreDnsObjects({ ...input, replicas: 0 }), { message: /^CoreDNS: replicas: 0 is not a whole number of at least 1/ });
  t.throws(() => coreDnsObjects({ ...input, replicas: 1.5 }), { message: /^CoreDNS: replicas:/ });
  for (const domain of ['', 'Cluster.Local', 'cluster.local.', '-x.local', 'a..b', `${'a'.repeat(64)}.local`]) {
    t.throws(() => coreDnsObjects({ ...input, clusterDomain: domain }), { message: /^CoreDNS: clusterDomain: .* is not a DNS name/ }, domain);
  }
  t.throws(() => coreDnsObjects({ ...input, serviceCidr: '10.43.0.0/29' }), { message: /^serviceCidr: 10\.43\.0\.0\/29/ });
  t.notThrows(() => coreDnsObjects({ ...input, clusterDomain: 'cluster.local', replicas: 1 }));
});

test('objectPath: core kinds under /api/v1, the others under /apis/<group>/<version>, namespaced or cluster-wide', (t) => {
  const o = (apiVersion: string, kind: string, namespace?: string): KubeObject => ({
    apiVersion,
    kind,
    metadata: { name: 'x', ...(namespace ? { namespace } : {}) },
  });
  t.is(objectPath(o('v1', 'Namespace')), '/api/v1/namespaces/x');
  t.is(objectPath(o('v1', 'ServiceAccount', 'kube-system')), '/api/v1/namespaces/kube-system/serviceaccounts/x');
  t.is(objectPath(o('v1', 'ConfigMap', 'kube-system')), '/api/v1/namespaces/kube-system/configmaps/x');
  t.is(objectPath(o('v1', 'Service', 'default')), '/api/v1/namespaces/default/services/x');
  t.is(objectPath(o('v1', 'Pod', 'default')), '/api/v1/namespaces/default/pods/x');
  t.is(objectPath(o('apps/v1', 'Deployment', 'kube-system')), '/apis/apps/v1/namespaces/kube-system/deployments/x');
  t.is(objectPath(o('rbac.authorization.k8s.io/v1', 'ClusterRole')), '/apis/rbac.authorization.k8s.io/v1/clusterroles/x');
  t.is(objectPath(o('rbac.authorization.k8s.io/v1', 'ClusterRoleBinding')), '/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/x');
  // A ':' in a name is escaped in the path; the API server decodes it.
  t.deepEqual(coreDnsObjects(input).map(objectPath), [
    '/api/v1/namespaces/kube-system/serviceaccounts/coredns',
    '/apis/rbac.authorization.k8s.io/v1/clusterroles/system%3Acoredns',
    '/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/system%3Acoredns',
    '/api/v1/namespaces/kube-system/configmaps/coredns',
    '/apis/apps/v1/namespaces/kube-system/deployments/coredns',
    '/api/v1/namespaces/kube-system/services/kube-dns',
  ]);
});

test('objectPath: an unknown kind, a wrong apiVersion, a missing or stray namespace, a name that is no path segment are refused', (t) => {
  const o = (apiVersion: string, kind: string, metadata: KubeObject['metadata']): KubeObject => ({ apiVersion, kind, metadata });
  t.throws(() => objectPath(o('batch/v1', 'Job', { name: 'j', namespace: 'default' })), {
    message: /^Job "j": kind "Job" is not one the agent applies \(Namespace, ServiceAccount/,
  });
  t.throws(() => objectPath(o('v1', 'toString', { name: 'j' })), { message: /kind "toString" is not one/ });
  t.throws(() => objectPath(o('v1', 'Deployment', { name: 'd', namespace: 'default' })), {
    message: /^Deployment "d": apiVersion "v1" is not one of Deployment's \(expected apps\/<version>\)/,
  });
  t.throws(() => objectPath(o('apps/v1', 'ConfigMap', { name: 'c', namespace: 'default' })), { message: /apiVersion "apps\/v1" is not one of ConfigMap's/ });
  t.throws(() => objectPath(o('apps/', 'Deployment', { name: 'd', namespace: 'default' })), { message: /apiVersion "apps\/"/ });
  t.throws(() => objectPath(o('v1', 'ConfigMap', { name: 'c' })), { message: /^ConfigMap "c": metadata\.namespace undefined is not a name/ });
  t.throws(() => objectPath(o('v1', 'Namespace', { name: 'n', namespace: 'default' })), {
    message: /^Namespace "n": Namespace is cluster-wide, yet metadata\.namespace is "default"/,
  });
  for (const name of ['', '.', '..', 'a/b'])
    t.throws(() => objectPath(o('v1', 'ConfigMap', { name, namespace: 'default' })), { message: /metadata\.name .* is not a name/ }, name);
});

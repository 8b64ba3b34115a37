import test from 'ava';
import { parse } from 'yaml';
import {
  apiServerSans,
  certificateRequests,
  kubeconfigPlan,
  kubernetesServiceIp,
  mayStart,
  programArgs,
  renderKubeconfig,
  type ControlPlaneInput,
} from '../../firstboot/src/kubernetes/core/control-plane.ts';

const input = (node: { name: string; ip: string }, o: Partial<ControlPlaneInput> = {}): ControlPlaneInput => ({
  node,
  vip: '192.168.50.10',
  etcdEndpoint: 'http://127.0.0.1:2379',
  clusterCidr: '10.42.0.0/16',
  serviceCidr: '10.43.0.0/16',
  pkiDir: '/run/geminik8s/kubernetes/pki',
  timeScale: 1,
  ...o,
});
const a = input({ name: 'node-a', ip: '192.168.50.11' });
const b = input({ name: 'node-b', ip: '192.168.50.12' });

test('the kubernetes Service IP is the first address of the Service range', (t) => {
  t.is(kubernetesServiceIp('10.43.0.0/16'), '10.43.0.1');
  t.is(kubernetesServiceIp('10.96.0.0/12'), '10.96.0.1');
  t.is(kubernetesServiceIp('172.16.5.0/24'), '172.16.5.1');
  t.throws(() => kubernetesServiceIp('10.43.0.0'), { message: /serviceCidr: "10.43.0.0" is not an IPv4 CIDR/ });
  t.throws(() => kubernetesServiceIp('10.43.0.0/31'), { message: /has no host address/ });
});

test("the serving certificate names the VIP, the node, loopback and the in-cluster Service, nothing of the peer's", (t) => {
  const sans = apiServerSans(a);
  for (const want of [
    'IP:192.168.50.10',
    'IP:192.168.50.11',
    'IP:10.43.0.1',
    'IP:127.0.0.1',
    'DNS:kubernetes.default',
    'DNS:kubernetes.default.svc.cluster.local',
    'DNS:node-a',
  ])
    t.true(sans.includes(want), want);
  t.false(sans.includes('IP:192.168.50.12'));
  t.is(new Set(sans).size, sans.length);
});

test('client identities: the operator and the API server towards kubelets are system:masters, controller-manager and scheduler are their system users, nobody else gets a group', (t) => {
  const reqs = certificateRequests(a);
  t.deepEqual(
    reqs.filter((r) => r.organization).map((r) => [r.file, r.organization]),
    [
      ['admin', 'system:masters'],
      ['apiserver-kubelet-client', 'system:masters'],
    ],
  );
  t.like(
    reqs.find((r) => r.file === 'kube-controller-manager'),
    { commonName: 'system:kube-controller-manager', usage: 'client' },
  );
  t.like(
    reqs.find((r) => r.file === 'kube-scheduler'),
    { commonName: 'system:kube-scheduler', usage: 'client' },
  );
  t.deepEqual(
    reqs.filter((r) => r.usage === 'server').map((r) => r.file),
    ['apiserver'],
  );
  t.false(reqs.some((r) => r.file === 'etcd-client'));
  t.true(certificateRequests({ ...a, etcdTls: true }).some((r) => r.file === 'etcd-client' && r.usage === 'client'));
});

test('both nodes run the same cluster: identical ranges, issuer and settings; only their own address differs', (t) => {
  const pa = programArgs(a);
  const pb = programArgs(b);
  for (const program of ['kube-controller-manager', 'kube-scheduler'] as const) t.deepEqual(pa[program], pb[program]);
  const differing = pa['kube-apiserver'].filter((x, i) => x !== pb['kube-apiserver'][i]);
  t.deepEqual(differing, ['--advertise-address=192.168.50.11']);
  t.true(pa['kube-apiserver'].includes('--service-cluster-ip-range=10.43.0.0/16'));
  // Pod ranges are fixed per box by the pair (core/worker.ts), not allocated by the controller-manager.
  t.true(pa['kube-controller-manager'].includes('--allocate-node-cidrs=false'));
  t.true(pa['kube-apiserver'].includes('--kubelet-certificate-authority=/run/geminik8s/kubernetes/pki/ca.crt'));
});

test('the API server refuses anonymous requests, authorises with RBAC, and reaches Kine as configured', (t) => {
  const args = programArgs(a)['kube-apiserver'];
  t.is(args[0], 'kube-apiserver');
  t.true(args.includes('--anonymous-auth=false'));
  t.true(args.includes('--authorization-mode=Node,RBAC'));
  t.true(args.includes('--etcd-servers=http://127.0.0.1:2379'));
  t.false(args.some((x) => x.startsWith('--etcd-certfile')));
  const tls = programArgs({ ...a, etcdEndpoint: 'https://127.0.0.1:2379', etcdTls: true })['kube-apiserver'];
  t.true(tls.includes('--etcd-certfile=/run/geminik8s/kubernetes/pki/etcd-client.crt'));
});

test('controller-manager and scheduler listen on loopback only, elect one leader, and use their own node’s API server', (t) => {
  const p = programArgs(a);
  for (const program of ['kube-controller-manager', 'kube-scheduler'] as const) {
    t.true(p[program].includes('--bind-address=127.0.0.1'), program);
    t.true(p[program].includes('--leader-elect=true'), program);
  }
  const plan = kubeconfigPlan(a);
  t.is(plan.find((k) => k.file === 'admin.kubeconfig')?.server, 'https://192.168.50.10:6443');
  t.is(plan.find((k) => k.file === 'kube-scheduler.kubeconfig')?.server, 'https://127.0.0.1:6443');
});

test('no argument carries key material', (t) => {
  for (const args of Object.values(programArgs({ ...a, etcdTls: true }))) t.false(args.some((x) => /PRIVATE KEY|BEGIN/.test(x)));
});

test('a kubeconfig embeds CA, certificate and key and is valid YAML kubectl reads', (t) => {
  const text = renderKubeconfig({ server: 'https://192.168.50.10:6443', caPem: 'CA', certPem: 'CERT', keyPem: 'KEY', user: 'admin' });
  const k = parse(text) as { clusters: { cluster: Record<string, string> }[]; users: { user: Record<string, string> }[]; 'current-context': string };
  t.is(k.clusters[0]?.cluster.server, 'https://192.168.50.10:6443');
  t.is(Buffer.from(k.clusters[0]?.cluster['certificate-authority-data'] ?? '', 'base64').toString(), 'CA');
  t.is(Buffer.from(k.users[0]?.user['client-key-data'] ?? '', 'base64').toString(), 'KEY');
  t.is(k['current-context'], 'admin@geminik8s');
});

test("the controllers' leader elections and the node grace follow the site's failover pace (upstream's defaults at pace 1)", (t) => {
  const flags = (args: string[]) => args.filter((x) => /^--(leader-elect-|node-monitor-grace)/.test(x));
  const at1 = programArgs(a);
  t.deepEqual(flags(at1['kube-scheduler']), [
    '--leader-elect-lease-duration=15000ms',
    '--leader-elect-renew-deadline=10000ms',
    '--leader-elect-retry-period=2000ms',
  ]);
  t.true(at1['kube-controller-manager'].includes('--node-monitor-grace-period=50000ms'));
  const at3 = programArgs({ ...a, timeScale: 3 });
  for (const program of ['kube-controller-manager', 'kube-scheduler'] as const) {
    t.true(at3[program].includes('--leader-elect-lease-duration=45000ms'), program);
    t.true(at3[program].includes('--leader-elect-renew-deadline=30000ms'), program);
    t.true(at3[program].includes('--leader-elect-retry-period=6000ms'), program);
  }
  t.true(at3['kube-controller-manager'].includes('--node-monitor-grace-period=150000ms'));
  t.deepEqual(flags(programArgs({ ...a, timeScale: 2.5 })['kube-scheduler']), [
    '--leader-elect-lease-duration=37500ms',
    '--leader-elect-renew-deadline=25000ms',
    '--leader-elect-retry-period=5000ms',
  ]);
});

test('the API server starts first; the controller manager and the scheduler once it has answered ready', (t) => {
  for (const server of ['kube-apiserver', 'k3s-server']) {
    t.true(mayStart(server, false), `${server} before anything`);
    t.true(mayStart(server, true));
  }
  for (const client of ['kube-controller-manager', 'kube-scheduler']) {
    t.false(mayStart(client, false), `${client} waits for the API server`);
    t.true(mayStart(client, true), `${client} once the API server was ready`);
  }
  // Every upstream program is either an API server or starts after one.
  t.deepEqual(
    Object.keys(programArgs(a)).filter((p) => mayStart(p, false)),
    ['kube-apiserver'],
  );
});

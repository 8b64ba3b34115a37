import { readFileSync } from 'node:fs';
import path from 'node:path';
import test from 'ava';
import { parse } from 'yaml';
import { certificateRequests, kubeconfigPlan } from '../../firstboot/src/kubernetes/core/control-plane.ts';
import {
  firstRangeHolderAfterReplacement,
  peerPodRoute,
  podRanges,
  WORKER_APPLIANCE,
  workerCertificateRequests,
  upstreamNameservers,
  workerFiles,
  type WorkerInput,
} from '../../firstboot/src/kubernetes/core/worker.ts';
import { parseCidr, rangeAddress, subRange } from '../../firstboot/src/core/subnet.ts';

const REPO = path.resolve(import.meta.dirname, '../..');
const nodeA = { name: 'node-a', ip: '192.168.50.11' };
const nodeB = { name: 'node-b', ip: '192.168.50.12' };
const input = (node: typeof nodeA, peer: typeof nodeA, o: Partial<WorkerInput> = {}): WorkerInput => ({
  node,
  peer,
  lanInterface: 'eth0',
  clusterCidr: '10.42.0.0/16',
  serviceCidr: '10.43.0.0/16',
  upstreamDns: ['192.168.50.1'],
  clusterDns: '10.43.0.10',
  pauseImage: 'geminik8s.local/pause:3.10',
  nodeDir: WORKER_APPLIANCE.nodeDir,
  cniConfDir: WORKER_APPLIANCE.cniConfDir,
  cniStateDir: WORKER_APPLIANCE.cniStateDir,
  apiPort: 6443,
  ...o,
});
const a = input(nodeA, nodeB);
const b = input(nodeB, nodeA);
const file = (files: { path: string; text: string }[], name: string): string => {
  const f = files.find((x) => x.path === name || x.path.endsWith(`/${name}`));
  if (!f) throw new Error(`no ${name}`);
  return f.text;
};

test("a replacement keeps the survivor's share of the pod range, whichever way the new name sorts; both boxes then agree on the split", (t) => {
  // node-b survives (second /24) and node-0 replaces node-a: by name node-0 would come first anyway.
  const nodeNew = { name: 'node-0', ip: '192.168.50.11' };
  t.is(firstRangeHolderAfterReplacement(b, nodeNew.name), nodeNew.name);
  // node-a survives (first /24) and node-0 replaces node-b: by name node-0 would take the first /24.
  t.is(firstRangeHolderAfterReplacement(a, nodeNew.name), 'node-a');
  const survivor = input(nodeA, nodeNew, { podRangeFirst: 'node-a' });
  const newcomer = input(nodeNew, nodeA, { podRangeFirst: 'node-a' });
  t.deepEqual(podRanges(survivor), { own: '10.42.0.0/24', peer: '10.42.1.0/24' });
  t.deepEqual(podRanges(newcomer), { own: '10.42.1.0/24', peer: '10.42.0.0/24' });
  // A recorded holder goes on through later replacements.
  t.is(firstRangeHolderAfterReplacement(newcomer, 'node-z'), 'node-z');
  t.is(firstRangeHolderAfterReplacement(survivor, 'node-z'), 'node-a');
});

test('IPv4 ranges: parsed strictly, addresses and sub-ranges computed inside the range', (t) => {
  t.deepEqual(parseCidr('10.42.7.9/16'), { base: ((10 << 24) | (42 << 16)) >>> 0, prefix: 16 });
  for (const bad of ['10.42.0.0', '10.42.0.256/16', '10.42.0.0/33', ' 10.42.0.0/16', '10.42.0.0/16\n']) t.is(parseCidr(bad), undefined, bad);
  t.is(rangeAddress('serviceCidr', '10.43.0.0/16', 10), '10.43.0.10');
  t.is(subRange('clusterCidr', '10.42.0.0/16', 24, 1), '10.42.1.0/24');
  t.is(subRange('clusterCidr', '10.96.0.0/12', 24, 0), '10.96.0.0/24');
  t.throws(() => subRange('clusterCidr', '10.42.0.0/24', 24, 1), { message: /clusterCidr: 10.42.0.0\/24 has 1 \/24 ranges/ });
  t.throws(() => rangeAddress('serviceCidr', '10.43.0.0/29', 7), { message: /no host address number 7/ });
});

test("the two boxes split the cluster range by node name: disjoint, each the other one's peer range, the same whichever box computes it", (t) => {
  t.deepEqual(podRanges(a), { own: '10.42.0.0/24', peer: '10.42.1.0/24' });
  t.deepEqual(podRanges(b), { own: '10.42.1.0/24', peer: '10.42.0.0/24' });
  t.deepEqual(peerPodRoute(a), { destination: '10.42.1.0/24', via: '192.168.50.12', dev: 'eth0' });
  t.deepEqual(peerPodRoute(b), { destination: '10.42.0.0/24', via: '192.168.50.11', dev: 'eth0' });
  const cni = (w: WorkerInput) =>
    JSON.parse(file(workerFiles(w), '10-geminik8s.conflist')) as { plugins: { type: string; ipam?: { ranges: { subnet: string }[][] } }[] };
  t.is(cni(a).plugins[0]?.ipam?.ranges[0]?.[0]?.subnet, '10.42.0.0/24');
  t.is(cni(b).plugins[0]?.ipam?.ranges[0]?.[0]?.subnet, '10.42.1.0/24');
  // Debian's plugins masquerade and map ports with iptables, which the image does not carry: the host firewall masquerades.
  t.deepEqual(
    cni(a).plugins.map((p) => p.type),
    ['bridge'],
  );
  t.false((cni(a).plugins[0] as { ipMasq?: boolean }).ipMasq);
});

test('the kubelet: authenticated API on the node address only, webhook authorisation, systemd cgroups, cluster DNS, baked images never collected', (t) => {
  const k = parse(file(workerFiles(a), 'kubelet.yaml')) as Record<string, unknown>;
  t.like(k, {
    kind: 'KubeletConfiguration',
    address: '192.168.50.11',
    port: 10250,
    readOnlyPort: 0,
    healthzBindAddress: '127.0.0.1',
    authentication: { anonymous: { enabled: false }, webhook: { enabled: true }, x509: { clientCAFile: `${WORKER_APPLIANCE.nodeDir}/ca.crt` } },
    authorization: { mode: 'Webhook' },
    cgroupDriver: 'systemd',
    clusterDNS: ['10.43.0.10'],
    clusterDomain: 'cluster.local',
    imageGCHighThresholdPercent: 100,
  });
  const env = file(workerFiles(a), 'kubelet.env');
  t.regex(env, /^KUBELET_ARGS=.*--hostname-override=node-a .*--node-ip=192\.168\.50\.11\n$/);
  t.regex(env, /--root-dir=\/data\/kubelet/);
});

test('containerd: the baked pause image, systemd cgroups, its root on the data partition, the pod network from our folder', (t) => {
  const toml = file(workerFiles(a), 'containerd.toml');
  t.regex(toml, /^root = "\/data\/containerd"$/m);
  t.regex(toml, /sandbox_image = "geminik8s\.local\/pause:3\.10"/);
  t.regex(toml, /SystemdCgroup = true/);
  t.regex(toml, /conf_dir = "\/run\/geminik8s\/cni\/net\.d"/);
  t.regex(toml, /bin_dir = "\/usr\/lib\/cni"/);
});

test('kube-proxy: nftables mode, the cluster range, health and metrics on loopback', (t) => {
  t.like(parse(file(workerFiles(a), 'kube-proxy.yaml')) as object, {
    mode: 'nftables',
    clusterCIDR: '10.42.0.0/16',
    hostnameOverride: 'node-a',
    healthzBindAddress: '127.0.0.1:10256',
    metricsBindAddress: '127.0.0.1:10249',
    clientConnection: { kubeconfig: `${WORKER_APPLIANCE.nodeDir}/kube-proxy.kubeconfig` },
  });
});

test('worker identities: the kubelet is system:node:<name> in system:nodes (Node authoriser), serves for its own address; their kubeconfigs are root-only and local', (t) => {
  t.like(
    workerCertificateRequests(a).find((r) => r.file === 'kubelet-client'),
    { commonName: 'system:node:node-a', organization: 'system:nodes', usage: 'client' },
  );
  t.deepEqual(workerCertificateRequests(a).find((r) => r.file === 'kubelet-serving')?.sans, ['IP:192.168.50.11', 'DNS:node-a']);
  const cp = {
    node: nodeA,
    vip: '192.168.50.10',
    etcdEndpoint: 'http://127.0.0.1:2379',
    clusterCidr: '10.42.0.0/16',
    serviceCidr: '10.43.0.0/16',
    pkiDir: '/run/geminik8s/kubernetes/pki',
    timeScale: 1,
  };
  t.false(certificateRequests(cp).some((r) => r.file.startsWith('kubelet')));
  t.true(certificateRequests({ ...cp, worker: a }).some((r) => r.file === 'kubelet-client'));
  const plan = kubeconfigPlan({ ...cp, worker: a });
  t.like(
    plan.find((k) => k.file === 'kubelet.kubeconfig'),
    { dir: 'node', server: 'https://127.0.0.1:6443', certificate: 'kubelet-client' },
  );
  t.like(
    plan.find((k) => k.file === 'kube-proxy.kubeconfig'),
    { dir: 'node', certificate: 'kube-proxy' },
  );
});

test('bad input is refused naming the field', (t) => {
  t.throws(() => workerFiles({ ...a, clusterCidr: '10.42.0.0/24' }), { message: /clusterCidr: 10.42.0.0\/24 is too small/ });
  t.throws(() => workerFiles({ ...a, peer: nodeA }), { message: /peer.name: "node-a" is this node's name too/ });
  t.throws(() => workerFiles({ ...a, pauseImage: 'pause"\nx' }), { message: /pauseImage/ });
  t.throws(() => workerFiles({ ...a, node: { name: 'Node_A', ip: '192.168.50.11' } }), { message: /node.name/ });
  t.throws(() => workerFiles({ ...a, lanInterface: 'eth0; rm' }), { message: /lanInterface/ });
});

test('the units the image installs read exactly the files the agent writes', (t) => {
  const unit = (name: string): string => readFileSync(path.join(REPO, 'overlays/kubernetes', name), 'utf8');
  const names = workerFiles(a).map((f) => f.path);
  const kubelet = unit('usr/lib/systemd/system/geminik8s-kubelet.service');
  t.true(names.includes('kubelet.env'));
  t.regex(kubelet, new RegExp(`EnvironmentFile=${WORKER_APPLIANCE.nodeDir}/kubelet.env`));
  t.regex(kubelet, new RegExp(`ExecStart=${WORKER_APPLIANCE.kubelet} \\$KUBELET_ARGS`));
  t.regex(unit('usr/lib/systemd/system/geminik8s-kube-proxy.service'), new RegExp(`--config=${WORKER_APPLIANCE.nodeDir}/kube-proxy.yaml`));
  t.regex(unit('etc/systemd/system/containerd.service.d/geminik8s.conf'), new RegExp(`--config ${WORKER_APPLIANCE.nodeDir}/containerd.toml`));
  for (const u of WORKER_APPLIANCE.units.filter((x) => x.startsWith('geminik8s-'))) t.notThrows(() => unit(`usr/lib/systemd/system/${u}`), u);
});

test("pods using the node's DNS get its real upstreams, never a loopback stub; with none, the gateway, so CoreDNS never forwards to itself", (t) => {
  const resolved =
    '# systemd-resolved\nnameserver 192.0.2.53\nnameserver 127.0.0.53\nnameserver ::1\nnameserver 2001:db8::53\nnameserver 192.0.2.53\nsearch example.\n';
  t.deepEqual(upstreamNameservers(resolved, '192.0.2.1'), ['192.0.2.53', '2001:db8::53']);
  // A DHCP server that names no DNS server (or a static site): resolved's file has only a search line.
  t.deepEqual(upstreamNameservers('search .\n', '192.0.2.1'), ['192.0.2.1']);
  t.deepEqual(upstreamNameservers('', '192.0.2.1'), ['192.0.2.1']);
  t.deepEqual(upstreamNameservers('nameserver 127.0.0.53\n', undefined), []);
  const files = workerFiles(input(nodeA, nodeB, { upstreamDns: ['192.0.2.1'] }));
  t.is(files.find((f) => f.path === 'resolv.conf')?.text, 'nameserver 192.0.2.1\n');
  const kubelet = parse(files.find((f) => f.path === 'kubelet.yaml')!.text) as { resolvConf: string };
  t.is(kubelet.resolvConf, `${WORKER_APPLIANCE.nodeDir}/resolv.conf`);
});

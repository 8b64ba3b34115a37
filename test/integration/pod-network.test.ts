/**
 * The worker's pod network, for real, in network namespaces: two "boxes" on one LAN bridge, each
 * with the CNI configuration, the route to the peer's pods and the host firewall the agent renders
 * (firstboot/src/kubernetes/core/worker.ts, net/core/firewall.ts), and one "pod" namespace each,
 * wired by Debian's CNI `bridge` plugin exactly as containerd calls it. Pods on the two boxes reach
 * each other, and a LAN host (the gateway namespace, which has no route to the pod ranges) answers
 * a pod only because the box masquerades it. No Kubernetes runs here: the QEMU tier
 * (test/image/kubernetes.test.ts) runs the whole worker.
 */
import test from 'ava';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { peerPodRoute, podRanges, workerFiles, type WorkerInput } from '../../firstboot/src/kubernetes/core/worker.ts';
import { renderFirewall } from '../../firstboot/src/net/core/firewall.ts';
import { createTopology, run } from '../helpers/netns.ts';

const CNI_PATH = '/usr/lib/cni';

test('pods on the two boxes reach each other through the routed pod ranges, and the LAN through the box’s masquerade', async (t) => {
  if (!(await run(['test', '-x', `${CNI_PATH}/bridge`]).then((r) => r.code === 0))) {
    t.fail(`${CNI_PATH}/bridge is missing: apt-get install containernetworking-plugins`);
    return;
  }
  const topo = await createTopology(2);
  const tmp = await mkdtemp(path.join(os.tmpdir(), 'gk8s-podnet-'));
  const pods: { ns: string; node: string; ip: string; conf: string }[] = [];
  try {
    const [na, nb] = topo.nodes as [(typeof topo.nodes)[0], (typeof topo.nodes)[0]];
    const boxes = [
      { box: na, self: { name: 'node-a', ip: na.address }, peer: { name: 'node-b', ip: nb.address } },
      { box: nb, self: { name: 'node-b', ip: nb.address }, peer: { name: 'node-a', ip: na.address } },
    ];
    for (const [i, b] of boxes.entries()) {
      const input: WorkerInput = {
        node: b.self,
        peer: b.peer,
        lanInterface: 'eth0',
        clusterCidr: '10.42.0.0/16',
        serviceCidr: '10.43.0.0/16',
        upstreamDns: ['192.168.50.1'],
        clusterDns: '10.43.0.10',
        pauseImage: 'geminik8s.local/pause:3.10',
        nodeDir: path.join(tmp, `node-${i}`),
        cniConfDir: path.join(tmp, `net.d-${i}`),
        cniStateDir: path.join(tmp, `ipam-${i}`),
        apiPort: 6443,
      };
      // What the image's sysctl.d and the agent do on a box: forwarding on, the firewall, the route to the peer's pods.
      const forward = await topo.exec(b.box.ns, ['sysctl', '-qw', 'net.ipv4.ip_forward=1']);
      t.is(forward.code, 0, forward.stderr);
      const firewall = renderFirewall({
        lanInterface: 'eth0',
        peerAddress: b.peer.ip,
        kineRemote: false,
        sshOpen: false,
        podRange: input.clusterCidr,
        ports: { ssh: 22, statusPage: 8008, discovery: 7946, channel: 7946, postgres: 5432, kine: 2379, kubeApi: 6443, kubelet: 10250 },
      });
      // By absolute path: npm puts another `nft` (@vercel/nft) first on the tests' PATH.
      const nft = await run(['ip', 'netns', 'exec', b.box.ns, '/usr/sbin/nft', '-f', '-'], { input: firewall });
      t.is(nft.code, 0, `nft refused the rendered firewall: ${nft.stderr}`);
      const route = peerPodRoute(input);
      const r = await topo.exec(b.box.ns, ['ip', 'route', 'replace', route.destination, 'via', route.via, 'dev', route.dev]);
      t.is(r.code, 0, r.stderr);

      // The runtime hands each plugin of the list its own configuration, with the list's name and version.
      const list = JSON.parse(workerFiles(input).find((f) => f.path.endsWith('.conflist'))!.text) as { cniVersion: string; name: string; plugins: object[] };
      t.is(list.plugins.length, 1);
      const conf = JSON.stringify({ cniVersion: list.cniVersion, name: list.name, ...list.plugins[0] });
      const ns = `${b.box.ns}1`;
      const add = await run(['ip', 'netns', 'add', ns]);
      t.is(add.code, 0, add.stderr);
      pods.push({ ns, node: b.box.ns, ip: '', conf });
      const result = await cni(b.box.ns, 'ADD', ns, conf);
      t.is(result.code, 0, `bridge ADD on ${b.self.name}: ${result.stdout}${result.stderr}`);
      const ip = ((JSON.parse(result.stdout) as { ips: { address: string }[] }).ips[0]?.address ?? '').split('/')[0]!;
      t.true(ip.startsWith(`${podRanges(input).own.split('.').slice(0, 3).join('.')}.`), `${b.self.name}'s pod got ${ip}, outside ${podRanges(input).own}`);
      pods[pods.length - 1]!.ip = ip;
    }
    const [pa, pb] = pods as [(typeof pods)[0], (typeof pods)[0]];
    const ping = (from: string, to: string) => run(['ip', 'netns', 'exec', from, 'ping', '-c', '2', '-W', '2', to], { timeoutMs: 15_000 });
    for (const [from, to] of [
      [pa, pb.ip],
      [pb, pa.ip],
    ] as const) {
      const p = await ping(from.ns, to);
      t.is(p.code, 0, `pod ${from.ip} → pod ${to}: ${p.stdout}${p.stderr}`);
    }
    // The gateway has no route to 10.42/16: its answer comes back only to the masquerading box.
    const lan = await ping(pa.ns, topo.gw.address);
    t.is(lan.code, 0, `pod ${pa.ip} → LAN host ${topo.gw.address}: ${lan.stdout}${lan.stderr}`);
  } finally {
    for (const p of pods) {
      await cni(p.node, 'DEL', p.ns, p.conf).catch(() => undefined);
      await run(['ip', 'netns', 'delete', p.ns]).catch(() => undefined);
    }
    await topo.destroy();
    await rm(tmp, { recursive: true, force: true });
  }
});

/** One call of the bridge plugin as a container runtime makes it, from the box's namespace. */
function cni(boxNs: string, command: 'ADD' | 'DEL', podNs: string, conf: string) {
  return run(
    [
      'ip',
      'netns',
      'exec',
      boxNs,
      'env',
      `CNI_COMMAND=${command}`,
      `CNI_CONTAINERID=${podNs}`,
      `CNI_NETNS=/run/netns/${podNs}`,
      'CNI_IFNAME=eth0',
      `CNI_PATH=${CNI_PATH}`,
      `${CNI_PATH}/bridge`,
    ],
    { input: conf, timeoutMs: 20_000 },
  );
}

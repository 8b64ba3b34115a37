/**
 * Kubernetes on the default image, end to end under QEMU (its own slow tier: `make
 * test-kubernetes-image`, not `make test`; test/run-suite.mjs leaves this file out of its image
 * group). Two stamped copies of the default image (edge-standard: upstream Kubernetes, both boxes
 * control plane and worker) boot, pair, and both nodes become Ready; a Deployment of the baked-in
 * workload image (geminik8s.local/hello, components/hello) runs a pod on each node: scheduled,
 * running, its log readable through the API; a pod on one node reaches a Service backed by the pod
 * on the other node by its DNS name; after the leader VM loses its power, the API answers on the
 * VIP again and the surviving node's pod keeps running (same pod, same container, no restart).
 *
 * The network is pair.test.ts's: a bridge in a throwaway gateway namespace (test/helpers/netns.ts),
 * one tap per VM, DHCP from dnsmasq there. The VIP is on that bridge, which the host does not
 * reach, so the test talks to the API from its own process through a unix-socket relay into the
 * gateway namespace (test/helpers/ns-relay.ts): test/helpers/kube-client.ts with the admin
 * kubeconfig fetched over SSH (the site's operator key), TLS verified end to end against its CA,
 * one connection per request (after the power cut nothing rides on a socket to the dead box).
 *
 * Cross-node reach, so that the load balancing of a Service cannot blur it: the Deployment `hello`
 * (2 replicas, required anti-affinity on kubernetes.io/hostname: one pod per node) is behind the
 * Service `hello`; the pod on node Y also gets a label only it carries, and the Service
 * `hello-<Y>` selects that label. A client Pod (the same image, `-get URL`) pinned to node X
 * fetches http://hello-<Y>.default.svc.cluster.local/<token>: the answer must name Y's pod, and Y's
 * log (read through the API) must show that request, from node X. X is the leader (the VIP
 * holder), Y the follower, so Y's pod is the one that must outlive the leader's power cut.
 *
 * TCG only on a 2-core host: every wait is bounded by a budget generous for that, phase timings are
 * printed (t.log), never asserted. A missing prerequisite fails naming what to install.
 */
import test, { type ExecutionContext } from 'ava';
import { access, constants, mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { events, geminik8s } from '../helpers/cli.ts';
import { stampedPair } from '../helpers/first-boot.ts';
import { KubeApiError, KubeClient, parseKubeconfig } from '../helpers/kube-client.ts';
import { createTopology, requireNetns, type Topology } from '../helpers/netns.ts';
import { startRelay, type Relay } from '../helpers/ns-relay.ts';
import { bootImage, requireQemu, type BootedVm } from '../helpers/qemu.ts';

/** The default image (what `make image` builds). */
const PROFILE = 'edge-standard';
const HARDWARE = 'generic-x86_64-uefi';
/** PostgreSQL, Kine, the control plane (~550 MiB measured without the worker), plus containerd, kubelet, kube-proxy, CoreDNS and the pods. */
const MEMORY_MIB = 3072;
/** One vCPU each: one TCG thread per host core (two each only overcommitted the 2-core host, measured for the control plane alone). */
const VCPUS = 1;
/** Sparse; room for containerd's imported images and the kubelet's eviction thresholds on the data partition. */
const DISK_BYTES = 8 * 1024 ** 3;

/** A cold build of the default image (rootfs, Kubernetes, the baked images); a copy when every step is cached. */
const BUILD_BUDGET_MS = 40 * 60_000;
/** QEMU start until both agents report cluster ready (measured 2.5–5 min for the control plane alone). */
const PAIR_BUDGET_MS = 12 * 60_000;
/** Both ready until the API answers /readyz 200 on the VIP (measured 8–10 min under TCG, below the agent at +10 niceness). */
const API_BUDGET_MS = 15 * 60_000;
/** API ready until both Nodes are registered and Ready (containerd, image import, kubelet, CNI). */
const NODES_BUDGET_MS = 15 * 60_000;
/** Nodes Ready until CoreDNS is available. */
const DNS_BUDGET_MS = 10 * 60_000;
/** The Deployment created until a pod of it runs on each node. */
const WORKLOAD_BUDGET_MS = 12 * 60_000;
/** From the per-node Service until the client on X has read Y's answer (all client attempts). */
const CROSS_BUDGET_MS = 12 * 60_000;
/** One client pod, created until it has run to completion. */
const CLIENT_POD_MS = 5 * 60_000;
const CLIENT_ATTEMPTS = 4;
/** The leader's power cut until /readyz 200 on the VIP again. */
const FAILOVER_BUDGET_MS = 8 * 60_000;
/** The API back until the survivor's kubelet has renewed its node Lease and its pod has been checked. */
const AFTER_BUDGET_MS = 5 * 60_000;
const TEST_TIMEOUT_MS =
  BUILD_BUDGET_MS +
  PAIR_BUDGET_MS +
  API_BUDGET_MS +
  NODES_BUDGET_MS +
  DNS_BUDGET_MS +
  WORKLOAD_BUDGET_MS +
  CROSS_BUDGET_MS +
  FAILOVER_BUDGET_MS +
  AFTER_BUDGET_MS +
  10 * 60_000;

const MARKER = 'GEMINIK8S-AGENT:';
const ADMIN_KUBECONFIG = '/var/lib/geminik8s/kubernetes/admin.kubeconfig';
const IMAGES_JSON = '/usr/lib/geminik8s/images/images.json';
/** The 10th address of the default service range (10.43.0.0/16). */
const CLUSTER_DNS_IP = '10.43.0.10';
const NS = 'default';
const APP = 'hello';
/** The label only the pod on node Y carries: what the Service hello-<Y> selects. */
const TARGET_LABEL = 'test.geminik8s.local/cross-node-target';
/** Per API request (TCG: an API server under load answers slowly). */
const REQUEST_MS = 20_000;

const work = await mkdtemp(path.join(os.tmpdir(), 'gk8s-image-kube-'));
test.after.always(async () => {
  await rm(work, { recursive: true, force: true });
});

// --- the little of the API's objects this test reads ---

interface Meta {
  name: string;
  namespace?: string;
  uid: string;
  labels?: Record<string, string>;
  deletionTimestamp?: string;
}
interface Condition {
  type: string;
  status: string;
  reason?: string;
  message?: string;
}
interface ContainerState {
  running?: { startedAt?: string };
  waiting?: { reason?: string; message?: string };
  terminated?: { exitCode?: number; reason?: string; message?: string };
}
interface Pod {
  metadata: Meta;
  spec: { nodeName?: string };
  status?: {
    phase?: string;
    podIP?: string;
    conditions?: Condition[];
    containerStatuses?: { name: string; ready: boolean; restartCount: number; containerID?: string; state?: ContainerState }[];
  };
}
interface Node {
  metadata: Meta;
  spec?: { taints?: { key: string; effect: string }[] };
  status?: {
    conditions?: Condition[];
    addresses?: { type: string; address: string }[];
    nodeInfo?: { kubeletVersion?: string; containerRuntimeVersion?: string };
  };
}
interface List<T> {
  items: T[];
}
interface Deployment {
  metadata: Meta;
  status?: { replicas?: number; readyReplicas?: number; availableReplicas?: number };
}
interface Service {
  metadata: Meta;
  spec: { clusterIP?: string };
}
interface EndpointSlice {
  endpoints?: { addresses: string[]; conditions?: { ready?: boolean }; nodeName?: string }[];
}
interface Lease {
  spec?: { holderIdentity?: string; renewTime?: string };
}
interface KubeEvent {
  involvedObject?: { kind?: string; name?: string };
  reason?: string;
  message?: string;
  lastTimestamp?: string;
  eventTime?: string;
}

// --- small helpers ---

const secs = (ms: number) => `${(ms / 1000).toFixed(0)} s`;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const condition = (o: { status?: { conditions?: Condition[] } } | undefined, type: string) => o?.status?.conditions?.find((c) => c.type === type);

/** Retries `fn` every `everyMs` until it succeeds or `ms` pass; the error names `what`, the budget and the last failure (the state seen last). */
async function retrying<T>(what: string, ms: number, fn: () => Promise<T>, everyMs = 3000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    try {
      return await fn();
    } catch (e) {
      if (Date.now() + everyMs > deadline) throw new Error(`${what} (not within ${secs(ms)}): ${(e as Error).message}`);
      await sleep(everyMs);
    }
  }
}

/** One line per pod: node, phase, and what is not yet so (conditions not True, containers waiting or terminated). */
function describePods(pods: Pod[]): string {
  if (pods.length === 0) return 'no pods';
  return pods
    .map((p) => {
      const notTrue = (p.status?.conditions ?? [])
        .filter((c) => c.status !== 'True')
        .map((c) => `${c.type}=${c.status}${c.reason ? ` ${c.reason}` : ''}${c.message ? `: ${c.message}` : ''}`);
      const containers = (p.status?.containerStatuses ?? []).map((c) => {
        const s = c.state ?? {};
        const what = s.waiting
          ? `waiting ${s.waiting.reason ?? ''} ${s.waiting.message ?? ''}`
          : s.terminated
            ? `terminated exit ${s.terminated.exitCode} ${s.terminated.reason ?? ''}`
            : 'running';
        return `${c.name} ${what.trim()} restarts=${c.restartCount}`;
      });
      return `${p.metadata.name} on ${p.spec.nodeName ?? '(unscheduled)'}: ${p.status?.phase ?? '?'}${notTrue.length ? `; ${notTrue.join('; ')}` : ''}${containers.length ? `; ${containers.join('; ')}` : ''}`;
    })
    .join(' | ');
}

/**
 * POSTs `object` to its collection, retrying what may pass (no answer, 5xx, 404 while a namespace
 * appears); an earlier try that was stored though its answer got lost (409) counts as created; an
 * object the API refuses (400, 403, 422) fails at once.
 */
async function ensureCreated<T>(
  kube: KubeClient,
  collectionPath: string,
  object: { metadata: { name: string; [field: string]: unknown }; [field: string]: unknown },
  ms = 2 * 60_000,
): Promise<T> {
  const what = `creating ${collectionPath}/${object.metadata.name}`;
  const deadline = Date.now() + ms;
  for (;;) {
    try {
      return await kube.create<T>(collectionPath, object, REQUEST_MS);
    } catch (e) {
      if (e instanceof KubeApiError && e.status === 409) return kube.get<T>(`${collectionPath}/${object.metadata.name}`, REQUEST_MS);
      if (e instanceof KubeApiError && [400, 403, 422].includes(e.status)) throw new Error(`${what}: refused: ${e.message}`);
      if (Date.now() + 5000 > deadline) throw new Error(`${what} (not within ${secs(ms)}): ${(e as Error).message}`);
      await sleep(5000);
    }
  }
}

/** Fails, naming the packages to install, when a tool or file this test runs is missing (never skips). */
async function requirePrerequisites(): Promise<void> {
  await requireNetns();
  await requireQemu();
  const dirs = [...(process.env.PATH ?? '').split(':').filter(Boolean), '/usr/sbin', '/sbin'];
  const found = async (cmd: string) => {
    for (const d of dirs)
      if (
        await access(path.join(d, cmd), constants.X_OK).then(
          () => true,
          () => false,
        )
      )
        return true;
    return false;
  };
  const missing: string[] = [];
  for (const [cmd, pkg] of [
    ['dnsmasq', 'dnsmasq-base'],
    ['ssh', 'openssh-client'],
    ['ssh-keygen', 'openssh-client'],
    ['zstd', 'zstd'],
  ] as const) {
    if (!(await found(cmd))) missing.push(`${cmd} (apt-get install ${pkg})`);
  }
  if (missing.length > 0) throw new Error(`missing on this host: ${missing.join(', ')}; or run \`make deps\``);
}

interface Vm {
  name: string;
  vm: BootedVm;
  bootedAt: number;
  /** Milliseconds after QEMU started at which each stage's console marker was first seen. */
  at: Record<string, number>;
  /** From the console once the agent is up: LAN address, node id, role at "cluster ready". */
  ip?: string;
  nodeId?: string;
  role?: string;
  /** The Kubernetes Node it registers as (a DHCP site: node-<first 8 chars of the node id>). */
  nodeName?: string;
  killed?: boolean;
}

const STAGES: [string, RegExp][] = [
  ['login', /login: /],
  ['discovering', new RegExp(`${MARKER} discovering peer on \\S+ \\S+`)],
  ['paired', new RegExp(`${MARKER} paired role=\\S+ term=\\d+ peer=\\S+`)],
  ['ready', new RegExp(`${MARKER} cluster ready role=\\S+ term=\\d+`)],
];

/** Waits for every stage in turn, recording when each appeared; a failing agent or a guest panic ends the wait at once. */
async function followStages(node: Vm, deadline: number): Promise<string> {
  let text = '';
  const failed = new RegExp(`${MARKER} failed .*`);
  for (const [stage, pattern] of STAGES) {
    for (;;) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`${node.name}: no "${stage}" within the ${secs(PAIR_BUDGET_MS)} budget\n--- console tail ---\n${text.slice(-4000)}`);
      try {
        text = await node.vm.waitFor([pattern], Math.min(left, 5_000));
        break;
      } catch (e) {
        text = await readFile(node.vm.consoleFile, 'utf8').catch(() => '');
        if (!/timed out/.test((e as Error).message)) throw new Error(`${node.name}: ${(e as Error).message}`);
        // A guest kernel that panicked (under TCG on a loaded host: "IO-APIC + timer doesn't work!") never gets further.
        const panic = /Kernel panic - not syncing: .*/.exec(text);
        if (panic) throw new Error(`${node.name}: the guest kernel panicked before "${stage}": ${panic[0]}\n--- console tail ---\n${text.slice(-4000)}`);
        // The agent restarts after a failure (Restart=on-failure); it counts once it repeats.
        const fail = failed.exec(text);
        if (fail && (text.match(new RegExp(failed.source, 'g')) ?? []).length >= 3) {
          throw new Error(`${node.name}: the agent keeps failing before "${stage}": ${fail[0]}\n--- console tail ---\n${text.slice(-4000)}`);
        }
      }
    }
    node.at[stage] = Date.now() - node.bootedAt;
  }
  return text;
}

// GET /status on the agent's unix socket, with the Perl the image carries (no curl on the box).
const AGENT_STATUS = `perl -MIO::Socket::UNIX -e '$s = IO::Socket::UNIX->new(Peer => "/run/geminik8s/agent.sock") or die "/run/geminik8s/agent.sock: $!\\n"; print $s "GET /status HTTP/1.0\\r\\nHost: agent\\r\\n\\r\\n"; local $/; $r = <$s>; $r =~ s/^.*?\\r\\n\\r\\n//s; print $r'`;

/** What a box still up tells when the test failed: the agent, the worker's units, memory and disk. */
const BOX_DUMP = [
  AGENT_STATUS,
  'echo',
  'for f in /run/geminik8s/kubernetes/*.log; do echo "--- $f"; tail -n 10 "$f" | cut -c1-300; done',
  "echo '--- agent journal'",
  'journalctl -u geminik8s-agent --no-pager -o cat -n 200 | grep -v pam_unix | tail -n 25 | cut -c1-400',
  'for u in containerd geminik8s-images geminik8s-kubelet geminik8s-kube-proxy; do echo "--- $u: $(systemctl is-active $u.service)"; journalctl -u $u.service --no-pager -o cat -n 15 | cut -c1-300; done',
  "echo '--- CPU time by process'",
  'ps -eo pid,etime,time,rss,args --sort=-time | head -n 12 | cut -c1-140',
  "echo '--- memory and data'",
  'free -m',
  'df -h /data',
].join('; ');

test("two stamped copies of the default image pair, run a Deployment of the baked hello image on both nodes, reach a Service across nodes by DNS, and keep the survivor's pod through the leader's power cut", async (t) => {
  t.timeout(TEST_TIMEOUT_MS, 'the Kubernetes image test, a cold build included');
  await requirePrerequisites();
  const started = Date.now();

  // --- the image (cached build steps make this a copy when nothing changed) and the hello image it carries ---
  const out = path.join(work, 'dist');
  const build = await geminik8s(['build', '--profile', PROFILE, '--hardware', HARDWARE, '--out', out, '--json']);
  t.is(build.exitCode, 0, build.stderr.slice(-3000));
  if (build.exitCode !== 0) return;
  const buildEvents = events(build.stdout);
  const rebuilt = buildEvents.filter((e) => e.event === 'step-done' && e.cached === false).map((e) => e.id);
  const artifactDir = buildEvents.find((e) => e.event === 'done')?.artifactDir;
  if (typeof artifactDir !== 'string') throw new Error(`the build reported no artifact folder (no "done" event): ${build.stdout.slice(-1500)}`);
  t.log(`build: ${secs(Date.now() - started)}${rebuilt.length ? ` (rebuilt: ${rebuilt.join(', ')})` : ' (all steps cached)'}; ${path.basename(artifactDir)}`);
  const manifest = JSON.parse(await readFile(path.join(artifactDir, 'manifest.json'), 'utf8')) as {
    images?: { name: string; reference: string }[];
    components?: { name: string; version: string }[];
  };
  const helloRef = manifest.images?.find((i) => i.name === 'hello')?.reference;
  if (!helloRef)
    throw new Error(
      `the default image's manifest.json lists no hello image (images: ${JSON.stringify(manifest.images?.map((i) => i.reference) ?? null)}): the build must bake geminik8s.local/hello`,
    );
  const helloVersion = helloRef.slice(helloRef.lastIndexOf(':') + 1);
  t.log(`workload image ${helloRef}; Kubernetes ${manifest.components?.find((c) => c.name === 'kubernetes')?.version ?? '?'}`);

  // --- the L2: a bridge in a gateway namespace, DHCP from dnsmasq, one tap per VM ---
  const topology: Topology = await createTopology(0);
  const vms: Vm[] = [];
  let kube: KubeClient | undefined;
  let relay: Relay | undefined;
  let dhcp: { log(): string } | undefined;
  const knownHosts = path.join(work, 'known_hosts');
  const operatorKey = path.join(work, 'operator_ed25519');
  const ssh = (host: string, command: string, timeoutMs = 120_000) => topology.ssh({ key: operatorKey, knownHosts }, host, ['sh', '-c', command], timeoutMs);
  const onBox = async (vm: Vm, command: string, what: string, timeoutMs?: number): Promise<string> => {
    const r = await ssh(vm.ip!, command, timeoutMs);
    if (r.code !== 0) throw new Error(`${what} on ${vm.name} (${vm.ip}) over SSH exited ${r.code}: ${(r.stderr || r.stdout).trim().slice(-1500)}`);
    return r.stdout;
  };
  // One teardown, in this order: what the API and the boxes still tell (on failure), then the VMs and the namespace go.
  t.teardown(async () => {
    try {
      if (!t.passed) await dumpOnFailure(t, { kube, vms, ssh, relay, dnsmasqLog: dhcp?.log() ?? '' });
    } finally {
      await Promise.all(vms.map((v) => v.vm.stop()));
      await topology.destroy();
    }
  });
  const { subnet, gw } = topology;
  dhcp = topology.serveDhcp(path.join(work, 'dnsmasq.leases'));

  // --- one site file with an operator key (at operatorKey), stamped into two copies ---
  const vip = `${subnet}.10`;
  const vipServer = `https://${vip}:6443`;
  // Two emulated boxes on two host cores stall each other for seconds: at the default pace a stall
  // reads as a dead peer and the pair fails over while the test looks (README "Failover pace").
  const {
    raws: [raw0, raw1],
  } = await stampedPair(t, artifactDir, work, 'image-kube-1', { vip: `${vip}/24`, gateway: gw.address, timeScale: 3, diskBytes: DISK_BYTES });

  // --- two VMs boot, pair and report cluster ready ---
  const vmsStarted = Date.now();
  for (const i of [0, 1]) {
    const tap = await topology.addTap(i);
    const dir = path.join(work, `vm-${i}`);
    await mkdir(dir, { recursive: true });
    const bootedAt = Date.now();
    const vm = await bootImage(i === 0 ? raw0 : raw1, dir, {
      memoryMiB: MEMORY_MIB,
      cpus: VCPUS,
      network: { tap, mac: `52:54:00:6b:39:${(0x11 + i).toString(16)}`, netns: gw.ns },
    });
    vms.push({ name: `vm-${i}`, vm, bootedAt, at: {} });
  }
  const consoles = await Promise.all(vms.map((v) => followStages(v, vmsStarted + PAIR_BUDGET_MS)));
  const pairedAt = Date.now();
  vms.forEach((v, i) => {
    const text = consoles[i]!;
    v.ip = /GEMINIK8S-AGENT: discovering peer on \S+ (\S+)/.exec(text)?.[1];
    v.nodeId = /geminik8s-agent: started node=([0-9a-f]+)/.exec(text)?.[1];
    v.role = /GEMINIK8S-AGENT: cluster ready role=(\S+)/.exec(text)?.[1];
    v.nodeName = v.nodeId ? `node-${v.nodeId.slice(0, 8)}` : undefined;
    const s = (k: string) => secs(v.at[k] ?? NaN);
    t.log(
      `${v.name}: boot → login ${s('login')} → discovering ${s('discovering')} → paired ${s('paired')} → cluster ready ${s('ready')} (${v.role}, ${v.ip}, Node ${v.nodeName})`,
    );
  });
  for (const v of vms) {
    if (!v.ip?.startsWith(`${subnet}.`) || !v.nodeName)
      throw new Error(`${v.name}: the console shows no LAN address on ${subnet}.0/24 (${v.ip}) or no node id (${v.nodeId})`);
  }
  t.deepEqual(vms.map((v) => v.role).sort(), ['follower', 'leader'], 'one leader, one follower');
  const leader = vms.find((v) => v.role === 'leader')!;
  const follower = vms.find((v) => v.role === 'follower')!;

  // --- the admin kubeconfig over SSH, and the API on the VIP through the relay ---
  const kubeconfigText = await retrying(
    `${leader.name}: reading ${ADMIN_KUBECONFIG} over SSH`,
    3 * 60_000,
    () => onBox(leader, `cat ${ADMIN_KUBECONFIG}`, `cat ${ADMIN_KUBECONFIG}`),
    5000,
  );
  const cfg = parseKubeconfig(kubeconfigText, `${leader.name}:${ADMIN_KUBECONFIG}`);
  t.is(cfg.server, vipServer, 'the admin kubeconfig points at the VIP');
  const onBoxImages = JSON.parse(await onBox(leader, `cat ${IMAGES_JSON}`, `cat ${IMAGES_JSON}`)) as { reference?: string }[];
  t.true(
    onBoxImages.some((i) => i.reference === helloRef),
    `${IMAGES_JSON} on the box lists ${helloRef}: ${onBoxImages.map((i) => i.reference).join(', ')}`,
  );
  relay = await startRelay(topology, gw.ns, { host: vip, port: 6443 }, path.join(work, 'vip-6443.sock'));
  const api = new KubeClient(cfg, { socketPath: relay.socketPath, timeoutMs: REQUEST_MS });
  kube = api;
  const readyz = async () => {
    const r = await api.readyz(10_000);
    if (r.status !== 200)
      throw new Error(
        `GET /readyz: HTTP ${r.status}: ${
          r.body
            .split('\n')
            .filter((l) => l.startsWith('[-]'))
            .join(' ') || r.body.slice(0, 300)
        }`,
      );
  };
  await retrying(`the API on ${vipServer} answering /readyz 200`, API_BUDGET_MS, readyz, 5000);
  const apiAt = Date.now();
  t.log(`API: /readyz 200 on the VIP ${secs(apiAt - pairedAt)} after both were ready`);

  // --- both Nodes registered (named node-<first 8 of the node id>) and Ready ---
  const nodes = await retrying(
    'both boxes registered as Nodes and Ready',
    NODES_BUDGET_MS,
    async () => {
      const list = await api.get<List<Node>>('/api/v1/nodes');
      const byName = new Map(list.items.map((n) => [n.metadata.name, n]));
      const state = vms.map((v) => {
        const n = byName.get(v.nodeName!);
        const ready = condition(n, 'Ready');
        return `${v.nodeName}: ${n ? `Ready=${ready?.status ?? '?'}${ready?.reason ? ` ${ready.reason}` : ''}${ready?.message ? ` (${ready.message})` : ''}` : 'not registered'}`;
      });
      if (!vms.every((v) => condition(byName.get(v.nodeName!), 'Ready')?.status === 'True'))
        throw new Error(`${state.join('; ')}; registered: ${[...byName.keys()].join(', ') || 'none'}`);
      return list.items;
    },
    5000,
  );
  const nodesAt = Date.now();
  t.deepEqual(
    nodes.map((n) => n.metadata.name).sort(),
    vms.map((v) => v.nodeName!).sort(),
    'exactly the two boxes are Nodes, named node-<first 8 chars of the node id>',
  );
  const hostnameLabel = (name: string) => nodes.find((n) => n.metadata.name === name)?.metadata.labels?.['kubernetes.io/hostname'];
  t.not(
    hostnameLabel(leader.nodeName!),
    hostnameLabel(follower.nodeName!),
    "the Nodes carry different kubernetes.io/hostname labels (what one-pod-per-node anti-affinity and the client's pinning go by)",
  );
  for (const n of nodes) {
    const ip = n.status?.addresses?.find((a) => a.type === 'InternalIP')?.address;
    t.log(
      `Node ${n.metadata.name}: InternalIP ${ip}, kubelet ${n.status?.nodeInfo?.kubeletVersion}, ${n.status?.nodeInfo?.containerRuntimeVersion}, taints ${JSON.stringify(n.spec?.taints ?? [])}`,
    );
  }
  t.log(`Nodes: both Ready ${secs(nodesAt - apiAt)} after the API answered`);

  // --- cluster DNS: CoreDNS available, kube-dns on the 10th address of the service range ---
  const dnsService = await retrying(
    'Service kube-system/kube-dns',
    DNS_BUDGET_MS,
    () => api.get<Service>('/api/v1/namespaces/kube-system/services/kube-dns'),
    5000,
  );
  t.is(dnsService.spec.clusterIP, CLUSTER_DNS_IP, `kube-dns is on ${CLUSTER_DNS_IP}`);
  await retrying(
    'Deployment kube-system/coredns available',
    Math.max(30_000, nodesAt + DNS_BUDGET_MS - Date.now()),
    async () => {
      const d = await api.get<Deployment>('/apis/apps/v1/namespaces/kube-system/deployments/coredns');
      if ((d.status?.availableReplicas ?? 0) < 1) {
        const pods = await api.get<List<Pod>>('/api/v1/namespaces/kube-system/pods?labelSelector=k8s-app%3Dkube-dns').catch(() => ({ items: [] as Pod[] }));
        throw new Error(`coredns: ${JSON.stringify(d.status ?? {})}; ${describePods(pods.items)}`);
      }
    },
    5000,
  );
  const dnsAt = Date.now();
  t.log(`CoreDNS available ${secs(dnsAt - nodesAt)} after both Nodes were Ready`);

  // --- the Deployment hello: one pod per node, scheduled, running, its log readable through the API ---
  const labels = { app: APP };
  await ensureCreated(api, `/apis/apps/v1/namespaces/${NS}/deployments`, {
    apiVersion: 'apps/v1',
    kind: 'Deployment',
    metadata: { name: APP, namespace: NS, labels },
    spec: {
      replicas: 2,
      selector: { matchLabels: labels },
      template: {
        metadata: { labels },
        spec: {
          affinity: {
            podAntiAffinity: {
              requiredDuringSchedulingIgnoredDuringExecution: [{ labelSelector: { matchLabels: labels }, topologyKey: 'kubernetes.io/hostname' }],
            },
          },
          terminationGracePeriodSeconds: 5,
          containers: [{ name: APP, image: helloRef, imagePullPolicy: 'Never', ports: [{ name: 'http', containerPort: 8080 }] }],
        },
      },
    },
  });
  await ensureCreated(api, `/api/v1/namespaces/${NS}/services`, {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name: APP, namespace: NS, labels },
    spec: { selector: labels, ports: [{ name: 'http', port: 80, targetPort: 8080 }] },
  });
  const helloPods = await retrying(
    `Deployment ${APP}: a pod Running and Ready on each node`,
    WORKLOAD_BUDGET_MS,
    async () => {
      const live = (await api.get<List<Pod>>(`/api/v1/namespaces/${NS}/pods?labelSelector=app%3D${APP}`)).items.filter((p) => !p.metadata.deletionTimestamp);
      const running = live.filter((p) => p.status?.phase === 'Running' && condition(p, 'Ready')?.status === 'True');
      const covered = new Set(running.map((p) => p.spec.nodeName));
      if (running.length !== 2 || !vms.every((v) => covered.has(v.nodeName))) throw new Error(describePods(live));
      return running;
    },
    5000,
  );
  const podsAt = Date.now();
  t.log(`Deployment ${APP}: a pod running on each node ${secs(podsAt - dnsAt)} after it was created (${describePods(helloPods)})`);
  const podOn = (v: Vm) => helloPods.find((p) => p.spec.nodeName === v.nodeName)!;
  for (const p of helloPods) t.is(condition(p, 'PodScheduled')?.status, 'True', `${p.metadata.name} was scheduled (to ${p.spec.nodeName})`);
  const deployment = await retrying(`Deployment ${APP} reporting 2 available`, 2 * 60_000, async () => {
    const d = await api.get<Deployment>(`/apis/apps/v1/namespaces/${NS}/deployments/${APP}`);
    if (d.status?.availableReplicas !== 2) throw new Error(JSON.stringify(d.status ?? {}));
    return d;
  });
  t.is(deployment.status?.availableReplicas, 2, `Deployment ${APP} has 2 available replicas`);
  for (const p of helloPods) {
    const startLine = new RegExp(`^hello ${helloVersion.replace(/[.+]/g, '\\$&')} on ${p.metadata.name} listening on \\S+:8080$`, 'm');
    const log = await retrying(`the log of ${p.metadata.name} through the API`, 2 * 60_000, async () => {
      const text = await api.podLog(NS, p.metadata.name, { timeoutMs: REQUEST_MS });
      if (!startLine.test(text)) throw new Error(`no start line yet: ${JSON.stringify(text.slice(-300))}`);
      return text;
    });
    t.regex(log, startLine, `${p.metadata.name}'s log, read through the API, shows hello ${helloVersion} serving`);
  }

  // --- X = the leader's node, Y = the follower's: a Service that selects only Y's pod ---
  const x = leader;
  const y = follower;
  const podY = podOn(y);
  const xHostname = hostnameLabel(x.nodeName!);
  if (!xHostname) throw new Error(`Node ${x.nodeName} has no kubernetes.io/hostname label to pin the client pod to`);
  await api.mergePatch(`/api/v1/namespaces/${NS}/pods/${podY.metadata.name}`, { metadata: { labels: { [TARGET_LABEL]: 'true' } } }, REQUEST_MS);
  const serviceY = `${APP}-${y.nodeName}`;
  await ensureCreated(api, `/api/v1/namespaces/${NS}/services`, {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name: serviceY, namespace: NS, labels },
    spec: { selector: { ...labels, [TARGET_LABEL]: 'true' }, ports: [{ name: 'http', port: 80, targetPort: 8080 }] },
  });
  const readyAddresses = async (service: string) => {
    const slices = await api.get<List<EndpointSlice>>(
      `/apis/discovery.k8s.io/v1/namespaces/${NS}/endpointslices?labelSelector=${encodeURIComponent(`kubernetes.io/service-name=${service}`)}`,
    );
    return slices.items
      .flatMap((s) => s.endpoints ?? [])
      .filter((e) => e.conditions?.ready !== false)
      .flatMap((e) => e.addresses)
      .sort();
  };
  const wantBoth = helloPods.map((p) => p.status?.podIP ?? '?').sort();
  await retrying(`Service ${APP}'s endpoints: both pods`, 2 * 60_000, async () => {
    const got = await readyAddresses(APP);
    if (JSON.stringify(got) !== JSON.stringify(wantBoth)) throw new Error(`ready endpoints ${got.join(', ') || 'none'}, want ${wantBoth.join(', ')}`);
  });
  await retrying(`Service ${serviceY}'s endpoints: only ${podY.metadata.name}`, 2 * 60_000, async () => {
    const got = await readyAddresses(serviceY);
    if (JSON.stringify(got) !== JSON.stringify([podY.status?.podIP]))
      throw new Error(`ready endpoints ${got.join(', ') || 'none'}, want ${podY.status?.podIP}`);
  });

  // --- a client pod on X reaches Y's pod through the Service hello-<Y>, by its DNS name ---
  const token = `from-${x.nodeName}-${Date.now().toString(36)}`;
  const url = `http://${serviceY}.${NS}.svc.cluster.local/${token}`;
  const crossStarted = Date.now();
  const crossDeadline = crossStarted + CROSS_BUDGET_MS;
  const attempts: string[] = [];
  let answer: { hostname?: string; count?: number; version?: string } | undefined;
  let client: Pod | undefined;
  for (let attempt = 1; answer === undefined; attempt++) {
    const name = `hello-client-${attempt}`;
    await ensureCreated(api, `/api/v1/namespaces/${NS}/pods`, {
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name, namespace: NS, labels: { app: 'hello-client' } },
      spec: {
        restartPolicy: 'Never',
        nodeSelector: { 'kubernetes.io/hostname': xHostname },
        terminationGracePeriodSeconds: 1,
        containers: [{ name: 'client', image: helloRef, imagePullPolicy: 'Never', args: ['-get', url, '-timeout', '30s'] }],
      },
    });
    const done = await retrying(
      `client pod ${name} (on ${x.nodeName}) running to completion`,
      Math.max(30_000, Math.min(CLIENT_POD_MS, crossDeadline - Date.now())),
      async () => {
        const p = await api.get<Pod>(`/api/v1/namespaces/${NS}/pods/${name}`);
        if (p.status?.phase !== 'Succeeded' && p.status?.phase !== 'Failed') throw new Error(describePods([p]));
        return p;
      },
      3000,
    );
    const log = await retrying(`the log of ${name} through the API`, 60_000, () => api.podLog(NS, name, { timeoutMs: REQUEST_MS }));
    if (done.status?.phase === 'Succeeded') {
      client = done;
      try {
        answer = JSON.parse(log) as typeof answer;
      } catch {
        throw new Error(`${name} succeeded but its log is not hello's JSON answer: ${JSON.stringify(log.slice(0, 500))}`);
      }
      break;
    }
    attempts.push(`${name}: ${describePods([done])}; log: ${log.trim().slice(-400)}`);
    if (attempt >= CLIENT_ATTEMPTS || Date.now() + 30_000 > crossDeadline) {
      throw new Error(
        `no client pod on ${x.nodeName} could GET ${url} (${attempt} attempts within ${secs(Date.now() - crossStarted)}):\n${attempts.join('\n')}`,
      );
    }
    t.log(`client attempt ${attempt} failed (retrying in 10 s): ${attempts.at(-1)}`);
    await sleep(10_000);
  }
  const crossAt = Date.now();
  t.is(client?.spec.nodeName, x.nodeName, `the client pod ran on ${x.nodeName}`);
  t.is(answer?.hostname, podY.metadata.name, `the answer through ${serviceY} came from ${podY.metadata.name}, the pod on ${y.nodeName}`);
  t.is(answer?.version, helloVersion, `the answering server is hello ${helloVersion}`);
  const requestLine = new RegExp(`^request \\d+ from (\\S+):\\d+: GET /${token}$`, 'm');
  const logY = await retrying(`${podY.metadata.name}'s log showing GET /${token}`, 60_000, async () => {
    const text = await api.podLog(NS, podY.metadata.name, { timeoutMs: REQUEST_MS });
    if (!requestLine.test(text)) throw new Error(`not in the log yet: ${JSON.stringify(text.slice(-400))}`);
    return text;
  });
  const from = requestLine.exec(logY)?.[1];
  // The pod network masquerades what leaves a box's pod range (the CNI bridge's ipMasq): the request
  // comes from X's LAN address (or the VIP, which X holds), or from the client pod's own address if not.
  t.true(
    [x.ip, vip, client?.status?.podIP].includes(from),
    `${podY.metadata.name} logged the request coming from ${x.nodeName} (${from}; X is ${x.ip}, the client pod ${client?.status?.podIP})`,
  );
  t.log(
    `cross-node: the client on ${x.nodeName} got ${JSON.stringify(answer)} from ${podY.metadata.name} on ${y.nodeName} via ${url} ${secs(crossAt - crossStarted)} after the first client pod was created (${attempts.length + 1} attempt(s))`,
  );

  // --- the VIP holder loses its power; the API answers on the VIP again; the survivor's pod keeps running ---
  const holders: Vm[] = [];
  for (const v of vms) {
    const addrs = await onBox(v, 'ip -o -4 addr show', 'ip addr show');
    if (addrs.includes(` ${vip}/`)) holders.push(v);
  }
  t.is(holders.length, 1, `exactly one box holds the VIP ${vip}: ${holders.map((v) => v.name).join(', ') || 'none'}`);
  const victim = holders[0] ?? leader;
  const survivor = vms.find((v) => v !== victim)!;
  if (victim !== leader) t.log(`the VIP moved since the pair formed: ${victim.name} holds it now`);
  const podS = await api.get<Pod>(`/api/v1/namespaces/${NS}/pods/${podOn(survivor).metadata.name}`);
  const containerBefore = podS.status?.containerStatuses?.[0];
  const killedAt = Date.now();
  await victim.vm.kill();
  victim.killed = true;
  await retrying(`the API on ${vipServer} answering /readyz 200 after ${victim.name}'s power cut`, FAILOVER_BUDGET_MS, readyz, 2000);
  const apiBackAt = Date.now();
  t.log(`failover: ${victim.name} (${victim.nodeName}) powered off; /readyz 200 on the VIP again after ${secs(apiBackAt - killedAt)}`);

  // The survivor's kubelet reaches the API after the cut: its node Lease is renewed again.
  const leasePath = `/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/${survivor.nodeName}`;
  const firstRenew = (await retrying(`reading ${leasePath}`, 60_000, () => api.get<Lease>(leasePath))).spec?.renewTime;
  await retrying(
    `${survivor.nodeName}'s kubelet renewing its node Lease after the cut (seen: ${firstRenew})`,
    AFTER_BUDGET_MS,
    async () => {
      const renew = (await api.get<Lease>(leasePath)).spec?.renewTime;
      if (renew === firstRenew) throw new Error(`renewTime still ${renew}`);
    },
    3000,
  );
  const leaseAt = Date.now();
  const podAfter = await retrying(`GET pod ${podS.metadata.name} after the cut`, 60_000, () =>
    api.get<Pod>(`/api/v1/namespaces/${NS}/pods/${podS.metadata.name}`),
  );
  const containerAfter = podAfter.status?.containerStatuses?.[0];
  t.is(podAfter.metadata.uid, podS.metadata.uid, `${survivor.nodeName}'s hello pod is the same pod (uid)`);
  t.is(podAfter.status?.phase, 'Running', `${podS.metadata.name} is still Running: ${describePods([podAfter])}`);
  t.is(containerAfter?.restartCount, containerBefore?.restartCount, `${podS.metadata.name}'s container did not restart`);
  t.is(containerAfter?.containerID, containerBefore?.containerID, `${podS.metadata.name} runs the same container`);
  t.truthy(containerAfter?.state?.running, `${podS.metadata.name}'s container is running: ${JSON.stringify(containerAfter?.state)}`);
  t.is(containerAfter?.state?.running?.startedAt, containerBefore?.state?.running?.startedAt, `${podS.metadata.name}'s container has not started again`);
  const logAfter = await retrying(`${podS.metadata.name}'s log through the API after the cut`, 60_000, () =>
    api.podLog(NS, podS.metadata.name, { timeoutMs: REQUEST_MS }),
  );
  t.regex(
    logAfter,
    new RegExp(`^hello \\S+ on ${podS.metadata.name} listening on `, 'm'),
    `${podS.metadata.name}'s log is still readable through the API after the cut (same container)`,
  );
  const victimNode = await api.get<Node>(`/api/v1/nodes/${victim.nodeName}`).catch((e: unknown) => (e as Error).message);
  t.log(
    `after the cut: ${survivor.nodeName}'s Lease renewed ${secs(leaseAt - apiBackAt)} after the API was back; ${describePods([podAfter])}; ${victim.nodeName}: ${typeof victimNode === 'string' ? victimNode : `Ready=${condition(victimNode, 'Ready')?.status}`}`,
  );
  t.log(
    `total ${secs(Date.now() - started)} (VMs ${secs(Date.now() - vmsStarted)}); leader ${leader.name} ${leader.ip}, follower ${follower.name} ${follower.ip}, VIP ${vip}`,
  );
});

/** On failure: the objects as the API sees them (while it answers), each box still up over SSH, the consoles, the relay and dnsmasq. */
async function dumpOnFailure(
  t: ExecutionContext,
  o: {
    kube: KubeClient | undefined;
    vms: Vm[];
    ssh: (host: string, command: string, timeoutMs?: number) => ReturnType<Topology['exec']>;
    relay: Relay | undefined;
    dnsmasqLog: string;
  },
): Promise<void> {
  if (o.kube) {
    const k = o.kube;
    const part = async (what: string, fn: () => Promise<string>) => {
      try {
        t.log(`--- API: ${what} ---\n${await fn()}`);
      } catch (e) {
        t.log(`--- API: ${what}: ${(e as Error).message}`);
      }
    };
    await part(
      'nodes',
      async () =>
        (await k.get<List<Node>>('/api/v1/nodes', 15_000)).items
          .map(
            (n) =>
              `${n.metadata.name} Ready=${condition(n, 'Ready')?.status} ${condition(n, 'Ready')?.message ?? ''} taints=${JSON.stringify(n.spec?.taints ?? [])}`,
          )
          .join('\n') || 'none',
    );
    await part('pods', async () =>
      describePods((await k.get<List<Pod>>('/api/v1/pods', 15_000)).items)
        .split(' | ')
        .join('\n'),
    );
    await part('recent events', async () =>
      (await k.get<List<KubeEvent>>('/api/v1/events?limit=500', 15_000)).items
        .slice(-40)
        .map((e) => `${e.lastTimestamp ?? e.eventTime ?? ''} ${e.involvedObject?.kind}/${e.involvedObject?.name} ${e.reason}: ${e.message ?? ''}`.slice(0, 300))
        .join('\n'),
    );
  }
  for (const v of o.vms.filter((x) => x.ip && !x.killed)) {
    const r = await o.ssh(v.ip!, BOX_DUMP, 90_000).catch((e: unknown) => ({ code: -1, stdout: '', stderr: (e as Error).message.slice(-300) }));
    t.log(`--- ${v.name} (${v.ip}) over SSH (exit ${r.code}) ---\n${r.stdout.slice(-20000)}${r.stderr ? `\n${r.stderr.slice(-1500)}` : ''}`);
  }
  for (const v of o.vms) t.log(`--- ${v.name} console tail ---\n${(await readFile(v.vm.consoleFile, 'utf8').catch(() => '')).slice(-6000)}`);
  if (o.relay) t.log(`--- relay to the VIP ---\n${o.relay.log() || '(nothing)'}`);
  t.log(`--- dnsmasq ---\n${o.dnsmasqLog.slice(-3000)}`);
}

/**
 * Image end to end for the pair (issue 3, acceptance 4): two copies of the built image, stamped
 * with the same site file, boot under QEMU (TCG) on one virtual L2 and must pair and replicate.
 *
 * The L2 is a bridge in a throwaway gateway namespace (test/helpers/netns.ts). Each VM's NIC is a
 * tap device on that bridge, so QEMU runs inside the gateway namespace; dnsmasq there serves DHCP
 * to the images' systemd-networkd. Nothing leaves the namespace. The gateway namespace then
 * checks Kine the way a remote K3s server would: an operator logs in over SSH with the key the site
 * file lists, has the leader issue an etcd client certificate from the pair CA, and etcdctl uses it
 * (mTLS) against each node and the VIP; without that certificate Kine answers nothing.
 */
import test from 'ava';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { events, geminik8s } from '../helpers/cli.ts';
import { stampedPair } from '../helpers/first-boot.ts';
import { createTopology, type Topology } from '../helpers/netns.ts';
import { bootImage, type BootedVm } from '../helpers/qemu.ts';

const ARTIFACT = 'edge-datastore-generic-x86_64-uefi-0.1.0';
/** Everything after the build (two TCG boots on a 2-core host, pairing, provisioning, checks) ends within this. */
const BUDGET_MS = 12 * 60_000;
const MARKER = 'GEMINIK8S-AGENT:';
/** The site's failover pace (failover.timeScale): the thresholds are this many times the defaults. */
const TIME_SCALE = 3;

const work = await mkdtemp(path.join(os.tmpdir(), 'gk8s-image-pair-'));
test.after.always(async () => {
  await rm(work, { recursive: true, force: true });
});

interface Node {
  name: string;
  vm: BootedVm;
  bootedAt: number;
  /** Milliseconds after QEMU started at which each stage's console marker was first seen. */
  at: Record<string, number>;
}

const STAGES: [string, RegExp][] = [
  ['login', /login: /],
  ['discovering', new RegExp(`${MARKER} discovering peer on \\S+ \\S+`)],
  ['paired', new RegExp(`${MARKER} paired role=\\S+ term=\\d+ peer=\\S+`)],
  ['ready', new RegExp(`${MARKER} cluster ready role=\\S+ term=\\d+ kine=\\S+`)],
];

/** Waits for every stage in turn, recording when each appeared; a failed agent ends the wait at once. */
async function followStages(node: Node, deadline: number): Promise<string> {
  let text = '';
  for (const [stage, pattern] of STAGES) {
    const failed = new RegExp(`${MARKER} failed .*`);
    // Poll in short slices so an agent failure is reported without waiting for the deadline.
    for (;;) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`${node.name}: no "${stage}" within the ${BUDGET_MS / 60_000} min budget\n--- console tail ---\n${text.slice(-4000)}`);
      try {
        text = await node.vm.waitFor([pattern], Math.min(left, 5_000));
        break;
      } catch (e) {
        text = await readFile(node.vm.consoleFile, 'utf8').catch(() => '');
        if (!/timed out/.test((e as Error).message)) throw new Error(`${node.name}: ${(e as Error).message}`);
        const fail = failed.exec(text);
        // The agent restarts after a failure (Restart=on-failure); only a failure before this stage counts once it repeats.
        if (fail && (text.match(new RegExp(failed.source, 'g')) ?? []).length >= 3) {
          throw new Error(`${node.name}: the agent keeps failing before "${stage}": ${fail[0]}\n--- console tail ---\n${text.slice(-4000)}`);
        }
      }
    }
    node.at[stage] = Date.now() - node.bootedAt;
  }
  return text;
}

/** PEM files of the etcd client certificate the leader issued (0600 in the work dir). */
interface EtcdClient {
  ca: string;
  cert: string;
  key: string;
}

/** etcdctl from the gateway namespace; `tls` picks what it presents: nothing but the endpoint, or TLS with or without a client certificate. */
function etcdctlRun(topology: Topology, endpoint: string, tls: string[], args: string[]) {
  return topology.exec(topology.gw.ns, ['etcdctl', `--endpoints=${endpoint}`, ...tls, '--dial-timeout=5s', '--command-timeout=10s', ...args], {
    timeoutMs: 30_000,
  });
}

async function etcdctl(topology: Topology, client: EtcdClient, host: string, args: string[]): Promise<string> {
  const r = await etcdctlRun(topology, `https://${host}:2379`, [`--cacert=${client.ca}`, `--cert=${client.cert}`, `--key=${client.key}`], args);
  if (r.code !== 0) throw new Error(`etcdctl ${args.join(' ')} against ${host}: ${r.stderr.trim()}`);
  return r.stdout.trim();
}

/** Retries `fn` until it succeeds or `ms` pass (the follower's Kine and the VIP may lag the marker by a moment). */
async function retrying<T>(what: string, ms: number, fn: () => Promise<T>): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    try {
      return await fn();
    } catch (e) {
      if (Date.now() > deadline) throw new Error(`${what}: ${(e as Error).message}`);
      await new Promise((r) => setTimeout(r, 2000));
    }
  }
}

test('two stamped copies of the image boot on one L2, pair, replicate and serve Kine on the VIP', async (t) => {
  const started = Date.now();

  // --- the image (cached build steps make this a copy when nothing changed) ---
  const out = path.join(work, 'dist');
  const build = await geminik8s(['build', '--profile', 'edge-datastore', '--hardware', 'generic-x86_64-uefi', '--out', out, '--json']);
  t.is(build.exitCode, 0, build.stderr.slice(-3000));
  if (build.exitCode !== 0) return;
  const cached = events(build.stdout)
    .filter((e) => e.event === 'step-done' && e.cached === false)
    .map((e) => e.id);
  t.log(`build: ${((Date.now() - started) / 1000).toFixed(0)} s${cached.length ? ` (rebuilt: ${cached.join(', ')})` : ' (all steps cached)'}`);

  // --- the L2: a bridge in a gateway namespace, DHCP from dnsmasq, one tap per VM ---
  const topology = await createTopology(0);
  const nodes: Node[] = [];
  t.teardown(async () => {
    if (!t.passed) {
      for (const n of nodes) t.log(`--- ${n.name} console tail ---\n${(await readFile(n.vm.consoleFile, 'utf8').catch(() => '')).slice(-6000)}`);
    }
    await Promise.all(nodes.map((n) => n.vm.stop()));
    await topology.destroy();
  });
  const { subnet, gw } = topology;
  const dhcp = topology.serveDhcp(path.join(work, 'dnsmasq.leases'));
  t.teardown(() => {
    if (!t.passed) t.log(`--- dnsmasq ---\n${dhcp.log()}`);
  });

  // --- one site file with an operator key, stamped into two copies ---
  const vip = `${subnet}.10`;
  // Two emulated boxes on two host cores stall each other for seconds: at the default pace a
  // stall reads as a dead peer and the pair fails over while the test looks (README "Failover pace").
  const {
    raws: [raw0, raw1],
    operatorKey,
  } = await stampedPair(t, path.join(out, ARTIFACT), work, 'image-pair-1', { vip: `${vip}/24`, gateway: gw.address, timeScale: TIME_SCALE });

  // The budget covers the VMs, not a cold image build.
  const deadline = Date.now() + BUDGET_MS;
  for (const i of [0, 1]) {
    const tap = await topology.addTap(i);
    const dir = path.join(work, `vm-${i}`);
    await mkdir(dir, { recursive: true });
    const bootedAt = Date.now();
    const vm = await bootImage(i === 0 ? raw0 : raw1, dir, {
      memoryMiB: 1280,
      network: { tap, mac: `52:54:00:6b:38:${(0x11 + i).toString(16)}`, netns: gw.ns },
    });
    nodes.push({ name: `vm-${i}`, vm, bootedAt, at: {} });
  }

  // --- both pair and report ready ---
  const consoles = await Promise.all(nodes.map((n) => followStages(n, deadline)));
  for (const n of nodes) {
    const s = (k: string) => ((n.at[k] ?? NaN) / 1000).toFixed(0);
    t.log(`${n.name}: boot → login ${s('login')} s → discovering ${s('discovering')} s → paired ${s('paired')} s → cluster ready ${s('ready')} s`);
  }
  const ready = consoles.map((text) => {
    const m = /GEMINIK8S-AGENT: cluster ready role=(leader|follower) term=(\d+) kine=([\d.]+):2379/.exec(text);
    const paired = /GEMINIK8S-AGENT: paired role=(\S+) term=(\d+) peer=(\S+)/.exec(text);
    return { role: m?.[1], term: m?.[2], ip: m?.[3], pairedRole: paired?.[1], pairedTerm: paired?.[2] };
  });
  const [a, b] = ready as [(typeof ready)[0], (typeof ready)[0]];
  t.deepEqual([a.role, b.role].sort(), ['follower', 'leader'], 'opposite roles');
  t.is(a.term, b.term, 'the same term');
  t.is(a.pairedRole, a.role);
  t.is(b.pairedRole, b.role);
  t.not(a.ip, b.ip);
  for (const r of ready) t.true(r.ip?.startsWith(`${subnet}.`), `DHCP address on the site LAN: ${r.ip}`);
  const leader = a.role === 'leader' ? a : b;
  const follower = a.role === 'leader' ? b : a;

  const left = () => Math.max(10_000, deadline - Date.now());

  // --- an operator with the site's key logs in as root and has the leader issue an etcd client certificate ---
  const knownHosts = path.join(work, 'known_hosts');
  const ssh = (host: string, command: string[]) => topology.ssh({ key: operatorKey, knownHosts }, host, command);
  const bundleText = await retrying('etcd client certificate over SSH', left(), async () => {
    const r = await ssh(leader.ip!, ['/usr/lib/geminik8s/geminik8s-agent', 'etcd-client-cert', '--name', 'image-test']);
    if (r.code !== 0) throw new Error(`ssh exited ${r.code}: ${r.stderr.trim().slice(-1000)}`);
    return r.stdout;
  });
  const bundle = JSON.parse(bundleText) as { ca: string; cert: string; key: string };
  const client: EtcdClient = { ca: path.join(work, 'etcd-ca.crt'), cert: path.join(work, 'etcd-client.crt'), key: path.join(work, 'etcd-client.key') };
  await writeFile(client.ca, bundle.ca, { mode: 0o600 });
  await writeFile(client.cert, bundle.cert, { mode: 0o600 });
  await writeFile(client.key, bundle.key, { mode: 0o600 });
  t.regex(
    await readFile(knownHosts, 'utf8'),
    new RegExp(`^${leader.ip!.replace(/\./g, '\\.')} (ssh-ed25519|ecdsa-sha2-nistp256) AAAA`, 'm'),
    "the leader's per-box host key is pinned on first contact",
  );

  // --- Kine from the gateway namespace: write on the leader, read on the follower and the VIP ---
  const key = `/image-pair/${Date.now()}`;
  await retrying('put on the leader', left(), () => etcdctl(topology, client, leader.ip!, ['put', key, 'v']));
  const readBack = (host: string) => async () => {
    const value = await etcdctl(topology, client, host, ['get', '--print-value-only', key]);
    if (value !== 'v') throw new Error(`read "${value}"`);
    return value;
  };
  t.is(await retrying('get on the follower', left(), readBack(follower.ip!)), 'v');
  t.is(await retrying('get on the VIP', left(), readBack(vip)), 'v');

  // --- nothing on the LAN reaches Kine without the pair CA's client certificate ---
  const plain = await etcdctlRun(topology, `http://${leader.ip}:2379`, [], ['get', '/x']);
  t.not(plain.code, 0, `plain-text etcd on the LAN must fail: ${plain.stdout}`);
  const noClientCert = await etcdctlRun(topology, `https://${leader.ip}:2379`, [`--cacert=${client.ca}`], ['get', '/x']);
  t.not(noClientCert.code, 0, `TLS without a client certificate must fail: ${noClientCert.stdout}`);

  // --- the site's pace reached each agent's liveness rules ---
  for (const r of ready) {
    const started = await ssh(r.ip!, ['journalctl', '-b', '-o', 'cat', '--no-pager', '-u', 'geminik8s-agent', '-g', 'liveness-started']);
    t.regex(
      started.stdout,
      new RegExp(`"fenceAfterMs":${2000 * TIME_SCALE},"promoteAfterMs":${5000 * TIME_SCALE}`),
      `${r.ip}: the liveness loop runs at pace ${TIME_SCALE}`,
    );
  }
  // --- the systemd watchdog is fed: its limit is down to the liveness loop's 30 s, and 40 s later each agent still runs its first start ---
  for (const r of ready) {
    const limit = await ssh(r.ip!, ['systemctl', 'show', '--property=WatchdogUSec', '--value', 'geminik8s-agent']);
    t.is(limit.stdout.trim(), '30s', `${r.ip}: the agent tightened the start-up allowance once its loop ran (${limit.stderr.trim()})`);
  }
  // --- the kernel watchdog is armed: systemd pets /dev/watchdog0 (softdog unless a hardware driver came first) ---
  for (const r of ready) {
    const look = await ssh(r.ip!, [
      'sh',
      '-c',
      'systemctl show --property=RuntimeWatchdogUSec --value; cat /sys/class/watchdog/watchdog0/identity /sys/class/watchdog/watchdog0/state',
    ]);
    const [limit, identity, state] = look.stdout.trim().split('\n');
    t.is(limit, '1min', `${r.ip}: systemd's runtime watchdog (${look.stderr.trim()})`);
    t.is(state, 'active', `${r.ip}: /dev/watchdog0 (${identity}) is armed`);
    t.log(`${r.ip}: watchdog0 is ${identity}`);
  }
  await new Promise((r) => setTimeout(r, 40_000));
  t.is(nodes.length, 2);
  for (const [i, n] of nodes.entries()) {
    const text = await readFile(n.vm.consoleFile, 'utf8');
    const starts = text.match(/GEMINIK8S-AGENT: started/g)?.length;
    // How close each agent came to its watchdog: pings it withheld because the loop had not ticked
    // within a period (three in a row and systemd restarts it), for the log of every run.
    const withheld = await ssh(ready[i]!.ip!, ['journalctl', '-b', '-o', 'cat', '--no-pager', '-u', 'geminik8s-agent', '-g', 'watchdog-withheld']).catch(
      (e: unknown) => ({ stdout: '', stderr: String(e) }),
    );
    t.log(`${n.name}: ${withheld.stdout.split('\n').filter((l) => l.includes('watchdog-withheld')).length} watchdog pings withheld`);
    if (starts === 1) continue;
    // Why it restarted. The whole journal of the boot goes to a file that outlives the test's work
    // dir; the assertion message carries what a CI log's tail must show: systemd's lines about the
    // unit (a stop job, a stop timeout, the watchdog, an exit), and the agent's own last warnings.
    const journal = await ssh(ready[i]!.ip!, ['journalctl', '-b', '-o', 'short-monotonic', '--no-pager']).catch((e: unknown) => ({
      stdout: '',
      stderr: String(e),
    }));
    const kept = path.join(os.tmpdir(), `gk8s-image-pair-${n.name}-journal-${Date.now()}.txt`);
    await writeFile(kept, journal.stdout + journal.stderr);
    const lines = journal.stdout.split('\n');
    const systemdSaid = lines
      .filter((l) => /systemd\[1\]: /.test(l) && /geminik8s-agent|Stopping|Unmount|Requested|Watchdog|watchdog/.test(l))
      .slice(-14)
      .map((l) => l.slice(0, 300));
    // The first agent's last warnings: the restarted one's would crowd them out.
    const firstPid = /geminik8s-agent\[(\d+)\]: /.exec(journal.stdout)?.[1];
    const agentSaid = lines
      .filter((l) => l.includes(`geminik8s-agent[${firstPid}]: `) && /"level":"(warn|error)"/.test(l))
      .slice(-4)
      .map((l) => l.slice(0, 400));
    const agentLines = text
      .split('\n')
      .filter((l) => /GEMINIK8S-AGENT: (started|failed)|Out of memory|Killed process/.test(l))
      .slice(-6)
      .join('\n');
    t.is(
      starts,
      1,
      `${n.name}: the agent restarted; it must run its first start throughout (whole journal: ${kept})\n--- console ---\n${agentLines}\n--- the first agent's last warnings ---\n${agentSaid.join('\n')}\n--- systemd on the unit (why) ---\n${systemdSaid.join('\n') || journal.stderr.slice(0, 400)}`,
    );
  }
  t.log(`total ${((Date.now() - started) / 1000).toFixed(0)} s; leader ${leader.ip}, follower ${follower.ip}, VIP ${vip}`);
});

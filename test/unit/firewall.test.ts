import test from 'ava';
import { readFile, readlink } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import type { Logger } from '../../firstboot/src/adapters/output.ts';
import { ensureFirewall } from '../../firstboot/src/net/firewall.ts';
import { DROP_COUNTER, FirewallInputError, renderFirewall, type FirewallInput } from '../../firstboot/src/net/core/firewall.ts';

const PORTS = { ssh: 22, statusPage: 8008, discovery: 7946, channel: 7946, postgres: 5432, kine: 2379 };
const base: FirewallInput = { lanInterface: 'eth0', kineRemote: false, sshOpen: true, ports: PORTS };

/** The input chain's rules, one per line, without indentation. */
function rules(text: string): string[] {
  const start = text.indexOf('chain input {');
  return text
    .slice(start)
    .split('\n')
    .slice(2)
    .map((l) => l.trim())
    .filter((l) => l && l !== '}');
}
/** Rules that let a TCP port in (the part before `accept`). */
const tcpAccepts = (text: string) => rules(text).filter((r) => r.includes('tcp dport') && r.includes(' accept'));

test('the table is replaced in one transaction: add (so delete cannot fail), delete, define', (t) => {
  const text = renderFirewall(base);
  const statements = text.split('\n').filter((l) => /^(add|delete|table|flush|destroy)\b/.test(l));
  t.deepEqual(statements, ['add table inet geminik8s', 'delete table inet geminik8s', 'table inet geminik8s {']);
  t.false(/flush ruleset/.test(text), 'other tables (Kubernetes, later) are left alone');
  t.is(renderFirewall(base), text, 'same input, same text (idempotent apply)');
});

test('inbound policy is drop, counted by a named counter as the last rule; no forward or output filtering', (t) => {
  const text = renderFirewall(base);
  t.regex(text, /chain input \{\n\t\ttype filter hook input priority filter; policy drop;\n/);
  t.regex(text, new RegExp(`counter ${DROP_COUNTER} \\{`));
  t.is(rules(text).at(-1), `counter name "${DROP_COUNTER}"`);
  t.notRegex(text, /hook (forward|output)/);
});

test('always open: loopback, replies, ICMP echo and PMTU errors, DHCP replies, IPv6 neighbour discovery', (t) => {
  const r = rules(renderFirewall(base));
  t.is(r[0], 'iif "lo" accept');
  t.is(r[1], 'ct state vmap { established : accept, related : accept, invalid : drop }');
  t.true(r.some((x) => /^icmp type \{ echo-request, destination-unreachable, time-exceeded, parameter-problem \} accept/.test(x)));
  t.true(r.some((x) => /^icmpv6 type \{[^}]*packet-too-big[^}]*\} accept/.test(x)));
  t.true(r.some((x) => /^icmpv6 type \{ nd-router-advert, nd-neighbor-solicit, nd-neighbor-advert \} ip6 hoplimit 255 accept/.test(x)));
  t.true(r.some((x) => x.startsWith('udp sport 67 udp dport 68 accept')));
});

test('before pairing: SSH, the status page and the pairing channel open to the LAN interface; PostgreSQL and Kine closed', (t) => {
  const text = renderFirewall(base);
  t.true(
    rules(text).some((x) => x.startsWith('iifname "eth0" udp dport 7946 accept')),
    'beacons from the LAN',
  );
  t.deepEqual(tcpAccepts(text), ['iifname "eth0" tcp dport { 22, 7946, 8008 } accept comment "LAN services"']);
  t.notRegex(text, /5432|2379|saddr \d/);
});

test('paired: PostgreSQL and the pairing channel only from exactly the peer address; beacons stay open to the LAN', (t) => {
  const text = renderFirewall({ ...base, peerAddress: '192.0.2.12' });
  t.deepEqual(tcpAccepts(text), [
    'iifname "eth0" tcp dport { 22, 8008 } accept comment "LAN services"',
    'iifname "eth0" ip saddr 192.0.2.12 tcp dport { 5432, 7946 } accept comment "peer only"',
  ]);
  t.deepEqual(text.match(/saddr \S+/g), ['saddr fe80::/10', 'saddr 192.0.2.12'], 'no other source address is named');
  t.true(
    rules(text).some((x) => x.startsWith('iifname "eth0" udp dport 7946 accept')),
    'third boxes still hear the refusal; replace-node needs beacons',
  );
  t.regex(text, /^# .*paired with 192\.0\.2\.12/);
});

test('an IPv6 peer is matched with ip6 saddr', (t) => {
  const text = renderFirewall({ ...base, peerAddress: '2001:DB8::12' });
  t.true(tcpAccepts(text).includes('iifname "eth0" ip6 saddr 2001:db8::12 tcp dport { 5432, 7946 } accept comment "peer only"'));
});

test('Kine opens to the LAN only when the image serves remote etcd clients; the Kubernetes API only when given a port', (t) => {
  t.notRegex(renderFirewall({ ...base, peerAddress: '192.0.2.12' }), /2379|6443/);
  t.deepEqual(
    tcpAccepts(renderFirewall({ ...base, peerAddress: '192.0.2.12', kineRemote: true }))[0],
    'iifname "eth0" tcp dport { 22, 2379, 8008 } accept comment "LAN services"',
  );
  t.deepEqual(
    tcpAccepts(renderFirewall({ ...base, peerAddress: '192.0.2.12', ports: { ...PORTS, kubeApi: 6443 } }))[0],
    'iifname "eth0" tcp dport { 22, 6443, 8008 } accept comment "LAN services"',
  );
});

test('a worker: the kubelet opens to exactly the peer, and its pods reach the API server port and nothing else of the host', (t) => {
  const worker = renderFirewall({ ...base, peerAddress: '192.0.2.12', ports: { ...PORTS, kubeApi: 6443, kubelet: 10250 }, podRange: '10.42.0.0/16' });
  t.deepEqual(tcpAccepts(worker).slice(1), [
    'iifname "eth0" ip saddr 192.0.2.12 tcp dport { 5432, 7946, 10250 } accept comment "peer only"',
    'ip saddr 10.42.0.0/16 tcp dport 6443 accept comment "pods to the API server"',
  ]);
  t.notRegex(renderFirewall({ ...base, peerAddress: '192.0.2.12', ports: { ...PORTS, kubeApi: 6443 } }), /10250|10\.42|postrouting/);
  // Pods leave the cluster range as the box; between the two boxes' pod ranges nothing is translated.
  t.regex(
    worker,
    /chain postrouting \{\n\t\ttype nat hook postrouting priority srcnat; policy accept;\n\t\tip saddr 10\.42\.0\.0\/16 ip daddr != 10\.42\.0\.0\/16 masquerade/,
  );
  t.throws(() => renderFirewall({ ...base, ports: { ...PORTS, kubeApi: 6443 }, podRange: '10.42.0.0/16; accept' }), {
    instanceOf: FirewallInputError,
    message: /podRange/,
  });
  t.throws(() => renderFirewall({ ...base, podRange: '10.42.0.0/16' }), { instanceOf: FirewallInputError, message: /without ports.kubeApi/ });
});

test('K3s: its pod network (flannel VXLAN, UDP) opens to exactly the peer', (t) => {
  const k3s = renderFirewall({
    ...base,
    peerAddress: '192.0.2.12',
    ports: { ...PORTS, kubeApi: 6443, kubelet: 10250, podOverlay: 8472 },
    podRange: '10.42.0.0/16',
  });
  t.true(rules(k3s).includes('iifname "eth0" ip saddr 192.0.2.12 udp dport 8472 accept comment "peer only: pod network"'));
  t.notRegex(renderFirewall({ ...base, peerAddress: '192.0.2.12', ports: { ...PORTS, kubeApi: 6443, kubelet: 10250 }, podRange: '10.42.0.0/16' }), /8472/);
  t.notRegex(renderFirewall({ ...base, ports: { ...PORTS, podOverlay: 8472 } }), /8472/, 'nothing before a peer is known');
});

test('without sshd and once paired only the read-only status page is open to the LAN; without an interface LAN rules match any interface', (t) => {
  const text = renderFirewall({ kineRemote: false, sshOpen: false, peerAddress: '192.0.2.12', ports: PORTS });
  t.deepEqual(tcpAccepts(text), ['tcp dport 8008 accept comment "LAN services"', 'ip saddr 192.0.2.12 tcp dport { 5432, 7946 } accept comment "peer only"']);
  t.notRegex(text, /iifname/);
  t.true(rules(renderFirewall({ ...base, lanInterface: undefined, sshOpen: false })).includes('tcp dport { 7946, 8008 } accept comment "LAN services"'));
});

test('ports from the settings are used as given (tests and images may move them)', (t) => {
  const text = renderFirewall({
    ...base,
    peerAddress: '192.0.2.12',
    ports: { ssh: 2222, statusPage: 18008, discovery: 17946, channel: 17947, postgres: 15432, kine: 12379 },
  });
  t.true(tcpAccepts(text).includes('iifname "eth0" tcp dport { 2222, 18008 } accept comment "LAN services"'));
  t.true(rules(text).some((x) => x.startsWith('iifname "eth0" udp dport 17946 accept')));
  t.true(tcpAccepts(text).includes('iifname "eth0" ip saddr 192.0.2.12 tcp dport { 15432, 17947 } accept comment "peer only"'));
});

test('nothing unvalidated reaches the nft text: bad addresses, interfaces and ports are refused, naming the field', (t) => {
  const bad: [Partial<FirewallInput>, RegExp][] = [
    [{ peerAddress: '192.0.2.12; flush ruleset' }, /^firewall input peerAddress: "192\.0\.2\.12; flush ruleset" is not an IPv4 or IPv6 address/],
    [{ peerAddress: '192.0.2.012' }, /peerAddress: "192\.0\.2\.012" is not an IPv4/],
    [{ peerAddress: '192.0.2.0/24' }, /peerAddress/],
    [{ peerAddress: 'fe80::1%eth0' }, /peerAddress: "fe80::1%eth0" is not an IPv4 or IPv6/],
    [{ peerAddress: '0.0.0.0' }, /not a unicast host address; .*re-pair/],
    [{ peerAddress: '127.0.0.1' }, /not a unicast host/],
    [{ peerAddress: '224.0.0.1' }, /not a unicast host/],
    [{ peerAddress: 'ff02::1' }, /not a unicast host/],
    [{ peerAddress: '' }, /peerAddress: ""/],
    [{ lanInterface: 'eth0" accept #' }, /^firewall input lanInterface: "eth0\\" accept #" is not an interface name/],
    [{ lanInterface: 'a-very-long-interface' }, /lanInterface/],
    [{ lanInterface: '' }, /lanInterface/],
    [{ ports: { ...PORTS, postgres: 0 } }, /^firewall input ports\.postgres: 0 is not a port number/],
    [{ ports: { ...PORTS, kine: 65536 } }, /ports\.kine: 65536/],
    [{ ports: { ...PORTS, kubeApi: 64.5 } }, /ports\.kubeApi: 64\.5/],
    [{ ports: { ...PORTS, ssh: '22; accept' as unknown as number } }, /ports\.ssh: "22; accept"/],
    [{ kineRemote: 'yes' as unknown as boolean }, /kineRemote: "yes" is not true or false/],
  ];
  for (const [patch, message] of bad) {
    const e = t.throws(() => renderFirewall({ ...base, ...patch }), { instanceOf: FirewallInputError }, JSON.stringify(patch));
    t.regex(e?.message ?? '', message);
  }
});

test('the image boot ruleset is what the agent renders for an unpaired node, and nftables.service loads it at sysinit', async (t) => {
  const overlay = (rel: string) => fileURLToPath(new URL(`../../overlays/base/${rel}`, import.meta.url));
  const statements = (text: string) => text.split('\n').filter((l) => !l.startsWith('#'));
  const boot = await readFile(overlay('etc/nftables.conf'), 'utf8');
  t.deepEqual(statements(boot), statements(renderFirewall({ kineRemote: false, sshOpen: true, ports: PORTS })));
  t.is(await readlink(overlay('etc/systemd/system/sysinit.target.wants/nftables.service')), '/lib/systemd/system/nftables.service');
});

test('a firewall that cannot be applied is an error event and a retry, never a silent pass', async (t) => {
  const events: { level: string; event: string; fields: Record<string, unknown> }[] = [];
  const stop = new AbortController();
  const log: Logger = {
    event(level, event, fields = {}) {
      events.push({ level, event, fields });
      if (event === 'firewall-apply-failed') stop.abort();
    },
  };
  // The input is refused before nft runs, so this needs no privileges and changes nothing.
  await t.throwsAsync(ensureFirewall({ ...base, peerAddress: 'not-an-address' }, log, stop.signal), { message: 'stopped while applying the host firewall' });
  t.is(events.length, 1);
  t.like(events[0], { level: 'error', event: 'firewall-apply-failed', fields: { peer: 'not-an-address', retryInMs: 1000 } });
  t.regex(String(events[0]?.fields.error), /peerAddress: "not-an-address" is not an IPv4 or IPv6 address/);
});

/**
 * The appliance's host firewall as nftables text (pure): what DESIGN "Network exposure and
 * identity" allows in, everything else inbound dropped and counted.
 *
 * One table of our own, `table inet geminik8s` (inet: IPv4 and IPv6 in one table; ARP is not
 * filtered by nftables inet tables, so neighbour discovery of the VIP keeps working). The image's
 * boot ruleset (overlays/base/etc/nftables.conf) creates the same table, closed except for what
 * pairing needs; the agent replaces it with this one. The replacement is one `nft -f` transaction
 * (`add table` so the delete cannot fail, `delete table`, the new table), so the kernel never runs
 * without rules and other tables (Kubernetes' later) are left alone.
 *
 * Who may reach what:
 *   - the LAN (on `lanInterface` when given, else any interface): SSH, pairing beacons (UDP; HMAC
 *     checked, and third boxes and replace-node must still hear they are refused), the pairing
 *     channel (TCP) until a peer is known, Kine's etcd API only when the image serves remote etcd
 *     clients (then with mTLS), the Kubernetes API once it is given a port, the read-only status
 *     page and metrics (no secrets in them; no authentication, like Patroni's and most exporters');
 *   - the peer's address only: PostgreSQL (replication, pg_rewind, the follower's Kine through the
 *     VIP), once paired the pairing channel, on a worker the kubelet (mTLS), and with K3s its
 *     pod network (flannel's VXLAN, UDP);
 *   - on a worker, the pod range: the API server port only (pods use the `kubernetes` Service);
 *   - always: loopback, replies (established/related), ICMP echo and the errors path-MTU discovery
 *     needs, DHCP replies, IPv6 neighbour discovery.
 * No forward chain: a worker routes its pods' traffic (to the peer's pod range, and to the LAN
 * masqueraded by this table's nat chain), and kube-proxy's table handles Services; a box that is
 * not a worker has forwarding off (the kernel default). Output is not restricted.
 *
 * Every value that reaches the text is validated first: nothing unvalidated is interpolated.
 */
import { isIPv4, isIPv6 } from 'node:net';
import { formatCidr, parseCidr } from '../../core/subnet.ts';

export const FIREWALL_TABLE = 'geminik8s';
/** Named counter of inbound packets that matched no rule (dropped by the chain policy). */
export const DROP_COUNTER = 'inbound_dropped';

export interface FirewallPorts {
  ssh: number;
  /** The read-only status page and Prometheus metrics (HTTP). */
  statusPage: number;
  /** Pairing beacons and heartbeats (UDP). */
  discovery: number;
  /** Pairing channel (TCP, TLS-PSK). */
  channel: number;
  postgres: number;
  /** Kine's etcd API. */
  kine: number;
  /** Kubernetes API (LAN) once the image runs one; absent: closed. */
  kubeApi?: number;
  /** The kubelet's API (the peer's API server fetches logs, exec) when the box is a worker; absent: closed. */
  kubelet?: number;
  /** K3s' pod network between the boxes (flannel's VXLAN, UDP) when the box runs K3s; absent: closed. */
  podOverlay?: number;
}

export interface FirewallInput {
  /** The LAN interface; absent: LAN services are open on every interface. */
  lanInterface?: string;
  /** The paired peer; absent (before pairing): peer-only services are closed to everyone. */
  peerAddress?: string;
  /** The image serves remote etcd clients (mTLS): Kine's port is open to the LAN. */
  kineRemote: boolean;
  /** The image runs sshd. */
  sshOpen: boolean;
  ports: FirewallPorts;
  /** The pods' range when the box is a worker: pods reach the API server (through the `kubernetes` Service), nothing else. */
  podRange?: string;
}

export class FirewallInputError extends Error {
  constructor(
    readonly field: string,
    readonly found: unknown,
    what: string,
  ) {
    super(`firewall input ${field}: ${JSON.stringify(found)} ${what}`);
    this.name = 'FirewallInputError';
  }
}

/** Linux interface names are at most 15 bytes; this subset is all the appliance's links use. */
const IFNAME_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$/;

function checkPort(field: string, v: unknown): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 1 || v > 65535) throw new FirewallInputError(field, v, 'is not a port number (an integer 1–65535)');
  return v;
}

/** A unicast host address, and which nft family keyword matches it. */
function checkPeer(v: unknown): { family: 'ip' | 'ip6'; address: string } {
  const field = 'peerAddress';
  if (typeof v !== 'string') throw new FirewallInputError(field, v, 'is not an address string');
  // isIPv6 accepts zone ids ("fe80::1%eth0"); nft does not, and a zone is not part of a peer's address.
  if (isIPv4(v)) {
    const first = Number(v.split('.')[0]);
    if (v === '0.0.0.0' || v === '255.255.255.255' || first === 127 || (first >= 224 && first <= 239)) {
      throw new FirewallInputError(
        field,
        v,
        'is not a unicast host address; the peer address comes from the pairing (hostmeta.json pair.peerAddress): re-pair the node',
      );
    }
    return { family: 'ip', address: v };
  }
  if (isIPv6(v) && !v.includes('%')) {
    const lower = v.toLowerCase();
    if (lower === '::' || lower === '::1' || lower.startsWith('ff')) {
      throw new FirewallInputError(
        field,
        v,
        'is not a unicast host address; the peer address comes from the pairing (hostmeta.json pair.peerAddress): re-pair the node',
      );
    }
    return { family: 'ip6', address: lower };
  }
  throw new FirewallInputError(
    field,
    v,
    'is not an IPv4 or IPv6 address; the peer address comes from the pairing (hostmeta.json pair.peerAddress): re-pair the node',
  );
}

/** `{ a, b }` for several ports, the bare port for one (duplicates, e.g. beacon = channel port, merged). */
function portSet(ports: readonly number[]): string {
  const unique = [...new Set(ports)].sort((a, b) => a - b);
  return unique.length === 1 ? String(unique[0]) : `{ ${unique.join(', ')} }`;
}

/** The nftables script that replaces our table with the one `input` describes; throws FirewallInputError. */
export function renderFirewall(input: FirewallInput): string {
  const p = input.ports;
  const ports = {
    ssh: checkPort('ports.ssh', p.ssh),
    statusPage: checkPort('ports.statusPage', p.statusPage),
    discovery: checkPort('ports.discovery', p.discovery),
    channel: checkPort('ports.channel', p.channel),
    postgres: checkPort('ports.postgres', p.postgres),
    kine: checkPort('ports.kine', p.kine),
    ...(p.kubeApi !== undefined ? { kubeApi: checkPort('ports.kubeApi', p.kubeApi) } : {}),
    ...(p.kubelet !== undefined ? { kubelet: checkPort('ports.kubelet', p.kubelet) } : {}),
    ...(p.podOverlay !== undefined ? { podOverlay: checkPort('ports.podOverlay', p.podOverlay) } : {}),
  };
  const podRange = input.podRange !== undefined ? parseCidr(input.podRange) : undefined;
  if (input.podRange !== undefined && !podRange) throw new FirewallInputError('podRange', input.podRange, 'is not an IPv4 CIDR like 10.42.0.0/16');
  if (podRange && ports.kubeApi === undefined)
    throw new FirewallInputError('podRange', input.podRange, 'is given without ports.kubeApi: pods on a box without an API server');
  if (typeof input.kineRemote !== 'boolean') throw new FirewallInputError('kineRemote', input.kineRemote, 'is not true or false');
  if (typeof input.sshOpen !== 'boolean') throw new FirewallInputError('sshOpen', input.sshOpen, 'is not true or false');
  if (input.lanInterface !== undefined && (typeof input.lanInterface !== 'string' || !IFNAME_RE.test(input.lanInterface))) {
    throw new FirewallInputError('lanInterface', input.lanInterface, 'is not an interface name (letters, digits, "_", ".", "-"; at most 15)');
  }
  const peer = input.peerAddress !== undefined ? checkPeer(input.peerAddress) : undefined;
  const lan = input.lanInterface !== undefined ? `iifname "${input.lanInterface}" ` : '';

  const lanTcp = [
    ...(input.sshOpen ? [ports.ssh] : []),
    ports.statusPage,
    ...(peer ? [] : [ports.channel]),
    ...(input.kineRemote ? [ports.kine] : []),
    ...(ports.kubeApi !== undefined ? [ports.kubeApi] : []),
  ];
  const peerTcp = [ports.postgres, ...(peer ? [ports.channel] : []), ...(ports.kubelet !== undefined ? [ports.kubelet] : [])];

  const rules = [
    'iif "lo" accept',
    'ct state vmap { established : accept, related : accept, invalid : drop }',
    'icmp type { echo-request, destination-unreachable, time-exceeded, parameter-problem } accept comment "ping, path MTU"',
    'icmpv6 type { echo-request, destination-unreachable, packet-too-big, time-exceeded, parameter-problem } accept comment "ping, path MTU"',
    // Neighbour discovery and router adverts only from the link itself (hop limit 255 cannot be forged from off-link).
    'icmpv6 type { nd-router-advert, nd-neighbor-solicit, nd-neighbor-advert } ip6 hoplimit 255 accept comment "IPv6 neighbour discovery"',
    'udp sport 67 udp dport 68 accept comment "DHCP replies"',
    'ip6 saddr fe80::/10 udp sport 547 udp dport 546 accept comment "DHCPv6 replies"',
    `${lan}udp dport ${portSet([ports.discovery])} accept comment "pairing beacons (HMAC)"`,
    ...(lanTcp.length > 0 ? [`${lan}tcp dport ${portSet(lanTcp)} accept comment "LAN services"`] : []),
    ...(peer ? [`${lan}${peer.family} saddr ${peer.address} tcp dport ${portSet(peerTcp)} accept comment "peer only"`] : []),
    ...(peer && ports.podOverlay !== undefined
      ? [`${lan}${peer.family} saddr ${peer.address} udp dport ${ports.podOverlay} accept comment "peer only: pod network"`]
      : []),
    ...(podRange && ports.kubeApi !== undefined ? [`ip saddr ${formatCidr(podRange)} tcp dport ${ports.kubeApi} accept comment "pods to the API server"`] : []),
    `counter name "${DROP_COUNTER}"`,
  ];
  // A worker's pods leave the cluster range as the box: the LAN has no route to the pod ranges.
  // Between the two boxes' pod ranges nothing is translated (each box routes the other's range).
  const nat = podRange
    ? [
        '',
        '\tchain postrouting {',
        '\t\ttype nat hook postrouting priority srcnat; policy accept;',
        `\t\tip saddr ${formatCidr(podRange)} ip daddr != ${formatCidr(podRange)} masquerade comment "pods leaving the cluster range"`,
        '\t}',
      ]
    : [];
  return [
    `# geminik8s host firewall, rendered by the agent (${peer ? `paired with ${peer.address}` : 'not paired yet'}).`,
    `add table inet ${FIREWALL_TABLE}`,
    `delete table inet ${FIREWALL_TABLE}`,
    `table inet ${FIREWALL_TABLE} {`,
    `\tcounter ${DROP_COUNTER} {`,
    '\t}',
    '',
    '\tchain input {',
    '\t\ttype filter hook input priority filter; policy drop;',
    ...rules.map((r) => `\t\t${r}`),
    '\t}',
    ...nat,
    '}',
    '',
  ].join('\n');
}

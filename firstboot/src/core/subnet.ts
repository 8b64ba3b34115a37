/**
 * IPv4 subnet math (pure), the one home for it: subnets, reserved addresses, which of this box's
 * addresses shares the VIP's subnet, and the ranges of Kubernetes (Service addresses, each box's
 * share of the pod range) parsed from CIDR text.
 */

export function ipv4ToInt(ip: string): number {
  return ip.split('.').reduce((acc, part) => (acc << 8) + Number(part), 0) >>> 0;
}

export function intToIpv4(n: number): string {
  return [24, 16, 8, 0].map((shift) => (n >>> shift) & 0xff).join('.');
}

function maskOf(prefix: number): number {
  return prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
}

export function sameSubnet(a: string, b: string, prefix: number): boolean {
  const mask = maskOf(prefix);
  return (ipv4ToInt(a) & mask) >>> 0 === (ipv4ToInt(b) & mask) >>> 0;
}

/** "192.0.2.10/24" → its address and prefix length (the text must already be a valid CIDR). */
export function splitCidr(cidr: string): { ip: string; prefix: number } {
  const [ip = '', prefix = '32'] = cidr.split('/');
  return { ip, prefix: Number(prefix) };
}

/** The subnet `ip` lies in, as text: 192.0.2.0/24. */
export function subnetOf(ip: string, prefix: number): string {
  return `${intToIpv4((ipv4ToInt(ip) & maskOf(prefix)) >>> 0)}/${prefix}`;
}

/**
 * Whether `ip` is the network or the broadcast address of its /`prefix` subnet, which no host may
 * hold. /31 (RFC 3021 point-to-point) and /32 have neither, so nothing is reserved there.
 */
export function reservedAddressKind(ip: string, prefix: number): 'network' | 'broadcast' | undefined {
  if (prefix >= 31) return undefined;
  const n = ipv4ToInt(ip);
  const mask = maskOf(prefix);
  if ((n & mask) >>> 0 === n) return 'network';
  if ((n | ~mask) >>> 0 === n) return 'broadcast';
  return undefined;
}

export interface InterfaceAddress {
  ifname: string;
  ip: string;
  prefix: number;
}

/**
 * The LAN address the pair uses: on the configured interface when the site names one, else the
 * first address in the VIP's subnet that is not the VIP itself (the leader also holds the VIP).
 */
export function pickLanAddress(addresses: InterfaceAddress[], vipCidr: string, iface?: string): InterfaceAddress | undefined {
  const { ip: vip, prefix } = splitCidr(vipCidr);
  return addresses.find((a) => a.ip !== vip && (iface ? a.ifname === iface : sameSubnet(a.ip, vip, prefix)));
}

/** A dotted-quad IPv4 address, strictly: four decimal octets ≤ 255, no leading zeros. */
export function isIPv4(text: string): boolean {
  const parts = text.split('.');
  return parts.length === 4 && parts.every((p) => /^(0|[1-9][0-9]{0,2})$/.test(p) && Number(p) <= 255);
}

/** A host address with its prefix length (1-32), like 192.0.2.10/24: a VIP or a box's static address. */
export function isIPv4Cidr(text: string): boolean {
  const m = /^([^/]+)\/(0|[1-9][0-9]?)$/.exec(text);
  return m !== null && isIPv4(m[1] ?? '') && Number(m[2]) >= 1 && Number(m[2]) <= 32;
}

export interface Ipv4Range {
  /** The network address as an unsigned 32-bit number (host bits cleared). */
  base: number;
  prefix: number;
}

const CIDR_RE = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\/(\d{1,2})$/;

/** A CIDR like 10.42.0.0/16, or undefined when the text is not one (octet > 255, prefix > 32, anything around it). */
export function parseCidr(text: string): Ipv4Range | undefined {
  const m = CIDR_RE.exec(text);
  if (!m || m.slice(1, 5).some((o) => Number(o) > 255) || Number(m[5]) > 32) return undefined;
  const prefix = Number(m[5]);
  return { base: (ipv4ToInt(`${m[1]}.${m[2]}.${m[3]}.${m[4]}`) & maskOf(prefix)) >>> 0, prefix };
}

/** Like parseCidr, but a bad value is an Error naming `field` and the expected form. */
export function requireCidr(field: string, text: string): Ipv4Range {
  const r = typeof text === 'string' ? parseCidr(text) : undefined;
  if (!r) throw new Error(`${field}: ${JSON.stringify(text)} is not an IPv4 CIDR like 10.42.0.0/16`);
  return r;
}

export function formatCidr(r: Ipv4Range): string {
  return `${intToIpv4(r.base)}/${r.prefix}`;
}

/** The n-th address of a range (1: the first host address); the network and broadcast addresses are never one. */
export function rangeAddress(field: string, cidr: string, n: number): string {
  const r = requireCidr(field, cidr);
  const size = 2 ** (32 - r.prefix);
  if (!Number.isInteger(n) || n < 1 || n >= size - 1) throw new Error(`${field}: ${cidr} has no host address number ${n}`);
  return intToIpv4((r.base + n) >>> 0);
}

/** The index-th sub-range of `prefix` bits inside `cidr` (e.g. the 2nd /24 of 10.42.0.0/16: 10.42.1.0/24). */
export function subRange(field: string, cidr: string, prefix: number, index: number): string {
  const r = requireCidr(field, cidr);
  if (prefix < r.prefix || prefix > 32) throw new Error(`${field}: ${cidr} cannot be split into /${prefix} ranges`);
  const count = 2 ** (prefix - r.prefix);
  if (!Number.isInteger(index) || index < 0 || index >= count) throw new Error(`${field}: ${cidr} has ${count} /${prefix} ranges, not a number ${index + 1}`);
  return formatCidr({ base: (r.base + index * 2 ** (32 - prefix)) >>> 0, prefix });
}

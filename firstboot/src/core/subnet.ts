/** IPv4 subnet math (pure): subnets, reserved addresses, and which of this box's addresses shares the VIP's subnet. */

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
  return ((ipv4ToInt(a) & mask) >>> 0) === ((ipv4ToInt(b) & mask) >>> 0);
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
  if (((n & mask) >>> 0) === n) return 'network';
  if (((n | ~mask) >>> 0) === n) return 'broadcast';
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

/** IPv4 subnet math (pure): which of this box's addresses shares the VIP's subnet. */

export function ipv4ToInt(ip: string): number {
  return ip.split('.').reduce((acc, part) => (acc << 8) + Number(part), 0) >>> 0;
}

export function sameSubnet(a: string, b: string, prefix: number): boolean {
  const mask = prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
  return ((ipv4ToInt(a) & mask) >>> 0) === ((ipv4ToInt(b) & mask) >>> 0);
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
  const [vip = '', prefixText = '32'] = vipCidr.split('/');
  const prefix = Number(prefixText);
  return addresses.find((a) => a.ip !== vip && (iface ? a.ifname === iface : sameSubnet(a.ip, vip, prefix)));
}

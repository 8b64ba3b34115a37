/**
 * IPv4 ranges (pure): the one place CIDR text is parsed and address arithmetic is done, for the
 * Kubernetes cluster and Service ranges, the pod ranges each box gets, and the firewall.
 */

export interface Ipv4Range {
  /** The network address as an unsigned 32-bit number (host bits cleared). */
  base: number;
  prefix: number;
}

const CIDR_RE = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\/(\d{1,2})$/;

/** A CIDR like 10.42.0.0/16, or undefined when the text is not one (octet > 255, prefix > 32). */
export function parseCidr(text: string): Ipv4Range | undefined {
  const m = CIDR_RE.exec(text);
  if (!m) return undefined;
  const octets = m.slice(1, 5).map(Number);
  const prefix = Number(m[5]);
  if (octets.some((o) => o > 255) || prefix > 32) return undefined;
  const address = ((octets[0]! << 24) | (octets[1]! << 16) | (octets[2]! << 8) | octets[3]!) >>> 0;
  return { base: (address & mask(prefix)) >>> 0, prefix };
}

/** Like parseCidr, but a bad value is an Error naming `field` and the expected form. */
export function requireCidr(field: string, text: string): Ipv4Range {
  const r = typeof text === 'string' ? parseCidr(text) : undefined;
  if (!r) throw new Error(`${field}: ${JSON.stringify(text)} is not an IPv4 CIDR like 10.42.0.0/16`);
  return r;
}

const mask = (prefix: number): number => (prefix === 0 ? 0 : (~0 << (32 - prefix)) >>> 0);

export function formatAddress(n: number): string {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
}

export function formatCidr(r: Ipv4Range): string {
  return `${formatAddress(r.base)}/${r.prefix}`;
}

/** The n-th address of a range (1: the first host address), checked to lie inside it. */
export function rangeAddress(field: string, cidr: string, n: number): string {
  const r = requireCidr(field, cidr);
  const size = 2 ** (32 - r.prefix);
  if (!Number.isInteger(n) || n < 1 || n >= size - 1) throw new Error(`${field}: ${cidr} has no host address number ${n}`);
  return formatAddress((r.base + n) >>> 0);
}

/** The index-th sub-range of `prefix` bits inside `cidr` (e.g. the 2nd /24 of 10.42.0.0/16: 10.42.1.0/24). */
export function subRange(field: string, cidr: string, prefix: number, index: number): string {
  const r = requireCidr(field, cidr);
  if (prefix < r.prefix || prefix > 32) throw new Error(`${field}: ${cidr} cannot be split into /${prefix} ranges`);
  const count = 2 ** (prefix - r.prefix);
  if (!Number.isInteger(index) || index < 0 || index >= count) throw new Error(`${field}: ${cidr} has ${count} /${prefix} ranges, not a number ${index + 1}`);
  return formatCidr({ base: (r.base + index * 2 ** (32 - prefix)) >>> 0, prefix });
}

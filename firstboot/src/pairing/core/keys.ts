/**
 * Pair keys: everything the pairing protocol authenticates with is derived from the site pair
 * secret with HKDF-SHA256 (salt = site id, one info label per use), so a key leaked from one use
 * (e.g. a captured beacon MAC key) says nothing about the other, and two sites never share a key.
 *
 * Pure: node:crypto only, no I/O. The keys refuse to be logged or serialised.
 */
import { hkdfSync } from 'node:crypto';
import { pairSecretBytes, PAIR_SECRET_MIN_BYTES } from '../../core/site.ts';

/** HKDF info labels. Never reuse one label for two purposes. */
export const KEY_LABELS = { beaconMac: 'beacon-mac', channelPsk: 'channel-psk' } as const;
export const PAIR_KEY_BYTES = 32;

const HEX_RE = /^[0-9a-fA-F]+$/;

/**
 * The bytes of a pair secret, decoded the way core/site.ts {@link pairSecretBytes} counts them:
 * hex when it is all hex digits, otherwise base64 or base64url (padding optional).
 * Throws (without echoing the secret) when it is neither or too short.
 */
export function decodePairSecret(secret: string): Buffer {
  const n = pairSecretBytes(secret);
  if (n === undefined || n < PAIR_SECRET_MIN_BYTES) {
    throw new Error(`pair secret is malformed or shorter than ${PAIR_SECRET_MIN_BYTES} bytes (a ${secret.length}-character string)`);
  }
  const bytes = HEX_RE.test(secret) ? Buffer.from(secret, 'hex') : Buffer.from(secret.replace(/-/g, '+').replace(/_/g, '/'), 'base64');
  if (bytes.length !== n) throw new Error(`pair secret decoded to ${bytes.length} bytes, expected ${n}`);
  return bytes;
}

/** Derived keys. `toJSON` and `util.inspect` print a placeholder, so a stray log call leaks nothing. */
export class PairKeys {
  readonly #beaconMac: Buffer;
  readonly #channelPsk: Buffer;
  constructor(beaconMac: Buffer, channelPsk: Buffer) {
    this.#beaconMac = beaconMac;
    this.#channelPsk = channelPsk;
  }
  /** HMAC-SHA256 key for discovery datagrams. */
  get beaconMac(): Buffer {
    return this.#beaconMac;
  }
  /** TLS-PSK key for the pairing channel. */
  get channelPsk(): Buffer {
    return this.#channelPsk;
  }
  toJSON(): string {
    return '[pair keys redacted]';
  }
  toString(): string {
    return '[pair keys redacted]';
  }
  [Symbol.for('nodejs.util.inspect.custom')](): string {
    return '[pair keys redacted]';
  }
}

export function hkdf32(ikm: Buffer, salt: string, info: string): Buffer {
  return Buffer.from(hkdfSync('sha256', ikm, Buffer.from(salt, 'utf8'), Buffer.from(info, 'utf8'), PAIR_KEY_BYTES));
}

/** Derives the pairing keys of a site from its pair secret (as written in site.yaml) and site id. */
export function derivePairKeys(secret: string, siteId: string): PairKeys {
  if (siteId.length === 0) throw new Error('site id is empty');
  const ikm = decodePairSecret(secret);
  try {
    return new PairKeys(hkdf32(ikm, siteId, KEY_LABELS.beaconMac), hkdf32(ikm, siteId, KEY_LABELS.channelPsk));
  } finally {
    ikm.fill(0);
  }
}

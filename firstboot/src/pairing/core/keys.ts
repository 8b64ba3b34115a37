/**
 * Pair keys: everything the pairing protocol authenticates with is derived from the site pair
 * secret with HKDF-SHA256 (salt = site id, one info label per use), so a key leaked from one use
 * (e.g. a captured beacon MAC key) says nothing about the other, and two sites never share a key.
 *
 * Pure: node:crypto only, no I/O. The keys refuse to be logged or serialised.
 */
import { createHmac, createPrivateKey, createPublicKey, diffieHellman, generateKeyPairSync, hkdfSync, timingSafeEqual, type KeyObject } from 'node:crypto';
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

/**
 * A node's own identity key (X25519), made once per box and kept on its data partition. Pairing
 * pins each node's public key on the other; from then on the two derive keys from their
 * Diffie-Hellman secret that the site pair secret alone cannot produce, so holding the pair secret
 * (it sits on FAT partitions and laptops) is not enough to speak for a paired node.
 */
export class NodeKey {
  readonly #privateKey: KeyObject;
  /** Raw 32-byte public key, base64url (what the pairing channel carries and hostmeta pins). */
  readonly publicKey: string;
  constructor(privateKey: KeyObject) {
    if (privateKey.asymmetricKeyType !== 'x25519') throw new Error('a node key must be an X25519 private key');
    this.#privateKey = privateKey;
    this.publicKey = rawX25519(createPublicKey(privateKey));
  }
  static generate(): NodeKey {
    return new NodeKey(generateKeyPairSync('x25519').privateKey);
  }
  static fromPem(pem: string): NodeKey {
    return new NodeKey(createPrivateKey(pem));
  }
  toPem(): string {
    return this.#privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
  }
  /** Keys shared with the node whose public key is `peerPublicKey` (base64url raw). */
  linkWith(peerPublicKey: string, siteId: string): LinkKeys {
    const raw = Buffer.from(peerPublicKey, 'base64url');
    if (raw.length !== 32 || raw.toString('base64url') !== peerPublicKey) throw new Error('peer node key is not a 32-byte X25519 public key');
    const publicKey = createPublicKey({ key: Buffer.concat([X25519_SPKI_PREFIX, raw]), format: 'der', type: 'spki' });
    const shared = diffieHellman({ privateKey: this.#privateKey, publicKey });
    try {
      return new LinkKeys(shared, siteId);
    } finally {
      shared.fill(0);
    }
  }
  toJSON(): string {
    return '[node key redacted]';
  }
  [Symbol.for('nodejs.util.inspect.custom')](): string {
    return '[node key redacted]';
  }
}

/** Keys two paired nodes share: channel proofs, and one beacon MAC key per sender (bound to its id). */
export class LinkKeys {
  readonly #channelAuth: Buffer;
  readonly #shared: Buffer;
  readonly #siteId: string;
  constructor(shared: Buffer, siteId: string) {
    this.#shared = Buffer.from(shared);
    this.#siteId = siteId;
    this.#channelAuth = hkdf32(this.#shared, siteId, 'node-channel-auth');
  }
  /** Proof that the sender holds its node key, bound to one TLS session's keying material. */
  channelProof(sessionKeyingMaterial: Buffer, senderNodeId: string): string {
    return createHmac('sha256', this.#channelAuth).update(sessionKeyingMaterial).update(senderNodeId).digest('base64url');
  }
  checkChannelProof(proof: string, sessionKeyingMaterial: Buffer, senderNodeId: string): boolean {
    const want = Buffer.from(this.channelProof(sessionKeyingMaterial, senderNodeId), 'base64url');
    const got = Buffer.from(proof, 'base64url');
    return got.length === want.length && timingSafeEqual(got, want);
  }
  /** The beacon MAC key of datagrams sent by `senderNodeId`. */
  beaconMac(senderNodeId: string): Buffer {
    return hkdf32(this.#shared, this.#siteId, `node-beacon-mac:${senderNodeId}`);
  }
  toJSON(): string {
    return '[link keys redacted]';
  }
  [Symbol.for('nodejs.util.inspect.custom')](): string {
    return '[link keys redacted]';
  }
}

/** DER prefix of an X25519 SubjectPublicKeyInfo; the raw 32-byte key follows it. */
const X25519_SPKI_PREFIX = Buffer.from('302a300506032b656e032100', 'hex');

function rawX25519(publicKey: KeyObject): string {
  const der = publicKey.export({ type: 'spki', format: 'der' });
  return der.subarray(X25519_SPKI_PREFIX.length).toString('base64url');
}

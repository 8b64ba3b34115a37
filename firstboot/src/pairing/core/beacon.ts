/**
 * Beacon datagrams (discovery and heartbeats): encoding, authentication and strict parsing. Pure.
 *
 * Wire format (version 2), a fixed binary header then a UTF-8 JSON body:
 *   "GK8B" (4) | version (1) | flags (1) | site tag (4) | sender node id (16) | HMAC-SHA256 (32)
 *   | [node HMAC-SHA256 (32), when flags bit 0] | body
 * The first MAC (keyed from the site pair secret) covers the header before it and the body. The
 * node MAC of a paired node covers the same bytes with a key only its pinned peer can derive
 * (keys.ts LinkKeys): its peer trusts heartbeats, roles and terms only from datagrams that carry
 * it, so the pair secret alone cannot speak for a paired node. A receiver reads only fixed-offset bytes
 * before the MAC is checked: the site tag (a hash of the site id, so another site's pair on the
 * LAN is dropped quietly rather than reported as a wrong secret) and the sender; the body is parsed
 * only once authenticated, so a flood of forged packets costs one HMAC each and nothing more.
 * Three kinds:
 *  - announce  {v, t:"announce", site, node, boot, addr, seq, state}      broadcast ≈ every second
 *  - challenge {v, t:"challenge", site, node, boot, addr, to, nonce}       unicast reply to an announce
 *  - response  {v, t:"response", site, node, boot, addr, to, nonce, state} unicast answer to a challenge
 * `addr` is the sender's own LAN address inside the authenticated body: a receiver drops a datagram
 * whose source address differs, so a captured or forged packet sent from elsewhere never makes a
 * node send a challenge or response to a third address. An announce is only a hint: a peer counts
 * as discovered once it answered a fresh, single-use nonce. `seq` strictly increases per (node,
 * boot) so a captured announce replayed is dropped; nothing relies on clocks.
 */
import { createHash, createHmac, timingSafeEqual } from 'node:crypto';
import { isIP } from 'node:net';
import { isLsn } from '../../core/history.ts';
import { bool, HEX128_RE, int, MAX_TERM, NAME_RE, NODE_ID_RE, object, ROLE_RE, SchemaError, SITE_ID_RE, str, type Obj } from './schema.ts';

export const BEACON_VERSION = 2;
export const BEACON_MAGIC = Buffer.from('GK8B', 'ascii');
export const BEACON_MAC_BYTES = 32;
const SITE_TAG_BYTES = 4;
const SENDER_BYTES = 16;
const FLAG_NODE_MAC = 0x01;
/** Offsets of the fixed header. */
const AT_VERSION = BEACON_MAGIC.length;
const AT_FLAGS = AT_VERSION + 1;
const AT_SITE = AT_FLAGS + 1;
const AT_SENDER = AT_SITE + SITE_TAG_BYTES;
const AT_MAC = AT_SENDER + SENDER_BYTES;
/** Header size without the optional node MAC. */
export const BEACON_HEADER_BYTES = AT_MAC + BEACON_MAC_BYTES;

/** Where the JSON body starts in a datagram (after the node MAC when there is one). */
export function beaconBodyOffset(packet: Buffer): number {
  return BEACON_HEADER_BYTES + ((packet[AT_FLAGS] ?? 0) & FLAG_NODE_MAC ? BEACON_MAC_BYTES : 0);
}
/** Datagrams larger than this are dropped unread (fits one Ethernet frame). */
export const MAX_BEACON_BYTES = 1200;
export const DEFAULT_BEACON_PORT = 7946;

/** What a node advertises about itself. */
export interface BeaconState {
  role: string;
  term: number;
  committed: boolean;
  timeline: number;
  lsn: string;
  /** TCP port of the pairing channel (TLS-PSK). */
  tcpPort: number;
  /** The pair this node belongs to (two node ids), empty while unpaired. */
  pair: string[];
  /** Site node name, when known. */
  name?: string;
  /** Liveness facts of a provisioned node: each announce is also its heartbeat (about 1 s apart). */
  hb?: HeartbeatFacts;
}

/** What a heartbeat adds to the beacon state (see liveness/core/types.ts Heartbeat). */
export interface HeartbeatFacts {
  pg: 'primary' | 'standby' | 'down';
  pgHealthy: boolean;
  syncRep: boolean;
  handoverForMs: number | null;
  peerSilentMs: number;
  holdsVip: boolean;
  /** Optional on the wire: an agent from before it sends none (read as null). */
  heardSyncRep: boolean | null;
}

interface Base {
  v: typeof BEACON_VERSION;
  site: string;
  node: string;
  boot: string;
  /** The sender's LAN address; must equal the datagram's source address. */
  addr: string;
}
export interface Announce extends Base {
  t: 'announce';
  seq: number;
  state: BeaconState;
}
export interface Challenge extends Base {
  t: 'challenge';
  to: string;
  nonce: string;
}
export interface Response extends Base {
  t: 'response';
  to: string;
  nonce: string;
  state: BeaconState;
}
export type BeaconMessage = Announce | Challenge | Response;

/** Why a datagram was dropped; stable strings for logs and tests. */
export type RejectReason = 'too-large' | 'too-short' | 'bad-magic' | 'bad-version' | 'malformed' | 'other-site' | 'bad-mac' | 'bad-node-mac';

/** `nodeAuthenticated`: the datagram carried a node MAC that the receiver's key for its sender verified. */
export type DecodeResult = { ok: true; msg: BeaconMessage; nodeAuthenticated: boolean } | { ok: false; reason: RejectReason; detail?: string };

/** First bytes of sha256("geminik8s-site:" + site id): not secret, only tells sites apart cheaply. */
export function siteTag(siteId: string): Buffer {
  return createHash('sha256').update(`geminik8s-site:${siteId}`).digest().subarray(0, SITE_TAG_BYTES);
}

function header(msg: BeaconMessage, flags: number): Buffer {
  const h = Buffer.alloc(AT_MAC);
  BEACON_MAGIC.copy(h, 0);
  h[AT_VERSION] = BEACON_VERSION;
  h[AT_FLAGS] = flags;
  siteTag(msg.site).copy(h, AT_SITE);
  Buffer.from(msg.node, 'hex').copy(h, AT_SENDER);
  return h;
}

const mac = (key: Buffer, head: Buffer, body: Buffer): Buffer => createHmac('sha256', key).update(head).update(body).digest();

/** `nodeMacKey`: a paired node's own beacon key (LinkKeys.beaconMac of its id), added as the node MAC. */
export function encodeBeacon(msg: BeaconMessage, macKey: Buffer, nodeMacKey?: Buffer): Buffer {
  const head = header(msg, nodeMacKey ? FLAG_NODE_MAC : 0);
  const body = Buffer.from(JSON.stringify(msg), 'utf8');
  const out = Buffer.concat([head, mac(macKey, head, body), ...(nodeMacKey ? [mac(nodeMacKey, head, body)] : []), body]);
  if (out.length > MAX_BEACON_BYTES) throw new Error(`beacon of ${out.length} bytes exceeds ${MAX_BEACON_BYTES}`);
  return out;
}

/**
 * Authenticates, then parses, one datagram. Before the MACs only fixed header bytes are compared;
 * the body is not touched. After them, the body must name the same site and sender as the header.
 * `nodeMacKeyFor(sender)` gives the receiver's key for a paired peer's node MAC (undefined: none).
 */
export function decodeBeacon(packet: Buffer, macKey: Buffer, siteId: string, nodeMacKeyFor?: (sender: string) => Buffer | undefined): DecodeResult {
  if (packet.length > MAX_BEACON_BYTES) return { ok: false, reason: 'too-large' };
  if (packet.length <= BEACON_HEADER_BYTES) return { ok: false, reason: 'too-short' };
  if (!packet.subarray(0, BEACON_MAGIC.length).equals(BEACON_MAGIC)) return { ok: false, reason: 'bad-magic' };
  if (packet[AT_VERSION] !== BEACON_VERSION) return { ok: false, reason: 'bad-version' };
  if (!packet.subarray(AT_SITE, AT_SITE + SITE_TAG_BYTES).equals(siteTag(siteId))) return { ok: false, reason: 'other-site' };
  const bodyAt = beaconBodyOffset(packet);
  if (packet.length <= bodyAt) return { ok: false, reason: 'too-short' };
  const head = packet.subarray(0, AT_MAC);
  const body = packet.subarray(bodyAt);
  if (!timingSafeEqual(packet.subarray(AT_MAC, BEACON_HEADER_BYTES), mac(macKey, head, body))) return { ok: false, reason: 'bad-mac' };
  const sender = packet.subarray(AT_SENDER, AT_MAC).toString('hex');
  let nodeAuthenticated = false;
  const nodeKey = bodyAt > BEACON_HEADER_BYTES ? nodeMacKeyFor?.(sender) : undefined;
  if (nodeKey) {
    if (!timingSafeEqual(packet.subarray(BEACON_HEADER_BYTES, bodyAt), mac(nodeKey, head, body))) return { ok: false, reason: 'bad-node-mac' };
    nodeAuthenticated = true;
  }
  let msg: BeaconMessage;
  try {
    msg = parseBeaconBody(JSON.parse(body.toString('utf8')));
  } catch (e) {
    if (e instanceof SchemaError) return { ok: false, reason: 'malformed', detail: e.message };
    if (e instanceof SyntaxError) return { ok: false, reason: 'malformed', detail: 'body is not JSON' };
    throw e;
  }
  if (msg.site !== siteId || msg.node !== sender) return { ok: false, reason: 'malformed', detail: 'body disagrees with the header' };
  return { ok: true, msg, nodeAuthenticated };
}

export function parseBeaconState(v: unknown, where = 'state'): BeaconState {
  const o = object(v, where, ['role', 'term', 'committed', 'timeline', 'lsn', 'tcpPort', 'pair'], ['name', 'hb']);
  const lsn = str(o, 'lsn', /^[0-9A-Fa-f]{1,8}\/[0-9A-Fa-f]{1,8}$/, where);
  if (!isLsn(lsn)) throw new SchemaError(`${where}.lsn is malformed`);
  const pair = o.pair;
  if (!Array.isArray(pair) || (pair.length !== 0 && pair.length !== 2) || !pair.every((p) => typeof p === 'string' && NODE_ID_RE.test(p))) {
    throw new SchemaError(`${where}.pair is not an empty list or two node ids`);
  }
  const state: BeaconState = {
    role: str(o, 'role', ROLE_RE, where),
    term: int(o, 'term', 0, MAX_TERM, where),
    committed: bool(o, 'committed', where),
    timeline: int(o, 'timeline', 0, 0xffffffff, where),
    lsn,
    tcpPort: int(o, 'tcpPort', 1, 65535, where),
    pair: [...(pair as string[])],
  };
  if (o.name !== undefined) state.name = str(o, 'name', NAME_RE, where);
  if (o.hb !== undefined) state.hb = parseHeartbeatFacts(o.hb, `${where}.hb`);
  return state;
}

const PG_STATES: readonly HeartbeatFacts['pg'][] = ['primary', 'standby', 'down'];
const DAY_MS = 86_400_000;

function parseHeartbeatFacts(v: unknown, where: string): HeartbeatFacts {
  const o = object(v, where, ['pg', 'pgHealthy', 'syncRep', 'handoverForMs', 'peerSilentMs', 'holdsVip'], ['heardSyncRep']);
  if (!PG_STATES.includes(o.pg as HeartbeatFacts['pg'])) throw new SchemaError(`${where}.pg is not primary, standby or down`);
  return {
    pg: o.pg as HeartbeatFacts['pg'],
    pgHealthy: bool(o, 'pgHealthy', where),
    syncRep: bool(o, 'syncRep', where),
    handoverForMs: o.handoverForMs === null ? null : int(o, 'handoverForMs', 0, DAY_MS * 365, where),
    peerSilentMs: int(o, 'peerSilentMs', 0, Number.MAX_SAFE_INTEGER, where),
    holdsVip: bool(o, 'holdsVip', where),
    heardSyncRep: o.heardSyncRep === undefined || o.heardSyncRep === null ? null : bool(o, 'heardSyncRep', where),
  };
}

export function parseBeaconBody(raw: unknown): BeaconMessage {
  const head = object(raw, 'beacon', ['v', 't'], ['site', 'node', 'boot', 'addr', 'seq', 'state', 'to', 'nonce']);
  if (head.v !== BEACON_VERSION) throw new SchemaError('beacon.v is not a supported version');
  const t = head.t;
  const base = ['v', 't', 'site', 'node', 'boot', 'addr'];
  if (t === 'announce') {
    const o = object(raw, 'announce', [...base, 'seq', 'state']);
    return { ...parseBase(o, 'announce'), t, seq: int(o, 'seq', 1, Number.MAX_SAFE_INTEGER, 'announce'), state: parseBeaconState(o.state, 'announce.state') };
  }
  if (t === 'challenge') {
    const o = object(raw, 'challenge', [...base, 'to', 'nonce']);
    return { ...parseBase(o, 'challenge'), t, to: str(o, 'to', NODE_ID_RE, 'challenge'), nonce: str(o, 'nonce', HEX128_RE, 'challenge') };
  }
  if (t === 'response') {
    const o = object(raw, 'response', [...base, 'to', 'nonce', 'state']);
    return {
      ...parseBase(o, 'response'),
      t,
      to: str(o, 'to', NODE_ID_RE, 'response'),
      nonce: str(o, 'nonce', HEX128_RE, 'response'),
      state: parseBeaconState(o.state, 'response.state'),
    };
  }
  throw new SchemaError('beacon.t is not announce, challenge or response');
}

function parseBase(o: Obj, where: string): Base {
  const addr = str(o, 'addr', /^[0-9.]{7,15}$/, where);
  if (isIP(addr) !== 4) throw new SchemaError(`${where}.addr is not an IPv4 address`);
  return { v: BEACON_VERSION, site: str(o, 'site', SITE_ID_RE, where), node: str(o, 'node', NODE_ID_RE, where), boot: str(o, 'boot', HEX128_RE, where), addr };
}

/**
 * Highest announce sequence seen per (node, boot). Bounded: the oldest entries are forgotten,
 * which is safe because an announce only ever triggers a challenge, never trust.
 */
export class ReplayWindow {
  #last = new Map<string, number>();
  constructor(private readonly maxEntries = 256) {}

  /** True (and remembered) when `seq` is newer than anything seen for (node, boot). */
  accept(node: string, boot: string, seq: number): boolean {
    const key = `${node}/${boot}`;
    const last = this.#last.get(key);
    if (last !== undefined && seq <= last) return false;
    this.#last.delete(key);
    this.#last.set(key, seq);
    if (this.#last.size > this.maxEntries) {
      const oldest = this.#last.keys().next().value;
      if (oldest !== undefined) this.#last.delete(oldest);
    }
    return true;
  }

  get size(): number {
    return this.#last.size;
  }
}

/**
 * Single-use challenge nonces with a bounded lifetime measured on a monotonic clock supplied by
 * the caller (milliseconds). A nonce is consumed by the first matching response.
 */
export class NonceBook {
  #pending = new Map<string, { peer: string; at: number }>();
  constructor(
    private readonly lifetimeMs = 5000,
    private readonly maxPending = 64,
  ) {}

  issue(nonce: string, peer: string, now: number): void {
    this.expire(now);
    if (this.#pending.size >= this.maxPending) {
      const oldest = this.#pending.keys().next().value;
      if (oldest !== undefined) this.#pending.delete(oldest);
    }
    this.#pending.set(nonce, { peer, at: now });
  }

  /** True when `nonce` was issued to `peer`, is still fresh, and was not used before. */
  consume(nonce: string, peer: string, now: number): boolean {
    this.expire(now);
    const p = this.#pending.get(nonce);
    if (!p || p.peer !== peer) return false;
    this.#pending.delete(nonce);
    return true;
  }

  /** Most recent issue time of a still-pending challenge to `peer`, if any. */
  pendingSince(peer: string, now: number): number | undefined {
    this.expire(now);
    let at: number | undefined;
    for (const p of this.#pending.values()) if (p.peer === peer && (at === undefined || p.at > at)) at = p.at;
    return at;
  }

  expire(now: number): void {
    for (const [n, p] of this.#pending) if (now - p.at > this.lifetimeMs) this.#pending.delete(n);
  }
}

/**
 * Discovery datagrams: encoding, authentication and strict parsing. Pure.
 *
 * Wire format: "GK8B" (4 bytes) | HMAC-SHA256(beacon-mac key, "GK8B" | body) (32 bytes) | body,
 * where body is a UTF-8 JSON object. Three kinds:
 *  - announce  {v, t:"announce", site, node, boot, seq, state}      broadcast ≈ every second
 *  - challenge {v, t:"challenge", site, node, boot, to, nonce}       unicast reply to an announce
 *  - response  {v, t:"response", site, node, boot, to, nonce, state} unicast answer to a challenge
 * An announce is only a hint: a peer counts as discovered once it answered a fresh, single-use
 * nonce. `seq` strictly increases per (node, boot) so a captured announce replayed is dropped;
 * nothing relies on clocks.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';
import { isLsn } from './election.ts';
import { bool, HEX128_RE, int, NAME_RE, NODE_ID_RE, object, ROLE_RE, SchemaError, SITE_ID_RE, str, type Obj } from './schema.ts';

export const BEACON_VERSION = 1;
export const BEACON_MAGIC = Buffer.from('GK8B', 'ascii');
export const BEACON_MAC_BYTES = 32;
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
}

interface Base {
  v: typeof BEACON_VERSION;
  site: string;
  node: string;
  boot: string;
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
export type RejectReason = 'too-large' | 'too-short' | 'bad-magic' | 'malformed' | 'other-site' | 'bad-mac';

export type DecodeResult = { ok: true; msg: BeaconMessage } | { ok: false; reason: RejectReason; detail?: string };

export function encodeBeacon(msg: BeaconMessage, macKey: Buffer): Buffer {
  const body = Buffer.from(JSON.stringify(msg), 'utf8');
  const mac = createHmac('sha256', macKey).update(BEACON_MAGIC).update(body).digest();
  const out = Buffer.concat([BEACON_MAGIC, mac, body]);
  if (out.length > MAX_BEACON_BYTES) throw new Error(`beacon of ${out.length} bytes exceeds ${MAX_BEACON_BYTES}`);
  return out;
}

/**
 * Authenticates and parses one datagram. The site id is read before the MAC is checked only to
 * tell "another site's pair on this LAN" (normal, dropped quietly) from "same site, wrong secret"
 * (worth a warning); nothing else in an unauthenticated body is used.
 */
export function decodeBeacon(packet: Buffer, macKey: Buffer, siteId: string): DecodeResult {
  if (packet.length > MAX_BEACON_BYTES) return { ok: false, reason: 'too-large' };
  if (packet.length <= BEACON_MAGIC.length + BEACON_MAC_BYTES) return { ok: false, reason: 'too-short' };
  if (!packet.subarray(0, BEACON_MAGIC.length).equals(BEACON_MAGIC)) return { ok: false, reason: 'bad-magic' };
  const mac = packet.subarray(BEACON_MAGIC.length, BEACON_MAGIC.length + BEACON_MAC_BYTES);
  const body = packet.subarray(BEACON_MAGIC.length + BEACON_MAC_BYTES);
  let raw: unknown;
  try {
    raw = JSON.parse(body.toString('utf8'));
  } catch {
    return { ok: false, reason: 'malformed', detail: 'body is not JSON' };
  }
  const site = typeof raw === 'object' && raw !== null ? (raw as Obj).site : undefined;
  if (typeof site === 'string' && site !== siteId) return { ok: false, reason: 'other-site' };
  const expected = createHmac('sha256', macKey).update(BEACON_MAGIC).update(body).digest();
  if (!timingSafeEqual(mac, expected)) return { ok: false, reason: 'bad-mac' };
  try {
    return { ok: true, msg: parseBeaconBody(raw) };
  } catch (e) {
    if (e instanceof SchemaError) return { ok: false, reason: 'malformed', detail: e.message };
    throw e;
  }
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
    term: int(o, 'term', 0, Number.MAX_SAFE_INTEGER, where),
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
  const o = object(v, where, ['pg', 'pgHealthy', 'syncRep', 'handoverForMs', 'peerSilentMs', 'holdsVip']);
  if (!PG_STATES.includes(o.pg as HeartbeatFacts['pg'])) throw new SchemaError(`${where}.pg is not primary, standby or down`);
  return {
    pg: o.pg as HeartbeatFacts['pg'],
    pgHealthy: bool(o, 'pgHealthy', where),
    syncRep: bool(o, 'syncRep', where),
    handoverForMs: o.handoverForMs === null ? null : int(o, 'handoverForMs', 0, DAY_MS * 365, where),
    peerSilentMs: int(o, 'peerSilentMs', 0, Number.MAX_SAFE_INTEGER, where),
    holdsVip: bool(o, 'holdsVip', where),
  };
}

export function parseBeaconBody(raw: unknown): BeaconMessage {
  const head = object(raw, 'beacon', ['v', 't'], ['site', 'node', 'boot', 'seq', 'state', 'to', 'nonce']);
  if (head.v !== BEACON_VERSION) throw new SchemaError('beacon.v is not a supported version');
  const t = head.t;
  const base = ['v', 't', 'site', 'node', 'boot'];
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
  return { v: BEACON_VERSION, site: str(o, 'site', SITE_ID_RE, where), node: str(o, 'node', NODE_ID_RE, where), boot: str(o, 'boot', HEX128_RE, where) };
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

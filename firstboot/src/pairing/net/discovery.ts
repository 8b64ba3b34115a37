/**
 * LAN discovery of the pair peer (I/O adapter over node:dgram; the protocol logic is in
 * ../core/beacon.ts).
 *
 * Every `intervalMs` the node broadcasts an authenticated ANNOUNCE. On a fresh announce from an
 * unknown (or re-booted, or not recently verified) peer it unicasts a CHALLENGE with a single-use
 * random nonce; the peer counts as discovered only once it answered that nonce with a RESPONSE.
 * Sockets: one bound to 0.0.0.0:port receives broadcasts; a second socket bound to
 * bindAddress:port (the interface address) sends, so 255.255.255.255 leaves through that interface
 * (Linux picks the device owning the source address for limited broadcast).
 *
 * Cheap to abuse? No: a datagram costs one HMAC before anything else is read (../core/beacon.ts);
 * one whose authenticated sender address is not its source address is dropped, so nothing is ever
 * sent to an address a datagram merely claims; challenges and responses this node sends are
 * limited to a small budget per second whatever arrives; rejections are logged at most once per
 * reason and source, and only a bounded number of lines per interval in all.
 */
import { randomBytes } from 'node:crypto';
import { createSocket, type RemoteInfo, type Socket } from 'node:dgram';
import type { Logger } from '../../adapters/output.ts';
import {
  BEACON_VERSION,
  decodeBeacon,
  DEFAULT_BEACON_PORT,
  encodeBeacon,
  NonceBook,
  ReplayWindow,
  type Announce,
  type BeaconMessage,
  type BeaconState,
  type Challenge,
  type Response,
} from '../core/beacon.ts';
import type { LinkKeys, PairKeys } from '../core/keys.ts';
import { pairFormedReason } from '../core/protocol.ts';
import { RateLimitedLog } from './ratelog.ts';

export interface DiscoveredPeer {
  nodeId: string;
  bootId: string;
  /** Source address of the verified response. */
  address: string;
  state: BeaconState;
}

/** The latest authenticated state a verified peer sent, and when (performance.now() ms). */
export interface HeardPeer {
  nodeId: string;
  bootId: string;
  address: string;
  state: BeaconState;
  at: number;
}

export interface BeaconSocketOptions {
  siteId: string;
  keys: PairKeys;
  nodeId: string;
  /** Interface address: datagrams are sent from it and name it as their sender address. */
  bindAddress: string;
  /** Where announces go. Default 255.255.255.255. */
  broadcastAddress?: string;
  /** UDP port. Default 7946. */
  port?: number;
  intervalMs?: number;
  /** A peer not heard from for this long is dropped from peers(). Default 5 × interval. */
  peerTtlMs?: number;
  /** Re-challenge a verified peer after this long. Default 15 s. */
  reverifyMs?: number;
  /** Current state to advertise; called for every announce and response. `pair` is filled in by discovery. */
  getState(): Omit<BeaconState, 'pair'>;
  log: Logger;
}

/** Finding the pair partner and admitting only it: what the pairing reads, and where it declares the pair it formed. */
export interface DiscoveryView {
  readonly bootId: string;
  /** Verified, live peers (only the pair partner once setPair was called). */
  peers(): DiscoveredPeer[];
  /** Called when a peer is first verified, or verified again after it rebooted. Returns an unsubscribe. */
  onPeer(cb: (peer: DiscoveredPeer) => void): () => void;
  /** Declares the formed pair (this node and its partner). Other nodes are then ignored and refused. */
  setPair(ids: readonly [string, string]): void;
  /** Forgets the formed pair (a survivor admitting a replacement): others are discovered and admitted again. */
  clearPair(): void;
  pair(): readonly string[];
  /** Refusal reason for a node that is not in the formed pair; undefined when it may pair. */
  refusalFor(nodeId: string): string | undefined;
}

/** The formed pair's heartbeats, which the same beacons carry once the partner's link keys are pinned. */
export interface HeartbeatView {
  /**
   * The last state heard from `nodeId` (announce of its verified boot, or its verified response),
   * kept however long ago: the liveness loop measures the silence itself.
   */
  heard(nodeId: string): HeardPeer | undefined;
  /**
   * Pins the pair partner's link keys (after pairing): every datagram then carries this node's node
   * MAC, and the partner's heartbeats count only when they carry its own.
   */
  setLink(peerNodeId: string, keys: LinkKeys): void;
  /** Sends an announce now (besides the periodic ones): a changed role, term or VIP is worth it. */
  announce(): void;
}

/** One authenticated UDP beacon socket and its two views: discovery for the pairing, heartbeat for liveness. */
export interface BeaconSocket {
  readonly discovery: DiscoveryView;
  readonly heartbeat: HeartbeatView;
  close(): Promise<void>;
}

interface PeerRecord extends DiscoveredPeer {
  verifiedAt: number;
  lastSeen: number;
  /** Verified through the pinned partner's node MAC (not just the pair secret). */
  nodeAuthenticated: boolean;
}

/** The pinned partner: its id, the key its node MACs verify with, and this node's own node MAC key. */
interface Link {
  peer: string;
  recvMac: Buffer;
  sendMac: Buffer;
}

const REJECT_TEXT: Record<string, string> = {
  'bad-mac': 'bad MAC (different site pair secret?)',
  replay: 'replayed announce (sequence not newer than one already seen)',
  malformed: 'malformed datagram',
  'too-large': 'oversized datagram',
  'too-short': 'truncated datagram',
  'bad-magic': 'not a geminik8s beacon',
  'stale-nonce': 'response to an unknown, used or expired challenge',
  'bad-version': 'beacon of another protocol version',
  'address-mismatch': 'source address differs from the authenticated sender address (forged or reflected)',
  'reply-budget': 'challenge/response budget for this second spent (flood?)',
  'bad-node-mac': "bad node MAC: not the paired peer's node key (forged with the pair secret?)",
  'no-node-mac': 'claims to be the paired peer without its node MAC (only the pair secret?): not trusted for liveness',
};

/**
 * At most `perSecond` replies (challenges and responses) in any second: a flood of valid-looking
 * traffic can never make this node a packet source of its own.
 */
class ReplyBudget {
  #windowStart = 0;
  #used = 0;
  constructor(private readonly perSecond = 20) {}
  take(now: number): boolean {
    if (now - this.#windowStart >= 1000) {
      this.#windowStart = now;
      this.#used = 0;
    }
    if (this.#used >= this.perSecond) return false;
    this.#used++;
    return true;
  }
}

export async function openBeaconSocket(opts: BeaconSocketOptions): Promise<BeaconSocket> {
  const port = opts.port ?? DEFAULT_BEACON_PORT;
  const target = opts.broadcastAddress ?? '255.255.255.255';
  const intervalMs = opts.intervalMs ?? 1000;
  const peerTtlMs = opts.peerTtlMs ?? intervalMs * 5;
  const reverifyMs = opts.reverifyMs ?? 15_000;
  const macKey = opts.keys.beaconMac;
  const { log, nodeId, siteId } = opts;
  const bootId = randomBytes(16).toString('hex');
  const rlog = new RateLimitedLog(log);
  const replay = new ReplayWindow();
  const nonces = new NonceBook();
  const peers = new Map<string, PeerRecord>();
  const lastHeard = new Map<string, HeardPeer>();
  const listeners = new Set<(p: DiscoveredPeer) => void>();
  const ignoredLogged = new Set<string>();
  let pair: string[] = [];
  let link: Link | undefined;
  let seq = 0;
  let closed = false;

  const bindSocket = (address: string): Promise<Socket> =>
    new Promise((resolve, reject) => {
      const s = createSocket({ type: 'udp4', reuseAddr: true });
      s.once('error', reject);
      s.bind({ port, address, exclusive: false }, () => {
        s.off('error', reject);
        s.setBroadcast(true);
        s.on('error', (e) => log.event('warn', 'pairing-udp-error', { address, port, error: e.message }));
        resolve(s);
      });
    });

  const recv = await bindSocket('0.0.0.0');
  let send: Socket;
  try {
    send = await bindSocket(opts.bindAddress);
  } catch (e) {
    recv.close();
    throw e;
  }
  const replies = new ReplyBudget();

  const state = (): BeaconState => ({ ...opts.getState(), pair: [...pair] });
  const base = () => ({ v: BEACON_VERSION, site: siteId, node: nodeId, boot: bootId, addr: opts.bindAddress }) as const;
  const transmit = (msg: BeaconMessage, address: string, toPort: number) => {
    if (closed) return;
    send.send(encodeBeacon(msg, macKey, link?.sendMac), toPort, address, (err) => {
      if (err) rlog.event(`send|${address}|${err.message}`, 'warn', 'pairing-beacon-send-failed', { to: address, port: toPort, error: err.message });
    });
  };

  const announce = () => {
    seq += 1;
    const msg: Announce = { ...base(), t: 'announce', seq, state: state() };
    transmit(msg, target, port);
  };

  const reject = (rinfo: RemoteInfo, reason: string, fields: Record<string, unknown> = {}) => {
    const quiet = reason === 'other-site';
    rlog.event(`${rinfo.address}|${reason}`, quiet ? 'info' : 'warn', 'pairing-beacon-rejected', {
      from: rinfo.address,
      reason,
      message: `beacon from ${rinfo.address} rejected: ${REJECT_TEXT[reason] ?? reason}`,
      ...fields,
    });
  };

  const challenge = (peer: string, rinfo: RemoteInfo) => {
    const now = performance.now();
    const pendingAt = nonces.pendingSince(peer, now);
    if (pendingAt !== undefined && now - pendingAt < intervalMs) return;
    if (!replies.take(now)) return reject(rinfo, 'reply-budget');
    const nonce = randomBytes(16).toString('hex');
    nonces.issue(nonce, peer, now);
    const msg: Challenge = { ...base(), t: 'challenge', to: peer, nonce };
    transmit(msg, rinfo.address, rinfo.port);
  };

  /**
   * Whether a datagram from `node` may update what this node believes of it. For the pinned partner
   * only node-authenticated ones may (heartbeats, roles and terms drive failover); a datagram with
   * the pair secret alone is at most a discovery hint, and only while no authenticated record is live.
   */
  const trusted = (node: string, nodeAuthenticated: boolean): boolean => link?.peer !== node || nodeAuthenticated;

  const verified = (msg: Response, rinfo: RemoteInfo, nodeAuthenticated: boolean) => {
    const now = performance.now();
    const prev = peers.get(msg.node);
    if (!trusted(msg.node, nodeAuthenticated) && prev?.nodeAuthenticated && now - prev.lastSeen <= peerTtlMs) return;
    const rec: PeerRecord = { nodeId: msg.node, bootId: msg.boot, address: rinfo.address, state: msg.state, verifiedAt: now, lastSeen: now, nodeAuthenticated };
    peers.set(msg.node, rec);
    if (trusted(msg.node, nodeAuthenticated))
      lastHeard.set(msg.node, { nodeId: msg.node, bootId: msg.boot, address: rinfo.address, state: msg.state, at: now });
    const fresh = !prev || prev.bootId !== msg.boot;
    if (pair.length === 2 && !pair.includes(msg.node)) {
      const key = `${msg.node}/${msg.boot}`;
      if (!ignoredLogged.has(key)) {
        ignoredLogged.add(key);
        log.event('warn', 'pairing-third-node-ignored', {
          peer: msg.node,
          address: rinfo.address,
          message: `ignoring third node ${msg.node} at ${rinfo.address}: ${pairFormedReason(pair)}`,
        });
      }
      return;
    }
    if (!fresh) return;
    log.event('info', 'pairing-peer-discovered', {
      peer: msg.node,
      bootId: msg.boot,
      address: rinfo.address,
      role: msg.state.role,
      term: msg.state.term,
      committed: msg.state.committed,
    });
    const pub = publicPeer(rec);
    for (const cb of listeners) {
      try {
        cb(pub);
      } catch (e) {
        log.event('error', 'pairing-peer-callback-failed', { error: (e as Error).message });
      }
    }
  };

  const onMessage = (packet: Buffer, rinfo: RemoteInfo) => {
    if (closed) return;
    const r = decodeBeacon(packet, macKey, siteId, (sender) => (sender === link?.peer ? link.recvMac : undefined));
    if (!r.ok) return reject(rinfo, r.reason, r.detail !== undefined ? { detail: r.detail } : {});
    const msg = r.msg;
    if (msg.addr !== rinfo.address) return reject(rinfo, 'address-mismatch', { peer: msg.node, claimed: msg.addr });
    const nodeAuthenticated = r.nodeAuthenticated;
    if (!trusted(msg.node, nodeAuthenticated)) reject(rinfo, 'no-node-mac', { peer: msg.node });
    if (msg.node === nodeId) {
      if (msg.boot !== bootId) {
        rlog.event(`dup|${msg.boot}`, 'error', 'pairing-duplicate-node-id', {
          from: rinfo.address,
          message: `another box at ${rinfo.address} uses this box's node id ${nodeId} (cloned disk?); it will not be paired`,
        });
      }
      return;
    }
    const now = performance.now();
    switch (msg.t) {
      case 'announce': {
        // Only what may be believed advances the replay window: forged high sequence numbers
        // must not make the partner's real announces look like replays.
        if (!trusted(msg.node, nodeAuthenticated)) {
          const p = peers.get(msg.node);
          return p?.nodeAuthenticated && now - p.lastSeen <= peerTtlMs ? undefined : challenge(msg.node, rinfo);
        }
        if (!replay.accept(msg.node, msg.boot, msg.seq)) return reject(rinfo, 'replay', { peer: msg.node, seq: msg.seq });
        const p = peers.get(msg.node);
        if (p && p.bootId === msg.boot && p.address === rinfo.address && p.nodeAuthenticated === nodeAuthenticated) {
          p.lastSeen = now;
          p.state = msg.state;
          lastHeard.set(msg.node, { nodeId: msg.node, bootId: msg.boot, address: rinfo.address, state: msg.state, at: now });
          if (now - p.verifiedAt < reverifyMs) return;
        }
        return challenge(msg.node, rinfo);
      }
      case 'challenge': {
        if (msg.to !== nodeId) return;
        if (!replies.take(now)) return reject(rinfo, 'reply-budget');
        const resp: Response = { ...base(), t: 'response', to: msg.node, nonce: msg.nonce, state: state() };
        return transmit(resp, rinfo.address, rinfo.port);
      }
      case 'response': {
        if (msg.to !== nodeId) return;
        if (!nonces.consume(msg.nonce, msg.node, now)) return reject(rinfo, 'stale-nonce', { peer: msg.node });
        return verified(msg, rinfo, nodeAuthenticated);
      }
    }
  };
  recv.on('message', onMessage);
  if (send !== recv) send.on('message', onMessage);

  const expiry = () => {
    const now = performance.now();
    for (const [id, p] of peers) {
      if (now - p.lastSeen > peerTtlMs) {
        peers.delete(id);
        log.event('info', 'pairing-peer-lost', { peer: id, address: p.address, silentMs: Math.round(now - p.lastSeen) });
      }
    }
  };
  announce();
  const timer = setInterval(() => {
    expiry();
    announce();
  }, intervalMs);
  log.event('info', 'pairing-discovery-started', { nodeId, bootId, port, target, bindAddress: opts.bindAddress });

  const discovery: DiscoveryView = {
    bootId,
    peers() {
      const now = performance.now();
      return [...peers.values()].filter((p) => now - p.lastSeen <= peerTtlMs && (pair.length !== 2 || pair.includes(p.nodeId))).map(publicPeer);
    },
    onPeer(cb) {
      listeners.add(cb);
      return () => listeners.delete(cb);
    },
    setPair(ids) {
      if (ids[0] === ids[1]) throw new Error('a pair needs two distinct node ids');
      pair = [...ids].sort();
      log.event('info', 'pairing-pair-set', { pair });
    },
    clearPair() {
      pair = [];
      log.event('info', 'pairing-pair-cleared', {});
    },
    pair: () => pair,
    refusalFor(id) {
      return pair.length === 2 && !pair.includes(id) ? pairFormedReason(pair) : undefined;
    },
  };
  const heartbeat: HeartbeatView = {
    heard: (id) => lastHeard.get(id),
    setLink(peerNodeId, keys) {
      if (link?.peer === peerNodeId) return;
      link = { peer: peerNodeId, recvMac: keys.beaconMac(peerNodeId), sendMac: keys.beaconMac(nodeId) };
      // What was heard before the link was pinned was authenticated by the pair secret alone.
      lastHeard.delete(peerNodeId);
      const p = peers.get(peerNodeId);
      if (p) p.nodeAuthenticated = false;
      log.event('info', 'pairing-link-pinned', { peer: peerNodeId });
    },
    announce,
  };
  return {
    discovery,
    heartbeat,
    async close() {
      if (closed) return;
      closed = true;
      clearInterval(timer);
      const closing = [recv, send].filter((s, i, all) => all.indexOf(s) === i).map((s) => new Promise<void>((r) => s.close(() => r())));
      await Promise.all(closing);
    },
  };
}

function publicPeer(p: PeerRecord): DiscoveredPeer {
  return { nodeId: p.nodeId, bootId: p.bootId, address: p.address, state: { ...p.state, pair: [...p.state.pair] } };
}

/**
 * Two-sided agreement over an open pairing channel, and the discover → dial/accept → negotiate
 * loop the orchestrator runs on first boot (and again after any restart: re-running it with the
 * persisted candidate re-confirms the same pair).
 */
import type { PairRole } from '../../core/hostmeta.ts';
import type { Logger } from '../../adapters/output.ts';
import { decidePair, shouldDial, type Candidate, type PairDecision } from '../core/election.ts';
import type { LinkKeys, NodeKey, PairKeys } from '../core/keys.ts';
import { CHANNEL_VERSION, type ChannelMessage } from '../core/protocol.ts';
import { ChannelError, connectChannel, HandshakeRefusedError, type Channel, type ChannelServer } from './channel.ts';
import type { DiscoveredPeer, DiscoveryView } from './discovery.ts';

export interface PairResult extends PairDecision {
  role: PairRole;
  /** The peer's candidate as it sent it. */
  peer: Candidate;
  /** Address the peer was reached at. */
  peerAddress: string;
  /** The peer's node public key, proven on this channel (to be pinned). */
  peerKey: string;
  /** Keys shared with the peer from now on. */
  link: LinkKeys;
}

export class PairingRefusedError extends Error {}
export class DisagreementError extends Error {}
/** The peer did not prove the node key this node pinned for it (someone holding only the pair secret?). */
export class NodeKeyError extends Error {}

/**
 * Cluster secrets as sent by the leader: any JSON object (passwords, tokens, CA...), opaque to
 * pairing and never logged. The follower receives it as `unknown` and must validate it.
 */
export type SecretsPayload = object;

export interface NegotiateOptions {
  siteId: string;
  self: Candidate;
  preferredLeader?: string;
  /**
   * Called only when this node is the leader, to get the secrets to hand over. It should return
   * secrets already persisted on this box, so a re-run sends the same ones. `peer` is the
   * follower as it presented itself on this authenticated channel (certificates need its address).
   */
  secretsIfLeader(decision: PairDecision, peer: Candidate & { address: string }): SecretsPayload | Promise<SecretsPayload>;
  /**
   * Called only on the follower with the leader's payload (untrusted JSON object: validate it):
   * must persist the secrets durably before resolving; the ack follows. Throwing aborts the
   * pairing (the leader is told, no ack is sent).
   */
  onSecrets(secrets: unknown, decision: PairDecision): Promise<void>;
  /** This node's identity key. */
  nodeKey: NodeKey;
  /** The node key pinned for a peer at an earlier pairing, if any: the peer must prove that one. */
  pinnedKey(peerNodeId: string): string | undefined;
  /**
   * A box this node will not pair with, whatever the election says (the survivor of a replaced
   * box admits only a fresh one: core/replacement.ts): the refusal, or undefined to go on.
   */
  refuseCandidate?(peer: Candidate): string | undefined;
  log: Logger;
  /** Per-step receive timeout. Default 10 s. */
  stepTimeoutMs?: number;
}

async function expect<T extends ChannelMessage['t']>(ch: Channel, t: T, timeoutMs: number): Promise<Extract<ChannelMessage, { t: T }>> {
  const m = await ch.receive(timeoutMs);
  if (m.t === 'refused') throw new PairingRefusedError(`pairing refused by peer ${ch.peerNodeId}: ${m.reason}`);
  if (m.t === 'abort') throw new DisagreementError(`peer ${ch.peerNodeId} aborted pairing: ${m.reason}`);
  if (m.t !== t) throw new ChannelError(`expected ${t} from peer ${ch.peerNodeId}, got ${m.t}`);
  return m as Extract<ChannelMessage, { t: T }>;
}

/**
 * Runs the agreement on an open channel (same code on both sides: the protocol is symmetric):
 * exchange candidates, each computes the decision, exchange proposals, proceed only when they
 * match; then the leader sends the secrets and waits for the follower's ack (sent only after
 * `onSecrets` persisted them). Closes the channel. Throws PairingRefusedError or
 * DisagreementError or ChannelError; nothing is decided unless it resolves.
 */
export async function negotiate(channel: Channel, opts: NegotiateOptions): Promise<PairResult> {
  const step = opts.stepTimeoutMs ?? 10_000;
  const { log } = opts;
  try {
    channel.send({ t: 'hello', v: CHANNEL_VERSION, site: opts.siteId, candidate: opts.self, key: opts.nodeKey.publicKey });
    const hello = await expect(channel, 'hello', step);
    const peer = hello.candidate;
    if (hello.site !== opts.siteId) throw new DisagreementError(`peer ${peer.nodeId} belongs to site ${hello.site}`);
    if (peer.nodeId !== channel.peerNodeId) throw new DisagreementError(`peer identified as ${channel.peerNodeId} but claims node id ${peer.nodeId}`);
    if (peer.nodeId === opts.self.nodeId) throw new DisagreementError(`peer uses this box's node id ${peer.nodeId} (cloned disk?)`);
    const refusal = opts.refuseCandidate?.(peer);
    if (refusal !== undefined) {
      channel.send({ t: 'refused', reason: 'not admitted: this pair admits only a freshly flashed replacement' });
      throw new PairingRefusedError(`not pairing with ${peer.nodeId} at ${channel.remoteAddress}: ${refusal}`);
    }

    // Each side proves the private half of the node key it presents, bound to this TLS session (a
    // relay between two sessions cannot pass the proof on). A paired node also requires the key it
    // pinned: the pair secret that opened this channel is not enough to speak for its partner.
    const pinned = opts.pinnedKey(peer.nodeId);
    if (pinned !== undefined && pinned !== hello.key) {
      channel.send({ t: 'abort', reason: 'node key differs from the one pinned at pairing' });
      throw new NodeKeyError(
        `peer ${peer.nodeId} at ${channel.remoteAddress} presented another node key than the one pinned at pairing (a box holding only the pair secret?)`,
      );
    }
    let link: LinkKeys;
    try {
      link = opts.nodeKey.linkWith(hello.key, opts.siteId);
    } catch (e) {
      throw new NodeKeyError(`peer ${peer.nodeId}: ${(e as Error).message}`);
    }
    const ekm = channel.keyingMaterial();
    channel.send({ t: 'auth', proof: link.channelProof(ekm, opts.self.nodeId) });
    const auth = await expect(channel, 'auth', step);
    if (!link.checkChannelProof(auth.proof, ekm, peer.nodeId))
      throw new NodeKeyError(`peer ${peer.nodeId} at ${channel.remoteAddress} failed to prove its node key`);

    const decision = decidePair(opts.self, peer, opts.preferredLeader);
    channel.send({ t: 'propose', ...decision });
    const theirs = await expect(channel, 'propose', step);
    if (theirs.leader !== decision.leader || theirs.follower !== decision.follower || theirs.term !== decision.term) {
      const reason = `proposals differ: mine leader=${decision.leader} term=${decision.term}, peer's leader=${theirs.leader} term=${theirs.term} (different site files?)`;
      log.event('error', 'pairing-disagreement', { peer: peer.nodeId, message: reason });
      channel.send({ t: 'abort', reason: 'proposals differ' });
      throw new DisagreementError(reason);
    }
    const role = decision.leader === opts.self.nodeId ? 'leader' : 'follower';
    log.event('info', 'pairing-agreed', { peer: peer.nodeId, leader: decision.leader, follower: decision.follower, term: decision.term, role });

    if (role === 'leader') {
      const secrets = await opts.secretsIfLeader(decision, { ...peer, address: channel.remoteAddress });
      channel.send({ t: 'secrets', term: decision.term, secrets });
      const ack = await expect(channel, 'ack', step);
      if (ack.term !== decision.term) throw new DisagreementError(`peer acknowledged term ${ack.term}, expected ${decision.term}`);
      log.event('info', 'pairing-secrets-delivered', { peer: peer.nodeId, term: decision.term });
    } else {
      const m = await expect(channel, 'secrets', step);
      if (m.term !== decision.term) throw new DisagreementError(`leader sent secrets for term ${m.term}, expected ${decision.term}`);
      try {
        await opts.onSecrets(m.secrets, decision);
      } catch (e) {
        log.event('error', 'pairing-secrets-rejected', { peer: peer.nodeId, term: decision.term, error: (e as Error).message });
        channel.send({ t: 'abort', reason: 'follower could not accept or persist the secrets' });
        throw e;
      }
      channel.send({ t: 'ack', term: decision.term });
      log.event('info', 'pairing-secrets-received', { peer: peer.nodeId, term: decision.term });
    }
    return { ...decision, role, peer, peerAddress: channel.remoteAddress, peerKey: hello.key, link };
  } finally {
    channel.close();
  }
}

export interface RunPairingOptions extends Omit<NegotiateOptions, 'self'> {
  discovery: DiscoveryView;
  server: ChannelServer;
  keys: PairKeys;
  /** Current candidate (read again for each attempt: progress changes as the node works). */
  self(): Candidate | Promise<Candidate>;
  /** Overall bound; default: no bound (until `signal` aborts). */
  timeoutMs?: number;
  signal?: AbortSignal;
  /** Pause between failed attempts. Default 1 s. */
  retryMs?: number;
}

/** The partner to pair with: the pair partner once set, else the lowest node id not paired elsewhere. */
export function choosePeer(selfId: string, peers: readonly DiscoveredPeer[], pair: readonly string[]): DiscoveredPeer | undefined {
  const eligible = peers.filter((p) => (pair.length === 2 ? pair.includes(p.nodeId) : p.state.pair.length === 0 || p.state.pair.includes(selfId)));
  return eligible.sort((a, b) => (a.nodeId < b.nodeId ? -1 : 1))[0];
}

/**
 * Discover → (lower node id dials, the other accepts) → negotiate, retried until it succeeds.
 * On success it declares the pair to discovery (third nodes are then ignored and refused).
 * Safe to call again after a crash: give `self()` the persisted term/leader/committed state.
 */
export async function runPairing(opts: RunPairingOptions): Promise<PairResult> {
  const { discovery, server, log } = opts;
  const retryMs = opts.retryMs ?? 1000;
  const deadline = opts.timeoutMs === undefined ? Infinity : performance.now() + opts.timeoutMs;
  const blockedLogged = new Set<string>();
  const sleep = (ms: number) => new Promise((r) => setTimeout(r, Math.max(0, Math.min(ms, deadline - performance.now()))));
  let waitingFor: string | undefined;

  while (performance.now() < deadline) {
    if (opts.signal?.aborted) throw new Error('pairing aborted');
    const self = await opts.self();
    const all = discovery.peers();
    const peer = choosePeer(self.nodeId, all, discovery.pair());
    if (!peer) {
      for (const p of all) {
        if (p.state.pair.length === 2 && !p.state.pair.includes(self.nodeId) && !blockedLogged.has(p.nodeId)) {
          blockedLogged.add(p.nodeId);
          log.event('warn', 'pairing-blocked', {
            peer: p.nodeId,
            message: `peer ${p.nodeId} at ${p.address}: ${`pair already formed (${p.state.pair.join(',')}); use replace-node`}`,
          });
        }
      }
      // Not discovered anyone usable (yet): a lower-id peer that discovered us may already be
      // dialling (its TLS-PSK identity authenticates it; the server's admit check applies).
      const inbound = await server.nextSession(Math.max(0, Math.min(250, deadline - performance.now())));
      if (inbound && !shouldDial(inbound.peerNodeId, self.nodeId)) {
        inbound.send({ t: 'refused', reason: 'the lower node id dials' });
        inbound.close();
      } else if (inbound) {
        try {
          const result = await negotiate(inbound, { ...opts, self });
          discovery.setPair([result.leader, result.follower]);
          return result;
        } catch (e) {
          log.event('warn', 'pairing-attempt-failed', { peer: inbound.peerNodeId, kind: (e as Error).constructor.name, message: (e as Error).message });
        }
      }
      continue;
    }
    let channel: Channel | undefined;
    try {
      if (shouldDial(self.nodeId, peer.nodeId)) {
        log.event('info', 'pairing-dialing', { peer: peer.nodeId, address: peer.address, port: peer.state.tcpPort });
        channel = await connectChannel({ keys: opts.keys, nodeId: self.nodeId, peerNodeId: peer.nodeId, host: peer.address, port: peer.state.tcpPort, log });
      } else {
        if (waitingFor !== peer.nodeId) {
          waitingFor = peer.nodeId;
          log.event('info', 'pairing-awaiting-peer', { peer: peer.nodeId, address: peer.address });
        }
        channel = await server.nextSession(Math.min(3000, deadline - performance.now()), peer.nodeId);
        if (!channel) continue;
      }
      const result = await negotiate(channel, { ...opts, self });
      discovery.setPair([result.leader, result.follower]);
      return result;
    } catch (e) {
      const err = e as Error;
      const refused = e instanceof PairingRefusedError || e instanceof HandshakeRefusedError || e instanceof NodeKeyError;
      log.event('warn', 'pairing-attempt-failed', { peer: peer.nodeId, kind: err.constructor.name, message: err.message });
      if (refused) await sleep(retryMs * 5);
      else await sleep(retryMs);
    }
  }
  throw new Error(`pairing did not complete within ${opts.timeoutMs} ms`);
}

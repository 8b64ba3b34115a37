/**
 * After the pair formed, a peer that restarts (power cut, crash, upgrade) re-runs pairing from
 * its persisted state and needs this side to answer: the lower node id dials every new boot of
 * the peer (its bootId changes), the other side keeps accepting. The outcome must match what this
 * node runs at that moment; a different answer is logged loudly (the liveness loop owns what
 * happens next).
 */
import {
  connectChannel,
  negotiate,
  shouldDial,
  type Candidate,
  type ChannelServer,
  type DiscoveryView,
  type NegotiateOptions,
  type PairKeys,
} from '../pairing/index.ts';

export interface ReconfirmOptions extends Omit<NegotiateOptions, 'self'> {
  discovery: DiscoveryView;
  server: ChannelServer;
  keys: PairKeys;
  self(): Promise<Candidate>;
  nodeId: string;
  peerNodeId: string;
  /** The role and term this node runs now (they change with failovers). */
  current(): { role: string; term: number };
  signal: AbortSignal;
}

export async function keepConfirmingPair(o: ReconfirmOptions): Promise<void> {
  const { discovery, log } = o;
  const dialer = shouldDial(o.nodeId, o.peerNodeId);
  let confirmedBoot = discovery.peers().find((p) => p.nodeId === o.peerNodeId)?.bootId;
  while (!o.signal.aborted) {
    try {
      let channel: Parameters<typeof negotiate>[0];
      if (dialer) {
        const peer = discovery.peers().find((p) => p.nodeId === o.peerNodeId);
        if (!peer || peer.bootId === confirmedBoot) {
          await new Promise((r) => setTimeout(r, 1000));
          continue;
        }
        channel = await connectChannel({ keys: o.keys, nodeId: o.nodeId, peerNodeId: peer.nodeId, host: peer.address, port: peer.state.tcpPort, log });
        confirmedBoot = peer.bootId;
      } else {
        const session = await o.server.nextSession(1000, o.peerNodeId);
        if (!session) continue;
        channel = session;
      }
      const result = await negotiate(channel, { ...o, self: await o.self() });
      const now = o.current();
      const same = result.role === now.role && result.term === now.term;
      log.event(same ? 'info' : 'error', same ? 'pair-reconfirmed' : 'pair-reconfirm-mismatch', {
        peer: o.peerNodeId,
        role: result.role,
        term: result.term,
        expectedRole: now.role,
        expectedTerm: now.term,
      });
    } catch (e) {
      if (dialer) confirmedBoot = undefined;
      log.event('warn', 'pair-reconfirm-failed', { peer: o.peerNodeId, error: (e as Error).message });
      await new Promise((r) => setTimeout(r, 1000));
    }
  }
}

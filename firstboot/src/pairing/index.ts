/**
 * Pairing: discovery of the peer box, leader election with two-sided agreement, and the hand-over
 * of cluster secrets over a TLS-PSK channel. `core/` is pure (no I/O), `net/` does the sockets.
 */
export { decodePairSecret, derivePairKeys, PairKeys, KEY_LABELS, NodeKey, LinkKeys } from './core/keys.ts';
export { decideLeader, decidePair, shouldDial, type Candidate, type PairDecision } from './core/election.ts';
export { DEFAULT_BEACON_PORT, type BeaconState } from './core/beacon.ts';
export { MAX_FRAME_BYTES } from './core/frames.ts';
export { pairFormedReason } from './core/protocol.ts';
export { openBeaconSocket, type BeaconSocket, type BeaconSocketOptions, type DiscoveredPeer, type DiscoveryView, type HeartbeatView } from './net/discovery.ts';
export {
  startChannelServer,
  connectChannel,
  DEFAULT_CHANNEL_PORT,
  ChannelError,
  HandshakeRefusedError,
  type Channel,
  type ChannelServer,
  type ChannelServerOptions,
  type ConnectOptions,
} from './net/channel.ts';
export {
  negotiate,
  runPairing,
  choosePeer,
  PairingRefusedError,
  DisagreementError,
  NodeKeyError,
  type SecretsPayload,
  type NegotiateOptions,
  type PairResult,
  type RunPairingOptions,
} from './net/negotiate.ts';

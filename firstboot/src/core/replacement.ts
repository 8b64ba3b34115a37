/**
 * Replacing a dead box (`geminik8s replace-node`), as rules: when the survivor may open its door to
 * a new box, which box may come in, and when the door closes again. Pure; cluster/run.ts carries
 * them out.
 *
 * The survivor must be the leader: it holds every acknowledged write, and the new box copies it
 * (a base backup) as its follower. Its peer must have been silent for REPLACE_AFTER_SILENT_MS,
 * far past every failover timer (liveness/core/types.ts): a peer heard more recently is alive, and
 * replacing a live box would leave two boxes that both believe they are this pair's. Only a box
 * without cluster data comes in (a freshly flashed one: not committed), never the replaced box
 * itself; and if the replaced box is heard again while the door is open, it closes.
 */
import type { Candidate } from '../pairing/core/election.ts';
import type { Phase } from './hostmeta.ts';

/** How long the peer must have been silent before its replacement is admitted. */
export const REPLACE_AFTER_SILENT_MS = 30_000;

export interface ReplacementFacts {
  phase: Phase;
  /** The live role (liveness), or the persisted one before the liveness loop runs. */
  role: string;
  /** How long the peer has been silent; undefined before the liveness loop has measured it. */
  peerSilentMs: number | undefined;
}

/** Why this box may not admit a replacement now; undefined when it may. */
export function replacementRefusal(f: ReplacementFacts): string | undefined {
  if (f.phase !== 'provisioned') return `this box is ${f.phase}, not a provisioned member of a pair: there is no dead peer to replace`;
  if (f.role !== 'leader')
    return `this box is ${f.role}: the survivor must be the leader (the new box copies every write from it); wait until it has taken over`;
  if (f.peerSilentMs === undefined) return 'this box has not measured its peer yet; ask again in a few seconds';
  if (f.peerSilentMs < REPLACE_AFTER_SILENT_MS)
    return `the peer was heard ${(f.peerSilentMs / 1000).toFixed(1)} s ago, so it is alive: replace-node replaces a dead box (power it off or unplug it, then ask again once it has been silent ${REPLACE_AFTER_SILENT_MS / 1000} s)`;
  return undefined;
}

/** Why a box that reaches the survivor's open door is not let in; undefined when it is the replacement. */
export function replacementCandidateRefusal(c: Candidate, replaced: string): string | undefined {
  if (c.nodeId === replaced) return `node ${c.nodeId} is the box being replaced`;
  if (c.committed) return `node ${c.nodeId} holds cluster data (term ${c.term}): only a freshly flashed box joins as the replacement`;
  return undefined;
}

/** The replaced box was heard again: the admission ends and the pair stays as it was. */
export function replacedPeerIsBack(peerSilentMs: number): boolean {
  return peerSilentMs < REPLACE_AFTER_SILENT_MS;
}

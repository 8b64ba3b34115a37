/**
 * Leader election between the two boxes of a pair. Pure and deterministic: both boxes run it on
 * the same two candidates (exchanged over the authenticated channel) and must reach the same
 * answer, whichever side is `a`.
 *
 * Order (DESIGN.md "First boot", step 3):
 *  1. a node with committed cluster state beats one without; between two committed nodes the
 *     higher (term, timeline, LSN) wins;
 *  2. then the site's preferred leader (matched by node name or node id);
 *  3. then the lower node id.
 */

import { compareHistory } from '../../core/history.ts';
export interface Candidate {
  /** 32 lowercase hex digits (hostmeta nodeId). */
  nodeId: string;
  /** Site node name (site.yaml network.nodes[].name) when this box knows it. */
  name?: string;
  /** True once this box has provisioned cluster state (PostgreSQL data directory of the pair). */
  committed: boolean;
  /** Persisted term (0 before the first pairing). */
  term: number;
  /** PostgreSQL timeline id (0 when there is no cluster yet). */
  timeline: number;
  /** PostgreSQL LSN as printed by pg_current_wal_lsn(), e.g. "0/3000060" ("0/0" when none). */
  lsn: string;
  /** Leader this box last agreed to at `term` (persisted with the term); lets a re-run re-confirm. */
  leader?: string;
}

export interface PairDecision {
  leader: string;
  follower: string;
  term: number;
}

function isPreferred(c: Candidate, preferred: string | undefined): boolean {
  return preferred !== undefined && (c.nodeId === preferred || c.name === preferred);
}

/** The node id of the leader of `a` and `b`. Symmetric: decideLeader(a, b) === decideLeader(b, a). */
export function decideLeader(a: Candidate, b: Candidate, preferredLeader?: string): string {
  if (a.nodeId === b.nodeId) throw new Error(`both candidates have node id ${a.nodeId} (cloned disk?)`);
  if (a.committed !== b.committed) return a.committed ? a.nodeId : b.nodeId;
  if (a.committed && b.committed) {
    const c = compareHistory(a, b);
    if (c !== 0) return c > 0 ? a.nodeId : b.nodeId;
    // Equal progress and an agreement both persisted (a restart mid-provisioning): keep it.
    if (a.leader !== undefined && a.leader === b.leader && (a.leader === a.nodeId || a.leader === b.nodeId)) return a.leader;
  }
  const pa = isPreferred(a, preferredLeader);
  const pb = isPreferred(b, preferredLeader);
  if (pa !== pb) return pa ? a.nodeId : b.nodeId;
  return [a.nodeId, b.nodeId].sort()[0]!;
}

/**
 * Leader, follower and the term both boxes persist.
 *  - a committed cluster is re-confirmed at its current term (max of both): no new term without a
 *    promotion;
 *  - a re-run after both persisted the same agreement (same term, same leader) re-confirms it;
 *  - otherwise a new pair is formed at max(term) + 1.
 */
export function decidePair(a: Candidate, b: Candidate, preferredLeader?: string): PairDecision {
  const leader = decideLeader(a, b, preferredLeader);
  const follower = leader === a.nodeId ? b.nodeId : a.nodeId;
  const maxTerm = Math.max(a.term, b.term);
  const reconfirm = a.committed || b.committed || (a.term === b.term && a.term > 0 && a.leader === leader && b.leader === leader);
  return { leader, follower, term: reconfirm ? maxTerm : maxTerm + 1 };
}

/** Which side opens the pairing channel: the lower node id dials, the other accepts. */
export function shouldDial(selfNodeId: string, peerNodeId: string): boolean {
  return selfNodeId < peerNodeId;
}

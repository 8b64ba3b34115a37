/**
 * Which of two nodes that see each other holds the history that must survive. A total order,
 * computed the same way on both sides (symmetric), so exactly one of them wins:
 *  1. higher term, 2. higher timeline, 3. higher LSN (the data),
 *  4. a node that was leader (leader or fenced) over a follower (keep the leader on equal data),
 *  5. the seed's lastModified (newer wins; absent loses) — the last tie-break on the data side,
 *  6. the lower node id (only so the order is total).
 */
import { compareHistory, compareValues as cmp } from '../../core/history.ts';
import type { LivenessRole, NodeFacts } from './types.ts';

export type RankFacts = NodeFacts;

/** Positive when `a` outranks `b`, negative when `b` does; 0 only for the same node id. */
export function compareRank(a: RankFacts, b: RankFacts): number {
  const wasLeader = (r: LivenessRole) => (r === 'follower' ? 0 : 1);
  return (
    compareHistory(a, b) ||
    cmp(wasLeader(a.role), wasLeader(b.role)) ||
    cmp(a.lastModified ?? -1, b.lastModified ?? -1) ||
    (a.nodeId === b.nodeId ? 0 : a.nodeId < b.nodeId ? 1 : -1)
  );
}

export function outranks(a: RankFacts, b: RankFacts): boolean {
  return compareRank(a, b) > 0;
}

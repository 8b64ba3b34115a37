/**
 * The arbiter's rule (issue 11 point 6): one leader lease per term, and a record of whether that
 * leader commits without its standby. Pure; the arbiter process (liveness/arbiter-server.ts) keeps
 * the state on disk and applies this to each request, the simulator applies it in memory.
 *
 * Why it makes two boxes quorum-safe: the only two ways a box may take writes that its peer does
 * not share are promoting without the peer's word (P1, P2) and going asynchronous (D1). With an
 * arbiter, both need a lease from it first, and it grants them in one order:
 *  - a lease for a newer term is refused while the holder of the current one commits alone (its
 *    last commits exist only on it) and the requester does not hear that holder; so a follower cut
 *    off from a leader that went async never promotes over it;
 *  - a lease for an older term, or for a term another node holds, is refused; so a leader cut off
 *    from a follower that was granted the next term cannot go async: its writes keep waiting for
 *    the standby they can no longer reach (and the loop fences it, told the newer term).
 * The arbiter keeps no clock: leases do not expire, they are superseded, so no clock assumptions
 * between the three machines enter the safety argument.
 */

export interface ArbiterState {
  /** The newest term leased; 0 before the first. */
  term: number;
  /** Node name (the CN of its pair certificate) that holds `term`. */
  holder: string | null;
  /** The holder commits without its synchronous standby. */
  alone: boolean;
}

export const ARBITER_START: Readonly<ArbiterState> = Object.freeze({ term: 0, holder: null, alone: false });

export interface LeaseRequest {
  /** The requester, as its certificate names it (never taken from the request body). */
  node: string;
  term: number;
  /** The requester will commit without its standby under this lease. */
  alone: boolean;
  /** The requester does not hear its peer (a takeover without the peer's word). */
  peerSilent: boolean;
}

export interface LeaseAnswer {
  granted: boolean;
  /** The state after the request (unchanged when refused): a refused requester learns the newer term from it. */
  state: ArbiterState;
  reason: string;
}

export function leaseAnswer(s: ArbiterState, r: LeaseRequest): LeaseAnswer {
  const refuse = (reason: string): LeaseAnswer => ({ granted: false, state: s, reason });
  if (r.term < s.term) return refuse(`term ${r.term} is older than term ${s.term}, leased to ${s.holder}`);
  if (r.term === s.term && s.holder !== null && s.holder !== r.node) return refuse(`term ${r.term} is leased to ${s.holder}`);
  if (r.term > s.term && s.alone && s.holder !== r.node && r.peerSilent) {
    return refuse(`${s.holder} leads term ${s.term} without its standby: its last commits exist only there`);
  }
  const state: ArbiterState = { term: r.term, holder: r.node, alone: r.alone };
  return {
    granted: true,
    state,
    reason: r.term === s.term ? `lease for term ${r.term} renewed (alone: ${r.alone})` : `term ${r.term} leased (alone: ${r.alone})`,
  };
}

/**
 * What a node has learnt from the arbiter's answers (a probe or a lease request): the lease it
 * holds, and a newer term leased to another node. The loop and the simulator keep one each.
 */
export interface ArbiterView {
  lease: { term: number; alone: boolean } | null;
  newerTerm: number | null;
}

export const ARBITER_VIEW_START: Readonly<ArbiterView> = Object.freeze({ lease: null, newerTerm: null });

/** The view after the arbiter answered with `state`, for node `self` at its persisted term `ownTerm`. */
export function arbiterViewAfter(view: ArbiterView, state: ArbiterState, self: string, ownTerm: number): ArbiterView {
  if (state.holder === self) return { lease: { term: state.term, alone: state.alone }, newerTerm: null };
  if (state.holder !== null && state.term > ownTerm) return { ...view, newerTerm: state.term };
  return view;
}

/** TickInput.arbiter from the view: a newer term counts only while it is above the node's own (it may have caught up since). */
export function arbiterTickInput(
  view: ArbiterView,
  ownTerm: number,
  silentMs: number,
): { lease: ArbiterView['lease']; newerTerm: number | null; silentMs: number } {
  return { lease: view.lease, newerTerm: view.newerTerm !== null && view.newerTerm > ownTerm ? view.newerTerm : null, silentMs };
}

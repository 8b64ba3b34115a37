/**
 * A node's committed history as both the pairing election and liveness judge it (pure), in one
 * place: PostgreSQL LSNs parsed and compared, and the order term → timeline → LSN that says whose
 * data must survive.
 */

const LSN_RE = /^([0-9A-Fa-f]{1,8})\/([0-9A-Fa-f]{1,8})$/;

export function isLsn(text: string): boolean {
  return LSN_RE.test(text);
}

/** A pg_lsn as a 64-bit integer. Throws on a malformed LSN. */
export function parseLsn(text: string): bigint {
  const m = LSN_RE.exec(text);
  if (!m) throw new Error(`malformed LSN ${JSON.stringify(text)}`);
  return (BigInt(`0x${m[1]}`) << 32n) | BigInt(`0x${m[2]}`);
}

/** An LSN for ordering, where a malformed one (a peer that reported none yet) counts as behind every real one. */
export function lsnOrder(text: string): bigint {
  return isLsn(text) ? parseLsn(text) : -1n;
}

export function compareValues(x: number | bigint, y: number | bigint): number {
  return x < y ? -1 : x > y ? 1 : 0;
}

export interface History {
  term: number;
  timeline: number;
  lsn: string;
}

/** Negative when `a`'s history is behind `b`'s: higher term, then higher timeline, then higher LSN. */
export function compareHistory(a: History, b: History): number {
  return compareValues(a.term, b.term) || compareValues(a.timeline, b.timeline) || compareValues(lsnOrder(a.lsn), lsnOrder(b.lsn));
}

/**
 * Messages of the pairing channel (inside TLS-PSK, one JSON object per line). Pure: schema only.
 *
 *   both:     hello   {t, v, site, candidate, key}  each side's election input and node public key
 *   both:     auth    {t, proof}                    proof of the node key, bound to this TLS session
 *   both:     propose {t, leader, follower, term}   each side's decision; must match
 *   leader:   secrets {t, term, secrets}            opaque cluster secrets (never logged)
 *   follower: ack     {t, term}                     after the follower persisted them
 *   any:      refused {t, reason} / abort {t, reason}
 */
import type { Candidate } from './election.ts';
import { isLsn } from '../../core/history.ts';
import { bool, int, MAX_TERM, NAME_RE, NODE_ID_RE, object, SchemaError, SITE_ID_RE, str } from './schema.ts';

export const CHANNEL_VERSION = 2;

export interface Hello {
  t: 'hello';
  v: typeof CHANNEL_VERSION;
  site: string;
  candidate: Candidate;
  /** The sender's node public key (X25519, raw, base64url). */
  key: string;
}
export interface Auth {
  t: 'auth';
  proof: string;
}
export interface Propose {
  t: 'propose';
  leader: string;
  follower: string;
  term: number;
}
export interface Secrets {
  t: 'secrets';
  term: number;
  secrets: unknown;
}
export interface Ack {
  t: 'ack';
  term: number;
}
export interface Refused {
  t: 'refused';
  reason: string;
}
export interface Abort {
  t: 'abort';
  reason: string;
}
export type ChannelMessage = Hello | Auth | Propose | Secrets | Ack | Refused | Abort;

const REASON_RE = /^[\x20-\x7e]{1,200}$/;
/** 32 bytes, base64url without padding (node public keys, proofs). */
const KEY_RE = /^[A-Za-z0-9_-]{43}$/;

export function parseCandidate(v: unknown, where = 'candidate'): Candidate {
  const o = object(v, where, ['nodeId', 'committed', 'term', 'timeline', 'lsn'], ['name', 'leader']);
  const lsn = str(o, 'lsn', /^[0-9A-Fa-f]{1,8}\/[0-9A-Fa-f]{1,8}$/, where);
  if (!isLsn(lsn)) throw new SchemaError(`${where}.lsn is malformed`);
  const c: Candidate = {
    nodeId: str(o, 'nodeId', NODE_ID_RE, where),
    committed: bool(o, 'committed', where),
    term: int(o, 'term', 0, MAX_TERM, where),
    timeline: int(o, 'timeline', 0, 0xffffffff, where),
    lsn,
  };
  if (o.name !== undefined) c.name = str(o, 'name', NAME_RE, where);
  if (o.leader !== undefined) c.leader = str(o, 'leader', NODE_ID_RE, where);
  return c;
}

export function parseChannelMessage(raw: unknown): ChannelMessage {
  const head = object(raw, 'message', ['t'], ['v', 'site', 'candidate', 'key', 'proof', 'leader', 'follower', 'term', 'secrets', 'reason']);
  switch (head.t) {
    case 'hello': {
      const o = object(raw, 'hello', ['t', 'v', 'site', 'candidate', 'key']);
      if (o.v !== CHANNEL_VERSION) throw new SchemaError('hello.v is not a supported version');
      return {
        t: 'hello',
        v: CHANNEL_VERSION,
        site: str(o, 'site', SITE_ID_RE, 'hello'),
        candidate: parseCandidate(o.candidate, 'hello.candidate'),
        key: str(o, 'key', KEY_RE, 'hello'),
      };
    }
    case 'auth': {
      const o = object(raw, 'auth', ['t', 'proof']);
      return { t: 'auth', proof: str(o, 'proof', KEY_RE, 'auth') };
    }
    case 'propose': {
      const o = object(raw, 'propose', ['t', 'leader', 'follower', 'term']);
      return {
        t: 'propose',
        leader: str(o, 'leader', NODE_ID_RE, 'propose'),
        follower: str(o, 'follower', NODE_ID_RE, 'propose'),
        term: int(o, 'term', 0, MAX_TERM, 'propose'),
      };
    }
    case 'secrets': {
      const o = object(raw, 'secrets', ['t', 'term', 'secrets']);
      if (o.secrets === null || typeof o.secrets !== 'object') throw new SchemaError('secrets.secrets is not a JSON object');
      return { t: 'secrets', term: int(o, 'term', 0, MAX_TERM, 'secrets'), secrets: o.secrets };
    }
    case 'ack': {
      const o = object(raw, 'ack', ['t', 'term']);
      return { t: 'ack', term: int(o, 'term', 0, MAX_TERM, 'ack') };
    }
    case 'refused':
    case 'abort': {
      const o = object(raw, String(head.t), ['t', 'reason']);
      return { t: head.t, reason: str(o, 'reason', REASON_RE, String(head.t)) };
    }
    default:
      throw new SchemaError('message.t is not a known message type');
  }
}

/** The refusal a paired node gives any other node (site-wide wording, tests match it). */
export function pairFormedReason(pair: readonly string[]): string {
  return `pair already formed (${pair.join(',')}); use replace-node`;
}

/**
 * The arbiter (issue 11 point 6): `geminik8s-agent arbiter`, run on a third device the site has
 * (the router, a NAS, a VM). It keeps one lease per term for the pair (core/arbiter.ts holds the
 * rule) and nothing else: no database, no clock in its decisions.
 *
 * Who can reach it and how it authenticates: HTTPS (TLS 1.3) on the address it is told to listen
 * on; the client must present a node certificate of this pair (signed by the pair CA, extended key
 * usage both server and client: an etcd or Kubernetes client certificate from the same CA is not
 * enough), and the node is the certificate's common name, never a field of the request. Its own
 * certificate comes from the pair CA too (`geminik8s-agent arbiter-cert` on a paired box), so the
 * boxes check they talk to this arbiter. The state is written and fsynced before any answer: an
 * arbiter restarted after a crash never grants a term twice.
 */
import { existsSync, readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import type { TLSSocket } from 'node:tls';
import { writeFileAtomic } from '../adapters/atomic-file.ts';
import { readSmallJson } from '../net/status-server.ts';
import type { Logger } from '../adapters/output.ts';
import { serialQueue } from '../adapters/serial.ts';
import { logsOccurrence, streakAfter, type Streak } from '../core/streak.ts';
import { ARBITER_START, leaseAnswer, type ArbiterState } from './core/arbiter.ts';

export interface ArbiterTls {
  /** The pair CA (PEM): clients must be signed by it. */
  ca: string;
  cert: string;
  key: string;
}

export interface ArbiterServerOptions {
  host: string;
  port: number;
  tls: ArbiterTls;
  /** Where the state lives (JSON, 0600); read at start, rewritten before each granting answer. */
  stateFile: string;
  log: Logger;
}

export interface ArbiterServer {
  address: AddressInfo;
  close(): Promise<void>;
}

const EKU_SERVER = '1.3.6.1.5.5.7.3.1';
/** A refused node asks again every tick (1 s): its same refusal is logged once, then about once a minute. */
const REFUSAL_LOG_EVERY = 60;
const EKU_CLIENT = '1.3.6.1.5.5.7.3.2';

/** The state file, or the start state when there is none; a damaged one stops the arbiter (it must never forget a lease). */
export function loadArbiterState(file: string): ArbiterState {
  if (!existsSync(file)) return { ...ARBITER_START };
  const text = readFileSync(file, 'utf8');
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (e) {
    throw new Error(`${file}: not JSON (${(e as Error).message}); the arbiter will not start without its record of leases`);
  }
  const s = v as Partial<ArbiterState>;
  if (!Number.isSafeInteger(s.term) || (s.term as number) < 0 || !(s.holder === null || typeof s.holder === 'string') || typeof s.alone !== 'boolean') {
    throw new Error(`${file}: expected {"term": integer ≥ 0, "holder": string or null, "alone": boolean}, found ${text.slice(0, 200)}`);
  }
  return { term: s.term as number, holder: s.holder as string | null, alone: s.alone };
}

export async function startArbiter(o: ArbiterServerOptions): Promise<ArbiterServer> {
  let state = loadArbiterState(o.stateFile);
  // Per node: two refused nodes asking in turn are two streaks, not a streak broken every request.
  const refusals = new Map<string, Streak>();
  // One request at a time: each answer is computed from, and written after, the one before.
  const serially = serialQueue();

  const server: Server = createServer(
    { ca: o.tls.ca, cert: o.tls.cert, key: o.tls.key, requestCert: true, rejectUnauthorized: true, minVersion: 'TLSv1.3' },
    (req, res) => {
      const reply = (code: number, body: unknown) => {
        res.writeHead(code, { 'content-type': 'application/json' });
        res.end(`${JSON.stringify(body)}\n`);
      };
      const peer = (req.socket as TLSSocket).getPeerCertificate();
      const eku = peer.ext_key_usage ?? [];
      const node = typeof peer.subject?.CN === 'string' ? peer.subject.CN : '';
      if (!node || !eku.includes(EKU_SERVER) || !eku.includes(EKU_CLIENT)) {
        o.log.event('warn', 'arbiter-refused-client', { cn: node || null, reason: 'not a node certificate of the pair' });
        return reply(403, { error: 'a node certificate of the pair is required' });
      }
      if (req.method === 'GET' && req.url === '/v1/state') return reply(200, { state });
      if (req.method !== 'POST' || req.url !== '/v1/lease') return reply(404, { error: 'GET /v1/state or POST /v1/lease' });
      readSmallJson(req, (r) => {
        if (!r || !Number.isSafeInteger(r.term) || (r.term as number) < 1 || typeof r.alone !== 'boolean' || typeof r.peerSilent !== 'boolean') {
          return reply(400, { error: 'expected JSON {"term": integer ≥ 1, "alone": boolean, "peerSilent": boolean}' });
        }
        const request = { node, term: r.term as number, alone: r.alone, peerSilent: r.peerSilent };
        serially(() => {
          const answer = leaseAnswer(state, request);
          if (answer.granted) {
            writeFileAtomic(o.stateFile, `${JSON.stringify(answer.state)}\n`, 0o600);
            state = answer.state;
          }
          const streak = answer.granted ? undefined : streakAfter(refusals.get(node), `${request.term} ${answer.reason}`);
          if (streak) refusals.set(node, streak);
          else refusals.delete(node);
          const repeats = streak?.repeats ?? 0;
          if (!streak || logsOccurrence(streak, REFUSAL_LOG_EVERY)) {
            o.log.event(answer.granted ? 'info' : 'warn', 'arbiter-lease', {
              ...request,
              granted: answer.granted,
              reason: answer.reason,
              ...(repeats ? { repeats } : {}),
            });
          }
          return answer;
        }).then(
          (answer) => reply(200, answer),
          (e: unknown) => {
            o.log.event('error', 'arbiter-state-write-failed', { file: o.stateFile, error: (e as Error).message });
            reply(503, { error: 'the arbiter could not record the lease; nothing was granted' });
          },
        );
      });
    },
  );
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(o.port, o.host, () => resolve());
  });
  const address = server.address() as AddressInfo;
  o.log.event('info', 'arbiter-listening', { host: address.address, port: address.port, term: state.term, holder: state.holder, alone: state.alone });
  return {
    address,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

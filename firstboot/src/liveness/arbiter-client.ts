/**
 * A box's side of the arbiter (arbiter-server.ts): HTTPS with this node's pair certificate, the
 * arbiter's certificate checked against the pair CA for the address the site file names. Every
 * call is bounded: an arbiter that does not answer counts as silent, it never holds the loop.
 */
import { request } from 'node:https';
import type { ArbiterState, LeaseAnswer } from './core/arbiter.ts';

export interface ArbiterEndpoint {
  host: string;
  port: number;
  /** The pair CA, and this node's certificate and key (PEM). */
  ca: string;
  cert: string;
  key: string;
}

export interface ArbiterClient {
  /** The arbiter's state: its answer is what counts as "the arbiter answered" for TickInput.arbiter.silentMs. */
  state(timeoutMs: number): Promise<ArbiterState>;
  lease(r: { term: number; alone: boolean; peerSilent: boolean }, timeoutMs: number): Promise<LeaseAnswer>;
}

export function arbiterClient(e: ArbiterEndpoint): ArbiterClient {
  const call = <T>(method: 'GET' | 'POST', path: string, body: unknown, timeoutMs: number): Promise<T> =>
    new Promise<T>((resolve, reject) => {
      const payload = body === undefined ? undefined : JSON.stringify(body);
      const req = request(
        {
          host: e.host,
          port: e.port,
          method,
          path,
          ca: e.ca,
          cert: e.cert,
          key: e.key,
          minVersion: 'TLSv1.3',
          timeout: timeoutMs,
          agent: false,
          headers: payload ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) } : {},
        },
        (res) => {
          let text = '';
          res.setEncoding('utf8');
          res.on('data', (c: string) => {
            text += c;
          });
          res.on('end', () => {
            if (res.statusCode !== 200) return reject(new Error(`arbiter ${e.host}:${e.port} ${path}: HTTP ${res.statusCode} ${text.trim().slice(0, 200)}`));
            try {
              resolve(JSON.parse(text) as T);
            } catch {
              reject(new Error(`arbiter ${e.host}:${e.port} ${path}: not JSON`));
            }
          });
        },
      );
      req.on('timeout', () => req.destroy(new Error(`arbiter ${e.host}:${e.port} ${path}: no answer within ${timeoutMs} ms`)));
      req.on('error', reject);
      req.end(payload);
    });
  return {
    state: (timeoutMs) => call<{ state: ArbiterState }>('GET', '/v1/state', undefined, timeoutMs).then((r) => r.state),
    lease: (r, timeoutMs) => call<LeaseAnswer>('POST', '/v1/lease', r, timeoutMs),
  };
}

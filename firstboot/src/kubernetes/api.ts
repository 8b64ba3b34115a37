/**
 * The agent's client of the Kubernetes API: JSON over HTTPS, the server checked against the pair
 * CA, the agent authenticated by a client certificate from it (the admin's, as ControlPlane keeps
 * it). One connection per request by default (no keep-alive: after a failover a request never
 * reuses a socket to the old leader), or one kept connection for a client of this box's own API
 * server ({@link KubeApiOptions.keepAlive}); a deadline per request covering connecting, TLS and
 * the whole answer, so a hung API server cannot stall a liveness tick.
 */
import https from 'node:https';
import { objectPath, type KubeObject } from './core/addons.ts';

/** PEM text: the CA the server's certificate must chain to, and the client's certificate and key. */
export interface ClientCertificate {
  ca: string | Buffer;
  cert: string | Buffer;
  key: string | Buffer;
}

export interface KubeApiOptions {
  /** https://host:port of one API server. */
  server: string;
  credentials: ClientCertificate;
  /** Per request (5000 ms). */
  timeoutMs?: number;
  /**
   * Connect through this unix socket instead of TCP (tests: a relay into the network namespace
   * that reaches the server). TLS stays end to end, checked against the server's host name.
   */
  socketPath?: string;
  /**
   * Keep one connection open between requests: for the agent's probe of its own API server every
   * tick, which otherwise paid a TLS handshake with client certificate each second on both sides
   * (under emulation a visible share of the box's CPU). A request that fails or times out drops
   * the connection; the next one opens another.
   */
  keepAlive?: boolean;
}

export interface KubeApiResponse {
  status: number;
  /** The body parsed, or undefined when it is not JSON (e.g. /readyz's "ok"). */
  json: unknown;
  text: string;
}

export class KubeApi {
  readonly server: string;
  readonly #url: URL;
  readonly #credentials: ClientCertificate;
  readonly #timeoutMs: number;
  readonly #socketPath: string | undefined;
  readonly #agent: https.Agent | false;

  constructor(o: KubeApiOptions) {
    this.server = o.server.replace(/\/$/, '');
    this.#url = new URL(this.server);
    if (this.#url.protocol !== 'https:') throw new Error(`Kubernetes API ${this.server}: not an https:// URL`);
    this.#credentials = o.credentials;
    this.#timeoutMs = o.timeoutMs ?? 5000;
    this.#socketPath = o.socketPath;
    this.#agent = o.keepAlive ? new https.Agent({ keepAlive: true, maxSockets: 1 }) : false;
  }

  /** Closes a kept connection. */
  close(): void {
    if (this.#agent) this.#agent.destroy();
  }

  /**
   * One request; resolves with whatever status the server answered, rejects on a network or TLS
   * error or the deadline. A body that is not a string is sent as JSON.
   */
  request(method: string, path: string, body?: unknown, contentType = 'application/json', timeoutMs = this.#timeoutMs): Promise<KubeApiResponse> {
    const payload = body === undefined ? undefined : Buffer.from(typeof body === 'string' ? body : JSON.stringify(body));
    const what = `${method} ${this.server}${path}`;
    return new Promise((resolve, reject) => {
      let settled = false;
      const finish = (e: Error | undefined, r?: KubeApiResponse): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        if (e) reject(e);
        else resolve(r!);
      };
      const req = https.request({
        host: this.#url.hostname.replace(/^\[|\]$/g, ''),
        port: this.#url.port === '' ? 443 : Number(this.#url.port),
        ...(this.#socketPath !== undefined ? { socketPath: this.#socketPath } : {}),
        method,
        path,
        ca: this.#credentials.ca,
        cert: this.#credentials.cert,
        key: this.#credentials.key,
        agent: this.#agent,
        headers: {
          accept: 'application/json',
          ...(this.#agent ? {} : { connection: 'close' }),
          ...(payload ? { 'content-type': contentType, 'content-length': String(payload.length) } : {}),
        },
      });
      const timer = setTimeout(() => {
        finish(new Error(`${what}: no complete answer within ${timeoutMs} ms`));
        req.destroy();
      }, timeoutMs);
      req.on('error', (e) => finish(new Error(`${what}: ${e.message}`)));
      req.on('response', (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', (e) => finish(new Error(`${what}: the answer broke off: ${e.message}`)));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let json: unknown;
          try {
            json = JSON.parse(text);
          } catch {
            json = undefined;
          }
          finish(undefined, { status: res.statusCode ?? 0, json, text });
        });
      });
      req.end(payload);
    });
  }

  /**
   * Server-side apply: the object becomes what `fieldManager` says of its fields, created if it is
   * missing; `force` takes over fields another manager set (the agent owns these objects). JSON is
   * YAML, so the object goes as its JSON text. Resolves with the object as stored.
   */
  async apply(obj: KubeObject, fieldManager: string): Promise<unknown> {
    const query = new URLSearchParams({ fieldManager, force: 'true' });
    const r = await this.request('PATCH', `${objectPath(obj)}?${query.toString()}`, JSON.stringify(obj), 'application/apply-patch+yaml');
    if (r.status < 200 || r.status > 299) {
      const message = (r.json as { message?: unknown } | undefined)?.message;
      const why = typeof message === 'string' ? message : r.text.slice(0, 300);
      const namespace = obj.metadata.namespace !== undefined ? `${obj.metadata.namespace}/` : '';
      throw new Error(`applying ${obj.kind} ${namespace}${obj.metadata.name}: HTTP ${r.status}: ${why}`);
    }
    return r.json;
  }

  /** Whether this API server is ready to serve: GET /readyz answered 200. Any error or the deadline: false. */
  async readyz(): Promise<boolean> {
    try {
      return (await this.request('GET', '/readyz')).status === 200;
    } catch {
      return false;
    }
  }
}

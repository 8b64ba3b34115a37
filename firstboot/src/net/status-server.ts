/**
 * The agent's status endpoint: HTTP on a unix socket (0660, root) that tests and the operator CLI
 * read — role, term, peer, replication state and lag, last error — and POST /switchover, the
 * planned switchover of a local operator (root or the socket's group only: the socket is 0660).
 */
import { chmod, mkdir, rm } from 'node:fs/promises';
import http from 'node:http';
import path from 'node:path';

export interface StatusServer {
  socketPath: string;
  close(): Promise<void>;
}

export interface StatusActions {
  /** Planned switchover; answers whether it was accepted and why. Absent until the node is provisioned. */
  switchover?(): { accepted: boolean; reason: string };
}

export async function startStatusServer(socketPath: string, getStatus: () => Promise<unknown> | unknown, actions: StatusActions = {}): Promise<StatusServer> {
  await mkdir(path.dirname(socketPath), { recursive: true, mode: 0o755 });
  // A socket left by a killed agent would make listen() fail with EADDRINUSE.
  await rm(socketPath, { force: true });
  const server = http.createServer((req, res) => {
    const send = (code: number, body: unknown) => {
      res.writeHead(code, { 'content-type': 'application/json' });
      res.end(`${JSON.stringify(body)}\n`);
    };
    if (req.method === 'POST' && req.url === '/switchover') {
      if (!actions.switchover) return send(409, { accepted: false, reason: 'not provisioned yet' });
      const r = actions.switchover();
      return send(r.accepted ? 202 : 409, r);
    }
    if (req.method !== 'GET') return send(405, { error: 'GET /status or POST /switchover' });
    if (req.url === '/status') {
      Promise.resolve()
        .then(getStatus)
        .then(
          (s) => send(200, s),
          (e: unknown) => send(500, { error: (e as Error).message }),
        );
      return;
    }
    send(404, { error: 'unknown path: GET /status' });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(socketPath, () => resolve());
  });
  await chmod(socketPath, 0o660);
  return {
    socketPath,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

/** Reads GET /status from an agent's socket. */
export function readStatus(socketPath: string, timeoutMs = 5000): Promise<unknown> {
  return requestJson(socketPath, 'GET', '/status', timeoutMs);
}

/** Asks the agent (the leader) for a planned switchover: `{ accepted, reason }`. */
export function requestSwitchover(socketPath: string, timeoutMs = 5000): Promise<unknown> {
  return requestJson(socketPath, 'POST', '/switchover', timeoutMs);
}

function requestJson(socketPath: string, method: 'GET' | 'POST', urlPath: string, timeoutMs: number): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const req = http.request({ socketPath, method, path: urlPath, timeout: timeoutMs }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => {
        body += d;
      });
      res.on('end', () => {
        try {
          resolve(JSON.parse(body) as unknown);
        } catch (e) {
          reject(new Error(`${method} ${urlPath} on ${socketPath}: not JSON: ${(e as Error).message}`));
        }
      });
    });
    req.on('timeout', () => req.destroy(new Error(`no answer to ${method} ${urlPath} from ${socketPath} within ${timeoutMs} ms`)));
    req.on('error', reject);
    req.end();
  });
}

/**
 * The agent's status endpoint: HTTP on a unix socket (0660, root) that tests and the operator CLI
 * read — role, term, peer, replication state and lag, last error. Read-only by design: actions
 * (failover, upgrade) come through their own authenticated paths.
 */
import { chmod, mkdir, rm } from 'node:fs/promises';
import http from 'node:http';
import path from 'node:path';

export interface StatusServer {
  socketPath: string;
  close(): Promise<void>;
}

export async function startStatusServer(socketPath: string, getStatus: () => Promise<unknown> | unknown): Promise<StatusServer> {
  await mkdir(path.dirname(socketPath), { recursive: true, mode: 0o755 });
  // A socket left by a killed agent would make listen() fail with EADDRINUSE.
  await rm(socketPath, { force: true });
  const server = http.createServer((req, res) => {
    const send = (code: number, body: unknown) => {
      res.writeHead(code, { 'content-type': 'application/json' });
      res.end(`${JSON.stringify(body)}\n`);
    };
    if (req.method !== 'GET') return send(405, { error: 'read-only endpoint: GET /status' });
    if (req.url === '/status') {
      Promise.resolve()
        .then(getStatus)
        .then((s) => send(200, s), (e: unknown) => send(500, { error: (e as Error).message }));
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
  return new Promise((resolve, reject) => {
    const req = http.get({ socketPath, path: '/status', timeout: timeoutMs }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => { body += d; });
      res.on('end', () => {
        try {
          resolve(JSON.parse(body) as unknown);
        } catch (e) {
          reject(new Error(`status from ${socketPath} is not JSON: ${(e as Error).message}`));
        }
      });
    });
    req.on('timeout', () => req.destroy(new Error(`no status from ${socketPath} within ${timeoutMs} ms`)));
    req.on('error', reject);
  });
}

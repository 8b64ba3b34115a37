/**
 * The agent's status endpoint: HTTP on a unix socket (0660, root) that tests and the operator CLI
 * read — role, term, peer, replication state and lag, last error, slots and last upgrade — plus two
 * actions of a local operator (root or the socket's group only: the socket is 0660; remote
 * operators come in over SSH): POST /switchover, the planned switchover; POST /replace-node, which
 * opens a survivor to one new box in place of its dead peer; POST /upgrade, which
 * applies a bundle file already on the box and streams its progress as one JSON object per line;
 * POST /restore, which replaces Kine's database with an archive already on the box.
 */
import { chmod, mkdir, rm } from 'node:fs/promises';
import http from 'node:http';
import path from 'node:path';

export interface StatusServer {
  socketPath: string;
  close(): Promise<void>;
}

export interface StatusActions {
  /**
   * Replaces Kine's database with a pg_dump archive already on the box (the leader), or with
   * `restartOnly` restarts what reads it (the follower's Kine and Kubernetes programs) after the
   * leader restored.
   */
  restore?(request: { file?: string; restartOnly?: boolean }): Promise<{ result: 'restored' | 'restarted' | 'refused' | 'failed'; message: string }>;
  /** The agent's newest log lines (JSON objects, oldest first). */
  events?(count: number): string[];
  /** Planned switchover; answers whether it was accepted and why. Absent until the node is provisioned. */
  switchover?(): { accepted: boolean; reason: string };
  /** The operator's replace-node: admit one new box in place of the dead peer, or (`cancel`) stop admitting. */
  replaceNode?(request: { cancel?: boolean }): { accepted: boolean; reason: string };
  /** Applies the bundle the request names; `progress` lines are streamed, the result is the last line. */
  upgrade?(
    request: { bundle: string; allowDowngrade?: boolean; reboot?: boolean; onlyAsFollower?: boolean },
    progress: (event: object) => void,
  ): Promise<object>;
}

const DEFAULT_EVENT_LINES = 200;

/** A bundle or archive path and flags: small JSON, nothing else. */
const MAX_REQUEST_BYTES = 4096;

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
    if (req.method === 'POST' && req.url === '/replace-node') {
      const replaceNode = actions.replaceNode;
      if (!replaceNode) return send(409, { accepted: false, reason: 'not provisioned yet' });
      return readSmallJson(req, (request) => {
        if (request === undefined || (request.cancel !== undefined && typeof request.cancel !== 'boolean'))
          return send(400, { accepted: false, reason: 'expected a JSON body {} or {"cancel": true}' });
        const r = replaceNode({ cancel: request.cancel === true });
        send(r.accepted ? 202 : 409, r);
      });
    }
    if (req.method === 'POST' && req.url === '/restore') {
      const restore = actions.restore;
      if (!restore) return send(409, { result: 'refused', message: 'this box is not provisioned yet' });
      return readSmallJson(req, (request) => {
        if (request === undefined) return send(400, { result: 'refused', message: 'expected a JSON body {"file": "/path"} or {"restartOnly": true}' });
        const file = request.file;
        if (file !== undefined && (typeof file !== 'string' || !file.startsWith('/')))
          return send(400, { result: 'refused', message: 'file: expected the absolute path of a pg_dump archive on this box' });
        if (file === undefined && request.restartOnly !== true) return send(400, { result: 'refused', message: 'give file or restartOnly' });
        restore({ ...(file !== undefined ? { file } : {}), restartOnly: request.restartOnly === true }).then(
          (r) => send(r.result === 'restored' || r.result === 'restarted' ? 200 : 409, r),
          (e: unknown) => send(500, { result: 'failed', message: (e as Error).message }),
        );
      });
    }
    if (req.method === 'POST' && req.url === '/upgrade') {
      const upgrade = actions.upgrade;
      if (!upgrade) return send(409, { result: 'refused', code: 'unavailable', message: 'upgrades are not available on this box' });
      readSmallJson(req, (request) => {
        if (request === undefined) return send(400, { result: 'refused', code: 'bad-request', message: 'expected a JSON body {"bundle": "/path/to/file"}' });
        if (typeof request.bundle !== 'string' || !request.bundle.startsWith('/'))
          return send(400, { result: 'refused', code: 'bad-request', message: 'bundle: expected the absolute path of a bundle file on this box' });
        res.writeHead(200, { 'content-type': 'application/x-ndjson' });
        const line = (o: object) => res.write(`${JSON.stringify(o)}\n`);
        upgrade(
          {
            bundle: request.bundle,
            allowDowngrade: request.allowDowngrade === true,
            reboot: request.reboot !== false,
            onlyAsFollower: request.onlyAsFollower === true,
          },
          line,
        ).then(
          (result) => res.end(`${JSON.stringify(result)}\n`),
          (e: unknown) => res.end(`${JSON.stringify({ result: 'failed', message: (e as Error).message })}\n`),
        );
      });
      return;
    }
    if (req.method !== 'GET') return send(405, { error: 'GET /status, GET /events, POST /switchover, /replace-node, /restore or /upgrade' });
    const url = new URL(req.url ?? '/', 'http://agent');
    if (url.pathname === '/events') {
      const count = Number(url.searchParams.get('lines') ?? DEFAULT_EVENT_LINES);
      if (!Number.isInteger(count) || count < 1) return send(400, { error: 'lines: expected a whole number of at least 1' });
      res.writeHead(200, { 'content-type': 'application/x-ndjson' });
      return res.end((actions.events?.(count) ?? []).map((l) => `${l}\n`).join(''));
    }
    if (req.url === '/status') {
      Promise.resolve()
        .then(getStatus)
        .then(
          (s) => send(200, s),
          (e: unknown) => send(500, { error: (e as Error).message }),
        );
      return;
    }
    send(404, { error: 'unknown path: GET /status or GET /events?lines=N' });
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

/** A small JSON request body (at most MAX_REQUEST_BYTES), or undefined when it is not a JSON object. */
export function readSmallJson(req: http.IncomingMessage, then: (body: Record<string, unknown> | undefined) => void): void {
  let body = '';
  req.setEncoding('utf8');
  req.on('data', (d: string) => {
    body += d;
    if (body.length > MAX_REQUEST_BYTES) req.destroy();
  });
  req.on('end', () => {
    try {
      const parsed = JSON.parse(body) as unknown;
      then(typeof parsed === 'object' && parsed !== null && !Array.isArray(parsed) ? (parsed as Record<string, unknown>) : undefined);
    } catch {
      then(undefined);
    }
  });
}

/** Reads GET /status from an agent's socket. */
export function readStatus(socketPath: string, timeoutMs = 5000): Promise<unknown> {
  return requestJson(socketPath, 'GET', '/status', timeoutMs);
}

/** The agent's newest `lines` log events (GET /events), oldest first. */
export function readEvents(socketPath: string, lines: number, timeoutMs = 5000): Promise<string[]> {
  return new Promise((resolve, reject) => {
    const req = http.request({ socketPath, method: 'GET', path: `/events?lines=${lines}`, timeout: timeoutMs }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => {
        body += d;
      });
      res.on('end', () =>
        res.statusCode === 200 ? resolve(body.split('\n').filter((l) => l !== '')) : reject(new Error(`GET /events on ${socketPath}: ${body.trim()}`)),
      );
    });
    req.on('timeout', () => req.destroy(new Error(`no answer to GET /events from ${socketPath} within ${timeoutMs} ms`)));
    req.on('error', reject);
    req.end();
  });
}

/** POST /restore: `{ result, message }`; a restore of a large archive takes minutes. */
export function requestRestore(socketPath: string, body: { file?: string; restartOnly?: boolean }, timeoutMs = 3_600_000): Promise<unknown> {
  return requestJson(socketPath, 'POST', '/restore', timeoutMs, body);
}

/** Asks the agent (the survivor) to admit a replacement for its dead peer, or to stop: `{ accepted, reason }`. */
export function requestReplaceNode(socketPath: string, body: { cancel?: boolean }, timeoutMs = 5000): Promise<unknown> {
  return requestJson(socketPath, 'POST', '/replace-node', timeoutMs, body);
}

/** Asks the agent (the leader) for a planned switchover: `{ accepted, reason }`. */
export function requestSwitchover(socketPath: string, timeoutMs = 5000): Promise<unknown> {
  return requestJson(socketPath, 'POST', '/switchover', timeoutMs);
}

function requestJson(socketPath: string, method: 'GET' | 'POST', urlPath: string, timeoutMs: number, body?: object): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const headers = body ? { 'content-type': 'application/json' } : {};
    const req = http.request({ socketPath, method, path: urlPath, timeout: timeoutMs, headers }, (res) => {
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
    req.end(body ? JSON.stringify(body) : undefined);
  });
}

/**
 * Asks the agent to apply a bundle (POST /upgrade): `onLine` gets every progress object, the
 * promise the last one (`{ result: 'installed' | 'refused' | 'failed', … }`).
 */
export function requestUpgrade(
  socketPath: string,
  body: { bundle: string; allowDowngrade?: boolean; reboot?: boolean },
  onLine: (o: Record<string, unknown>) => void,
): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    const req = http.request({ socketPath, method: 'POST', path: '/upgrade', headers: { 'content-type': 'application/json' } }, (res) => {
      let buffer = '';
      let last: Record<string, unknown> | undefined;
      res.setEncoding('utf8');
      res.on('data', (d: string) => {
        buffer += d;
        for (let nl = buffer.indexOf('\n'); nl >= 0; nl = buffer.indexOf('\n')) {
          const text = buffer.slice(0, nl);
          buffer = buffer.slice(nl + 1);
          if (!text.trim()) continue;
          if (last) onLine(last);
          last = JSON.parse(text) as Record<string, unknown>;
        }
      });
      res.on('end', () => (last ? resolve(last) : reject(new Error(`POST /upgrade on ${socketPath}: no answer`))));
    });
    req.on('error', reject);
    req.end(JSON.stringify(body));
  });
}

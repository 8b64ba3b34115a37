/**
 * The box's read-only HTTP listener on the LAN (port 8008 by default): `/` the status page for a
 * technician's browser, `/metrics` for Prometheus (ours, then Kine's own from its loopback-only
 * listener). Who can reach it: anyone on the site LAN (the host firewall opens it on the LAN
 * interface, nowhere else); no authentication, like Patroni's and postgres_exporter's metrics,
 * because nothing it serves is secret or changes anything: it answers GET and HEAD only, from the
 * same summary `geminik8s status` shows. Operator actions stay behind SSH and the agent's socket.
 */
import http from 'node:http';
import type { Logger } from '../adapters/output.ts';
import { type AgentStatusJson, summarizeBox } from './core/box-summary.ts';
import { renderMetrics } from './core/metrics.ts';
import { renderStatusPage } from './core/status-page.ts';

export interface StatusPageServer {
  port: number;
  close(): Promise<void>;
}

/** A scrape or page load is small: a slow or idle client does not hold a connection for long. */
const REQUEST_TIMEOUT_MS = 10_000;
const MAX_CONNECTIONS = 32;
const KINE_METRICS_TIMEOUT_MS = 2000;
/** Kine's whole /metrics page is tens of kilobytes; more than this is not appended. */
const KINE_METRICS_MAX_BYTES = 1 << 20;

/** Kine's own metrics text, or '' when it does not answer (Kine restarting, or a standby box's Kine starting). */
function kineMetrics(url: string): Promise<string> {
  return new Promise((resolve) => {
    const req = http.get(url, { timeout: KINE_METRICS_TIMEOUT_MS }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => {
        body += d;
        if (body.length > KINE_METRICS_MAX_BYTES) req.destroy();
      });
      res.on('end', () => resolve(res.statusCode === 200 ? body : ''));
      res.on('error', () => resolve(''));
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(''));
  });
}

export async function startStatusPageServer(o: {
  host: string;
  port: number;
  status: () => Promise<unknown>;
  kineMetricsUrl?: string;
  log: Logger;
}): Promise<StatusPageServer> {
  const server = http.createServer((req, res) => {
    const send = (code: number, type: string, body: string) => {
      res.writeHead(code, { 'content-type': type, 'cache-control': 'no-store', 'x-content-type-options': 'nosniff' });
      res.end(req.method === 'HEAD' ? undefined : body);
    };
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.setHeader('allow', 'GET, HEAD');
      return send(405, 'text/plain; charset=utf-8', 'read-only: GET / or GET /metrics\n');
    }
    const path = (req.url ?? '/').split('?')[0];
    if (path !== '/' && path !== '/metrics') return send(404, 'text/plain; charset=utf-8', 'GET / (status page) or GET /metrics (Prometheus)\n');
    o.status()
      .then(async (raw) => {
        const summary = summarizeBox(raw as AgentStatusJson);
        if (path === '/metrics') {
          const kine = o.kineMetricsUrl ? await kineMetrics(o.kineMetricsUrl) : '';
          send(200, 'text/plain; version=0.0.4; charset=utf-8', renderMetrics(summary, kine));
        } else send(200, 'text/html; charset=utf-8', renderStatusPage(summary, new Date()));
      })
      .catch((e: unknown) => {
        o.log.event('warn', 'status-page-failed', { path, error: (e as Error).message });
        send(500, 'text/plain; charset=utf-8', 'the agent could not read its status\n');
      });
  });
  server.requestTimeout = REQUEST_TIMEOUT_MS;
  server.headersTimeout = REQUEST_TIMEOUT_MS;
  server.maxConnections = MAX_CONNECTIONS;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(o.port, o.host, () => resolve());
  });
  o.log.event('info', 'status-page-listening', { host: o.host, port: o.port });
  return {
    port: o.port,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

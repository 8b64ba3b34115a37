/**
 * A tiny client of a real Kubernetes API server, for the tests and benchmarks that run the pair
 * with Kubernetes (test/fault/kubernetes.test.ts, bench/failover.ts): an admin kubeconfig parsed
 * into {server, ca, cert, key}, and HTTPS requests with node:https, the server certificate checked
 * against the kubeconfig's CA, the client certificate presented, one connection per request (no
 * agent, no keep-alive: a request after a failover never reuses a socket to the old leader), and a
 * deadline per request that covers connecting, TLS and the whole response.
 *
 * The VIP lives in the pair's network namespaces, not on the host: a test reaches it from the
 * gateway namespace with this file's command line (see the end of the file), e.g.
 *   ip netns exec <gw> node --import tsx test/helpers/kube-client.ts readyz <kubeconfig> [server]
 * or from the host through a unix-socket relay into that namespace (the socketPath option,
 * test/helpers/ns-relay.ts; test/image/kubernetes.test.ts).
 *
 * Static imports are node builtins and `yaml` only, so a writer child that imports this starts fast.
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse } from 'yaml';
import { KubeApi } from '../../firstboot/src/kubernetes/api.ts';

const SELF = fileURLToPath(import.meta.url);

/** What a client needs from an admin kubeconfig: PEM buffers, decoded from the *-data fields. */
export interface KubeConfig {
  server: string;
  ca: Buffer;
  cert: Buffer;
  key: Buffer;
}

function pick(list: unknown, name: string | undefined, field: string, what: string, origin: string): Record<string, unknown> {
  if (!Array.isArray(list) || list.length === 0) throw new Error(`${origin}: no ${what}s`);
  const entries = list as (Record<string, unknown> | null)[];
  const entry = name !== undefined ? entries.find((e) => e?.name === name) : entries.length === 1 ? entries[0] : undefined;
  if (!entry)
    throw new Error(
      `${origin}: ${name !== undefined ? `no ${what} named ${JSON.stringify(name)}` : `${entries.length} ${what}s and no current-context to choose one`}`,
    );
  const body = entry[field];
  if (body === null || typeof body !== 'object') throw new Error(`${origin}: ${what} ${JSON.stringify(entry.name)} has no ${field}`);
  return body as Record<string, unknown>;
}

function pemData(o: Record<string, unknown>, field: string, origin: string): Buffer {
  const v = o[field];
  if (typeof v !== 'string' || v.trim() === '') throw new Error(`${origin}: ${field} missing (the admin kubeconfig embeds its certificates)`);
  const pem = Buffer.from(v, 'base64');
  if (!pem.toString('latin1').includes('-----BEGIN ')) throw new Error(`${origin}: ${field} is not base64 of a PEM block`);
  return pem;
}

/** Parses a kubeconfig (YAML): the current context's cluster and user, or the only ones. */
export function parseKubeconfig(text: string, origin = 'kubeconfig'): KubeConfig {
  let doc: unknown;
  try {
    doc = parse(text);
  } catch (e) {
    throw new Error(`${origin}: not YAML: ${(e as Error).message}`);
  }
  if (doc === null || typeof doc !== 'object') throw new Error(`${origin}: not a kubeconfig (no mapping at the top)`);
  const d = doc as Record<string, unknown>;
  if (d.kind !== undefined && d.kind !== 'Config') throw new Error(`${origin}: kind ${JSON.stringify(d.kind)}, expected Config`);
  let clusterName: string | undefined;
  let userName: string | undefined;
  const current = typeof d['current-context'] === 'string' && d['current-context'] !== '' ? (d['current-context'] as string) : undefined;
  if (current !== undefined || (Array.isArray(d.contexts) && d.contexts.length === 1)) {
    const ctx = pick(d.contexts, current, 'context', 'context', origin);
    clusterName = typeof ctx.cluster === 'string' ? ctx.cluster : undefined;
    userName = typeof ctx.user === 'string' ? ctx.user : undefined;
    if (clusterName === undefined || userName === undefined) throw new Error(`${origin}: context ${JSON.stringify(current ?? '')} names no cluster or no user`);
  }
  const cluster = pick(d.clusters, clusterName, 'cluster', 'cluster', origin);
  const user = pick(d.users, userName, 'user', 'user', origin);
  const server = cluster.server;
  if (typeof server !== 'string' || !/^https:\/\/[^/]+$/.test(server.replace(/\/$/, '')))
    throw new Error(`${origin}: cluster server ${JSON.stringify(server)} is not an https:// URL`);
  return {
    server: server.replace(/\/$/, ''),
    ca: pemData(cluster, 'certificate-authority-data', origin),
    cert: pemData(user, 'client-certificate-data', origin),
    key: pemData(user, 'client-key-data', origin),
  };
}

export async function readKubeconfig(file: string): Promise<KubeConfig> {
  return parseKubeconfig(await readFile(file, 'utf8'), file);
}

/** A response that is not what the call expects: the HTTP status and the API's Status reason/message. */
export class KubeApiError extends Error {
  constructor(
    readonly status: number,
    readonly reason: string,
    message: string,
  ) {
    super(message);
    this.name = 'KubeApiError';
  }
}

export interface ConfigMap {
  namespace: string;
  name: string;
  labels: Record<string, string>;
  data: Record<string, string>;
  resourceVersion: string;
}

export interface KubeClientOptions {
  /** Talk to this https://host:port instead of the kubeconfig's server (still verified against its CA). */
  server?: string;
  /** Per request, connection and whole response included (5000 ms). */
  timeoutMs?: number;
  /**
   * Connect through this unix socket instead of TCP: a relay into the network namespace that
   * reaches the server (test/helpers/ns-relay.ts). TLS stays end to end and the certificate is
   * still checked against the server's host name.
   */
  socketPath?: string;
}

function toConfigMap(o: unknown): ConfigMap {
  const m = (o as { metadata?: Record<string, unknown>; data?: Record<string, string> } | null) ?? {};
  const md = m.metadata ?? {};
  return {
    namespace: String(md.namespace ?? ''),
    name: String(md.name ?? ''),
    labels: (md.labels as Record<string, string> | undefined) ?? {},
    data: m.data ?? {},
    resourceVersion: String(md.resourceVersion ?? ''),
  };
}

export class KubeClient {
  readonly server: string;
  private readonly timeoutMs: number;
  private readonly api: KubeApi;

  constructor(cfg: KubeConfig, o: KubeClientOptions = {}) {
    this.server = (o.server ?? cfg.server).replace(/\/$/, '');
    this.timeoutMs = o.timeoutMs ?? 5000;
    this.api = new KubeApi({
      server: this.server,
      credentials: cfg,
      timeoutMs: this.timeoutMs,
      ...(o.socketPath !== undefined ? { socketPath: o.socketPath } : {}),
    });
  }

  /** One request on its own connection (the agent's client, firstboot/src/kubernetes/api.ts); resolves with any HTTP status, rejects on a network/TLS error or the deadline. */
  async request(
    method: string,
    pathAndQuery: string,
    body?: unknown,
    timeoutMs = this.timeoutMs,
    contentType = 'application/json',
  ): Promise<{ status: number; body: string }> {
    const r = await this.api.request(method, pathAndQuery, body === undefined ? undefined : JSON.stringify(body), contentType, timeoutMs);
    return { status: r.status, body: r.text };
  }

  private async json(method: string, pathAndQuery: string, expect: number[], body?: unknown, timeoutMs?: number, contentType?: string): Promise<unknown> {
    const r = await this.request(method, pathAndQuery, body, timeoutMs, contentType);
    let parsed: unknown;
    try {
      parsed = JSON.parse(r.body);
    } catch {
      parsed = undefined;
    }
    if (!expect.includes(r.status)) {
      const st = (parsed ?? {}) as { reason?: string; message?: string };
      throw new KubeApiError(
        r.status,
        st.reason ?? '',
        `${method} ${pathAndQuery}: HTTP ${r.status}${st.reason ? ` ${st.reason}` : ''}: ${(st.message ?? r.body).slice(0, 300)}`,
      );
    }
    if (parsed === undefined) throw new Error(`${method} ${pathAndQuery}: HTTP ${r.status} with a body that is not JSON: ${r.body.slice(0, 200)}`);
    return parsed;
  }

  /** GET any API path that answers JSON (an object, a list); anything but 200 rejects with a KubeApiError. */
  async get<T = unknown>(pathAndQuery: string, timeoutMs?: number): Promise<T> {
    return (await this.json('GET', pathAndQuery, [200], undefined, timeoutMs)) as T;
  }

  /** POST an object to its collection, e.g. /apis/apps/v1/namespaces/default/deployments; resolves with what the API stored (201). */
  async create<T = unknown>(collectionPath: string, object: unknown, timeoutMs?: number): Promise<T> {
    return (await this.json('POST', collectionPath, [201], object, timeoutMs)) as T;
  }

  /** PATCH an object with a JSON merge patch (RFC 7386), e.g. to add a label; resolves with the patched object. */
  async mergePatch<T = unknown>(objectPath: string, patch: unknown, timeoutMs?: number): Promise<T> {
    return (await this.json('PATCH', objectPath, [200], patch, timeoutMs, 'application/merge-patch+json')) as T;
  }

  /** A pod's log as text (GET …/pods/<name>/log: the API server fetches it from the kubelet on the pod's node). */
  async podLog(namespace: string, pod: string, o: { container?: string; timeoutMs?: number } = {}): Promise<string> {
    const q = o.container !== undefined ? `?${new URLSearchParams({ container: o.container }).toString()}` : '';
    const p = `/api/v1/namespaces/${encodeURIComponent(namespace)}/pods/${encodeURIComponent(pod)}/log${q}`;
    const r = await this.request('GET', p, undefined, o.timeoutMs);
    if (r.status !== 200) {
      let st: { reason?: string; message?: string } = {};
      try {
        st = JSON.parse(r.body) as typeof st;
      } catch {
        /* not a Status: the body is quoted as it is */
      }
      throw new KubeApiError(
        r.status,
        st.reason ?? '',
        `GET ${p}: HTTP ${r.status}${st.reason ? ` ${st.reason}` : ''}: ${(st.message ?? r.body).slice(0, 300)}`,
      );
    }
    return r.body;
  }

  /** GET /readyz: the status and the body ("ok", or the failing checks). */
  readyz(timeoutMs?: number): Promise<{ status: number; body: string }> {
    return this.request('GET', '/readyz', undefined, timeoutMs);
  }

  /** POST a ConfigMap; resolves once the API server answered 201 Created (the write is acknowledged). */
  async createConfigMap(
    namespace: string,
    name: string,
    data: Record<string, string>,
    labels: Record<string, string> = {},
    timeoutMs?: number,
  ): Promise<ConfigMap> {
    const body = { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name, namespace, labels }, data };
    return toConfigMap(await this.json('POST', `/api/v1/namespaces/${encodeURIComponent(namespace)}/configmaps`, [201], body, timeoutMs));
  }

  /**
   * Every ConfigMap matching `labelSelector` (in `namespace`, or in all namespaces), following
   * `continue` tokens page by page. A token that expired (410 Gone) restarts the list, at most 5
   * times; at most 10 000 pages.
   */
  async listConfigMaps(labelSelector: string, o: { namespace?: string; pageSize?: number; timeoutMs?: number } = {}): Promise<ConfigMap[]> {
    const base = o.namespace !== undefined ? `/api/v1/namespaces/${encodeURIComponent(o.namespace)}/configmaps` : '/api/v1/configmaps';
    for (let attempt = 0; ; attempt++) {
      const items: ConfigMap[] = [];
      let token = '';
      try {
        for (let page = 0; ; page++) {
          if (page >= 10_000) throw new Error(`listing ConfigMaps (${labelSelector}): more than 10000 pages`);
          const q = new URLSearchParams({ labelSelector, limit: String(o.pageSize ?? 500) });
          if (token) q.set('continue', token);
          const list = (await this.json('GET', `${base}?${q.toString()}`, [200], undefined, o.timeoutMs)) as {
            items?: unknown[];
            metadata?: { continue?: string };
          };
          for (const it of list.items ?? []) items.push(toConfigMap(it));
          token = list.metadata?.continue ?? '';
          if (!token) return items;
        }
      } catch (e) {
        if (!(e instanceof KubeApiError && e.status === 410) || attempt >= 4) throw e;
      }
    }
  }
}

/** A client for an admin kubeconfig file. */
export async function kubeClient(kubeconfig: string, o: KubeClientOptions = {}): Promise<KubeClient> {
  return new KubeClient(await readKubeconfig(kubeconfig), o);
}

// Command line, for use inside a network namespace (the VIP is not reachable from the host):
//   kube-client.ts readyz <kubeconfig> [server]                       → {"status":200,"body":"ok"}
//   kube-client.ts list <kubeconfig> <server|-> <namespace|-> <labelSelector>  → one name per line
// Exit 0 when the request was answered (readyz: whatever its status), 1 with the error on stderr.
if (process.argv[1] !== undefined && path.resolve(process.argv[1]) === SELF) {
  const [cmd, file, server, namespace, selector] = process.argv.slice(2);
  try {
    if (!file || (cmd !== 'readyz' && cmd !== 'list'))
      throw new Error('usage: kube-client.ts readyz <kubeconfig> [server] | list <kubeconfig> <server|-> <namespace|-> <labelSelector>');
    const c = await kubeClient(file, { ...(server && server !== '-' ? { server } : {}), timeoutMs: 10_000 });
    if (cmd === 'readyz') {
      process.stdout.write(`${JSON.stringify(await c.readyz())}\n`);
    } else {
      if (!selector) throw new Error('list needs a label selector');
      const items = await c.listConfigMaps(selector, { ...(namespace && namespace !== '-' ? { namespace } : {}), timeoutMs: 30_000 });
      process.stdout.write(items.map((i) => `${i.name}\n`).join(''));
    }
  } catch (e) {
    process.stderr.write(`${(e as Error).message}\n`);
    process.exitCode = 1;
  }
}

/**
 * An etcd client of Kine from outside the node, the way a remote Kubernetes server is one: a client
 * certificate from the pair CA (issued by the real `geminik8s-agent etcd-client-cert` on a node) and
 * TLS to Kine on the node or the VIP. Shared by the pair tests, the fault matrix and the benchmarks:
 * etcdctl flags for one-off commands, and an HTTP/2 gRPC `KV/Put` for writers that count every
 * acknowledged put.
 *
 * Static imports are node builtins only, so a writer child process that imports this starts fast.
 */
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import http2 from 'node:http2';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const AGENT_ENTRY = fileURLToPath(new URL('../../firstboot/src/main.ts', import.meta.url));

/** PEM files of one client certificate (0600) and the pair CA. */
export interface EtcdClientFiles {
  caFile: string;
  certFile: string;
  keyFile: string;
}

/**
 * Runs the agent's `etcd-client-cert` against a node's state directory (as root on the box would)
 * and writes the bundle it prints into `dir`.
 */
export async function issueEtcdClientCert(stateDir: string, dir: string, name = 'test-client'): Promise<EtcdClientFiles> {
  const stdout = await new Promise<string>((resolve, reject) => {
    execFile(
      process.execPath,
      ['--import', 'tsx', AGENT_ENTRY, 'etcd-client-cert', '--name', name],
      { env: { PATH: process.env.PATH ?? '/usr/bin:/bin', GEMINIK8S_STATE_DIR: stateDir }, timeout: 60_000 },
      (err, out, errOut) => (err ? reject(new Error(`etcd-client-cert on ${stateDir}: ${errOut.trim() || err.message}`)) : resolve(out)),
    );
  });
  const bundle = JSON.parse(stdout) as { ca: string; cert: string; key: string };
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const files = { caFile: path.join(dir, 'ca.crt'), certFile: path.join(dir, 'client.crt'), keyFile: path.join(dir, 'client.key') };
  await writeFile(files.caFile, bundle.ca, { mode: 0o600 });
  await writeFile(files.certFile, bundle.cert, { mode: 0o600 });
  await writeFile(files.keyFile, bundle.key, { mode: 0o600 });
  return files;
}

/** etcdctl flags for Kine at `host` (port 2379) with this client certificate. */
export function etcdctlFlags(host: string, c: EtcdClientFiles): string[] {
  return [`--endpoints=https://${host}:2379`, `--cacert=${c.caFile}`, `--cert=${c.certFile}`, `--key=${c.keyFile}`];
}

/** An HTTP/2 session to Kine at `host`:2379 over mTLS (the server certificate is checked against the pair CA). */
export function connectEtcd(host: string, c: EtcdClientFiles): http2.ClientHttp2Session {
  const session = http2.connect(`https://${host}:2379`, { ca: readFileSync(c.caFile), cert: readFileSync(c.certFile), key: readFileSync(c.keyFile) });
  session.on('error', () => undefined);
  return session;
}

function varint(n: number): Buffer {
  const out: number[] = [];
  while (n > 0x7f) {
    out.push((n & 0x7f) | 0x80);
    n >>>= 7;
  }
  out.push(n);
  return Buffer.from(out);
}
const bytesField = (no: number, data: Buffer): Buffer => Buffer.concat([Buffer.from([(no << 3) | 2]), varint(data.length), data]);

/** Reads one protobuf varint at `at`; returns it (as a number: revisions fit) and the offset after it. */
function readVarint(b: Buffer, at: number): [number, number] {
  let v = 0;
  let mul = 1;
  for (let i = at; i < b.length; i++) {
    const byte = b[i] as number;
    v += (byte & 0x7f) * mul;
    if ((byte & 0x80) === 0) return [v, i + 1];
    mul *= 128;
  }
  throw new Error('truncated varint');
}

/** The fields of one protobuf message: field number -> its varint value or bytes (the last occurrence). */
function protoFields(b: Buffer): Map<number, number | Buffer> {
  const out = new Map<number, number | Buffer>();
  for (let at = 0; at < b.length; ) {
    const [tag, next] = readVarint(b, at);
    const no = Math.floor(tag / 8);
    const wire = tag & 7;
    if (wire === 0) {
      const [v, after] = readVarint(b, next);
      out.set(no, v);
      at = after;
    } else if (wire === 2) {
      const [len, start] = readVarint(b, next);
      out.set(no, b.subarray(start, start + len));
      at = start + len;
    } else throw new Error(`unexpected protobuf wire type ${wire}`);
  }
  return out;
}

/**
 * The revision in an etcdserverpb.PutResponse (header=1 -> ResponseHeader, revision=3) from the
 * gRPC body (5-byte frame prefix + message); 0 when absent.
 */
export function putResponseRevision(body: Buffer): number {
  if (body.length < 5) return 0;
  const header = protoFields(body.subarray(5, 5 + body.readUInt32BE(1))).get(1);
  if (!Buffer.isBuffer(header)) return 0;
  const rev = protoFields(header).get(3);
  return typeof rev === 'number' ? rev : 0;
}

/**
 * etcdserverpb.KV/Put {key=1, value=2}; resolves on grpc-status 0 with the response's revision,
 * rejects on anything else or after `timeoutMs`. A success at revision 0 is rejected too: Kine
 * (v0.17.5, LogStructured.Create) answers a put whose insert failed with success at revision 0
 * when the read it then makes finds no such key, so nothing was written (seen in bench-peers right
 * after a failover: the first "acknowledged" write was in neither database).
 */
export function grpcPut(session: http2.ClientHttp2Session, key: string, value: Buffer, timeoutMs: number): Promise<void> {
  return new Promise((resolve, reject) => {
    let settled = false;
    let status: string | undefined;
    let message = '';
    let req: http2.ClientHttp2Stream | undefined;
    const finish = (e?: Error): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (e) reject(e);
      else resolve();
    };
    const timer = setTimeout(() => {
      finish(new Error(`put timed out after ${timeoutMs} ms`));
      req?.close(http2.constants.NGHTTP2_CANCEL);
    }, timeoutMs);
    const msg = Buffer.concat([bytesField(1, Buffer.from(key)), bytesField(2, value)]);
    const frame = Buffer.alloc(5 + msg.length);
    frame.writeUInt32BE(msg.length, 1);
    msg.copy(frame, 5);
    try {
      req = session.request({ ':method': 'POST', ':path': '/etcdserverpb.KV/Put', 'content-type': 'application/grpc', te: 'trailers' });
    } catch (e) {
      finish(e as Error);
      return;
    }
    const take = (h: http2.IncomingHttpHeaders): void => {
      if (h['grpc-status'] !== undefined) {
        status = String(h['grpc-status']);
        message = decodeURIComponent(String(h['grpc-message'] ?? ''));
      }
    };
    const body: Buffer[] = [];
    const verdict = (): Error | undefined => {
      if (status !== '0') return new Error(status === undefined ? 'stream closed without a grpc-status' : `grpc-status ${status} ${message}`);
      try {
        return putResponseRevision(Buffer.concat(body)) > 0 ? undefined : new Error('acknowledged at revision 0: Kine wrote nothing (its failed-insert path)');
      } catch (e) {
        return new Error(`unreadable PutResponse: ${(e as Error).message}`);
      }
    };
    req.on('response', take);
    req.on('trailers', take);
    req.on('data', (d: Buffer) => void body.push(d));
    req.on('end', () => finish(verdict()));
    req.on('close', () => finish(verdict()));
    req.on('error', (e) => finish(e));
    req.end(frame);
  });
}

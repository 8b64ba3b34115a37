/**
 * The two etcd v3 calls the project makes itself, as unary gRPC over one HTTP/2 session (node:http2):
 * `KV/Range` for the agent's Kine health check and `KV/Put` for the tests' and benchmarks' writers.
 *
 * Why not etcdctl: the agent checked Kine every second by starting etcdctl, a Go program, each time,
 * with a TLS handshake when Kine serves remote clients. Under emulation that start alone cost about
 * 150 ms of CPU, a sixth of an emulated box's CPU spent on asking whether the datastore answers.
 * One session lives as long as the Kine process; each check is one small HTTP/2 stream on it.
 *
 * Only the fields used are encoded (protobuf: etcd's api/etcdserverpb/rpc.proto). Static imports
 * are node builtins only, so a writer child process that imports this starts fast.
 */
import { readFileSync } from 'node:fs';
import http2 from 'node:http2';

/** Where an etcd API is and, when it serves TLS, the client certificate and the CA its server certificate chains to (PEM files). */
export interface EtcdEndpoint {
  /** http://host:port (h2c) or https://host:port. */
  endpoint: string;
  tls?: { caFile: string; certFile: string; keyFile: string };
}

/**
 * An HTTP/2 session to an etcd API. Unreferenced: it never keeps a process alive by itself. Its
 * errors are not thrown: the calls on it fail, and the caller opens a new one ({@link usable}).
 */
export function connectEtcd(e: EtcdEndpoint): http2.ClientHttp2Session {
  const session = http2.connect(
    e.endpoint,
    e.tls ? { ca: readFileSync(e.tls.caFile), cert: readFileSync(e.tls.certFile), key: readFileSync(e.tls.keyFile) } : {},
  );
  session.on('error', () => undefined);
  session.unref();
  return session;
}

/** False once a session was closed or broke: open another. */
export function usable(session: http2.ClientHttp2Session | undefined): session is http2.ClientHttp2Session {
  return session !== undefined && !session.closed && !session.destroyed;
}

function varint(n: number): Buffer {
  const out: number[] = [];
  while (n > 0x7f) {
    out.push((n & 0x7f) | 0x80);
    n = Math.floor(n / 128);
  }
  out.push(n);
  return Buffer.from(out);
}
const bytesField = (no: number, data: Buffer): Buffer => Buffer.concat([varint((no << 3) | 2), varint(data.length), data]);
const varintField = (no: number, value: number): Buffer => Buffer.concat([varint(no << 3), varint(value)]);

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
      if (start + len > b.length) throw new Error('truncated field');
      out.set(no, b.subarray(start, start + len));
      at = start + len;
    } else throw new Error(`unexpected protobuf wire type ${wire}`);
  }
  return out;
}

/**
 * The revision in the header of an etcd response message (RangeResponse, PutResponse: header=1 ->
 * ResponseHeader, revision=3); 0 when absent.
 */
export function responseRevision(message: Buffer): number {
  const header = protoFields(message).get(1);
  if (!Buffer.isBuffer(header)) return 0;
  const rev = protoFields(header).get(3);
  return typeof rev === 'number' ? rev : 0;
}

/** The message of a gRPC body (5-byte frame prefix: compressed flag, length). */
export function grpcMessage(body: Buffer): Buffer {
  if (body.length < 5) throw new Error(`a gRPC body of ${body.length} bytes has no message`);
  if (body[0] !== 0) throw new Error('a compressed gRPC message (none was asked for)');
  const length = body.readUInt32BE(1);
  if (body.length < 5 + length) throw new Error(`a gRPC message of ${length} bytes cut at ${body.length - 5}`);
  return body.subarray(5, 5 + length);
}

/** One unary gRPC call: resolves with the response message on grpc-status 0, rejects on anything else or after `timeoutMs`. */
export function grpcUnary(session: http2.ClientHttp2Session, method: string, message: Buffer, timeoutMs: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    let settled = false;
    let status: string | undefined;
    let statusMessage = '';
    let req: http2.ClientHttp2Stream | undefined;
    const body: Buffer[] = [];
    const finish = (e?: Error): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (e) reject(e);
      else if (status !== '0') reject(new Error(status === undefined ? 'stream closed without a grpc-status' : `grpc-status ${status} ${statusMessage}`));
      else
        try {
          resolve(grpcMessage(Buffer.concat(body)));
        } catch (err) {
          reject(err as Error);
        }
    };
    const timer = setTimeout(() => {
      finish(new Error(`${method} timed out after ${timeoutMs} ms`));
      req?.close(http2.constants.NGHTTP2_CANCEL);
    }, timeoutMs);
    const frame = Buffer.alloc(5 + message.length);
    frame.writeUInt32BE(message.length, 1);
    message.copy(frame, 5);
    try {
      req = session.request({ ':method': 'POST', ':path': method, 'content-type': 'application/grpc', te: 'trailers' });
    } catch (e) {
      finish(e as Error);
      return;
    }
    const take = (h: http2.IncomingHttpHeaders): void => {
      if (h['grpc-status'] !== undefined) {
        status = String(h['grpc-status']);
        statusMessage = decodeURIComponent(String(h['grpc-message'] ?? ''));
      }
    };
    req.on('response', take);
    req.on('trailers', take);
    req.on('data', (d: Buffer) => void body.push(d));
    req.on('end', () => finish());
    req.on('close', () => finish());
    req.on('error', (e) => finish(e));
    req.end(frame);
  });
}

/**
 * KV/Put {key=1, value=2}; resolves with the revision written. A success at revision 0 is rejected:
 * Kine (v0.17.5, LogStructured.Create) answers a put whose insert failed with success at revision
 * 0 when the read it then makes finds no such key, so nothing was written (seen in bench-peers
 * right after a failover: the first "acknowledged" write was in neither database).
 */
export async function etcdPut(session: http2.ClientHttp2Session, key: string, value: Buffer, timeoutMs: number): Promise<number> {
  const reply = await grpcUnary(session, '/etcdserverpb.KV/Put', Buffer.concat([bytesField(1, Buffer.from(key)), bytesField(2, value)]), timeoutMs);
  const revision = responseRevision(reply);
  if (revision <= 0) throw new Error('acknowledged at revision 0: Kine wrote nothing (its failed-insert path)');
  return revision;
}

/**
 * KV/Range {key=1, limit=3, keys_only=8} of at most one key; resolves with the store's revision. On
 * Kine this reads the database, so an answer means the datastore behind it answers.
 */
export async function etcdRevision(session: http2.ClientHttp2Session, key: string, timeoutMs: number): Promise<number> {
  const reply = await grpcUnary(
    session,
    '/etcdserverpb.KV/Range',
    Buffer.concat([bytesField(1, Buffer.from(key)), varintField(3, 1), varintField(8, 1)]),
    timeoutMs,
  );
  return responseRevision(reply);
}

import test from 'ava';
import { grpcMessage, responseRevision } from '../../firstboot/src/adapters/etcd-grpc.ts';

/** A gRPC body: 1 byte not compressed, 4 bytes length, the message. */
const grpcBody = (msg: number[]): Buffer => {
  const b = Buffer.alloc(5 + msg.length);
  b.writeUInt32BE(msg.length, 1);
  Buffer.from(msg).copy(b, 5);
  return b;
};

test('the revision of an etcd response is read from its header (field 1 -> revision, field 3)', (t) => {
  // ResponseHeader {cluster_id: 123, member_id: 1, revision: 300, raft_term: 2}
  const header = [0x08, 123, 0x10, 1, 0x18, 0xac, 0x02, 0x20, 2];
  t.is(responseRevision(grpcMessage(grpcBody([0x0a, header.length, ...header]))), 300);
  // A RangeResponse: the header, then kvs (2), more (3) and count (4), which are skipped.
  const kv = [0x0a, 3, 0x61, 0x62, 0x63];
  t.is(responseRevision(grpcMessage(grpcBody([0x0a, header.length, ...header, 0x12, kv.length, ...kv, 0x18, 0, 0x20, 1]))), 300);
  // A revision past 2^32 (varints are read without 32-bit arithmetic).
  const big = [0x18, 0x80, 0x80, 0x80, 0x80, 0x20];
  t.is(responseRevision(grpcMessage(grpcBody([0x0a, big.length, ...big]))), 2 ** 32 * 2);
});

test("Kine's phantom success (a header without a revision, or no header) reads as revision 0", (t) => {
  const header = [0x08, 123];
  t.is(responseRevision(grpcMessage(grpcBody([0x0a, header.length, ...header]))), 0);
  t.is(responseRevision(grpcMessage(grpcBody([]))), 0);
});

test('a gRPC body that is too short, cut, or compressed is refused, not read as an empty message', (t) => {
  t.throws(() => grpcMessage(Buffer.alloc(0)), { message: /has no message/ });
  t.throws(() => grpcMessage(grpcBody([0x0a, 5, 1]).subarray(0, 7)), { message: /cut at 2/ });
  const compressed = grpcBody([0x0a, 0]);
  compressed[0] = 1;
  t.throws(() => grpcMessage(compressed), { message: /compressed/ });
  t.throws(() => responseRevision(Buffer.from([0x0a, 9, 1])), { message: /truncated field/ });
});

import test from 'ava';
import { putResponseRevision } from '../helpers/etcd-client.ts';

/** A gRPC body: 1 byte not compressed, 4 bytes length, the message. */
const grpcBody = (msg: number[]): Buffer => {
  const b = Buffer.alloc(5 + msg.length);
  b.writeUInt32BE(msg.length, 1);
  Buffer.from(msg).copy(b, 5);
  return b;
};

test('the revision of a PutResponse is read from its header (field 1 -> revision, field 3)', (t) => {
  // ResponseHeader {cluster_id: 123, member_id: 1, revision: 300, raft_term: 2}
  const header = [0x08, 123, 0x10, 1, 0x18, 0xac, 0x02, 0x20, 2];
  t.is(putResponseRevision(grpcBody([0x0a, header.length, ...header])), 300);
});

test("Kine's phantom success (a header without a revision, or no header) reads as revision 0", (t) => {
  const header = [0x08, 123];
  t.is(putResponseRevision(grpcBody([0x0a, header.length, ...header])), 0);
  t.is(putResponseRevision(grpcBody([])), 0);
  t.is(putResponseRevision(Buffer.alloc(0)), 0);
});

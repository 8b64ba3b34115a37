import test from 'ava';
import { createHmac } from 'node:crypto';
import {
  BEACON_HEADER_BYTES,
  BEACON_MAGIC,
  BEACON_VERSION,
  decodeBeacon,
  encodeBeacon,
  MAX_BEACON_BYTES,
  NonceBook,
  ReplayWindow,
  type Announce,
  type BeaconMessage,
  siteTag,
} from '../../firstboot/src/pairing/core/beacon.ts';
import { derivePairKeys, NodeKey } from '../../firstboot/src/pairing/core/keys.ts';

const SECRET = Buffer.alloc(32, 7).toString('base64');
const keys = derivePairKeys(SECRET, 'shop-1');
const A = 'a'.repeat(32);
const B = 'b'.repeat(32);
const BOOT = `${'0'.repeat(31)}1`;
const state = { role: 'unassigned', term: 0, committed: false, timeline: 0, lsn: '0/0', tcpPort: 7946, pair: [] as string[] };
const ADDR = '192.0.2.11';
const announce: Announce = { v: 2, t: 'announce', site: 'shop-1', node: A, boot: BOOT, addr: ADDR, seq: 1, state };

/** A correctly MACed v2 datagram around any body (header from `site`/`sender`). */
function raw(body: unknown, key = keys.beaconMac, o: { site?: string; sender?: string; text?: string } = {}): Buffer {
  const head = Buffer.concat([BEACON_MAGIC, Buffer.from([BEACON_VERSION, 0]), siteTag(o.site ?? 'shop-1'), Buffer.from(o.sender ?? A, 'hex')]);
  const b = Buffer.from(o.text ?? JSON.stringify(body));
  return Buffer.concat([head, createHmac('sha256', key).update(head).update(b).digest(), b]);
}

test('all three kinds round-trip through encode/decode', (t) => {
  const msgs: BeaconMessage[] = [
    announce,
    { v: 2, t: 'challenge', site: 'shop-1', node: B, boot: BOOT, addr: '192.0.2.12', to: A, nonce: 'c'.repeat(32) },
    { v: 2, t: 'response', site: 'shop-1', node: A, boot: BOOT, addr: ADDR, to: B, nonce: 'c'.repeat(32), state: { ...state, pair: [A, B], name: 'edge-1' } },
  ];
  for (const m of msgs) t.deepEqual(decodeBeacon(encodeBeacon(m, keys.beaconMac), keys.beaconMac, 'shop-1'), { ok: true, msg: m, nodeAuthenticated: false });
});

test('any flipped bit in MAC or body, or another secret, fails authentication', (t) => {
  const packet = encodeBeacon(announce, keys.beaconMac);
  for (let i = BEACON_MAGIC.length + 1; i < packet.length; i += 1) {
    const p = Buffer.from(packet);
    p[i] = (p[i] ?? 0) ^ 0x01;
    const r = decodeBeacon(p, keys.beaconMac, 'shop-1');
    t.false(r.ok, `byte ${i}`);
    // flips inside the site tag read as another site: also dropped
    if (!r.ok) t.true(['bad-mac', 'other-site'].includes(r.reason), r.reason);
  }
  const other = derivePairKeys(Buffer.alloc(32, 8).toString('base64'), 'shop-1');
  t.like(decodeBeacon(packet, other.beaconMac, 'shop-1'), { ok: false, reason: 'bad-mac' });
});

test('another site is dropped as such; junk is dropped before any parsing', (t) => {
  t.like(decodeBeacon(encodeBeacon({ ...announce, site: 'shop-2' }, keys.beaconMac), keys.beaconMac, 'shop-1'), { ok: false, reason: 'other-site' });
  t.like(decodeBeacon(Buffer.alloc(MAX_BEACON_BYTES + 1), keys.beaconMac, 'shop-1'), { ok: false, reason: 'too-large' });
  t.like(decodeBeacon(Buffer.from('GK8B'), keys.beaconMac, 'shop-1'), { ok: false, reason: 'too-short' });
  t.like(decodeBeacon(Buffer.alloc(100, 1), keys.beaconMac, 'shop-1'), { ok: false, reason: 'bad-magic' });
  t.like(decodeBeacon(Buffer.concat([BEACON_MAGIC, Buffer.from([1]), Buffer.alloc(100)]), keys.beaconMac, 'shop-1'), { ok: false, reason: 'bad-version' });
  t.like(decodeBeacon(raw(null, keys.beaconMac, { text: '{' }), keys.beaconMac, 'shop-1'), { ok: false, reason: 'malformed' });
  t.throws(() => encodeBeacon({ ...announce, state: { ...state, role: 'x'.repeat(MAX_BEACON_BYTES) } }, keys.beaconMac));
});

test('correctly MACed but off-schema bodies are rejected as malformed', (t) => {
  const bad: unknown[] = [
    { ...announce, extra: 1 },
    { ...announce, v: 1 },
    { ...announce, addr: undefined },
    { ...announce, addr: '300.1.1.1' },
    { ...announce, addr: 'host.example' },
    { ...announce, node: B },
    { ...announce, site: 'shop-2' },
    { ...announce, seq: 0 },
    { ...announce, seq: 1.5 },
    { ...announce, node: 'A'.repeat(32) },
    { ...announce, boot: 'short' },
    { ...announce, state: { ...state, lsn: '0' } },
    { ...announce, state: { ...state, tcpPort: 70000 } },
    { ...announce, state: { ...state, pair: [A] } },
    { ...announce, state: { ...state, committed: 'yes' } },
    { ...announce, state: { ...state, extra: true } },
    { v: 2, t: 'challenge', site: 'shop-1', node: A, boot: BOOT, addr: ADDR, to: B, nonce: 'short' },
    { v: 2, t: 'challenge', site: 'shop-1', node: A, boot: BOOT, addr: ADDR, to: B, nonce: 'c'.repeat(32), state },
    { v: 2, t: 'other', site: 'shop-1', node: A, boot: BOOT, addr: ADDR },
    [1, 2],
  ];
  for (const b of bad) t.like(decodeBeacon(raw(b), keys.beaconMac, 'shop-1'), { ok: false, reason: 'malformed' }, JSON.stringify(b));
});

test('the MAC is checked before anything in the body is read', (t) => {
  // Not JSON, not even UTF-8: with a wrong MAC it is rejected as such, the body never parsed.
  const junkBody = Buffer.concat([raw(announce).subarray(0, BEACON_HEADER_BYTES), Buffer.from([0xff, 0xfe, 0x7b])]);
  t.like(decodeBeacon(junkBody, keys.beaconMac, 'shop-1'), { ok: false, reason: 'bad-mac' });
  // A body that claims another sender than the header is refused even with a good MAC.
  t.like(decodeBeacon(raw(announce, keys.beaconMac, { sender: B }), keys.beaconMac, 'shop-1'), {
    ok: false,
    reason: 'malformed',
    detail: 'body disagrees with the header',
  });
  // Another site's pair on the LAN: dropped on the fixed header, quietly, before the MAC.
  const other = derivePairKeys(Buffer.alloc(32, 9).toString('base64'), 'shop-2');
  t.like(decodeBeacon(encodeBeacon({ ...announce, site: 'shop-2' }, other.beaconMac), keys.beaconMac, 'shop-1'), { ok: false, reason: 'other-site' });
});

test('replay window: strictly increasing seq per (node, boot); a new boot starts afresh', (t) => {
  const w = new ReplayWindow(3);
  t.true(w.accept(A, BOOT, 1));
  t.false(w.accept(A, BOOT, 1), 'exact replay');
  t.true(w.accept(A, BOOT, 5));
  t.false(w.accept(A, BOOT, 4), 'older');
  t.true(w.accept(A, 'f'.repeat(32), 1), 'new boot');
  t.false(w.accept(A, BOOT, 5), 'old boot still remembered');
  t.true(w.accept(B, BOOT, 1));
  t.true(w.accept(B, 'e'.repeat(32), 1));
  t.is(w.size, 3, 'bounded');
});

test('nonces are single use, bound to the peer they were issued to, and expire', (t) => {
  const n = new NonceBook(1000, 2);
  n.issue('n1', A, 0);
  t.false(n.consume('n1', B, 10), 'wrong peer');
  t.true(n.consume('n1', A, 10));
  t.false(n.consume('n1', A, 20), 'used');
  n.issue('n2', A, 100);
  t.is(n.pendingSince(A, 200), 100);
  t.false(n.consume('n2', A, 1101 + 100), 'expired');
  n.issue('x', A, 0);
  n.issue('y', A, 0);
  n.issue('z', A, 0);
  t.false(n.consume('x', A, 1), 'evicted: bounded');
  t.true(n.consume('z', A, 1));
});

test('a heartbeat rides on the announce, and a malformed one is rejected whole', (t) => {
  const hb = { pg: 'standby' as const, pgHealthy: true, syncRep: false, handoverForMs: null, peerSilentMs: 840, holdsVip: false, heardSyncRep: false };
  const withHb: Announce = { ...announce, state: { ...state, role: 'follower', hb } };
  t.deepEqual(decodeBeacon(encodeBeacon(withHb, keys.beaconMac), keys.beaconMac, 'shop-1'), { ok: true, msg: withHb, nodeAuthenticated: false });
  for (const bad of [
    { ...hb, pg: 'writable' },
    { ...hb, handoverForMs: -1 },
    { ...hb, extra: 1 },
    { ...hb, holdsVip: 'yes' },
  ]) {
    const r = decodeBeacon(raw({ ...announce, state: { ...state, hb: bad } }), keys.beaconMac, 'shop-1');
    t.like(r, { ok: false, reason: 'malformed' }, JSON.stringify(bad));
  }
});

test('a paired node adds its node MAC: its partner verifies it, a forged or missing one is told apart, third parties still read the beacon', (t) => {
  const a = NodeKey.generate();
  const b = NodeKey.generate();
  const onA = a.linkWith(b.publicKey, 'shop-1');
  const onB = b.linkWith(a.publicKey, 'shop-1');
  const packet = encodeBeacon(announce, keys.beaconMac, onA.beaconMac(A));
  t.like(
    decodeBeacon(packet, keys.beaconMac, 'shop-1', (s) => (s === A ? onB.beaconMac(A) : undefined)),
    { ok: true, nodeAuthenticated: true },
  );
  t.like(decodeBeacon(packet, keys.beaconMac, 'shop-1'), { ok: true, nodeAuthenticated: false }, 'a box without the link reads it by the pair MAC');
  const forger = NodeKey.generate().linkWith(b.publicKey, 'shop-1');
  const forged = encodeBeacon(announce, keys.beaconMac, forger.beaconMac(A));
  t.like(
    decodeBeacon(forged, keys.beaconMac, 'shop-1', () => onB.beaconMac(A)),
    { ok: false, reason: 'bad-node-mac' },
  );
  t.like(
    decodeBeacon(encodeBeacon(announce, keys.beaconMac), keys.beaconMac, 'shop-1', () => onB.beaconMac(A)),
    { ok: true, nodeAuthenticated: false },
    'without a node MAC: authenticated by the pair secret only',
  );
  // B's own key for what it sends differs from A's: a node MAC is bound to its sender.
  t.like(
    decodeBeacon(encodeBeacon(announce, keys.beaconMac, onB.beaconMac(B)), keys.beaconMac, 'shop-1', () => onB.beaconMac(A)),
    { ok: false, reason: 'bad-node-mac' },
  );
});

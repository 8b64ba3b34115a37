import test from 'ava';
import { encodeFrame, FrameDecoder, FrameError, MAX_FRAME_BYTES } from '../../firstboot/src/pairing/core/frames.ts';
import { pairFormedReason, parseChannelMessage } from '../../firstboot/src/pairing/core/protocol.ts';

const A = 'a'.repeat(32);

test('frames split on newlines across arbitrary chunk boundaries', (t) => {
  const msgs = [
    { t: 'ack', term: 1 },
    { t: 'refused', reason: 'x' },
    { t: 'hello', deep: { k: [1, 2, 3] } },
  ];
  const bytes = Buffer.concat(msgs.map((m) => encodeFrame(m)));
  for (const size of [1, 2, 3, 7, bytes.length]) {
    const d = new FrameDecoder();
    const out: unknown[] = [];
    for (let i = 0; i < bytes.length; i += size) out.push(...d.push(bytes.subarray(i, i + size)));
    t.deepEqual(out, msgs, `chunk size ${size}`);
  }
});

test('an oversized frame is an error, whether or not its newline has arrived', (t) => {
  const d = new FrameDecoder(16);
  t.throws(() => d.push(Buffer.from('"0123456789abcdefg')), { instanceOf: FrameError });
  const d2 = new FrameDecoder(16);
  d2.push(Buffer.from('"0123456789'));
  t.throws(() => d2.push(Buffer.from('abcdefgh"\n')), { instanceOf: FrameError });
  t.notThrows(() => new FrameDecoder(16).push(Buffer.from('"0123456789abcd"\n')));
  t.throws(() => encodeFrame('x'.repeat(MAX_FRAME_BYTES)), { instanceOf: FrameError });
});

test('invalid JSON and empty frames are errors', (t) => {
  t.throws(() => new FrameDecoder().push(Buffer.from('{nope}\n')), { instanceOf: FrameError });
  t.throws(() => new FrameDecoder().push(Buffer.from('\n')), { instanceOf: FrameError });
});

test('channel messages are parsed strictly', (t) => {
  const cand = { nodeId: A, committed: false, term: 0, timeline: 0, lsn: '0/0' };
  const key = 'k'.repeat(43);
  t.deepEqual(parseChannelMessage({ t: 'hello', v: 2, site: 'shop-1', candidate: cand, key }), { t: 'hello', v: 2, site: 'shop-1', candidate: cand, key });
  t.deepEqual(parseChannelMessage({ t: 'auth', proof: key }), { t: 'auth', proof: key });
  t.deepEqual(parseChannelMessage({ t: 'propose', leader: A, follower: 'b'.repeat(32), term: 1 }).t, 'propose');
  const bad: unknown[] = [
    null,
    [],
    { t: 'nope' },
    { t: 'hello', v: 1, site: 'shop-1', candidate: cand, key },
    { t: 'hello', v: 2, site: 'shop-1', candidate: cand },
    { t: 'hello', v: 2, site: 'shop-1', candidate: cand, key: 'short' },
    { t: 'hello', v: 2, site: 'shop-1', candidate: { ...cand, extra: 1 }, key },
    { t: 'hello', v: 2, site: 'shop-1', candidate: { ...cand, lsn: 'x' }, key },
    { t: 'hello', v: 2, site: 'shop-1', candidate: { ...cand, term: -1 }, key },
    { t: 'hello', v: 2, site: 'shop-1', candidate: { ...cand, term: 2 ** 31 }, key },
    { t: 'hello', v: 2, site: 'shop-1', candidate: { ...cand, nodeId: 'A'.repeat(32) }, key },
    { t: 'auth', proof: 'p'.repeat(42) },
    { t: 'auth', proof: 'p'.repeat(43), extra: 1 },
    { t: 'propose', leader: A, follower: A, term: 1.5 },
    { t: 'secrets', term: 1, secrets: 'a string' },
    { t: 'ack', term: 1, more: true },
    { t: 'refused', reason: 'x'.repeat(201) },
    { t: 'refused', reason: 'line\nbreak' },
  ];
  for (const m of bad) t.throws(() => parseChannelMessage(m), undefined, JSON.stringify(m));
});

test('the refusal reason names the pair and the way out', (t) => {
  t.is(pairFormedReason(['a', 'b']), 'pair already formed (a,b); use replace-node');
});

/** The TLS-PSK pairing channel and the agreement protocol over loopback (real sockets, real TLS). */
import test from 'ava';
import { connect as tcpConnect } from 'node:net';
import { jsonLogger, type Logger } from '../../firstboot/src/adapters/output.ts';
import { derivePairKeys, NodeKey } from '../../firstboot/src/pairing/core/keys.ts';
import type { Candidate } from '../../firstboot/src/pairing/core/election.ts';
import { connectChannel, HandshakeRefusedError, startChannelServer, type Channel } from '../../firstboot/src/pairing/net/channel.ts';
import { DisagreementError, negotiate, NodeKeyError, PairingRefusedError } from '../../firstboot/src/pairing/net/negotiate.ts';

const SECRET = Buffer.alloc(32, 7).toString('base64');
const keys = derivePairKeys(SECRET, 'shop-1');
const A = 'a'.repeat(32);
const B = 'b'.repeat(32);
const C = '0'.repeat(32);
const nodeKeys: Record<string, NodeKey> = { [A]: NodeKey.generate(), [B]: NodeKey.generate(), [C]: NodeKey.generate() };
/** A node's identity for negotiate: its own key, and nothing pinned yet (first pairing). */
const id = (nodeId: string, pinned: Record<string, string> = {}) => ({ nodeKey: nodeKeys[nodeId] as NodeKey, pinnedKey: (peer: string) => pinned[peer] });

function recorder(): { log: Logger; lines: string[]; events: Array<Record<string, unknown>> } {
  const lines: string[] = [];
  return {
    log: jsonLogger((l) => void lines.push(l)),
    lines,
    get events() {
      return lines.map((l) => JSON.parse(l) as Record<string, unknown>);
    },
  };
}
const cand = (nodeId: string, over: Partial<Candidate> = {}): Candidate => ({ nodeId, committed: false, term: 0, timeline: 0, lsn: '0/0', ...over });

async function server(t: import('ava').ExecutionContext, log: Logger, admit?: (id: string) => string | undefined, maxFrameBytes?: number) {
  const s = await startChannelServer({
    keys,
    nodeId: B,
    host: '127.0.0.1',
    port: 0,
    log,
    ...(admit ? { admit } : {}),
    ...(maxFrameBytes ? { maxFrameBytes } : {}),
  });
  t.teardown(() => s.close());
  return s;
}

test('both sides agree, the leader hands over the secrets, the follower persists before acking; nothing secret is logged', async (t) => {
  const sr = recorder();
  const cr = recorder();
  const s = await server(t, sr.log);
  const secrets = { replicationPassword: 'hunter2-repl', k3sToken: 'K10-token-value', caKey: '-----BEGIN PRIVATE KEY-----abc' };
  const persisted: unknown[] = [];
  const [client, accepted] = await Promise.all([
    connectChannel({ keys, nodeId: A, peerNodeId: B, host: '127.0.0.1', port: s.port, log: cr.log }),
    s.nextSession(5000),
  ]);
  t.truthy(accepted);
  t.is(accepted?.peerNodeId, A, 'server side learns the peer id from the PSK identity');
  const started = performance.now();
  const [ra, rb] = await Promise.all([
    negotiate(client, {
      ...id(A),
      siteId: 'shop-1',
      self: cand(A),
      log: cr.log,
      secretsIfLeader: () => secrets,
      onSecrets: async () => t.fail('leader got secrets'),
    }),
    negotiate(accepted as Channel, {
      ...id(B),
      siteId: 'shop-1',
      self: cand(B, { name: 'edge-2' }),
      log: sr.log,
      secretsIfLeader: () => t.fail('follower asked for secrets') as never,
      onSecrets: async (got) => {
        await new Promise((r) => setTimeout(r, 50));
        persisted.push(got);
      },
    }),
  ]);
  t.log(`negotiation over loopback: ${(performance.now() - started).toFixed(1)} ms`);
  t.like(ra, { leader: A, follower: B, term: 1, role: 'leader' });
  t.like(rb, { leader: A, follower: B, term: 1, role: 'follower' });
  t.deepEqual(persisted, [secrets]);
  const all = [...sr.lines, ...cr.lines].join('');
  for (const v of Object.values(secrets)) t.false(all.includes(String(v)));
  t.false(all.includes(keys.channelPsk.toString('hex')));
});

test('preferred leader and different site files: proposals must match or nothing happens', async (t) => {
  const s = await server(t, recorder().log);
  const [client, accepted] = await Promise.all([
    connectChannel({ keys, nodeId: A, peerNodeId: B, host: '127.0.0.1', port: s.port, log: recorder().log }),
    s.nextSession(5000),
  ]);
  const common = { siteId: 'shop-1', log: recorder().log, secretsIfLeader: () => ({}), onSecrets: async () => undefined };
  const results = await Promise.allSettled([
    negotiate(client, { ...id(A), ...common, self: cand(A), preferredLeader: B }),
    negotiate(accepted as Channel, { ...id(B), ...common, self: cand(B) }),
  ]);
  t.true(
    results.every((r) => r.status === 'rejected'),
    'one side prefers B, the other has no preference: both abort',
  );
  t.regex(String((results[0] as PromiseRejectedResult).reason), /proposals differ|aborted/);
});

test('a wrong pair secret fails the TLS-PSK handshake, logged on both sides with the reason', async (t) => {
  const sr = recorder();
  const cr = recorder();
  const s = await server(t, sr.log);
  const wrong = derivePairKeys(Buffer.alloc(32, 9).toString('base64'), 'shop-1');
  const err = await t.throwsAsync(connectChannel({ keys: wrong, nodeId: A, peerNodeId: B, host: '127.0.0.1', port: s.port, log: cr.log }), {
    instanceOf: HandshakeRefusedError,
  });
  t.regex(err?.message ?? '', /pairing refused: peer b{32} at 127\.0\.0\.1 failed the pair-secret handshake \(different site secret\?\)/);
  await new Promise((r) => setTimeout(r, 100));
  t.true(
    sr.events.some(
      (e) =>
        e.event === 'pairing-refused' &&
        /pairing refused: peer a{32} at .* failed the pair-secret handshake \(different site secret\?\)/.test(String(e.message)),
    ),
    sr.lines.join(''),
  );
  t.is(await s.nextSession(10), undefined, 'no session was admitted');
});

test('a third node with the right secret is refused with the reason once the pair is formed', async (t) => {
  const sr = recorder();
  const s = await server(t, sr.log, (id) => ([A, B].includes(id) ? undefined : `pair already formed (${A},${B}); use replace-node`));
  const ch = await connectChannel({ keys, nodeId: C, peerNodeId: B, host: '127.0.0.1', port: s.port, log: recorder().log });
  const err = await t.throwsAsync(
    negotiate(ch, { ...id(C), siteId: 'shop-1', self: cand(C), log: recorder().log, secretsIfLeader: () => ({}), onSecrets: async () => undefined }),
    { instanceOf: PairingRefusedError },
  );
  t.regex(err?.message ?? '', /pair already formed \(a{32},b{32}\); use replace-node/);
  t.true(sr.events.some((e) => e.event === 'pairing-refused' && String(e.message).includes('use replace-node')));
});

test('an oversized frame drops the connection; plain TCP junk never becomes a session', async (t) => {
  const sr = recorder();
  const s = await server(t, sr.log, undefined, 1024);
  const [client, accepted] = await Promise.all([
    connectChannel({ keys, nodeId: A, peerNodeId: B, host: '127.0.0.1', port: s.port, log: recorder().log, maxFrameBytes: 1024 }),
    s.nextSession(5000),
  ]);
  t.throws(() => client.send({ t: 'refused', reason: 'x'.repeat(1100) } as never), { message: /exceeds/ });
  // bypass the sender's check: write raw bytes through the TLS socket
  (client as unknown as { socket: import('node:tls').TLSSocket }).socket.write(Buffer.alloc(4096, 0x41));
  await t.throwsAsync((accepted as Channel).receive(3000), { message: /exceeds the limit/ });
  const junk = tcpConnect(s.port, '127.0.0.1');
  junk.on('error', () => undefined);
  junk.write('GET / HTTP/1.0\r\n\r\n');
  await new Promise((r) => setTimeout(r, 200));
  junk.destroy();
  t.is(await s.nextSession(10), undefined);
});

test('a follower that cannot persist the secrets aborts: the leader gets no ack and knows why', async (t) => {
  const s = await server(t, recorder().log);
  const [client, accepted] = await Promise.all([
    connectChannel({ keys, nodeId: A, peerNodeId: B, host: '127.0.0.1', port: s.port, log: recorder().log }),
    s.nextSession(5000),
  ]);
  const common = { siteId: 'shop-1', log: recorder().log, secretsIfLeader: () => ({ k3sToken: 'x' }) };
  const [leader, follower] = await Promise.allSettled([
    negotiate(client, { ...id(A), ...common, self: cand(A), onSecrets: async () => undefined }),
    negotiate(accepted as Channel, {
      ...id(B),
      ...common,
      self: cand(B),
      onSecrets: async () => {
        throw new Error('disk full');
      },
    }),
  ]);
  t.is(follower.status, 'rejected');
  t.is(leader.status, 'rejected');
  t.true((leader as PromiseRejectedResult).reason instanceof DisagreementError);
  t.regex(String((leader as PromiseRejectedResult).reason), /could not accept or persist the secrets/);
});

test('once paired, the pair secret alone cannot speak for the partner: another node key, or a copied one without its private half, is refused before any secret', async (t) => {
  const sr = recorder();
  const s = await server(t, sr.log);
  // B pinned A's key at pairing. An impostor holding only the pair secret dials as A.
  const pinnedOnB = { [A]: (nodeKeys[A] as NodeKey).publicKey };
  const secrets = { replicationPassword: 'never-sent-to-an-impostor' };
  const ownKey = NodeKey.generate();
  for (const impostor of [
    { nodeKey: ownKey, why: /another node key than the one pinned/ },
    { nodeKey: ownKey, copiedPublic: true, why: /failed to prove its node key/ },
  ]) {
    const [client, accepted] = await Promise.all([
      connectChannel({ keys, nodeId: A, peerNodeId: B, host: '127.0.0.1', port: s.port, log: recorder().log }),
      s.nextSession(5000),
    ]);
    // The copied public key without its private half: present A's public key, prove with another.
    const presented = impostor.copiedPublic
      ? Object.assign(Object.create(NodeKey.prototype) as NodeKey, {
          publicKey: (nodeKeys[A] as NodeKey).publicKey,
          linkWith: (k: string, site: string) => impostor.nodeKey.linkWith(k, site),
        })
      : impostor.nodeKey;
    const received: unknown[] = [];
    const [fake, real] = await Promise.allSettled([
      negotiate(client, {
        siteId: 'shop-1',
        self: cand(A),
        log: recorder().log,
        nodeKey: presented,
        pinnedKey: () => undefined,
        secretsIfLeader: () => ({}),
        onSecrets: async (x) => void received.push(x),
      }),
      negotiate(accepted as Channel, {
        ...id(B, pinnedOnB),
        siteId: 'shop-1',
        self: cand(B, { term: 1, committed: true, leader: B }),
        log: sr.log,
        secretsIfLeader: () => secrets,
        onSecrets: async () => undefined,
      }),
    ]);
    t.is(real.status, 'rejected');
    t.true((real as PromiseRejectedResult).reason instanceof NodeKeyError, String((real as PromiseRejectedResult).reason));
    t.regex(String((real as PromiseRejectedResult).reason), impostor.why);
    t.is(fake.status, 'rejected');
    t.deepEqual(received, [], 'no secrets reached the impostor');
  }
  t.false(sr.lines.join('').includes(secrets.replicationPassword));
});

test('the real partner re-proves its pinned key on a new session and gets the same link keys', async (t) => {
  const s = await server(t, recorder().log);
  const pinned = { a: { [B]: (nodeKeys[B] as NodeKey).publicKey }, b: { [A]: (nodeKeys[A] as NodeKey).publicKey } };
  const [client, accepted] = await Promise.all([
    connectChannel({ keys, nodeId: A, peerNodeId: B, host: '127.0.0.1', port: s.port, log: recorder().log }),
    s.nextSession(5000),
  ]);
  const common = { siteId: 'shop-1', log: recorder().log, secretsIfLeader: () => ({}), onSecrets: async () => undefined };
  const [ra, rb] = await Promise.all([
    negotiate(client, { ...common, ...id(A, pinned.a), self: cand(A) }),
    negotiate(accepted as Channel, { ...common, ...id(B, pinned.b), self: cand(B) }),
  ]);
  t.is(ra.peerKey, (nodeKeys[B] as NodeKey).publicKey);
  t.is(rb.peerKey, (nodeKeys[A] as NodeKey).publicKey);
  t.deepEqual(ra.link.beaconMac(A), rb.link.beaconMac(A), 'both derive the same key for what A sends');
  t.notDeepEqual(ra.link.beaconMac(A), ra.link.beaconMac(B), 'each sender has its own key');
});

/**
 * Issue 10, point 4: beacons are cheap to reject. A real discovery socket (loopback addresses only)
 * is sent forged, reflected and junk datagrams by an attacker that even holds the pair secret:
 *  - a challenge or announce naming another node's address, sent from the attacker's address, never
 *    makes the node send anything to the attacker's address (no reflection);
 *  - a flood of junk costs bounded log lines, and the node still answers a legitimate peer.
 */
import test from 'ava';
import { randomBytes } from 'node:crypto';
import { createSocket, type Socket } from 'node:dgram';
import { BEACON_VERSION, encodeBeacon, type Announce, type Challenge } from '../../firstboot/src/pairing/core/beacon.ts';
import { derivePairKeys } from '../../firstboot/src/pairing/core/keys.ts';
import { openBeaconSocket } from '../../firstboot/src/pairing/net/discovery.ts';
import type { Logger } from '../../firstboot/src/adapters/output.ts';

const SITE = 'abuse-1';
const keys = derivePairKeys(randomBytes(32).toString('base64'), SITE);
const VICTIM = '127.0.0.2';
const ATTACKER = '127.0.0.3';
const CLAIMED = '127.0.0.4';
const state = { role: 'unassigned', term: 0, committed: false, timeline: 0, lsn: '0/0', tcpPort: 7946, pair: [] as string[] };

function collectingLog(): Logger & { events: { level: string; event: string; fields: Record<string, unknown> }[] } {
  const events: { level: string; event: string; fields: Record<string, unknown> }[] = [];
  return { events, event: (level, event, fields = {}) => void events.push({ level, event, fields }) } as Logger & { events: typeof events };
}

function bindUdp(address: string, port: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = createSocket({ type: 'udp4', reuseAddr: true });
    s.once('error', reject);
    s.bind({ port, address, exclusive: false }, () => resolve(s));
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A real discovery socket on VICTIM (its log collected) and an attacker's socket on ATTACKER, closed when the test ends. */
async function victimAndAttacker(t: import('ava').ExecutionContext) {
  const port = 20000 + Math.floor(Math.random() * 20000);
  const log = collectingLog();
  const victimId = randomBytes(16).toString('hex');
  const victim = await openBeaconSocket({
    siteId: SITE,
    keys,
    nodeId: victimId,
    bindAddress: VICTIM,
    broadcastAddress: '127.0.0.9',
    port,
    intervalMs: 60_000,
    getState: () => state,
    log,
  });
  t.teardown(() => victim.close());
  const attacker = await bindUdp(ATTACKER, port + 1);
  t.teardown(() => attacker.close());
  return { port, log, victimId, attacker };
}

test.serial('forged challenges and announces never send anything to a third address', async (t) => {
  const { port, log, victimId, attacker } = await victimAndAttacker(t);
  const received: Buffer[] = [];
  attacker.on('message', (m) => received.push(m));

  const other = randomBytes(16).toString('hex');
  const base = { v: BEACON_VERSION, site: SITE, node: other, boot: randomBytes(16).toString('hex'), addr: CLAIMED } as const;
  const challenge: Challenge = { ...base, t: 'challenge', to: victimId, nonce: randomBytes(16).toString('hex') };
  const announce: Announce = { ...base, t: 'announce', seq: 1, state };
  for (const msg of [challenge, announce]) attacker.send(encodeBeacon(msg, keys.beaconMac), port, VICTIM);
  await sleep(1500);
  t.is(received.length, 0, 'nothing was reflected to the sender of forged datagrams');
  const mismatches = log.events.filter((e) => e.event === 'pairing-beacon-rejected' && e.fields.reason === 'address-mismatch');
  t.true(mismatches.length >= 1, 'the forgery is reported');
  t.is(mismatches[0]?.fields.claimed, CLAIMED);

  // The same announce sent from the address it names is answered with a challenge: the check is the address, not the key.
  const honest = await bindUdp(CLAIMED, port + 2);
  t.teardown(() => honest.close());
  const answered = new Promise<Buffer>((resolve) => honest.once('message', (m) => resolve(m)));
  honest.send(encodeBeacon({ ...announce, seq: 2 }, keys.beaconMac), port, VICTIM);
  const reply = await Promise.race([answered, sleep(3000).then(() => undefined)]);
  t.truthy(reply, 'a peer at the address it names is challenged');
});

test.serial('a flood of junk and forged datagrams costs bounded log lines; the node still answers a peer', async (t) => {
  const { port, log, attacker } = await victimAndAttacker(t);
  const wrongKeys = derivePairKeys(randomBytes(32).toString('base64'), SITE);
  const other = randomBytes(16).toString('hex');
  const boot = randomBytes(16).toString('hex');
  const kinds = [
    () => randomBytes(200),
    () => encodeBeacon({ v: BEACON_VERSION, t: 'announce', site: SITE, node: other, boot, addr: ATTACKER, seq: 1, state }, wrongKeys.beaconMac),
    () => encodeBeacon({ v: BEACON_VERSION, t: 'announce', site: SITE, node: other, boot, addr: CLAIMED, seq: 1, state }, keys.beaconMac),
  ];
  const total = 6000;
  for (let i = 0; i < total; i++) {
    attacker.send((kinds[i % kinds.length] as () => Buffer)(), port, VICTIM);
    if (i % 500 === 499) await sleep(20);
  }
  await sleep(1000);
  const lines = log.events.filter((e) => e.event.startsWith('pairing-beacon'));
  t.true(lines.length <= 20, `${total} bad datagrams produced ${lines.length} log lines`);

  // A legitimate peer is still heard and challenged.
  const peer = await bindUdp(CLAIMED, port + 2);
  t.teardown(() => peer.close());
  const answered = new Promise<Buffer>((resolve) => peer.once('message', (m) => resolve(m)));
  peer.send(
    encodeBeacon({ v: BEACON_VERSION, t: 'announce', site: SITE, node: randomBytes(16).toString('hex'), boot, addr: CLAIMED, seq: 1, state }, keys.beaconMac),
    port,
    VICTIM,
  );
  t.truthy(await Promise.race([answered, sleep(3000).then(() => undefined)]), 'the node still answers a real peer after the flood');
});

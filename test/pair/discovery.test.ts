/**
 * Pair discovery, election and secret hand-over between real processes in Linux network
 * namespaces (test/helpers/netns.ts): node namespaces on a bridge that lives in a gw namespace.
 *
 * This file is also the in-namespace driver: run with GK8S_PAIR_DRIVER=<json> (not under ava) it
 * starts discovery + the pairing channel + runPairing (or a raw UDP capture/sender for the
 * gateway) and prints one JSON object per line: the agent's own log events, then `driver-result`.
 */
import type { ExecutionContext, TestFn } from 'ava';
import { createHash, randomBytes } from 'node:crypto';
import { createSocket } from 'node:dgram';
import { fileURLToPath } from 'node:url';
import type { ChildProcess } from 'node:child_process';
import { BEACON_HEADER_BYTES } from '../../firstboot/src/pairing/core/beacon.ts';

const DRIVER_ENV = 'GK8S_PAIR_DRIVER';
const HERE = fileURLToPath(import.meta.url);
const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const PORT = 7946;
const SITE = 'shop-17';

interface AgentConfig {
  mode: 'pair' | 'third';
  siteId: string;
  secret: string;
  nodeId: string;
  name?: string;
  bindAddress: string;
  broadcastAddress?: string;
  port: number;
  preferredLeader?: string;
  /** Persisted state from an earlier run (re-run after a crash). */
  term?: number;
  leader?: string;
  timeoutMs: number;
  /** Keep discovery and the channel server running this long after the result (serve refusals). */
  holdMs: number;
  dial?: { host: string; port: number; peerNodeId: string };
}
interface DialConfig {
  mode: 'dial';
  siteId: string;
  secret: string;
  nodeId: string;
  dial: { host: string; port: number; peerNodeId: string };
}
interface CaptureConfig {
  mode: 'capture';
  port: number;
  from: string;
  timeoutMs: number;
}
interface SendConfig {
  mode: 'send';
  packets: string[];
  host: string;
  port: number;
}
type DriverConfig = AgentConfig | DialConfig | CaptureConfig | SendConfig;

const emit = (o: Record<string, unknown>): void => void process.stdout.write(`${JSON.stringify({ event: 'driver-result', ...o })}\n`);
const digest = (v: unknown) => createHash('sha256').update(JSON.stringify(v)).digest('hex').slice(0, 16);

// ---------------------------------------------------------------------------------------------
// Driver (runs inside a namespace)
// ---------------------------------------------------------------------------------------------

async function runDriver(cfg: DriverConfig): Promise<void> {
  const { jsonLogger } = await import('../../firstboot/src/adapters/output.ts');
  const p = await import('../../firstboot/src/pairing/index.ts');
  const log = jsonLogger();

  if (cfg.mode === 'capture') {
    const sock = createSocket({ type: 'udp4', reuseAddr: true });
    await new Promise<void>((r) => sock.bind(cfg.port, '0.0.0.0', () => r()));
    const packet = await new Promise<Buffer | undefined>((resolve) => {
      const timer = setTimeout(() => resolve(undefined), cfg.timeoutMs);
      sock.on('message', (msg, rinfo) => {
        if (rinfo.address !== cfg.from || msg.length <= BEACON_HEADER_BYTES) return;
        const body = JSON.parse(msg.subarray(BEACON_HEADER_BYTES).toString('utf8')) as { t?: string };
        if (body.t !== 'announce') return;
        clearTimeout(timer);
        resolve(msg);
      });
    });
    sock.close();
    return emit({ ok: packet !== undefined, hex: packet?.toString('hex') });
  }

  if (cfg.mode === 'send') {
    const sock = createSocket('udp4');
    for (const hex of cfg.packets) {
      await new Promise<void>((r, j) => sock.send(Buffer.from(hex, 'hex'), cfg.port, cfg.host, (e) => (e ? j(e) : r())));
    }
    sock.close();
    return emit({ ok: true, sent: cfg.packets.length });
  }

  const keys = p.derivePairKeys(cfg.secret, cfg.siteId);
  const identity = { nodeKey: p.NodeKey.generate(), pinnedKey: () => undefined };
  const candidate = (c: { nodeId: string; name?: string; term?: number; leader?: string }) => ({
    nodeId: c.nodeId,
    committed: false,
    term: c.term ?? 0,
    timeline: 0,
    lsn: '0/0',
    ...(c.name !== undefined ? { name: c.name } : {}),
    ...(c.leader !== undefined ? { leader: c.leader } : {}),
  });
  const dial = async (d: NonNullable<AgentConfig['dial']>) => {
    try {
      const ch = await p.connectChannel({ keys, nodeId: cfg.nodeId, peerNodeId: d.peerNodeId, host: d.host, port: d.port, log });
      const r = await p.negotiate(ch, {
        ...identity,
        siteId: cfg.siteId,
        self: candidate(cfg),
        log,
        secretsIfLeader: () => ({}),
        onSecrets: async () => undefined,
      });
      return { ok: true, result: r };
    } catch (e) {
      return { ok: false, error: (e as Error).message, kind: (e as Error).constructor.name };
    }
  };
  if (cfg.mode === 'dial') return emit(await dial(cfg.dial));

  let role = 'unassigned';
  let term = cfg.term ?? 0;
  const started = performance.now();
  let beacons: import('../../firstboot/src/pairing/index.ts').BeaconSocket | undefined;
  const server = await p.startChannelServer({
    keys,
    nodeId: cfg.nodeId,
    host: cfg.bindAddress,
    port: cfg.port,
    log,
    admit: (id) => beacons?.discovery.refusalFor(id),
  });
  beacons = await p.openBeaconSocket({
    siteId: cfg.siteId,
    keys,
    nodeId: cfg.nodeId,
    bindAddress: cfg.bindAddress,
    ...(cfg.broadcastAddress ? { broadcastAddress: cfg.broadcastAddress } : {}),
    port: cfg.port,
    getState: () => ({ role, term, committed: false, timeline: 0, lsn: '0/0', tcpPort: server.port, ...(cfg.name ? { name: cfg.name } : {}) }),
    log,
  });
  const disc = beacons;
  const shutdown = async () => {
    await disc.close();
    await server.close();
  };
  process.once('SIGTERM', () => void shutdown().then(() => process.exit(0)));

  // Stand-in for the other engineer's secret generation and persistence.
  const secrets = {
    replicationPassword: randomBytes(18).toString('base64url'),
    kinePassword: randomBytes(18).toString('base64url'),
    k3sToken: `K10${randomBytes(24).toString('hex')}`,
  };
  let received: unknown;
  try {
    const result = await p.runPairing({
      ...identity,
      discovery: disc.discovery,
      server,
      keys,
      siteId: cfg.siteId,
      self: () => candidate(cfg),
      ...(cfg.preferredLeader ? { preferredLeader: cfg.preferredLeader } : {}),
      secretsIfLeader: () => secrets,
      onSecrets: async (s) => {
        received = s;
      },
      log,
      timeoutMs: cfg.timeoutMs,
    });
    role = result.role;
    term = result.term;
    disc.heartbeat.announce();
    emit({
      ok: true,
      elapsedMs: Math.round(performance.now() - started),
      leader: result.leader,
      follower: result.follower,
      term: result.term,
      role: result.role,
      secretsDigest: digest(result.role === 'leader' ? secrets : received),
      secretValues: result.role === 'leader' ? Object.values(secrets) : [],
    });
  } catch (e) {
    emit({ ok: false, elapsedMs: Math.round(performance.now() - started), error: (e as Error).message });
  }
  if (cfg.mode === 'third' && cfg.dial) emit({ dial: await dial(cfg.dial) });
  await new Promise((r) => setTimeout(r, cfg.holdMs));
  await shutdown();
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

type Event = Record<string, unknown> & { event?: string };

interface Agent {
  child: ChildProcess;
  events: Event[];
  stderr: () => string;
  waitFor(pred: (e: Event) => boolean, timeoutMs: number, what: string): Promise<Event>;
  result(timeoutMs: number): Promise<Event>;
  stop(): void;
}

function defineTests(test: TestFn): void {
  const secret = () => randomBytes(32).toString('base64');
  const ID = { a: 'a1'.repeat(16), b: 'b2'.repeat(16), c: '0c'.repeat(16) };

  async function topology(t: ExecutionContext, nodes: number) {
    const { createTopology } = await import('../helpers/netns.ts');
    const topo = await createTopology(nodes);
    t.teardown(() => topo.destroy());
    return topo;
  }

  function start(t: ExecutionContext, topo: Awaited<ReturnType<typeof topology>>, ns: string, cfg: DriverConfig, label: string): Agent {
    const child = topo.spawn(ns, [process.execPath, '--import', 'tsx', HERE], {
      cwd: ROOT,
      env: { ...process.env, [DRIVER_ENV]: JSON.stringify(cfg) },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const events: Event[] = [];
    const waiters = new Set<() => void>();
    let buf = '';
    let err = '';
    let exited = false;
    child.stdout?.on('data', (d: Buffer) => {
      buf += d.toString();
      for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        try {
          events.push({ ...(JSON.parse(line) as Event), agent: label });
        } catch {
          err += `[stdout] ${line}\n`;
        }
      }
      for (const w of waiters) w();
    });
    child.stderr?.on('data', (d: Buffer) => (err += d.toString()));
    child.on('exit', () => {
      exited = true;
      for (const w of waiters) w();
    });
    const stop = () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    };
    t.teardown(stop);
    const waitFor = (pred: (e: Event) => boolean, timeoutMs: number, what: string) =>
      new Promise<Event>((resolve, reject) => {
        const check = () => {
          const hit = events.find(pred);
          if (hit) return done(() => resolve(hit));
          if (exited) return done(() => reject(new Error(`${label} exited before ${what}; stderr:\n${err.slice(-2000)}`)));
        };
        const timer = setTimeout(() => done(() => reject(new Error(`${label}: no ${what} within ${timeoutMs} ms; stderr:\n${err.slice(-2000)}`))), timeoutMs);
        const done = (f: () => void) => {
          clearTimeout(timer);
          waiters.delete(check);
          f();
        };
        waiters.add(check);
        check();
      });
    return {
      child,
      events,
      stderr: () => err,
      waitFor,
      result: (ms) => waitFor((e) => e.event === 'driver-result' && 'ok' in e, ms, 'driver-result'),
      stop,
    };
  }

  const agentCfg = (topo: Awaited<ReturnType<typeof topology>>, i: number, over: Partial<AgentConfig> & { secret: string; nodeId: string }): AgentConfig => ({
    mode: 'pair',
    siteId: SITE,
    bindAddress: topo.nodes[i]?.address ?? '',
    port: PORT,
    timeoutMs: 20_000,
    holdMs: 0,
    ...over,
  });

  const leaked = (agents: Agent[], values: string[]) => {
    const text = agents.map((a) => JSON.stringify(a.events.filter((e) => e.event !== 'driver-result')) + a.stderr()).join('');
    return values.filter((v) => text.includes(v));
  };

  test.serial.before(async () => {
    const { requireNetns, sweepStaleNamespaces } = await import('../helpers/netns.ts');
    await requireNetns();
    await sweepStaleNamespaces();
  });

  test.serial('started together: both agree on one leader and the follower gets the secrets; a re-run re-confirms', async (t) => {
    const topo = await topology(t, 2);
    const s = secret();
    const [a, b] = [
      start(t, topo, topo.nodes[0]!.ns, agentCfg(topo, 0, { secret: s, nodeId: ID.a }), 'A'),
      start(t, topo, topo.nodes[1]!.ns, agentCfg(topo, 1, { secret: s, nodeId: ID.b }), 'B'),
    ];
    const [ra, rb] = await Promise.all([a.result(25_000), b.result(25_000)]);
    t.like(ra, { ok: true, leader: ID.a, follower: ID.b, term: 1, role: 'leader' });
    t.like(rb, { ok: true, leader: ID.a, follower: ID.b, term: 1, role: 'follower' });
    t.is(ra.secretsDigest, rb.secretsDigest, 'follower received exactly the leader secrets');
    t.deepEqual(leaked([a, b], ra.secretValues as string[]), [], 'no secret value in any log line');
    t.log(`pairing after start (discovery + challenge + TLS-PSK + agreement + secrets): A ${String(ra.elapsedMs)} ms, B ${String(rb.elapsedMs)} ms`);
    // A (lower id) dials only a peer that answered its challenge; B admits A's TLS-PSK session,
    // whether or not its own challenge to A has completed yet.
    t.true(a.events.some((e) => e.event === 'pairing-peer-discovered' && e.peer === ID.b));
    t.true(b.events.some((e) => e.event === 'pairing-session-accepted' && e.peer === ID.a));
    const at = (ev: string) => Date.parse(String(a.events.find((e) => e.event === ev)?.ts));
    t.log(`TLS-PSK channel + agreement + secrets hand-over on the leader: ${at('pairing-secrets-delivered') - at('pairing-dialing')} ms`);

    // Crash and re-run with the persisted result: the same leader at the same term.
    const persisted = { term: ra.term as number, leader: ra.leader as string };
    const [a2, b2] = [
      start(t, topo, topo.nodes[0]!.ns, agentCfg(topo, 0, { secret: s, nodeId: ID.a, ...persisted }), 'A2'),
      start(t, topo, topo.nodes[1]!.ns, agentCfg(topo, 1, { secret: s, nodeId: ID.b, ...persisted }), 'B2'),
    ];
    const [ra2, rb2] = await Promise.all([a2.result(25_000), b2.result(25_000)]);
    t.like(ra2, { ok: true, leader: ID.a, term: 1 });
    t.like(rb2, { ok: true, leader: ID.a, term: 1 });
  });

  test.serial('started seconds apart: the late node pairs with the waiting one; the preferred leader wins', async (t) => {
    const topo = await topology(t, 2);
    const s = secret();
    const a = start(
      t,
      topo,
      topo.nodes[0]!.ns,
      agentCfg(topo, 0, { secret: s, nodeId: ID.a, name: 'edge-1', preferredLeader: 'edge-2', broadcastAddress: topo.broadcast }),
      'A',
    );
    await a.waitFor((e) => e.event === 'pairing-discovery-started', 10_000, 'discovery start');
    await new Promise((r) => setTimeout(r, 4000));
    t.false(
      a.events.some((e) => e.event === 'driver-result'),
      'A waits for a peer',
    );
    const b = start(
      t,
      topo,
      topo.nodes[1]!.ns,
      agentCfg(topo, 1, { secret: s, nodeId: ID.b, name: 'edge-2', preferredLeader: 'edge-2', broadcastAddress: topo.broadcast }),
      'B',
    );
    const [ra, rb] = await Promise.all([a.result(25_000), b.result(25_000)]);
    t.like(ra, { ok: true, leader: ID.b, follower: ID.a, term: 1, role: 'follower' });
    t.like(rb, { ok: true, leader: ID.b, follower: ID.a, term: 1, role: 'leader' });
    t.is(ra.secretsDigest, rb.secretsDigest);
    t.log(`late node B paired ${String(rb.elapsedMs)} ms after its start (A waited ${String(ra.elapsedMs)} ms)`);
  });

  test.serial('wrong secret: no pairing, and both the beacons and the channel say why', async (t) => {
    const topo = await topology(t, 2);
    const good = secret();
    const bad = secret();
    const a = start(t, topo, topo.nodes[0]!.ns, agentCfg(topo, 0, { secret: good, nodeId: ID.a, timeoutMs: 6000 }), 'A');
    const b = start(t, topo, topo.nodes[1]!.ns, agentCfg(topo, 1, { secret: bad, nodeId: ID.b, timeoutMs: 6000 }), 'B');
    const badMac = await a.waitFor(
      (e) => e.event === 'pairing-beacon-rejected' && e.reason === 'bad-mac' && e.from === topo.nodes[1]!.address,
      10_000,
      'bad-MAC rejection',
    );
    t.regex(String(badMac.message), /beacon from 10\.77\.\d+\.12 rejected: bad MAC \(different site pair secret\?\)/);
    // A box with the wrong secret dialling the channel directly fails the TLS-PSK handshake.
    const d = start(
      t,
      topo,
      topo.nodes[1]!.ns,
      { mode: 'dial', siteId: SITE, secret: bad, nodeId: ID.b, dial: { host: topo.nodes[0]!.address, port: PORT, peerNodeId: ID.a } },
      'B-dial',
    );
    const rd = await d.result(10_000);
    t.like(rd, { ok: false, kind: 'HandshakeRefusedError' });
    const refused = await a.waitFor((e) => e.event === 'pairing-refused' && e.reason === 'psk-mismatch', 5000, 'handshake refusal');
    t.regex(
      String(refused.message),
      new RegExp(`pairing refused: peer ${ID.b} at 10\\.77\\.\\d+\\.12 failed the pair-secret handshake \\(different site secret\\?\\)`),
    );
    const [ra, rb] = await Promise.all([a.result(10_000), b.result(10_000)]);
    t.like(ra, { ok: false });
    t.like(rb, { ok: false });
    t.false([...a.events, ...b.events].some((e) => e.event === 'pairing-peer-discovered' || e.event === 'pairing-agreed'));
  });

  test.serial('replayed and tampered beacons are rejected; a third node with the right secret is refused while paired', async (t) => {
    const topo = await topology(t, 3);
    const s = secret();
    const [n1, n2, n3] = topo.nodes as [(typeof topo.nodes)[0], (typeof topo.nodes)[0], (typeof topo.nodes)[0]];
    const cap = start(t, topo, topo.gw.ns, { mode: 'capture', port: PORT, from: n1.address, timeoutMs: 15_000 }, 'gw-capture');
    const a = start(t, topo, n1.ns, agentCfg(topo, 0, { secret: s, nodeId: ID.a, holdMs: 30_000 }), 'A');
    const b = start(t, topo, n2.ns, agentCfg(topo, 1, { secret: s, nodeId: ID.b, holdMs: 30_000 }), 'B');
    const [ra, rb, rc] = await Promise.all([a.result(25_000), b.result(25_000), cap.result(20_000)]);
    t.like(ra, { ok: true, leader: ID.a });
    t.like(rb, { ok: true, leader: ID.a });
    t.like(rc, { ok: true });
    const captured = Buffer.from(String(rc.hex), 'hex');
    const flipped = Buffer.from(captured);
    flipped[BEACON_HEADER_BYTES - 10] = (flipped[BEACON_HEADER_BYTES - 10] ?? 0) ^ 0x01; // inside the 32-byte MAC that ends the header
    await new Promise((r) => setTimeout(r, 1500)); // B has certainly seen a later announce of A by now
    const send = start(
      t,
      topo,
      topo.gw.ns,
      { mode: 'send', packets: [captured.toString('hex'), flipped.toString('hex')], host: n2.address, port: PORT },
      'gw-send',
    );
    t.like(await send.result(10_000), { ok: true, sent: 2 });
    // Replayed from another host, the authentic announce names A's address, not its source: dropped.
    const replay = await b.waitFor(
      (e) => e.event === 'pairing-beacon-rejected' && e.reason === 'address-mismatch' && e.from === topo.gw.address,
      5000,
      'replay rejection',
    );
    t.is(replay.peer, ID.a);
    t.is(replay.claimed, n1.address);
    await b.waitFor((e) => e.event === 'pairing-beacon-rejected' && e.reason === 'bad-mac' && e.from === topo.gw.address, 5000, 'bad-MAC rejection');

    // Third node, right secret, lowest node id (so it would be the one to dial).
    const c = start(
      t,
      topo,
      n3.ns,
      agentCfg(topo, 2, { mode: 'third', secret: s, nodeId: ID.c, timeoutMs: 5000, dial: { host: n1.address, port: PORT, peerNodeId: ID.a } }),
      'C',
    );
    const ignored = await a.waitFor((e) => e.event === 'pairing-third-node-ignored', 10_000, '"ignoring third node" on A');
    const pairText = `pair already formed (${[ID.a, ID.b].sort().join(',')}); use replace-node`;
    t.true(String(ignored.message).startsWith(`ignoring third node ${ID.c}`) && String(ignored.message).endsWith(pairText), String(ignored.message));
    await b.waitFor((e) => e.event === 'pairing-third-node-ignored', 10_000, '"ignoring third node" on B');
    const blocked = await c.waitFor((e) => e.event === 'pairing-blocked', 10_000, 'C learning the pair exists');
    t.true(String(blocked.message).endsWith(pairText));
    t.like(await c.result(10_000), { ok: false });
    const dialed = await c.waitFor((e) => e.event === 'driver-result' && 'dial' in e, 10_000, 'direct dial result');
    t.like(dialed.dial, { ok: false, kind: 'PairingRefusedError' });
    t.true(String((dialed.dial as { error: string }).error).includes(pairText));
    const refusal = await a.waitFor((e) => e.event === 'pairing-refused' && e.peer === ID.c, 5000, 'refusal log on A');
    t.true(String(refusal.message).includes(pairText));
    t.false(a.events.some((e) => e.event === 'pairing-session-accepted' && e.peer === ID.c));
  });
}

const driverConfig = process.env[DRIVER_ENV];
if (driverConfig !== undefined) {
  await runDriver(JSON.parse(driverConfig) as DriverConfig);
  process.exit(0);
} else {
  defineTests((await import('ava')).default);
}

/**
 * The host firewall between real agents in network namespaces: a third namespace on the same
 * bridge (node 3, no agent: an ordinary host on the site LAN) reaches nothing it should not, while
 * the two paired nodes still reach each other's PostgreSQL and pairing channel. The pair runs with
 * remote etcd clients on (createPair's default, as the edge-datastore profile), so Kine's port is
 * the one datastore port the LAN reaches (with mTLS: test/pair/kine-exposure.test.ts); with them
 * off it is closed like the rest (test/unit/firewall.test.ts).
 */
import test from 'ava';
import { randomInt } from 'node:crypto';
import type { PairAgent } from '../helpers/pair-agents.ts';
import { assertHealthyPair, testPair } from '../helpers/pair-checks.ts';

/** Not `nft`: under npx, node_modules/.bin comes first on PATH and holds another program of that name. */
const NFT = '/usr/sbin/nft';

type Outcome = 'connected' | 'refused' | 'no answer';

/**
 * One TCP connect from inside `from`'s namespace (bash's /dev/tcp), bounded by timeout(1): a
 * dropped SYN never answers, a port nobody listens on answers with a reset.
 */
async function connect(from: PairAgent, host: string, port: number): Promise<Outcome> {
  const r = await from.exec(['timeout', '3', 'bash', '-c', `exec 3<>/dev/tcp/${host}/${port}`], 10_000);
  return r.code === 0 ? 'connected' : r.code === 124 ? 'no answer' : 'refused';
}

async function dropCounter(a: PairAgent): Promise<number> {
  const r = await a.exec([NFT, 'list', 'counter', 'inet', 'geminik8s', 'inbound_dropped']);
  const packets = /packets (\d+)/.exec(r.stdout)?.[1];
  if (r.code !== 0 || packets === undefined) throw new Error(`node ${a.index + 1}: no drop counter (${r.stderr.trim() || r.stdout.trim()})`);
  return Number(packets);
}

test.serial(
  'a third host on the LAN reaches no PostgreSQL, pairing channel or other port of a formed pair, only Kine (mTLS) and the status page; the peers reach each other',
  async (t) => {
    const pair = await testPair(t, { nodes: 3 });
    const [a, b, lanHost] = pair.agents as [PairAgent, PairAgent, PairAgent];
    await assertHealthyPair(t, { ...pair, agents: [a, b] });

    // First the probes, so that on a box without a firewall the failure names what was reached.
    const randomPorts = [randomInt(1024, 5000), randomInt(10_000, 30_000), randomInt(30_000, 60_000)];
    t.log(`random ports: ${randomPorts.join(', ')}`);
    const hosts = [a.address, b.address, pair.vip];
    const probed = [5432, 2379, 7946, 6443, 8008, ...randomPorts];
    const targets = hosts.flatMap((host) => probed.map((port) => ({ host, port })));
    const outcomes = await Promise.all(targets.map(async ({ host, port }) => `${host}:${port} ${await connect(lanHost, host, port)}`));
    t.deepEqual(
      outcomes.filter((o) => !o.endsWith(' no answer')),
      hosts.flatMap((h) => [`${h}:2379 connected`, `${h}:8008 connected`]),
      'from the third host every port but Kine (remote clients on) and the read-only status page is silently dropped',
    );

    for (const [self, peer] of [
      [a, b],
      [b, a],
    ] as const) {
      const table = await self.exec([NFT, 'list', 'table', 'inet', 'geminik8s']);
      t.is(table.code, 0, `node ${self.index + 1}: ${table.stderr.trim()}`);
      t.regex(table.stdout, /type filter hook input priority filter; policy drop;/);
      const peerRules = table.stdout.split('\n').filter((l) => /saddr/.test(l) && /tcp dport/.test(l));
      t.deepEqual(
        peerRules.map((l) => l.trim()),
        [`iifname "eth0" ip saddr ${peer.address} tcp dport { 5432, 7946 } accept comment "peer only"`],
        `node ${self.index + 1} admits exactly its peer`,
      );
      // At least one SYN per dropped port probed on the node's own address.
      t.true((await dropCounter(self)) >= probed.length - 2, `node ${self.index + 1} counted the drops`);
    }

    // The peers still reach each other's PostgreSQL (replication, pg_rewind) and pairing channel.
    t.is(await connect(a, b.address, 5432), 'connected');
    t.is(await connect(b, a.address, 5432), 'connected');
    t.is(await connect(a, b.address, 7946), 'connected');
    for (const n of [a, b]) t.is(await connect(n, pair.vip, 5432), 'connected', `node ${n.index + 1} reaches the primary through the VIP`);

    const applied = (await a.log()).filter((e) => e.event === 'firewall-applied').map((e) => e.peer);
    t.is(applied[0], null, 'node 1 first opened the pairing channel to the LAN');
    t.is(applied.at(-1), b.address, 'then to its peer only');
  },
);

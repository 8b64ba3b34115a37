/**
 * Two real agents in network namespaces (plus a gateway namespace) pair from nothing: consistent
 * roles, PostgreSQL streaming in sync, Kine answering on both nodes with the same data.
 */
import test from 'ava';
import { createPair, eventually, type Pair, type PairAgent } from '../helpers/pair-agents.ts';

async function clusterReady(a: PairAgent): Promise<string | undefined> {
  const text = await a.console();
  return /GEMINIK8S-AGENT: cluster ready role=(leader|follower)/.exec(text)?.[1];
}

async function etcdctl(a: PairAgent, args: string[]): Promise<string> {
  const r = await a.exec(['etcdctl', `--endpoints=http://${a.address}:2379`, '--command-timeout=5s', ...args]);
  if (r.code !== 0) throw new Error(`etcdctl ${args.join(' ')} on node ${a.index + 1}: ${r.stderr.trim()}`);
  return r.stdout.trim();
}

/** Both nodes ready with one leader and one follower; returns [leader, follower]. */
async function converged(pair: Pair, timeoutMs: number): Promise<[PairAgent, PairAgent]> {
  const [a, b] = pair.agents as [PairAgent, PairAgent];
  const roles = await eventually('both agents report cluster ready', timeoutMs, async () => {
    const ra = await clusterReady(a);
    const rb = await clusterReady(b);
    return ra && rb ? [ra, rb] : undefined;
  });
  if (roles[0] === roles[1]) throw new Error(`both nodes are ${roles[0]}`);
  return roles[0] === 'leader' ? [a, b] : [b, a];
}

/** On failure, show what each agent printed: the console and the tail of its log. */
export async function dumpOnFailure(t: import('ava').ExecutionContext, pair: Pair): Promise<void> {
  if (t.passed) return;
  for (const a of pair.agents) {
    const log = (await a.log()).filter((e) => !String(e.event).startsWith('pairing-beacon')).slice(-15);
    t.log(`node ${a.index + 1} console:\n${await a.console()}\nlog tail:\n${log.map((e) => JSON.stringify(e)).join('\n')}`);
  }
}

async function assertHealthyPair(t: import('ava').ExecutionContext, pair: Pair): Promise<void> {
  const [leader, follower] = await converged(pair, 120_000);
  const ls = await leader.status();
  const fs = await follower.status();
  t.like(ls, { role: 'leader', phase: 'provisioned' });
  t.like(fs, { role: 'follower', phase: 'provisioned' });
  t.is(ls.term, fs.term, 'both persisted the same term');
  t.is((ls.peer as { nodeId: string }).nodeId, fs.nodeId);

  const replication = await eventually('the follower streaming in sync', 90_000, async () => {
    const row = await leader.sql("SELECT application_name || ' ' || state || ' ' || sync_state FROM pg_stat_replication");
    return /streaming sync$/.test(row) ? row : undefined;
  });
  t.regex(replication, new RegExp(`^${String(fs.name)} streaming sync$`));
  t.is(await follower.sql('SELECT pg_is_in_recovery()'), 't');

  const key = `/lab/${Date.now()}`;
  await etcdctl(leader, ['put', `${key}/a`, 'written-on-leader']);
  await etcdctl(follower, ['put', `${key}/b`, 'written-on-follower']);
  t.is(await etcdctl(follower, ['get', '--print-value-only', `${key}/a`]), 'written-on-leader');
  t.is(await etcdctl(leader, ['get', '--print-value-only', `${key}/b`]), 'written-on-follower');
  t.is(await follower.sql(`SELECT count(*) FROM kine WHERE name LIKE '${key}/%'`, 'kine'), '2', 'rows replicated to the standby');
  const vipHolder = await leader.exec(['ip', '-4', '-o', 'addr', 'show', 'dev', 'eth0']);
  t.true(vipHolder.stdout.includes(`${pair.vip}/24`), 'the leader holds the VIP');
}

test.serial('two agents started together pair, replicate synchronously and serve Kine on both nodes', async (t) => {
  const pair = await createPair();
  t.teardown(async () => {
    await dumpOnFailure(t, pair);
    await pair.destroy();
  });
  for (const a of pair.agents) a.start();
  await assertHealthyPair(t, pair);
});

test.serial('an agent started later pairs with the one already waiting', async (t) => {
  const pair = await createPair();
  t.teardown(async () => {
    await dumpOnFailure(t, pair);
    await pair.destroy();
  });
  pair.agents[0]?.start();
  await eventually('the first agent discovering', 30_000, async () => (/discovering peer/.test((await pair.agents[0]?.console()) ?? '') ? true : undefined));
  await new Promise((r) => setTimeout(r, 20_000));
  pair.agents[1]?.start();
  await assertHealthyPair(t, pair);
});

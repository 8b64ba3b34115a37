/** Assertions on a running pair (test/helpers/pair-agents.ts), shared by the pair tests. */
import type { ExecutionContext } from 'ava';
import { readFile, readdir } from 'node:fs/promises';
import path from 'node:path';
import { etcdctlFlags } from './etcd-client.ts';
import { createPair, PREVIOUS_RUN_KUBERNETES, type Pair, type PairAgent, type PairOptions } from './pair-agents.ts';
import { eventually } from './poll.ts';

export async function clusterReady(a: PairAgent): Promise<string | undefined> {
  const text = await a.console();
  return /GEMINIK8S-AGENT: cluster ready role=(leader|follower)/.exec(text)?.[1];
}

/** etcdctl from inside node `a`'s namespace to its own Kine on the LAN address, with the pair's client certificate. */
export async function etcdctl(pair: Pair, a: PairAgent, args: string[]): Promise<string> {
  const r = await a.exec(['etcdctl', ...etcdctlFlags(a.address, await pair.etcdClient()), '--command-timeout=5s', ...args]);
  if (r.code !== 0) throw new Error(`etcdctl ${args.join(' ')} on node ${a.index + 1}: ${r.stderr.trim()}`);
  return r.stdout.trim();
}

/** Both nodes ready with one leader and one follower; returns [leader, follower]. */
export async function converged(pair: Pair, timeoutMs: number): Promise<[PairAgent, PairAgent]> {
  const [a, b] = pair.agents as [PairAgent, PairAgent];
  const roles = await eventually('both agents report cluster ready', timeoutMs, async () => {
    const ra = await clusterReady(a);
    const rb = await clusterReady(b);
    return ra && rb ? [ra, rb] : undefined;
  });
  if (roles[0] === roles[1]) throw new Error(`both nodes are ${roles[0]}`);
  return roles[0] === 'leader' ? [a, b] : [b, a];
}

/**
 * A pair for one test, destroyed when the test ends (after a dump of every agent when it failed);
 * the first `start` agents are started at once (the others, e.g. a third host, stay off).
 */
export async function testPair(t: ExecutionContext, opts: PairOptions = {}, start = 2): Promise<Pair> {
  const pair = await createPair(opts);
  t.teardown(async () => {
    await dumpOnFailure(t, pair);
    await pair.destroy();
  });
  for (const a of pair.agents.slice(0, start)) a.start();
  return pair;
}

/**
 * Consecutive lines that differ only in numbers (timestamps, pids, ports, counters: a klog retry
 * storm) collapse into the last of them with a count, so a tail shows more than one repeated error.
 */
export function collapseRepeats(lines: string[]): string[] {
  const out: { line: string; key: string; n: number }[] = [];
  for (const line of lines) {
    const key = line.replace(/\d+/g, '#');
    const prev = out.at(-1);
    if (prev && prev.key === key) {
      prev.line = line;
      prev.n++;
    } else out.push({ line, key, n: 1 });
  }
  return out.map((o) => (o.n > 1 ? `${o.line}  [×${o.n} similar]` : o.line));
}

/** The last `lines` lines of each `*.log` in `dir` (repeats collapsed, long lines cut), one block per file; '' when there are none. */
export async function logTails(dir: string, lines: number): Promise<string> {
  const names = (await readdir(dir).catch(() => [] as string[])).filter((n) => n.endsWith('.log')).sort();
  const blocks: string[] = [];
  for (const n of names) {
    const text = await readFile(path.join(dir, n), 'utf8').catch((e: Error) => `(unreadable: ${e.message})`);
    // Collapsing needs more than the tail: a storm can be thousands of lines.
    const tail = collapseRepeats(text.trimEnd().split('\n').slice(-20_000))
      .slice(-lines)
      .map((l) => (l.length > 400 ? `${l.slice(0, 400)} …` : l));
    blocks.push(`--- ${path.join(dir, n)} (last ${tail.length} lines)\n${tail.join('\n')}`);
  }
  return blocks.join('\n');
}

/**
 * On failure, show what each agent printed: the console and the tail of its log, its PostgreSQL
 * log, and with Kubernetes the tails of `<run>/kubernetes/*.log` (and of the logs of the boot
 * before the last power-on, which empties /run).
 */
export async function dumpOnFailure(t: ExecutionContext, pair: Pair): Promise<void> {
  if (t.passed) return;
  for (const a of pair.agents) {
    const log = (await a.log()).filter((e) => !String(e.event).startsWith('pairing-beacon')).slice(-60);
    const pgLog = (await readFile(path.join(a.dirs.pg, 'postgresql.log'), 'utf8').catch(() => '')).trim().split('\n').slice(-12).join('\n');
    let kube = '';
    if (pair.kubernetes) {
      const now = await logTails(path.join(a.dirs.run, 'kubernetes'), 20);
      const before = await logTails(path.join(a.dirs.root, PREVIOUS_RUN_KUBERNETES), 10);
      const status = await a.status().then(
        (s) => JSON.stringify(s.kubernetes ?? '(no kubernetes field)'),
        (e: unknown) => `(no status: ${(e as Error).message})`,
      );
      kube = `\nKubernetes status: ${status}\nKubernetes logs:\n${now || '(none)'}${before ? `\nKubernetes logs before the last power-on:\n${before}` : ''}`;
    }
    t.log(
      `node ${a.index + 1} console:\n${await a.console()}\nlog tail:\n${log.map((e) => JSON.stringify(e)).join('\n')}\nPostgreSQL log tail:\n${pgLog}${kube}`,
    );
  }
}

export async function assertHealthyPair(t: ExecutionContext, pair: Pair): Promise<void> {
  const [leader, follower] = await converged(pair, 120_000);
  // "cluster ready" on the console may be an earlier run's: a leader just restarted starts fenced
  // and earns its writes back within seconds, so wait for the live roles.
  const [ls, fs] = await eventually('the live roles leader and follower', 60_000, async () => {
    const both = [await leader.status(), await follower.status()] as const;
    return both[0].role === 'leader' && both[1].role === 'follower' ? both : undefined;
  }).catch(async () => [await leader.status(), await follower.status()] as const);
  t.like(ls, { role: 'leader', phase: 'provisioned' });
  t.like(fs, { role: 'follower', phase: 'provisioned' });
  t.is(ls.term, fs.term, 'both persisted the same term');
  t.is((ls.peer as { nodeId: string }).nodeId, fs.nodeId as string);

  const replication = await eventually('the follower streaming in sync', 90_000, async () => {
    const row = await leader.sql("SELECT application_name || ' ' || state || ' ' || sync_state FROM pg_stat_replication");
    return /streaming sync$/.test(row) ? row : undefined;
  });
  t.regex(replication, new RegExp(`^${String(fs.name)} streaming sync$`));
  t.is(await follower.sql('SELECT pg_is_in_recovery()'), 't');

  const key = `/lab/${Date.now()}`;
  // Each Kine is restarted when its upstream changes (a leader unfencing re-points it at its own
  // PostgreSQL): give it the seconds that takes. Puts are idempotent, so retrying is safe.
  await eventually("the leader's Kine taking a put", 30_000, () => etcdctl(pair, leader, ['put', `${key}/a`, 'written-on-leader']));
  await eventually("the follower's Kine taking a put", 30_000, () => etcdctl(pair, follower, ['put', `${key}/b`, 'written-on-follower']));
  t.is(await etcdctl(pair, follower, ['get', '--print-value-only', `${key}/a`]), 'written-on-leader');
  t.is(await etcdctl(pair, leader, ['get', '--print-value-only', `${key}/b`]), 'written-on-follower');
  // Distinct names: a put retried above after a lost answer is a second revision (row) of its key.
  t.is(await follower.sql(`SELECT count(DISTINCT name) FROM kine WHERE name LIKE '${key}/%'`, 'kine'), '2', 'both keys replicated to the standby');
  const vipHolder = await leader.exec(['ip', '-4', '-o', 'addr', 'show', 'dev', 'eth0']);
  t.true(vipHolder.stdout.includes(`${pair.vip}/24`), 'the leader holds the VIP');
}

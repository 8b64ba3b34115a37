/**
 * Fault l (issue 11 point 6): a cut between the two boxes that leaves both reaching the gateway (a
 * non-transitive LAN fault: their bridge ports isolated from each other). With only the gateway as
 * witness, each side sees the same thing (peer gone, witness up, VIP invisible) and no rule can
 * tell which one is cut off (the simulator's RESIDUAL RISK case). With an arbiter on the gateway,
 * the first to take its lease writes and the other is refused: one writer, nothing acknowledged
 * lost. Without one, the documented behaviour is asserted: two writers during the cut, and every
 * acknowledged write the loser took saved to its divergent-rows file when it rejoins. Real agents,
 * real PostgreSQL and Kine, the arbiter as the same executable; the fault matrix's writer, checker
 * and read-back.
 */
import test from 'ava';
import { readFile } from 'node:fs/promises';
import { eventually } from '../helpers/poll.ts';
import { createPair } from '../helpers/pair-agents.ts';
import { requireFaultPrereqs, startChecker, startWriter, verifyAcked, waitHealthy, type WriteTarget } from '../helpers/fault-matrix.ts';

const CUT_MS = 25_000;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

test.serial(
  'l. with an arbiter, a cut between the boxes that leaves both reaching the gateway: one writer, no acknowledged write lost, writes go on',
  async (t) => {
    await requireFaultPrereqs();
    const pair = await createPair({ arbiter: true });
    t.teardown(() => pair.destroy());
    for (const a of pair.agents) a.start();
    const h0 = await waitHealthy(pair);
    const arbiter = await pair.startArbiter();
    // The leader tells the arbiter its term as soon as it answers.
    const known = await eventually('the arbiter to record the leader and its term', 90_000, async () => {
      const s = await arbiter.state();
      return s && s.term === h0.term && s.holder !== null && !s.alone ? s : undefined;
    });
    t.log(`arbiter: term ${known.term} leased to ${known.holder}; leader node ${h0.leader.index + 1}`);

    const target: WriteTarget = { kind: 'etcd', host: pair.vip, client: await pair.etcdClient(), prefix: `/fault/arbiter-l/` };
    const writer = startWriter(pair, target);
    const checker = startChecker(pair);
    await sleep(3000);
    const cutAt = Date.now();
    await pair.isolateNodes(true);
    await sleep(CUT_MS);
    await pair.isolateNodes(false);
    const healedAt = Date.now();
    const h1 = await waitHealthy(pair);
    await sleep(2000);
    const w = await writer.stop();
    const c = await checker.stop();
    const during = w.acks.filter((a) => a.startedAt > cutAt + 10_000 && a.ackedAt < healedAt).length;
    t.log(
      `acks ${w.acks.length} (${during} during the cut's last ${CUT_MS / 1000 - 10} s), failures ${w.failures.length}; after: leader node ${h1.leader.index + 1} term ${h1.term}`,
    );
    t.log(`writable states: ${c.writable.map((x) => `${x.at - cutAt}ms ${x.states}`).join(' | ')}`);
    t.log(
      `arbiter log:\n${(await arbiter.log())
        .split('\n')
        .filter((l) => l.includes('arbiter-lease'))
        .slice(-10)
        .join('\n')}`,
    );

    t.deepEqual(c.dual, [], 'never two writable primaries');
    const back = await verifyAcked(
      pair,
      target,
      w.acks.map((a) => a.key),
    );
    t.deepEqual(back.missing, [], 'every acknowledged key is readable after the cut');
    t.true(during > 0, 'the side holding the lease went on taking writes, alone');
    const end = await arbiter.state();
    t.truthy(end && !end.alone, 'back in sync, the leader told the arbiter it no longer commits alone');
  },
);

test.serial(
  "l. without an arbiter, the same cut gives two writers (documented): after it heals, every acknowledged write the data lacks is in the loser's divergent-rows file",
  async (t) => {
    await requireFaultPrereqs();
    const pair = await createPair();
    t.teardown(() => pair.destroy());
    for (const a of pair.agents) a.start();
    await waitHealthy(pair);
    const target: WriteTarget = { kind: 'etcd', host: pair.vip, client: await pair.etcdClient(), prefix: `/fault/no-arbiter-l/` };
    const writer = startWriter(pair, target);
    const checker = startChecker(pair);
    await sleep(3000);
    await pair.isolateNodes(true);
    await sleep(CUT_MS);
    await pair.isolateNodes(false);
    const h1 = await waitHealthy(pair);
    await sleep(2000);
    const w = await writer.stop();
    const c = await checker.stop();
    t.log(
      `acks ${w.acks.length}, failures ${w.failures.length}; dual-primary samples ${c.dual.length}; after: leader node ${h1.leader.index + 1} term ${h1.term}`,
    );
    t.true(c.dual.length > 0, 'the documented limit: both boxes take writes during such a cut');
    const back = await verifyAcked(
      pair,
      target,
      w.acks.map((a) => a.key),
    );
    const status = await h1.follower.status();
    const file = (status.liveness as Record<string, unknown> | undefined)?.divergentRowsFile;
    const saved = typeof file === 'string' ? await readFile(file, 'utf8') : '';
    const savedKeys = new Set(
      saved
        .split('\n')
        .filter(Boolean)
        .map((l) => String((JSON.parse(l) as { name?: unknown }).name)),
    );
    t.log(`missing after the heal: ${back.missing.length}; saved by the loser: ${savedKeys.size} rows in ${String(file)}`);
    t.deepEqual(
      back.missing.filter((k) => !savedKeys.has(k)),
      [],
      'nothing acknowledged is lost silently: what the data lacks was saved',
    );
  },
);

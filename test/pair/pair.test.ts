/**
 * Two real agents in network namespaces (plus a gateway namespace) pair from nothing: consistent
 * roles, PostgreSQL streaming in sync, Kine answering on both nodes with the same data.
 */
import test from 'ava';
import { createPair, eventually } from '../helpers/pair-agents.ts';
import { assertHealthyPair, dumpOnFailure } from '../helpers/pair-checks.ts';

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

/**
 * Two real agents in network namespaces (plus a gateway namespace) pair from nothing: consistent
 * roles, PostgreSQL streaming in sync, Kine answering on both nodes with the same data.
 */
import test from 'ava';
import type { PairAgent } from '../helpers/pair-agents.ts';
import { eventually } from '../helpers/poll.ts';
import { assertHealthyPair, converged, testPair } from '../helpers/pair-checks.ts';

test.serial('two agents started together pair, replicate synchronously and serve Kine on both nodes', async (t) => {
  const pair = await testPair(t);
  await assertHealthyPair(t, pair);
});

test.serial('an agent started two minutes later pairs with the one already waiting', async (t) => {
  const pair = await testPair(t, {}, 1);
  await eventually('the first agent discovering', 30_000, async () => (/discovering peer/.test((await pair.agents[0]?.console()) ?? '') ? true : undefined));
  // Minutes apart, as when the second box is unpacked later: the first keeps beaconing, no timeout fires.
  await new Promise((r) => setTimeout(r, 120_000));
  pair.agents[1]?.start();
  await assertHealthyPair(t, pair);
});

test.serial('a box with a different pair secret is never paired with, and the log says why', async (t) => {
  const pair = await testPair(t, { secrets: [Buffer.alloc(32, 1).toString('base64url'), Buffer.alloc(32, 7).toString('base64url')] });
  const reason = await eventually('a log line naming the wrong secret', 30_000, async () => {
    const events = await pair.agents[0]?.log();
    return events?.find((e) => /secret/i.test(String(e.message ?? e.reason ?? '')))?.message as string | undefined;
  });
  t.regex(reason, /pair secret/);
  await new Promise((r) => setTimeout(r, 5000));
  for (const a of pair.agents) t.notRegex(await a.console(), /paired role=/, `node ${a.index + 1} stayed unpaired`);
});

test.serial('a third box with the right secret is refused while the pair is healthy', async (t) => {
  const pair = await testPair(t, { nodes: 3 });
  const [a, b, third] = pair.agents as [PairAgent, PairAgent, PairAgent];
  await converged({ ...pair, agents: [a, b] }, 120_000);
  third.start();
  const refusal = await eventually('the third box to log the refusal', 30_000, async () => {
    const events = await third.log();
    return events.find((e) => /pair already formed/.test(String(e.message ?? '')))?.message as string | undefined;
  });
  t.regex(refusal, /pair already formed \([0-9a-f]+,[0-9a-f]+\); use replace-node/);
  t.notRegex(await third.console(), /paired role=/);
  t.like(await a.status(), { phase: 'provisioned' });
  t.like(await b.status(), { phase: 'provisioned' });
});

/**
 * Idempotence under crashes: an agent is killed (SIGKILL, no cleanup) right after each stage of
 * its pairing and provisioning in turn, restarted, and the pair must still converge with no
 * manual step. Once for each role, so the leader's and the follower's stages are both covered.
 */
import test from 'ava';
import { createPair, type PairAgent } from '../helpers/pair-agents.ts';
import { eventually } from '../helpers/poll.ts';
import { assertHealthyPair, dumpOnFailure } from '../helpers/pair-checks.ts';

/** Log events that mark a completed stage, in the order the agent reaches them. */
const STAGE_EVENTS = new Set(['paired', 'provision-step', 'vip-bound', 'cluster-ready']);

async function runs(a: PairAgent): Promise<Record<string, unknown>[][]> {
  const byRun: Record<string, unknown>[][] = [];
  for (const e of await a.log()) {
    if (e.event === 'start') byRun.push([]);
    byRun.at(-1)?.push(e);
  }
  return byRun;
}

const stageName = (e: Record<string, unknown>): string => (e.event === 'provision-step' ? `step:${String(e.step)}` : String(e.event));

const LOW = `${'0'.repeat(31)}1`;
const HIGH = `${'f'.repeat(31)}e`;

for (const victimRole of ['leader', 'follower'] as const) {
  test.serial(`the ${victimRole} killed after each stage in turn still converges to a healthy pair`, async (t) => {
    // Node 1 is the victim; with nothing committed the lower node id leads.
    const victimIndex = 0;
    const pair = await createPair({ nodeIds: victimRole === 'leader' ? [LOW, HIGH] : [HIGH, LOW] });
    t.teardown(async () => {
      await dumpOnFailure(t, pair);
      await pair.destroy();
    });
    for (const a of pair.agents) a.start();
    const victim = pair.agents[victimIndex] as PairAgent;
    const killedAfter: string[] = [];
    // Bounded: there are fewer than 12 stages on either role.
    for (let k = 1; k <= 12; k++) {
      const runCount = (await runs(victim)).length;
      const stages = await eventually(
        `node ${victimIndex + 1} to reach stage ${k}`,
        120_000,
        async () => {
          const all = await runs(victim);
          if (all.length < runCount) return undefined;
          const current = (all.at(-1) ?? []).filter((e) => STAGE_EVENTS.has(String(e.event))).map(stageName);
          return current.length >= k || current.includes('cluster-ready') ? current : undefined;
          // Polled fast: the steps after the base backup take milliseconds, and a kill that lands
          // after the node recorded itself provisioned ends the round early.
        },
        25,
      );
      const reached = stages[k - 1];
      if (reached === undefined || reached === 'cluster-ready') break;
      await victim.kill();
      killedAfter.push(reached);
      victim.start();
      await eventually('the restarted agent to log its start', 30_000, async () => ((await runs(victim)).length > runCount ? true : undefined));
    }
    t.log(`killed after: ${killedAfter.join(', ')}`);
    t.true(killedAfter.length >= 5, `the agent was killed at every stage (${killedAfter.length})`);
    t.true(killedAfter.includes('paired'));
    t.true(killedAfter.includes(victimRole === 'leader' ? 'step:initdb' : 'step:basebackup'), "the kills covered this role's own steps");
    await assertHealthyPair(t, pair);
  });
}

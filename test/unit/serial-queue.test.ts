import test from 'ava';
import { setTimeout as sleep } from 'node:timers/promises';
import { serialQueue } from '../../firstboot/src/adapters/serial.ts';

test('steps run one after the other in call order, a slow one delaying the next, a failed one not stopping it', async (t) => {
  const serial = serialQueue();
  const trace: string[] = [];
  const step =
    (name: string, ms: number, fail = false) =>
    async () => {
      trace.push(`${name} start`);
      await sleep(ms);
      trace.push(`${name} end`);
      if (fail) throw new Error(`${name} failed`);
      return name;
    };
  const results = await Promise.allSettled([serial(step('bind', 30)), serial(step('release', 1, true)), serial(step('bind again', 1))]);
  t.deepEqual(trace, ['bind start', 'bind end', 'release start', 'release end', 'bind again start', 'bind again end']);
  t.deepEqual(
    results.map((r) => (r.status === 'fulfilled' ? r.value : (r.reason as Error).message)),
    ['bind', 'release failed', 'bind again'],
  );
});

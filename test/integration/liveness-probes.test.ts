/**
 * The liveness probes for real, in network namespaces: a box pings its witness (the gateway
 * namespace) and ARPs for the VIP (held by the other box) with one long-running ping and arping
 * each, not a process per probe. Both answers reach the probe times; and when the agent is killed
 * (SIGKILL, no clean-up), the probers it left end by themselves on their next write.
 */
import test from 'ava';
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { createTopology } from '../helpers/netns.ts';
import { eventually } from '../helpers/poll.ts';

const PROBES = fileURLToPath(new URL('../../firstboot/src/liveness/probes.ts', import.meta.url));

/** The pids of `pid`'s children running `name` (pgrep; none: empty). */
const childrenNamed = (pid: number, name: string): Promise<number[]> =>
  new Promise((resolve) => execFile('pgrep', ['-P', String(pid), '-x', name], (_e, out) => resolve(out.split(/\s+/).filter(Boolean).map(Number))));
const alive = (pid: number): boolean => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

test('the witness and VIP probes answer through one long-running ping and arping, which end with the agent that started them', async (t) => {
  const topo = await createTopology(2);
  const tmp = await mkdtemp(path.join(os.tmpdir(), 'gk8s-probes-'));
  t.teardown(async () => {
    await topo.destroy();
    await rm(tmp, { recursive: true, force: true });
  });
  const [box, holder] = topo.nodes as [(typeof topo.nodes)[0], (typeof topo.nodes)[0]];
  const vip = `${topo.subnet}.10`;
  t.is((await topo.exec(holder.ns, ['ip', 'addr', 'add', `${vip}/24`, 'dev', 'eth0'])).code, 0);

  // The "agent": starts the probes and reports their times every 200 ms.
  const script = path.join(tmp, 'probe-agent.mjs');
  await writeFile(
    script,
    `import { startProbes } from ${JSON.stringify(PROBES)};
const p = startProbes({ ifname: 'eth0', vip: ${JSON.stringify(vip)}, witnesses: [${JSON.stringify(topo.gw.address)}], intervalMs: 500, witnessLostMs: 2000, holdsVip: () => false });
setInterval(() => console.log(JSON.stringify({ witness: p.times.witnessOkAt !== undefined, vip: p.times.vipAnswerAt !== undefined })), 200);
`,
  );
  const agent = topo.spawn(box.ns, [process.execPath, '--import', 'tsx', script]);
  let last = { witness: false, vip: false };
  createInterface({ input: agent.stdout as NodeJS.ReadableStream }).on('line', (l) => {
    last = JSON.parse(l) as typeof last;
  });
  const pid = agent.pid ?? -1;
  await eventually('the witness and the VIP to answer', 30_000, () => (last.witness && last.vip ? true : undefined));

  // One prober each, the same ones throughout: nothing is started per probe.
  const first = { ping: await childrenNamed(pid, 'ping'), arping: await childrenNamed(pid, 'arping') };
  t.is(first.ping.length, 1);
  t.is(first.arping.length, 1);
  await new Promise((r) => setTimeout(r, 2000));
  t.deepEqual({ ping: await childrenNamed(pid, 'ping'), arping: await childrenNamed(pid, 'arping') }, first);

  agent.kill('SIGKILL');
  const probers = [...first.ping, ...first.arping];
  await eventually('the probers a killed agent left to end', 15_000, () => (probers.every((p) => !alive(p)) ? true : undefined));
  t.pass();
});

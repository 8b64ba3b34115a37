/**
 * bench/memory: the idle memory of one appliance. A pair of real agents running upstream
 * Kubernetes in throwaway network namespaces (test/helpers/pair-agents.ts), left idle for
 * SETTLE_S seconds once both API servers are ready; then, per node, the proportional set size
 * (PSS: shared pages split between their users, so PostgreSQL's shared buffers count once) of every
 * process in that node's namespace, by program: the agent, PostgreSQL, Kine and the Kubernetes
 * control plane. The worker (containerd, kubelet, kube-proxy, CoreDNS) does not run in namespaces
 * (it needs the image's systemd), so it is not in these figures.
 *
 * Environment: SETTLE_S (60), READY_TIMEOUT_S (600). Needs root; the pair is destroyed in a finally.
 */
import { readFile } from 'node:fs/promises';
import { createPair, type PairAgent } from '../test/helpers/pair-agents.ts';
import { run } from '../test/helpers/netns.ts';
import { envInt, printReport } from './report.ts';

const SETTLE_S = envInt('SETTLE_S', 60, 0, 3600);
const READY_TIMEOUT_S = envInt('READY_TIMEOUT_S', 600, 30, 7200);

/** Which program a process is, from its command line. */
function program(argv: string[]): string {
  const [exe = '', second = ''] = argv;
  if (/postgres/.test(exe)) return 'postgresql';
  if (/kine$/.test(exe)) return 'kine';
  if (/kubernetes$|kube-/.test(exe)) return second.startsWith('kube-') ? second : exe.split('/').pop()!;
  if (/node$|geminik8s-agent/.test(exe) || argv.some((a) => /firstboot\/src\/main\.ts|geminik8s-agent/.test(a))) return 'agent';
  return 'other';
}

async function pssKiB(pid: number): Promise<number> {
  const text = await readFile(`/proc/${pid}/smaps_rollup`, 'utf8').catch(() => '');
  const m = /^Pss:\s+(\d+) kB/m.exec(text);
  return m ? Number(m[1]) : 0;
}

async function nodeMemory(a: PairAgent): Promise<Map<string, number>> {
  const pids = (await run(['ip', 'netns', 'pids', a.ns])).stdout.split('\n').filter(Boolean).map(Number);
  const byProgram = new Map<string, number>();
  for (const pid of pids) {
    const argv = (await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '')).split('\0').filter(Boolean);
    if (argv.length === 0) continue;
    const name = program(argv);
    byProgram.set(name, (byProgram.get(name) ?? 0) + (await pssKiB(pid)));
  }
  return byProgram;
}

async function main(): Promise<void> {
  const pair = await createPair({ kubernetes: true });
  try {
    for (const a of pair.agents) a.start();
    const deadline = Date.now() + READY_TIMEOUT_S * 1000;
    for (;;) {
      const states = await Promise.all(
        pair.agents.map((a) =>
          a.status().then(
            (s) => (s.kubernetes as { apiserver?: string } | undefined)?.apiserver,
            () => undefined,
          ),
        ),
      );
      if (states.every((s) => s === 'ready')) break;
      if (Date.now() > deadline) throw new Error(`the API servers were not ready within ${READY_TIMEOUT_S} s: ${JSON.stringify(states)}`);
      await new Promise((r) => setTimeout(r, 2000));
    }
    process.stderr.write(`bench/memory: both API servers ready; idle for ${SETTLE_S} s\n`);
    await new Promise((r) => setTimeout(r, SETTLE_S * 1000));
    const rows: { metric: string; value: number; unit: string; target?: string }[] = [];
    for (const a of pair.agents) {
      const mem = await nodeMemory(a);
      const total = [...mem.values()].reduce((x, y) => x + y, 0);
      for (const [name, kib] of [...mem.entries()].sort()) rows.push({ metric: `node${a.index + 1} ${name} PSS`, value: Math.round(kib / 1024), unit: 'MiB' });
      rows.push({ metric: `node${a.index + 1} total PSS (without the worker)`, value: Math.round(total / 1024), unit: 'MiB' });
    }
    printReport('memory', rows);
  } finally {
    await pair.destroy();
  }
}

await main();

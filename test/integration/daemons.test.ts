/**
 * adapters/daemons.ts against real processes: what the agent relies on to find Kine and the
 * Kubernetes programs again after it restarted, and to stop them.
 */
import test from 'ava';
import { spawn } from 'node:child_process';
import { adoptDaemon, hasExited, processesRunning, spawnDaemon, stopProcesses } from '../../firstboot/src/adapters/daemons.ts';

// A copy of sleep under a unique argv[0] would need a file; matching argv[1] keeps the test to this run's processes.
const SLEEP = '/bin/sleep';
const mark = (n: number): string => `${600 + (process.pid % 1000)}.${n}`;
const mine = (arg: string) => processesRunning(SLEEP).filter((p) => p.argv[1] === arg);

test('finds a running program by its executable, with its arguments, and adopts it until it exits', async (t) => {
  const child = spawn(SLEEP, [mark(1)], { stdio: 'ignore' });
  t.teardown(() => child.kill('SIGKILL'));
  await new Promise((r) => child.once('spawn', r));
  const found = mine(mark(1));
  t.deepEqual(
    found.map((p) => p.pid),
    [child.pid],
  );
  t.deepEqual(found[0]?.argv, [SLEEP, mark(1)]);
  const adopted = adoptDaemon(child.pid!);
  t.true(adopted.adopted);
  child.kill('SIGKILL');
  await new Promise((r) => child.once('exit', r));
  // The watch's timers are unref'd (it must not keep a stopping agent alive): hold the loop open.
  const keepAlive = setInterval(() => undefined, 500);
  await adopted.exited;
  clearInterval(keepAlive);
  t.deepEqual(mine(mark(1)), [], 'an exited process is not found again');
});

test('stopProcesses asks first, then kills what ignores SIGTERM, and returns once all are gone', async (t) => {
  // sh ignores TERM here and waits on its sleep: only SIGKILL ends it.
  const stubborn = spawn('/bin/sh', ['-c', `trap '' TERM; ${SLEEP} ${mark(2)}; :`], { stdio: 'ignore' });
  const polite = spawnDaemon({ binary: SLEEP, args: [mark(3)] });
  t.teardown(() => {
    stubborn.kill('SIGKILL');
    void polite.stop(0);
  });
  await new Promise((r) => stubborn.once('spawn', r));
  const started = Date.now();
  await stopProcesses([stubborn.pid!, polite.pid], 300);
  t.true(hasExited(stubborn.pid!) && hasExited(polite.pid));
  t.true(Date.now() - started >= 300, 'the stubborn one got its grace period before SIGKILL');
  t.like(await polite.exited, { signal: 'SIGTERM' });
});

test('a program started by spawnDaemon writes its output to its log file', async (t) => {
  const { mkdtempSync, readFileSync, rmSync } = await import('node:fs');
  const dir = mkdtempSync('/tmp/gk8s-daemon-');
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const d = spawnDaemon({ binary: '/bin/sh', args: ['-c', 'echo hello from $GREETING'], env: { GREETING: 'the test' }, logFile: `${dir}/out.log` });
  t.like(await d.exited, { code: 0 });
  t.is(readFileSync(`${dir}/out.log`, 'utf8'), 'hello from the test\n');
});

test('a program started with a niceness runs that much below the agent, as its own executable, found again by it', async (t) => {
  const { getPriority } = await import('node:os');
  const d = spawnDaemon({ binary: SLEEP, args: [mark(4)], niceness: 10 });
  t.teardown(() => void d.stop(0));
  // nice(1) execs the program in place: wait until the process is the program itself.
  let found = mine(mark(4));
  for (let i = 0; i < 50 && found.length === 0; i++) {
    await new Promise((r) => setTimeout(r, 20));
    found = mine(mark(4));
  }
  t.deepEqual(
    found.map((p) => p.pid),
    [d.pid],
    'the same pid, under its own executable',
  );
  t.is(getPriority(d.pid), Math.min(19, getPriority() + 10));
});

import test from 'ava';
import { chmod, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { jsonLogger } from '../../firstboot/src/adapters/output.ts';
import { runTool } from '../../firstboot/src/adapters/exec.ts';
import { startWatchdog, withoutNotifySocket } from '../../firstboot/src/liveness/watchdog.ts';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

test.serial('the watchdog is fed while the agent idles, then only by liveness ticks; a stalled loop stops the pings', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'g8s-watchdog-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  // A stand-in for systemd-notify that records each call (the real one needs a service manager).
  const calls = join(dir, 'calls');
  await writeFile(join(dir, 'systemd-notify'), `#!/bin/sh\necho "$*" >> ${calls}\n`);
  await chmod(join(dir, 'systemd-notify'), 0o755);
  const savedPath = process.env.PATH;
  process.env.PATH = `${dir}:${savedPath ?? ''}`;
  t.teardown(() => {
    process.env.PATH = savedPath;
  });
  const events: { event: string; owner?: string }[] = [];
  const log = jsonLogger((line) => void events.push(JSON.parse(line) as { event: string; owner?: string }));

  // WatchdogSec=18s as the start-up allowance, 9 s once the loop runs: a ping at once, then every
  // 3 s while a beat came within the last 3 s (idle beats: every 1 s).
  const wd = startWatchdog({ NOTIFY_SOCKET: '/run/systemd/notify', WATCHDOG_USEC: '18000000' }, log, 9000);
  t.teardown(() => wd.stop());
  await sleep(3600);
  const idlePings = (await readFile(calls, 'utf8')).trim().split('\n');
  t.true(idlePings.length >= 2, 'pinged at start and while idle');
  t.is(idlePings[0], `--pid=${process.pid} WATCHDOG=1`);

  wd.beat('loop');
  await sleep(3200);
  const tightened = (await readFile(calls, 'utf8')).trim().split('\n');
  t.is(tightened[idlePings.length], `--pid=${process.pid} WATCHDOG=1 WATCHDOG_USEC=9000000`, 'the first ping after the loop took over tightens the limit');
  t.is(tightened.filter((c) => c.includes('WATCHDOG_USEC')).length, 1, 'once');
  await sleep(6800);
  t.true(
    events.some((e) => e.event === 'watchdog-withheld' && e.owner === 'liveness loop'),
    'a loop that stopped ticking is reported',
  );
  const countAfterStall = (await readFile(calls, 'utf8')).trim().split('\n').length;
  await sleep(3500);
  t.is((await readFile(calls, 'utf8')).trim().split('\n').length, countAfterStall, 'no ping while the loop is stalled, though the event loop runs');
  // Ticking again (every 200 ms, for 4 s: more than one notifier period).
  for (let i = 0; i < 20; i++) {
    wd.beat('loop');
    await sleep(200);
  }
  t.true((await readFile(calls, 'utf8')).trim().split('\n').length > countAfterStall, 'pings resume with the ticks');
});

test.serial(
  "the notify socket reaches systemd-notify only: no other child of the agent inherits it (a PostgreSQL's STOPPING=1 would have systemd kill the agent)",
  async (t) => {
    const dir = await mkdtemp(join(tmpdir(), 'g8s-watchdog-env-'));
    t.teardown(() => rm(dir, { recursive: true, force: true }));
    const calls = join(dir, 'calls');
    await writeFile(join(dir, 'systemd-notify'), `#!/bin/sh\necho "[$NOTIFY_SOCKET] $*" >> ${calls}\n`);
    await chmod(join(dir, 'systemd-notify'), 0o755);
    const saved = { PATH: process.env.PATH, NOTIFY_SOCKET: process.env.NOTIFY_SOCKET, WATCHDOG_USEC: process.env.WATCHDOG_USEC };
    process.env.PATH = `${dir}:${saved.PATH ?? ''}`;
    process.env.NOTIFY_SOCKET = '/run/systemd/notify';
    process.env.WATCHDOG_USEC = '18000000';
    t.teardown(() => {
      for (const [k, v] of Object.entries(saved)) {
        if (v === undefined) delete process.env[k];
        else process.env[k] = v;
      }
    });
    const wd = startWatchdog(
      process.env,
      jsonLogger(() => undefined),
      9000,
    );
    t.teardown(() => wd.stop());
    withoutNotifySocket(process.env);
    t.false('NOTIFY_SOCKET' in process.env);
    t.false('WATCHDOG_USEC' in process.env);
    const child = await runTool('sh', ['-c', 'echo "[$NOTIFY_SOCKET][$WATCHDOG_USEC]"']);
    t.is(child.stdout.trim(), '[][]', 'an ordinary child sees neither');
    await sleep(3600);
    const pings = (await readFile(calls, 'utf8')).trim().split('\n');
    t.true(pings.length >= 2);
    t.true(
      pings.every((p) => p.startsWith('[/run/systemd/notify] ')),
      'systemd-notify still gets the socket',
    );
  },
);

import test from 'ava';
import { readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import { parseSiteConfig } from '../../firstboot/src/core/site.ts';
import { CliError } from '../../builder/src/cli/exit-codes.ts';
import { runInit } from '../../builder/src/cli/init.ts';
import { scratchDirs } from '../helpers/scratch.ts';

const scratch = scratchDirs(test);

async function tmpFile(): Promise<string> {
  return path.join(await scratch('gk8s-init'), 'site.yaml');
}

test('init writes a valid private site file with a strong fresh secret', async (t) => {
  const out = await tmpFile();
  const result = await runInit({ out, siteId: 'store-0042', vip: '192.0.2.10/24', gateway: '192.0.2.1' });
  const text = await readFile(out, 'utf8');
  const parsed = parseSiteConfig(text, out);
  t.true(parsed.ok);
  if (!parsed.ok) return;
  t.is(parsed.value.site.id, 'store-0042');
  t.is(parsed.value.network.addressing, 'dhcp');
  t.true(parsed.value.pair.secret.length >= 43);
  t.is((await stat(out)).mode & 0o777, 0o600);
  t.false(JSON.stringify(result).includes(parsed.value.pair.secret), 'the returned summary never carries the secret');
  const other = await tmpFile();
  await runInit({ out: other, siteId: 'store-0042', vip: '192.0.2.10/24' });
  const second = parseSiteConfig(await readFile(other, 'utf8'), other);
  t.true(second.ok && second.value.pair.secret !== parsed.value.pair.secret, 'each init draws a new secret');
});

test('init with --node entries makes a static site', async (t) => {
  const out = await tmpFile();
  await runInit({ out, siteId: 'line-7', vip: '10.9.0.10/24', node: ['node-a=10.9.0.11/24', 'node-b=10.9.0.12/24'], preferredLeader: 'node-a' });
  const parsed = parseSiteConfig(await readFile(out, 'utf8'), out);
  t.true(parsed.ok && parsed.value.network.addressing === 'static' && parsed.value.network.nodes?.length === 2);
});

test('init refuses to overwrite a site file (its secret would be lost) without --force', async (t) => {
  const out = await tmpFile();
  await runInit({ out, siteId: 's1', vip: '192.0.2.10/24' });
  const before = await readFile(out, 'utf8');
  const err = await t.throwsAsync(runInit({ out, siteId: 's1', vip: '192.0.2.10/24' }), { instanceOf: CliError });
  t.regex(err?.message ?? '', /already exists.*--force/);
  t.is(await readFile(out, 'utf8'), before);
  await runInit({ out, siteId: 's1', vip: '192.0.2.10/24', force: true });
  t.not(await readFile(out, 'utf8'), before);
});

test('init errors name the flag, and nothing is written', async (t) => {
  const out = await tmpFile();
  const err = await t.throwsAsync(runInit({ out, siteId: 'Store 42', vip: '192.0.2.300/24' }), { instanceOf: CliError });
  t.regex(err?.message ?? '', /^--site-id: /m);
  t.regex(err?.message ?? '', /^--vip: /m);
  await t.throwsAsync(stat(out));
  const missing = await t.throwsAsync(runInit({ out }), { instanceOf: CliError });
  t.regex(missing?.message ?? '', /needs --site-id and --vip/);
});

test('init refuses an address plan that cannot work, names the flag, and writes nothing', async (t) => {
  const out = await tmpFile();
  const cases: [Parameters<typeof runInit>[0], RegExp][] = [
    [
      { out, siteId: 's1', vip: '192.0.2.10/24', gateway: '192.0.2.10' },
      /^--gateway: network\.gateway: the gateway 192\.0\.2\.10 is also the VIP; found "192\.0\.2\.10"; expected /m,
    ],
    [
      { out, siteId: 's1', vip: '192.0.2.10/24', gateway: '198.51.100.1' },
      /^--gateway: network\.gateway: the gateway 198\.51\.100\.1 is outside the VIP's subnet 192\.0\.2\.0\/24/m,
    ],
    [
      { out, siteId: 's1', vip: '192.0.2.10/24', node: ['a=192.0.2.11/24', 'b=192.0.2.11/24'] },
      /^--node: network\.nodes\[1\]\.address: 192\.0\.2\.11 is also network\.nodes\[0\]\.address/m,
    ],
    [{ out, siteId: 's1', vip: '192.0.2.255/24' }, /^--vip: network\.vip: 192\.0\.2\.255 is the broadcast address of 192\.0\.2\.0\/24/m],
  ];
  for (const [opts, message] of cases) {
    const err = await t.throwsAsync(runInit(opts), { instanceOf: CliError });
    t.regex(err?.message ?? '', message);
    await t.throwsAsync(stat(out), undefined, 'nothing written');
  }
});

test('init --failover-time-scale paces the site; a value out of range names the flag and writes nothing', async (t) => {
  const out = await tmpFile();
  await runInit({ out, siteId: 's1', vip: '192.0.2.10/24', failoverTimeScale: '2.5' });
  t.regex(await readFile(out, 'utf8'), /^failover:\n {2}timeScale: 2\.5$/m);
  const other = await tmpFile();
  for (const bad of ['0', 'slow']) {
    const err = await t.throwsAsync(runInit({ out: other, siteId: 's1', vip: '192.0.2.10/24', failoverTimeScale: bad }), { instanceOf: CliError });
    t.regex(err?.message ?? '', /^--failover-time-scale: failover\.timeScale: .*a number from 1/m);
  }
  await t.throwsAsync(stat(other));
});

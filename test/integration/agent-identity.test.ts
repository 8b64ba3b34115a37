/**
 * The node's identity across a damaged hostmeta.json (issue 11 point 7), as each boot runs the
 * agent's local steps (no VM, no mount): a damaged record comes back from its copy with the same
 * node id; with both gone, a box holding the pair's data (here a PostgreSQL cluster's PG_VERSION)
 * refuses to start, and the real agent process says so on its console and exits 1.
 */
import test from 'ava';
import { execa } from 'execa';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { agentPaths, runLocalSteps } from '../../firstboot/src/agent.ts';
import { IdentityRefused } from '../../firstboot/src/adapters/hostmeta-store.ts';
import { jsonLogger, openConsole } from '../../firstboot/src/adapters/output.ts';

const SITE = `apiVersion: geminik8s/v1
kind: Site
site:
  id: lab-identity
pair:
  secret: q4Jr7m8sXvYc2Zb1Lk9PwN3eTg6HfA0dUiOy5RjWlMo=
network:
  vip: 192.0.2.10/24
  addressing: dhcp
`;

test('a damaged hostmeta.json keeps the node id from its copy; with both lost a box with data refuses to start', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'g8s-identity-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const env = {
    GEMINIK8S_OEM_DIR: join(dir, 'oem'),
    GEMINIK8S_DATA_DIR: join(dir, 'data'),
    GEMINIK8S_STATE_DIR: join(dir, 'state'),
    GEMINIK8S_CONSOLE: join(dir, 'console'),
    GEMINIK8S_PG_ROOT: join(dir, 'pg'),
  };
  const paths = agentPaths(env);
  await mkdir(paths.oemDir);
  await mkdir(paths.dataDir);
  await writeFile(join(paths.oemDir, 'site.yaml'), SITE);
  const log = jsonLogger(() => undefined);
  const boot = async () => {
    const out = openConsole(paths.consolePath, log);
    try {
      return await runLocalSteps(paths, log, out);
    } finally {
      out.close();
    }
  };
  const record = join(paths.stateDir, 'hostmeta.json');

  const first = await boot();
  // The box now holds a PostgreSQL cluster of the pair.
  await mkdir(join(dir, 'pg', 'data'), { recursive: true });
  await writeFile(join(dir, 'pg', 'data', 'PG_VERSION'), '15\n');

  await writeFile(record, '{"schemaVersion":1,"nodeId":');
  const second = await boot();
  t.is(second.meta.nodeId, first.meta.nodeId, 'the copy keeps the identity');
  t.is(second.meta.bootCount, 2);
  t.is(JSON.parse(await readFile(record, 'utf8')).nodeId, first.meta.nodeId, 'the record is written again');

  await rm(record);
  await rm(`${record}.bak`);
  await t.throwsAsync(boot, {
    instanceOf: IdentityRefused,
    message: /hostmeta\.json is missing and its backup is missing, but this box holds the pair's data \(.*PG_VERSION\)/,
  });

  // The agent itself: the console line a technician reads, and exit 78, which the unit does not
  // restart (a restart would refuse again, and a restart loop ends in a reboot).
  await writeFile(paths.consolePath, '');
  const agent = await execa(process.execPath, ['--import', 'tsx', resolve('firstboot/src/main.ts')], {
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ...env },
    extendEnv: false,
    reject: false,
    timeout: 60_000,
  });
  t.is(agent.exitCode, 78, String(agent.stderr));
  t.regex(await readFile(paths.consolePath, 'utf8'), /GEMINIK8S-AGENT: failed .*hostmeta\.json is missing .* Put back a copy of hostmeta\.json/);
  t.regex(String(agent.stdout), /"event":"identity-refused"/);
});

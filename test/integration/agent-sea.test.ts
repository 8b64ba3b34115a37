import test from 'ava';
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { AGENT_NODE_VERSION, agentSourceHash, buildAgentExecutable } from '../../firstboot/build.ts';
import { sha256File } from '../../builder/src/util/digest.ts';
import { run } from '../../builder/src/util/exec.ts';

const CACHE_DIR = resolve('.cache/agent');

test('the x64 agent builds into a self-contained executable that runs', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'g8s-sea-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const outFile = join(dir, 'geminik8s-agent');
  const logs: string[] = [];

  const started = Date.now();
  const built = await buildAgentExecutable({ arch: 'amd64', outFile, cacheDir: CACHE_DIR, log: (m) => logs.push(m) });
  t.log(`build ${Date.now() - started}ms: ${logs.join('; ')}`);

  t.is(built.outFile, outFile);
  t.is(built.nodeVersion, AGENT_NODE_VERSION);
  t.is(built.sha256, await sha256File(outFile));
  const st = await stat(outFile);
  t.is(st.mode & 0o777, 0o755);
  t.log(`executable ${(st.size / 1024 / 1024).toFixed(1)} MiB`);

  // Run it with an empty environment and from another directory: nothing outside the file is needed.
  const version = await run(outFile, ['--version'], { cwd: dir, env: { PATH: '/usr/bin:/bin' } });
  t.is(version, `geminik8s-agent ${JSON.parse(await readFile('package.json', 'utf8')).version} (node v${AGENT_NODE_VERSION} x64)`);

  // A second build reuses the cached Node binary (no download) and is byte-identical.
  const again: string[] = [];
  const rebuilt = await buildAgentExecutable({ arch: 'amd64', outFile, cacheDir: CACHE_DIR, log: (m) => again.push(m) });
  t.false(
    again.some((m) => m.startsWith('fetched')),
    again.join('; '),
  );
  t.is(rebuilt.sha256, built.sha256);
});

test('agentSourceHash is a stable sha256', async (t) => {
  const a = await agentSourceHash();
  t.regex(a, /^[0-9a-f]{64}$/);
  t.is(await agentSourceHash(), a);
});

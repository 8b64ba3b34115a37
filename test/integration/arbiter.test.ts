/**
 * The arbiter process's server side over real TLS (issue 11 point 6): node certificates of the
 * pair get leases by the core's rule, anything else is turned away, and a restarted arbiter
 * remembers every lease it granted.
 */
import test from 'ava';
import { execa } from 'execa';
import { chmod, stat, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import path from 'node:path';
import type { Logger } from '../../firstboot/src/adapters/output.ts';
import { arbiterClient, type ArbiterEndpoint } from '../../firstboot/src/liveness/arbiter-client.ts';
import { startArbiter, type ArbiterTls } from '../../firstboot/src/liveness/arbiter-server.ts';
import { ARBITER_TLS_FILE } from '../../firstboot/src/liveness/arbiter-command.ts';
import { secretsDirOf } from '../../firstboot/src/cluster/settings.ts';
import { ensureClusterSecrets, generateCa, issueClientCert, issueNodeCert, issueServerCert } from '../../firstboot/src/provision/secrets.ts';
import { scratchDirs } from '../helpers/scratch.ts';

const scratch = scratchDirs(test);
const quiet: Logger = { event: () => undefined };

test('node certificates get one lease per term; other certificates and other CAs are refused; the leases survive a restart', async (t) => {
  const dir = await scratch('gk8s-arbiter');
  const stateFile = path.join(dir, 'arbiter-state.json');
  const ca = await generateCa();
  const server = await issueServerCert(ca, 'arbiter', ['IP:127.0.0.1']);
  const tls: ArbiterTls = { ca: ca.certPem, cert: server.certPem, key: server.keyPem };
  let arbiter = await startArbiter({ host: '127.0.0.1', port: 0, tls, stateFile, log: quiet });
  t.teardown(() => arbiter.close());
  const endpoint = (cert: { certPem: string; keyPem: string }, caPem = ca.certPem): ArbiterEndpoint => ({
    host: '127.0.0.1',
    port: arbiter.address.port,
    ca: caPem,
    cert: cert.certPem,
    key: cert.keyPem,
  });
  const a = arbiterClient(endpoint(await issueNodeCert(ca, { name: 'node-a', ip: '192.0.2.11' })));
  const b = arbiterClient(endpoint(await issueNodeCert(ca, { name: 'node-b', ip: '192.0.2.12' })));

  t.deepEqual(await a.state(2000), { term: 0, holder: null, alone: false });
  await t.throwsAsync(
    a.lease({ term: 0, alone: true, peerSilent: true }, 2000),
    { message: /HTTP 400 .*term.*integer ≥ 1/ },
    'a malformed request is refused, not granted',
  );
  t.true((await a.lease({ term: 1, alone: true, peerSilent: true }, 2000)).granted, 'the leader goes async under term 1');
  const refused = await b.lease({ term: 2, alone: true, peerSilent: true }, 2000);
  t.false(refused.granted, 'no takeover while the leader commits alone');
  t.regex(refused.reason, /node-a leads term 1 without its standby/);
  t.true((await a.lease({ term: 1, alone: false, peerSilent: false }, 2000)).granted, 'the leader is synchronous again');
  t.true((await b.lease({ term: 2, alone: true, peerSilent: true }, 2000)).granted);
  const superseded = await a.lease({ term: 1, alone: true, peerSilent: true }, 2000);
  t.false(superseded.granted);
  t.is(superseded.state.term, 2, 'the old leader learns the newer term');
  t.is((await stat(stateFile)).mode & 0o777, 0o600);

  // The node is the certificate's name: a client-only certificate of the same CA, even named like a node, is not one.
  const impostor = arbiterClient(endpoint(await issueClientCert(ca, 'node-a')));
  await t.throwsAsync(impostor.lease({ term: 9, alone: true, peerSilent: true }, 2000), { message: /HTTP 403/ });
  // Another pair's CA: the TLS handshake fails.
  const other = await generateCa('another pair');
  const stranger = arbiterClient(endpoint(await issueNodeCert(other, { name: 'node-a', ip: '192.0.2.11' })));
  await t.throwsAsync(stranger.state(2000));

  await arbiter.close();
  arbiter = await startArbiter({ host: '127.0.0.1', port: 0, tls, stateFile, log: quiet });
  const again = arbiterClient(endpoint(await issueNodeCert(ca, { name: 'node-a', ip: '192.0.2.11' })));
  t.deepEqual(await again.state(2000), { term: 2, holder: 'node-b', alone: true }, 'restarted, it remembers the lease it granted');
  t.false((await again.lease({ term: 2, alone: false, peerSilent: true }, 2000)).granted);
});

test('a refused node asking every tick is one logged event, then one a minute, per node even when two ask in turn', async (t) => {
  const dir = await scratch('gk8s-arbiter-log');
  const ca = await generateCa();
  const server = await issueServerCert(ca, 'arbiter', ['IP:127.0.0.1']);
  const events: { event: string; fields: Record<string, unknown> }[] = [];
  const log: Logger = { event: (_level, event, fields = {}) => void events.push({ event, fields }) };
  const arbiter = await startArbiter({
    host: '127.0.0.1',
    port: 0,
    tls: { ca: ca.certPem, cert: server.certPem, key: server.keyPem },
    stateFile: path.join(dir, 'arbiter-state.json'),
    log,
  });
  t.teardown(() => arbiter.close());
  const node = async (name: string, ip: string) => {
    const cert = await issueNodeCert(ca, { name, ip });
    return arbiterClient({ host: '127.0.0.1', port: arbiter.address.port, ca: ca.certPem, cert: cert.certPem, key: cert.keyPem });
  };
  const a = await node('node-a', '192.0.2.11');
  const b = await node('node-b', '192.0.2.12');
  const c = await node('node-c', '192.0.2.13');
  t.true((await a.lease({ term: 1, alone: true, peerSilent: true }, 2000)).granted);
  // 61 ticks each, in turn: the first refusal and the 60th repeat of each node's are logged.
  for (let i = 0; i < 61; i++) {
    t.false((await b.lease({ term: 2, alone: true, peerSilent: true }, 2000)).granted);
    t.false((await c.lease({ term: 2, alone: true, peerSilent: true }, 2000)).granted);
  }
  const refusals = events.filter((e) => e.event === 'arbiter-lease' && e.fields.granted === false);
  t.deepEqual(
    refusals.map((e) => [e.fields.node, e.fields.repeats ?? 0]),
    [
      ['node-b', 0],
      ['node-c', 0],
      ['node-b', 60],
      ['node-c', 60],
    ],
  );
});

test('a damaged state file stops the arbiter with the file and what it expected', async (t) => {
  const dir = await scratch('gk8s-arbiter');
  const stateFile = path.join(dir, 'arbiter-state.json');
  await writeFile(stateFile, '{"term": -1}');
  const ca = await generateCa();
  const server = await issueServerCert(ca, 'arbiter', ['IP:127.0.0.1']);
  await t.throwsAsync(startArbiter({ host: '127.0.0.1', port: 0, tls: { ca: ca.certPem, cert: server.certPem, key: server.keyPem }, stateFile, log: quiet }), {
    message: /arbiter-state\.json: expected \{"term": integer ≥ 0/,
  });
});

const AGENT = ['--import', 'tsx', path.resolve('firstboot/src/main.ts')];

async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const { port } = s.address() as { port: number };
  await new Promise((r) => s.close(r));
  return port;
}

test('the agent executable: arbiter-cert on a paired box, then arbiter with that bundle serves leases; an open bundle is refused', async (t) => {
  const dir = await scratch('gk8s-arbiter-cmd');
  const stateDir = path.join(dir, 'box');
  const secrets = await ensureClusterSecrets(secretsDirOf(stateDir), {
    nodes: [
      { name: 'node-a', ip: '192.0.2.11' },
      { name: 'node-b', ip: '192.0.2.12' },
    ],
  });
  const { ca } = secrets;
  const node = secrets.nodes['node-a']!;
  const env = { PATH: process.env.PATH ?? '/usr/bin:/bin', GEMINIK8S_STATE_DIR: stateDir };
  const cert = await execa(process.execPath, [...AGENT, 'arbiter-cert', '--address', '127.0.0.1'], { env, extendEnv: false, reject: false });
  t.is(cert.exitCode, 0, cert.stderr);
  const bundle = JSON.parse(cert.stdout) as { address: string; ca: string; cert: string; key: string };
  t.is(bundle.address, '127.0.0.1');
  t.is(bundle.ca, ca.certPem, 'the arbiter trusts the pair CA');
  const bad = await execa(process.execPath, [...AGENT, 'arbiter-cert', '--address', 'arbiter.example'], { env, extendEnv: false, reject: false });
  t.is(bad.exitCode, 2);
  t.regex(bad.stderr, /not an IPv4 address/);

  const arbDir = path.join(dir, 'arbiter');
  await execa('mkdir', ['-p', arbDir]);
  await writeFile(path.join(arbDir, ARBITER_TLS_FILE), cert.stdout, { mode: 0o644 });
  await chmod(path.join(arbDir, ARBITER_TLS_FILE), 0o644);
  const port = await freePort();
  const open = await execa(process.execPath, [...AGENT, 'arbiter', '--listen', `127.0.0.1:${port}`, '--dir', arbDir], {
    env,
    extendEnv: false,
    reject: false,
    timeout: 60_000,
  });
  t.is(open.exitCode, 1);
  t.regex(open.stderr, /arbiter-tls\.json: mode 644, expected 600/);

  await chmod(path.join(arbDir, ARBITER_TLS_FILE), 0o600);
  const proc = execa(process.execPath, [...AGENT, 'arbiter', '--listen', `127.0.0.1:${port}`, '--dir', arbDir], { env, extendEnv: false, reject: false });
  t.teardown(() => proc.kill('SIGKILL'));
  const client = arbiterClient({ host: '127.0.0.1', port, ca: ca.certPem, cert: node.certPem, key: node.keyPem });
  let answer: Awaited<ReturnType<typeof client.lease>> | undefined;
  for (let k = 0; k < 60 && !answer; k++) {
    answer = await client.lease({ term: 3, alone: false, peerSilent: false }, 2000).catch(async () => {
      await new Promise((r) => setTimeout(r, 500));
      return undefined;
    });
  }
  t.true(answer?.granted, 'the arbiter process granted a lease');
  proc.kill('SIGTERM');
  const ended = await proc;
  t.is(ended.exitCode, 0, ended.stderr);
  t.regex(ended.stdout, /"event":"arbiter-lease","node":"node-a","term":3/);
  t.notRegex(ended.stdout, /PRIVATE KEY/, 'the key is never logged');
});

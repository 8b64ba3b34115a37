/**
 * The arbiter process's server side over real TLS (issue 11 point 6): node certificates of the
 * pair get leases by the core's rule, anything else is turned away, and a restarted arbiter
 * remembers every lease it granted.
 */
import test from 'ava';
import { stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from '../../firstboot/src/adapters/output.ts';
import { arbiterClient, type ArbiterEndpoint } from '../../firstboot/src/liveness/arbiter-client.ts';
import { startArbiter, type ArbiterTls } from '../../firstboot/src/liveness/arbiter-server.ts';
import { generateCa, issueClientCert, issueNodeCert, issueServerCert } from '../../firstboot/src/provision/secrets.ts';
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

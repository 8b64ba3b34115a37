/**
 * Issue 10, point 1: nothing on the LAN reaches the datastore unauthenticated. A third namespace on
 * the same bridge plays any host of the site LAN.
 *  - Remote etcd clients enabled (the edge-datastore profile): Kine answers only TLS with a client
 *    certificate from the pair CA; plain text, TLS without a client certificate and a certificate
 *    from another CA are all refused, on both nodes and on the VIP.
 *  - Default (loopback only): nothing answers on the LAN at 2379; Kine works on the node's loopback.
 */
import test from 'ava';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { etcdctlFlags, type EtcdClientFiles } from '../helpers/etcd-client.ts';
import type { Pair, PairAgent } from '../helpers/pair-agents.ts';
import { assertHealthyPair, converged, testPair } from '../helpers/pair-checks.ts';
import { run } from '../helpers/netns.ts';

async function withPair(t: import('ava').ExecutionContext, remote: boolean): Promise<{ pair: Pair; lanHost: PairAgent }> {
  const pair = await testPair(t, { nodes: 3, kineRemoteClients: remote });
  return { pair, lanHost: pair.agents[2] as PairAgent };
}

/** A client certificate that chains to a CA of its own, not the pair's. */
async function foreignClient(dir: string): Promise<EtcdClientFiles> {
  const f = (n: string) => path.join(dir, n);
  const steps = [
    [
      'openssl',
      'req',
      '-x509',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:P-256',
      '-nodes',
      '-keyout',
      f('ca.key'),
      '-out',
      f('ca.crt'),
      '-subj',
      '/CN=not the pair CA',
      '-days',
      '2',
    ],
    [
      'openssl',
      'req',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:P-256',
      '-nodes',
      '-keyout',
      f('client.key'),
      '-out',
      f('client.csr'),
      '-subj',
      '/CN=intruder',
    ],
    ['openssl', 'x509', '-req', '-in', f('client.csr'), '-CA', f('ca.crt'), '-CAkey', f('ca.key'), '-CAcreateserial', '-out', f('client.crt'), '-days', '2'],
  ];
  for (const argv of steps) {
    const r = await run(argv, { timeoutMs: 20_000 });
    if (r.code !== 0) throw new Error(`${argv.join(' ')}: ${r.stderr}`);
  }
  return { caFile: f('ca.crt'), certFile: f('client.crt'), keyFile: f('client.key') };
}

test.serial('remote etcd clients: Kine on the LAN answers only mTLS with a client certificate from the pair CA', async (t) => {
  const { pair, lanHost } = await withPair(t, true);
  await assertHealthyPair(t, pair);
  const [leader, follower] = await converged(pair, 10_000);
  const client = await pair.etcdClient();
  const dir = await mkdtemp(path.join(os.tmpdir(), 'gk8s-foreign-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const foreign = await foreignClient(dir);
  const etcdctl = (args: string[]) => lanHost.exec(['etcdctl', '--dial-timeout=3s', '--command-timeout=5s', ...args], 20_000);

  for (const host of [leader.address, follower.address, pair.vip]) {
    const plain = await etcdctl([`--endpoints=http://${host}:2379`, 'get', '/x']);
    t.not(plain.code, 0, `plain text to ${host}:2379 is refused`);
    const noCert = await etcdctl([`--endpoints=https://${host}:2379`, `--cacert=${client.caFile}`, 'get', '/x']);
    t.not(noCert.code, 0, `TLS without a client certificate to ${host}:2379 is refused`);
    const wrongCa = await etcdctl([
      `--endpoints=https://${host}:2379`,
      `--cacert=${client.caFile}`,
      `--cert=${foreign.certFile}`,
      `--key=${foreign.keyFile}`,
      'get',
      '/x',
    ]);
    t.not(wrongCa.code, 0, `a client certificate from another CA to ${host}:2379 is refused`);
    const key = `/exposure/${host}`;
    const put = await etcdctl([...etcdctlFlags(host, client), 'put', key, 'ok']);
    t.is(put.code, 0, `mTLS with the pair's client certificate works on ${host}: ${put.stderr}`);
  }
  const got = await etcdctl([...etcdctlFlags(pair.vip, client), 'get', '--prefix', '--keys-only', '/exposure/']);
  t.is(got.stdout.split('\n').filter(Boolean).length, 3, 'every put reached the datastore');
});

test.serial('default: Kine listens on loopback only; nothing answers on the LAN at 2379', async (t) => {
  const { pair, lanHost } = await withPair(t, false);
  const [leader, follower] = await converged(pair, 180_000);
  for (const node of [leader, follower]) {
    const local = await node.exec(['etcdctl', '--endpoints=http://127.0.0.1:2379', '--command-timeout=5s', 'put', `/loopback/${node.index}`, 'ok'], 20_000);
    t.is(local.code, 0, `Kine answers on node ${node.index + 1}'s loopback: ${local.stderr}`);
    const listening = await node.exec(['ss', '-Hltn', 'sport = :2379']);
    t.regex(listening.stdout, /127\.0\.0\.1:2379/, 'bound to loopback');
    t.notRegex(listening.stdout, /(0\.0\.0\.0|\*|\[::\]):2379/, 'not bound to every address');
  }
  for (const host of [leader.address, follower.address, pair.vip]) {
    const r = await lanHost.exec(['etcdctl', `--endpoints=http://${host}:2379`, '--dial-timeout=3s', '--command-timeout=5s', 'get', '/x'], 20_000);
    t.not(r.code, 0, `nothing answers at ${host}:2379 from the LAN`);
  }
});

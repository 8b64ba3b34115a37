/**
 * The pair's secrets bundle across a replace-node (provision/secrets.ts with the real openssl):
 * the dead box's certificate leaves, the new box gets one of its own (a fresh one under a reused
 * name), the CA and the passwords stay, and the recorded pod range split is kept.
 */
import test from 'ava';
import { X509Certificate } from 'node:crypto';
import { ensureClusterSecrets, loadSecrets } from '../../firstboot/src/provision/secrets.ts';
import { validateSecrets } from '../../firstboot/src/provision/core/secrets.ts';
import { scratchDirs } from '../helpers/scratch.ts';

const scratch = scratchDirs(test);
const a = { name: 'node-a', ip: '192.0.2.11' };
const b = { name: 'node-b', ip: '192.0.2.12' };

test('a replaced box leaves the bundle; its successor gets its own certificate under the pair CA; the pod range split is recorded', async (t) => {
  const dir = await scratch('gk8s-replace-secrets');
  const first = await ensureClusterSecrets(dir, { nodes: [a, b], vip: '192.0.2.10' });
  const oldB = first.nodes['node-b']!.certPem;

  // Same name, same address (a static site): a fresh certificate, not the dead box's.
  const same = await ensureClusterSecrets(dir, { nodes: [a, b], vip: '192.0.2.10' }, { replacing: 'node-b', podRangeFirst: 'node-a' });
  t.not(same.nodes['node-b']!.certPem, oldB);
  t.true(new X509Certificate(same.nodes['node-b']!.certPem).verify(new X509Certificate(first.ca.certPem).publicKey));
  t.is(same.nodes['node-a']!.certPem, first.nodes['node-a']!.certPem, "the survivor's own certificate stays");
  t.is(same.ca.certPem, first.ca.certPem);
  t.is(same.kinePassword, first.kinePassword);
  t.is(same.podRangeFirst, 'node-a');

  // Another name (a DHCP site): the dead box's certificate and key are gone from what the new box receives.
  const c = { name: 'node-c', ip: '192.0.2.13' };
  const other = await ensureClusterSecrets(dir, { nodes: [a, c], vip: '192.0.2.10' }, { replacing: 'node-b', podRangeFirst: 'node-a' });
  t.deepEqual(Object.keys(other.nodes).sort(), ['node-a', 'node-c']);
  t.deepEqual(loadSecrets(dir), other, 'stored as handed over');

  t.throws(() => validateSecrets({ ...other, podRangeFirst: 'node-b' }, 'cluster.json'), {
    message: 'cluster.json: podRangeFirst: not the name of a node of the bundle',
  });
});

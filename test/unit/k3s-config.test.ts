/**
 * The K3s server configuration of a pair (firstboot/src/kubernetes/core/k3s.ts) and the K3s overlay
 * of the image. K3s itself cannot be obtained on these machines, so this is as far as its runtime
 * path is tested here: the config K3s would read, checked against the rules K3s documents, read
 * back the way K3s reads it (YAML 1.1), from the facts a built image carries.
 */
import test from 'ava';
import { randomBytes } from 'node:crypto';
import { lstat, mkdtemp, readFile, readlink, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { parse } from 'yaml';
import { REPO_ROOT } from '../../builder/src/cli/paths.ts';
import { resolveConfig } from '../../builder/src/config/resolve.ts';
import { overlayLayers, renderOverlays } from '../../builder/src/overlays/render.ts';
import { INSTALL_PATHS } from '../../builder/src/pipeline/root-tree.ts';
import { K3S_APPLIANCE, k3sServerArgv, renderK3sConfig, type K3sServerInput } from '../../firstboot/src/kubernetes/core/k3s.ts';
import { formatIssue } from '../../firstboot/src/core/config-file.ts';
import { parseImageFacts, type ImageFacts } from '../../firstboot/src/core/image-facts.ts';
import { generateCredentials } from '../../firstboot/src/provision/core/secrets.ts';

/** K3s reads its config file as YAML 1.1 (sigs.k8s.io/yaml): read it back the same way. */
const readAsK3s = (text: string): Record<string, unknown> => parse(text, { version: '1.1' }) as Record<string, unknown>;

const token = generateCredentials(randomBytes).k3sToken;

/** What both boxes share: the pair secrets and the image's facts. */
const shared = {
  vip: '192.0.2.10',
  token,
  kine: { port: 2379 },
  clusterCidr: '10.42.0.0/16',
  serviceCidr: '10.43.0.0/16',
  disable: ['traefik', 'servicelb', 'metrics-server'],
  dataDir: K3S_APPLIANCE.dataDir,
  kubeconfigFile: K3S_APPLIANCE.kubeconfigFile,
};
const nodeA: K3sServerInput = { ...shared, node: { name: 'node-a', ip: '192.0.2.11' } };
const nodeB: K3sServerInput = { ...shared, node: { name: 'node-b', ip: '192.0.2.12' } };

test('both servers of a pair get identical cluster-wide keys; only what names the node differs', (t) => {
  const a = readAsK3s(renderK3sConfig(nodeA));
  const b = readAsK3s(renderK3sConfig(nodeB));
  const keys = [...new Set([...Object.keys(a), ...Object.keys(b)])].sort();
  const differing = keys.filter((k) => JSON.stringify(a[k]) !== JSON.stringify(b[k]));
  t.deepEqual(differing, ['advertise-address', 'node-ip', 'node-name', 'tls-san']);
  // K3s' "critical configuration values" this config sets: the same on every server of a shared datastore.
  for (const k of ['token', 'cluster-cidr', 'service-cidr', 'disable']) {
    t.true(k in a, `${k} is set`);
    t.deepEqual(a[k], b[k], `${k} is the same on both servers`);
  }
  t.deepEqual(a, {
    token,
    'datastore-endpoint': 'http://127.0.0.1:2379',
    'cluster-cidr': '10.42.0.0/16',
    'service-cidr': '10.43.0.0/16',
    disable: ['traefik', 'servicelb', 'metrics-server'],
    'write-kubeconfig-mode': '0600',
    'node-name': 'node-a',
    'node-ip': '192.0.2.11',
    'advertise-address': '192.0.2.11',
    'tls-san': ['192.0.2.10', '192.0.2.11'],
    'data-dir': '/var/lib/rancher/k3s',
    'write-kubeconfig': '/data/k3s/k3s.yaml',
  });
});

test('every value reaches K3s as the string it was (YAML 1.1 reads a bare 0600 as the number 384)', (t) => {
  t.is(readAsK3s('write-kubeconfig-mode: 0600')['write-kubeconfig-mode'], 384, 'the hazard this guards against');
  const config = readAsK3s(renderK3sConfig({ ...nodeA, node: { name: 'yes', ip: '192.0.2.11' } }));
  t.is(config['write-kubeconfig-mode'], '0600');
  t.is(config['node-name'], 'yes', 'not the boolean true');
  for (const [k, v] of Object.entries(config)) {
    t.true(typeof v === 'string' || (Array.isArray(v) && v.every((x) => typeof x === 'string')), `${k} is a string or a list of strings`);
  }
});

test('the token appears once, under `token`, and nowhere else: not in another key, not in argv', (t) => {
  const text = renderK3sConfig(nodeA);
  t.is(text.split(token).length - 1, 1, 'the file holds the token once');
  const config = readAsK3s(text);
  t.is(config.token, token);
  for (const [k, v] of Object.entries(config)) if (k !== 'token') t.false(JSON.stringify(v).includes(token), `${k} does not hold the token`);
  const argv = k3sServerArgv(K3S_APPLIANCE.configFile);
  t.deepEqual(argv, ['server', '--config', '/run/geminik8s/k3s/config.yaml']);
  t.false(argv.join(' ').includes(token));
});

test('a token with the characters YAML treats specially reads back exactly', (t) => {
  const special = 'K10abc::server:"q\\uote#:[x],{y}&z*w!v|u>t%s@r`p\'o-';
  t.is(readAsK3s(renderK3sConfig({ ...nodeA, token: special })).token, special);
});

test('a Kine that serves TLS is reached over https with the node certificate', (t) => {
  const tls = { caFile: '/run/geminik8s/kine/client-ca.crt', certFile: '/run/geminik8s/kine/server.crt', keyFile: '/run/geminik8s/kine/server.key' };
  const config = readAsK3s(renderK3sConfig({ ...nodeA, kine: { port: 2379, tls } }));
  t.is(config['datastore-endpoint'], 'https://127.0.0.1:2379');
  t.is(config['datastore-cafile'], tls.caFile);
  t.is(config['datastore-certfile'], tls.certFile);
  t.is(config['datastore-keyfile'], tls.keyFile);
});

test('no disable list: the key is left out (K3s runs all its add-ons)', (t) => {
  t.false('disable' in readAsK3s(renderK3sConfig({ ...nodeA, disable: [] })));
});

test('bad input is refused naming the field, and a refused token is never quoted', (t) => {
  const cases: [Partial<K3sServerInput>, RegExp][] = [
    [{ node: { name: 'Node_A', ip: '192.0.2.11' } }, /node\.name: "Node_A" is not a Kubernetes node name/],
    [{ node: { name: 'node-a', ip: '192.0.2.300' } }, /node\.ip: "192\.0\.2\.300" is not an IPv4 address/],
    [{ vip: '192.0.2.10/24' }, /vip: "192\.0\.2\.10\/24" is not an IPv4 address \(no prefix\)/],
    [{ vip: '192.0.2.11' }, /vip: equals the node address/],
    [{ kine: { port: 0 } }, /kine\.port: 0 is not a TCP port/],
    [{ clusterCidr: '10.42.0.0/33' }, /clusterCidr: "10\.42\.0\.0\/33" is not an IPv4 CIDR/],
    [{ serviceCidr: '10.43.0.0' }, /serviceCidr: "10\.43\.0\.0" is not an IPv4 CIDR/],
    [{ disable: ['traefik', 'traefik'] }, /disable: lists an add-on twice/],
    [{ disable: ['traefik\nextra: 1'] }, /disable: "traefik\\nextra: 1" is not a K3s add-on name/],
    [{ dataDir: 'var/lib/rancher/k3s' }, /dataDir: "var\/lib\/rancher\/k3s" is not an absolute path/],
    [{ kubeconfigFile: '/data/my k3s.yaml' }, /kubeconfigFile: .* is not an absolute path without spaces/],
    [{ token: '' }, /token: empty, or not printable ASCII/],
  ];
  for (const [change, message] of cases) {
    const err = t.throws(() => renderK3sConfig({ ...nodeA, ...change }));
    t.regex(err?.message ?? '', /^k3s server config: /);
    t.regex(err?.message ?? '', message);
  }
  const secret = 'correct horse battery staple';
  const err = t.throws(() => renderK3sConfig({ ...nodeA, token: secret }));
  t.regex(err?.message ?? '', /token: /);
  t.false(err?.message.includes('horse'), 'the refused token is not in the message');
  t.throws(() => k3sServerArgv('config.yaml'), { message: /configFile: "config\.yaml" is not an absolute path/ });
});

/** The overlays of a profile rendered as the build renders them. */
async function renderedOverlays(t: import('ava').ExecutionContext, profile: string): Promise<{ dir: string; written: string[] }> {
  const config = await resolveConfig({ profile, hardware: 'generic-x86_64-uefi', repoRoot: REPO_ROOT });
  const dir = await mkdtemp(path.join(os.tmpdir(), 'gk8s-k3s-overlay-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const written = await renderOverlays(
    path.join(REPO_ROOT, 'overlays'),
    overlayLayers(config),
    {
      profile: { ...config.profile, cluster: { preferredLeader: '', ...config.profile.cluster } },
      hardware: config.hardware,
      image: { name: 'test', version: config.profile.version, sourceDateEpoch: 0 },
    },
    dir,
  );
  return { dir, written };
}

test('the K3s image: /etc/rancher (read-only on the box) points at where the agent and K3s write', async (t) => {
  const { dir } = await renderedOverlays(t, 'edge-static');
  const links: Record<string, string> = {
    'etc/rancher/k3s/config.yaml': K3S_APPLIANCE.configFile,
    'etc/rancher/k3s/k3s.yaml': K3S_APPLIANCE.kubeconfigFile,
    'etc/rancher/node': K3S_APPLIANCE.nodePasswordDir,
  };
  for (const [link, target] of Object.entries(links)) {
    t.true((await lstat(path.join(dir, link))).isSymbolicLink(), `${link} is a link`);
    t.is(await readlink(path.join(dir, link)), target);
  }
  // Each target is somewhere the box can write: /run (tmpfs), the data partition, or /var (its writable layer is on data).
  t.true(K3S_APPLIANCE.configFile.startsWith('/run/geminik8s/'), "the agent's runtime directory");
  t.true(K3S_APPLIANCE.kubeconfigFile.startsWith('/data/'));
  t.true(K3S_APPLIANCE.nodePasswordDir.startsWith('/var/') && K3S_APPLIANCE.dataDir.startsWith('/var/'));
  t.is(K3S_APPLIANCE.binary, INSTALL_PATHS.k3s, 'the agent runs the binary where the builder installs it');
});

test('the K3s image carries what both servers need to render identical configs', async (t) => {
  const { dir } = await renderedOverlays(t, 'edge-static');
  const file = path.join(dir, 'etc/geminik8s/image.yaml');
  const parsed = parseImageFacts(await readFile(file, 'utf8'), file);
  if (!parsed.ok) return t.fail(parsed.issues.map(formatIssue).join('\n'));
  const image = parsed.value as Required<ImageFacts>;
  t.is(image.kubernetes.distribution, 'k3s');
  const fromImage = { clusterCidr: image.kubernetes.clusterCidr, serviceCidr: image.kubernetes.serviceCidr, disable: image.kubernetes.disable };
  const config = readAsK3s(renderK3sConfig({ ...nodeA, ...fromImage }));
  t.is(config['cluster-cidr'], '10.42.0.0/16');
  t.is(config['service-cidr'], '10.43.0.0/16');
  t.deepEqual(config.disable, ['traefik', 'servicelb', 'metrics-server']);
});

test('the upstream Kubernetes image renders without the K3s layer', async (t) => {
  const { dir, written } = await renderedOverlays(t, 'edge-standard');
  t.false(written.some((f) => f.startsWith('etc/rancher')));
  // The builder writes what the agent's schema accepts (the agent refuses anything else at boot).
  const file = path.join(dir, 'etc/geminik8s/image.yaml');
  const parsed = parseImageFacts(await readFile(file, 'utf8'), file);
  t.true(parsed.ok, parsed.ok ? '' : parsed.issues.map(formatIssue).join('\n'));
  t.like(parsed.ok ? parsed.value : {}, {
    postgresql: { replication: 'physical' },
    kubernetes: { distribution: 'upstream', worker: true, disable: [] },
    cluster: { preferredLeader: '' },
  });
});

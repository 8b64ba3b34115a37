/** The agent's view of its image (image.yaml) and of the environment overrides: validated, never silently defaulted. */
import test from 'ava';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { clusterSettings } from '../../firstboot/src/cluster/settings.ts';
import { ConfigError } from '../../firstboot/src/core/config-file.ts';
import { scratchDirs } from '../helpers/scratch.ts';

const scratch = scratchDirs(test);

const IMAGE = `name: edge-standard-generic-x86_64-uefi
version: 0.1.0
sourceDateEpoch: 1700000000
postgresql:
  version: 15
  replication: physical
kine:
  version: v0.17.5
  remoteClients: false
kubernetes:
  distribution: upstream
  version: v1.37.2
  clusterCidr: 10.42.0.0/16
  serviceCidr: 10.43.0.0/16
cluster:
  preferredLeader: ""
`;

async function imageFile(text: string): Promise<string> {
  const file = path.join(await scratch('gk8s-image-facts'), 'image.yaml');
  await writeFile(file, text);
  return file;
}

test("a well-formed image.yaml gives the settings, with the schema's defaults filled in", async (t) => {
  const s = clusterSettings({ GEMINIK8S_IMAGE_FILE: await imageFile(IMAGE) }, '/var/lib/geminik8s');
  t.is(s.replication, 'physical');
  t.false(s.kineRemoteClients);
  t.deepEqual(s.kubernetes, {
    distribution: 'upstream',
    version: 'v1.37.2',
    clusterCidr: '10.42.0.0/16',
    serviceCidr: '10.43.0.0/16',
    worker: false,
    disable: [],
  });
  t.is(s.preferredLeader, undefined, 'an empty preferred leader is no preference');
  t.is(s.kubeApiPort, 6443);
});

test('a malformed image.yaml stops the agent naming file, line and field, not a silent default', async (t) => {
  const file = await imageFile(
    IMAGE.replace('replication: physical', 'replication: streaming').replace('clusterCidr: 10.42.0.0/16', 'clusterCidr: 10.42.0.0/33'),
  );
  const err = t.throws(() => clusterSettings({ GEMINIK8S_IMAGE_FILE: file }, '/var/lib/geminik8s'), { instanceOf: ConfigError });
  t.regex(err?.message ?? '', new RegExp(`^${file}:6:16: postgresql\\.replication: found string "streaming"; allowed: "physical", "logical"$`, 'm'));
  t.regex(err?.message ?? '', /:13:16: kubernetes\.clusterCidr: found string "10\.42\.0\.0\/33"; expected an IPv4 CIDR like 10\.42\.0\.0\/16$/m);
  const typo = await imageFile(IMAGE.replace('  remoteClients: false', '  remoteClient: false'));
  t.throws(() => clusterSettings({ GEMINIK8S_IMAGE_FILE: typo }, '/s'), {
    message: /kine\.remoteClient: found unknown field "remoteClient"; allowed fields here: version, remoteClients \(did you mean "remoteClients"\?\)/,
  });
  t.throws(() => clusterSettings({ GEMINIK8S_IMAGE_FILE: '/nonexistent/image.yaml' }, '/s'), {
    message: /^\/nonexistent\/image\.yaml: cannot read the image's description \(ENOENT\)/,
  });
});

test('a malformed environment override is an error naming the variable', async (t) => {
  const file = await imageFile(IMAGE);
  t.throws(() => clusterSettings({ GEMINIK8S_IMAGE_FILE: file, GEMINIK8S_PG_PORT: '54x32' }, '/s'), {
    message: 'GEMINIK8S_PG_PORT: found "54x32"; expected a TCP/UDP port 1-65535 (unset: 5432)',
  });
  t.throws(() => clusterSettings({ GEMINIK8S_IMAGE_FILE: file, GEMINIK8S_KINE_PORT: '70000' }, '/s'), { message: /GEMINIK8S_KINE_PORT: found "70000"/ });
  t.throws(() => clusterSettings({ GEMINIK8S_IMAGE_FILE: file, GEMINIK8S_BROADCAST: '10.0.0.256' }, '/s'), {
    message: /GEMINIK8S_BROADCAST: found "10\.0\.0\.256"; expected an IPv4 address/,
  });
  t.throws(() => clusterSettings({ GEMINIK8S_IMAGE_FILE: file, GEMINIK8S_RUN_DIR: 'run' }, '/s'), {
    message: /GEMINIK8S_RUN_DIR: found "run"; expected an absolute path/,
  });
  t.is(clusterSettings({ GEMINIK8S_IMAGE_FILE: file, GEMINIK8S_PG_PORT: '15432' }, '/s').pgPort, 15432);
});

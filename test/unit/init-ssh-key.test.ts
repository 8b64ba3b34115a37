/** `geminik8s init --ssh-key <file.pub>`: operator keys go into the site; a private key file is refused unechoed. */
import test from 'ava';
import { readFile, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { parseSiteConfig } from '../../firstboot/src/core/site.ts';
import { CliError } from '../../builder/src/cli/exit-codes.ts';
import { runInit } from '../../builder/src/cli/init.ts';
import { scratchDirs } from '../helpers/scratch.ts';

const scratch = scratchDirs(test);

const ED25519 = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE5IJnbKJDh4i/6ywpF8um4yZ/ZwnQ6N+rLYM7Nhwyl0 alice@laptop';
const ECDSA =
  'ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBA8qyPVPHFH3uBFqlU319uuNcwxx7SSoUQ/inNf3hb79Ahwt7cruYR+ldUagK5fpffzgfS5vqgFJY+MHWoiKUyE= bob: ops #1';
const PRIVATE_BODY = 'b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW';

async function workDir(): Promise<string> {
  return scratch('gk8s-init-ssh');
}

test('init --ssh-key puts every key of every file into ssh.authorizedKeys', async (t) => {
  const dir = await workDir();
  await writeFile(path.join(dir, 'alice.pub'), `${ED25519}\n`);
  await writeFile(path.join(dir, 'team_keys'), `# the ops team\n\n${ECDSA}\n`);
  const out = path.join(dir, 'site.yaml');
  const result = await runInit({ out, siteId: 'store-0042', vip: '192.0.2.10/24', sshKey: [path.join(dir, 'alice.pub'), path.join(dir, 'team_keys')] });
  const parsed = parseSiteConfig(await readFile(out, 'utf8'), out);
  if (!parsed.ok) return t.fail('the written site does not parse');
  t.deepEqual(parsed.value.ssh, { authorizedKeys: [ED25519, ECDSA] });
  t.deepEqual(result.site.ssh, parsed.value.ssh);
});

test('init without --ssh-key writes no ssh section', async (t) => {
  const out = path.join(await workDir(), 'site.yaml');
  await runInit({ out, siteId: 'store-0042', vip: '192.0.2.10/24' });
  t.false((await readFile(out, 'utf8')).includes('ssh:'));
});

test('init --ssh-key refuses a private key file without quoting it, and names file and line of a bad key', async (t) => {
  const dir = await workDir();
  const out = path.join(dir, 'site.yaml');
  const privateFile = path.join(dir, 'id_ed25519');
  await writeFile(privateFile, `-----BEGIN OPENSSH PRIVATE KEY-----\n${PRIVATE_BODY}\n-----END OPENSSH PRIVATE KEY-----\n`);
  const err = await t.throwsAsync(runInit({ out, siteId: 's1', vip: '192.0.2.10/24', sshKey: [privateFile] }), { instanceOf: CliError });
  t.regex(err?.message ?? '', /^\/.*id_ed25519: --ssh-key: this is a PRIVATE key.*\.pub file/);
  t.false(err?.message.includes(PRIVATE_BODY.slice(0, 16)));
  await t.throwsAsync(stat(out), undefined, 'nothing written');

  const badFile = path.join(dir, 'bad.pub');
  await writeFile(badFile, `${ED25519}\nssh-dss AAAAB3NzaC1kc3MAAACBAP old\n`);
  const bad = await t.throwsAsync(runInit({ out, siteId: 's1', vip: '192.0.2.10/24', sshKey: [badFile] }), { instanceOf: CliError });
  t.regex(bad?.message ?? '', /^\/.*bad\.pub:2:1: --ssh-key: unsupported key type.*found key type "ssh-dss"/);
  const missing = await t.throwsAsync(runInit({ out, siteId: 's1', vip: '192.0.2.10/24', sshKey: [path.join(dir, 'nope.pub')] }), { instanceOf: CliError });
  t.regex(missing?.message ?? '', /nope\.pub: cannot read it \(ENOENT\)/);
  await t.throwsAsync(stat(out), undefined, 'nothing written');
});

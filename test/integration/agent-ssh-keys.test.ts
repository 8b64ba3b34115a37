/**
 * The agent's local steps, run as each boot runs them (no VM, no mount: the data directory is a plain
 * folder, so the growth step reports not-mounted), write the site's operator keys for sshd: 0600 in a
 * 0700 directory, replaced on every boot so a key removed from the site stops working, kept when the
 * site file is broken. `ssh-keygen -l` (openssh-client) must read the file as OpenSSH does.
 */
import test from 'ava';
import { mkdir, mkdtemp, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { agentPaths, runLocalSteps } from '../../firstboot/src/agent.ts';
import { jsonLogger, openConsole } from '../../firstboot/src/adapters/output.ts';
import { hasCommand, run } from '../../builder/src/util/exec.ts';

const SECRET = 'q4Jr7m8sXvYc2Zb1Lk9PwN3eTg6HfA0dUiOy5RjWlMo=';
const ED25519 = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE5IJnbKJDh4i/6ywpF8um4yZ/ZwnQ6N+rLYM7Nhwyl0 alice@laptop';
const ECDSA =
  'ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBA8qyPVPHFH3uBFqlU319uuNcwxx7SSoUQ/inNf3hb79Ahwt7cruYR+ldUagK5fpffzgfS5vqgFJY+MHWoiKUyE= bob ops';

function site(keys: string[] | undefined): string {
  const ssh = keys === undefined ? '' : `ssh:\n  authorizedKeys:${keys.length ? '' : ' []'}\n${keys.map((k) => `    - ${k}\n`).join('')}`;
  return `apiVersion: geminik8s/v1\nkind: Site\nsite:\n  id: lab-ssh\npair:\n  secret: ${SECRET}\nnetwork:\n  vip: 192.0.2.10/24\n  addressing: dhcp\n${ssh}`;
}

const keyLines = (text: string): string[] => text.split('\n').filter((l) => l !== '' && !l.startsWith('#'));

test("each boot installs exactly the site's operator keys for sshd, 0600, and keeps them when the site is broken", async (t) => {
  if (!(await hasCommand('ssh-keygen'))) return t.fail('ssh-keygen is missing: install the Debian package openssh-client (builder/host-deps.sh)');
  const dir = await mkdtemp(join(tmpdir(), 'g8s-ssh-keys-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const oemDir = join(dir, 'oem');
  await mkdir(oemDir);
  const paths = agentPaths({
    GEMINIK8S_OEM_DIR: oemDir,
    GEMINIK8S_DATA_DIR: join(dir, 'data'),
    GEMINIK8S_STATE_DIR: join(dir, 'state'),
    GEMINIK8S_CONSOLE: join(dir, 'console'),
  });
  await mkdir(paths.dataDir);
  t.is(paths.authorizedKeysFile, join(dir, 'state', 'ssh', 'authorized_keys'), "beside the state: an agent under test never writes the host's keys");
  const logLines: string[] = [];
  const log = jsonLogger((l) => logLines.push(l));
  const boot = async (siteText: string) => {
    await writeFile(join(oemDir, 'site.yaml'), siteText);
    const out = openConsole(paths.consolePath, log);
    try {
      return await runLocalSteps(paths, log, out);
    } finally {
      out.close();
    }
  };

  // Boot 1: two keys.
  const first = await boot(site([ED25519, ECDSA]));
  t.is(first.meta.phase, 'local-ready');
  t.deepEqual(keyLines(await readFile(paths.authorizedKeysFile, 'utf8')), [ED25519, ECDSA]);
  t.is((await stat(paths.authorizedKeysFile)).mode & 0o777, 0o600);
  t.is((await stat(join(dir, 'state', 'ssh'))).mode & 0o777, 0o700);
  const fingerprints = await run('ssh-keygen', ['-l', '-f', paths.authorizedKeysFile]);
  t.regex(fingerprints, /^256 SHA256:\S+ alice@laptop \(ED25519\)\n256 SHA256:\S+ bob ops \(ECDSA\)$/);

  // Boot 2: a key removed from the site no longer logs in.
  await boot(site([ECDSA]));
  t.deepEqual(keyLines(await readFile(paths.authorizedKeysFile, 'utf8')), [ECDSA]);

  // Boot 3: a broken site (here a private key pasted by mistake) leaves the last good keys in place.
  await boot(site([ECDSA, '-----BEGIN OPENSSH PRIVATE KEY----- b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAE -----END OPENSSH PRIVATE KEY-----']));
  t.deepEqual(keyLines(await readFile(paths.authorizedKeysFile, 'utf8')), [ECDSA]);
  t.false(logLines.join('').includes('b3BlbnNzaC1rZXktdjE'), 'the private key never reaches the log');
  t.regex(await readFile(paths.consolePath, 'utf8'), /ssh\.authorizedKeys\[1\]: this is a PRIVATE key.*found a private key \(not shown\)/);

  // Boot 4: no ssh section means no operator logins.
  await boot(site(undefined));
  t.deepEqual(keyLines(await readFile(paths.authorizedKeysFile, 'utf8')), []);
  t.deepEqual((await readdir(join(dir, 'state', 'ssh'))).sort(), ['authorized_keys'], 'no temp file left beside it');
  t.is(logLines.filter((l) => l.includes('"ssh-keys-written"')).length, 3);
});

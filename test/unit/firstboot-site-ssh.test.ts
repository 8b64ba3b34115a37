/** The site file's `ssh.authorizedKeys`: operator public keys, shape-checked; a private key is refused unechoed. */
import test from 'ava';
import { formatIssue, type ConfigIssue } from '../../firstboot/src/core/config-file.ts';
import { parseSiteConfig } from '../../firstboot/src/core/site.ts';
import { renderAuthorizedKeys, sshPublicKeyProblem } from '../../firstboot/src/core/ssh-keys.ts';

const SECRET = 'q4Jr7m8sXvYc2Zb1Lk9PwN3eTg6HfA0dUiOy5RjWlMo=';
// Real keys made with ssh-keygen (public halves only).
const ED25519 = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE5IJnbKJDh4i/6ywpF8um4yZ/ZwnQ6N+rLYM7Nhwyl0 alice@laptop';
const ECDSA =
  'ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBA8qyPVPHFH3uBFqlU319uuNcwxx7SSoUQ/inNf3hb79Ahwt7cruYR+ldUagK5fpffzgfS5vqgFJY+MHWoiKUyE=';
// The body of an unencrypted OpenSSH private key (made for this test, used nowhere).
const PRIVATE_BODY = 'b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW';
const PRIVATE = `-----BEGIN OPENSSH PRIVATE KEY-----\n${PRIVATE_BODY}\n-----END OPENSSH PRIVATE KEY-----\n`;

const BASE = `apiVersion: geminik8s/v1
kind: Site
site:
  id: shop-0042
pair:
  secret: ${SECRET}
network:
  vip: 192.0.2.10/24
  addressing: dhcp
`;

function siteWithKeys(items: string): string {
  return `${BASE}ssh:\n  authorizedKeys:\n${items}`;
}

function errorsOf(text: string): ConfigIssue[] {
  const r = parseSiteConfig(text, 'site.yaml');
  if (r.ok) throw new Error('expected errors, the file was accepted');
  return r.issues;
}

test('operator keys of each supported type parse into ssh.authorizedKeys, comments kept', (t) => {
  const r = parseSiteConfig(siteWithKeys(`    - ${ED25519}\n    - "${ECDSA}"\n`), 'site.yaml');
  if (!r.ok) return t.fail(r.issues.map(formatIssue).join('\n'));
  t.deepEqual(r.value.ssh, { authorizedKeys: [ED25519, ECDSA] });
});

test('a site without an ssh section has no operator keys, and an empty list is allowed', (t) => {
  const none = parseSiteConfig(BASE, 'site.yaml');
  t.true(none.ok && none.value.ssh === undefined);
  const empty = parseSiteConfig(`${BASE}ssh:\n  authorizedKeys: []\n`, 'site.yaml');
  t.true(empty.ok && empty.value.ssh?.authorizedKeys.length === 0);
});

test('a private key pasted into the list is refused with a clear message and never echoed', (t) => {
  const block = PRIVATE.split('\n')
    .map((l) => `      ${l}`)
    .join('\n');
  const errors = errorsOf(siteWithKeys(`    - ${ED25519}\n    - |\n${block}\n`));
  t.is(errors.length, 1, errors.map(formatIssue).join('\n'));
  t.like(errors[0], { file: 'site.yaml', line: 13, column: 7, field: 'ssh.authorizedKeys[1]', found: 'a private key (not shown)' });
  t.regex(errors[0]?.message ?? '', /PRIVATE key.*public key \(the \.pub file\)/);
  const printed = errors.map(formatIssue).join('\n');
  t.false(printed.includes(PRIVATE_BODY.slice(0, 20)), 'no part of the private key in the error');
  // Folded onto one line by a careless paste, or only its base64 body: still recognised.
  t.is(sshPublicKeyProblem(PRIVATE.replace(/\n/g, ' '))?.found, 'a private key (not shown)');
  t.is(sshPublicKeyProblem(`ssh-ed25519 ${PRIVATE_BODY}`)?.found, 'a private key (not shown)');
  t.is(sshPublicKeyProblem('-----BEGIN RSA PRIVATE KEY-----')?.found, 'a private key (not shown)');
});

test('wrong key shapes are each reported at their item with what was found', (t) => {
  const cut = ED25519.slice(0, 40);
  const errors = errorsOf(
    siteWithKeys(
      [
        '    - ssh-dss AAAAB3NzaC1kc3MAAACBAP alice',
        `    - ${cut}`,
        '    - ssh-ed25519 not*base64',
        `    - ${ECDSA.replace('ecdsa-sha2-nistp256', 'ssh-rsa')}`,
        '    - from="10.0.0.1" ssh-ed25519 AAAA',
        '    - 42',
        '',
      ].join('\n'),
    ),
  );
  t.deepEqual(
    errors.map((e) => `${e.line}:${e.column} ${e.field} ${e.found}`),
    [
      '12:7 ssh.authorizedKeys[0] key type "ssh-dss"',
      '13:7 ssh.authorizedKeys[1] a 21-byte body',
      '14:7 ssh.authorizedKeys[2] a 10-character body',
      '15:7 ssh.authorizedKeys[3] a 104-byte body',
      '16:7 ssh.authorizedKeys[4] a 32-character string',
      '17:7 ssh.authorizedKeys[5] a number',
    ],
  );
  t.regex(errors[1]?.message ?? '', /does not hold one ssh-ed25519 key \(cut short/);
  t.regex(
    formatIssue(errors[0]!),
    /^site\.yaml:12:7: ssh\.authorizedKeys\[0\]: unsupported key type.*; found key type "ssh-dss"; expected one OpenSSH public key line/,
  );
});

test('ssh must hold an authorizedKeys list and nothing else', (t) => {
  const single = errorsOf(`${BASE}ssh:\n  authorizedKeys: ${ED25519}\n`);
  t.deepEqual(
    single.map((e) => `${e.field}: ${e.found}; ${e.allowed.slice(0, 14)}`),
    [`ssh.authorizedKeys: a ${ED25519.length}-character string; expected array`],
  );
  t.false(formatIssue(single[0]!).includes(ED25519.split(' ')[1]!.slice(0, 16)), 'the key is not echoed');
  t.deepEqual(
    errorsOf(`${BASE}ssh:\n  keys: []\n`)
      .map((e) => e.field)
      .sort(),
    ['ssh.authorizedKeys', 'ssh.keys'],
  );
});

test('the authorized_keys file holds exactly the site keys, one per line', (t) => {
  const text = renderAuthorizedKeys([ED25519, `  ${ECDSA} `]);
  t.deepEqual(
    text.split('\n').filter((l) => l && !l.startsWith('#')),
    [ED25519, ECDSA],
  );
  t.true(text.endsWith('\n'));
  t.deepEqual(
    renderAuthorizedKeys([])
      .split('\n')
      .filter((l) => l && !l.startsWith('#')),
    [],
  );
});

import test from 'ava';
import { formatIssue, type ConfigIssue } from '../../firstboot/src/core/config-file.ts';
import { parseSiteConfig } from '../../firstboot/src/core/site.ts';

const SECRET = 'q4Jr7m8sXvYc2Zb1Lk9PwN3eTg6HfA0dUiOy5RjWlMo='; // 44 chars, 32 bytes

const VALID = `apiVersion: geminik8s/v1
kind: Site
site:
  id: shop-0042
pair:
  secret: ${SECRET}
  preferredLeader: box-a
network:
  vip: 192.0.2.10/24
  interface: enp1s0
  gateway: 192.0.2.1
  witnesses: [192.0.2.1, 192.0.2.2]
  addressing: static
  nodes:
    - name: box-a
      address: 192.0.2.11/24
    - name: box-b
      address: 192.0.2.12/24
`;

function errorsOf(text: string): ConfigIssue[] {
  const r = parseSiteConfig(text, 'site.yaml');
  if (r.ok) throw new Error('expected errors, the file was accepted');
  return r.issues;
}

function only(t: import('ava').ExecutionContext, text: string, expected: Partial<ConfigIssue>): ConfigIssue {
  const errors = errorsOf(text);
  t.is(errors.length, 1, errors.map(formatIssue).join('\n'));
  t.like(errors[0], { file: 'site.yaml', ...expected });
  return errors[0]!;
}

test('a valid site file parses into the config', (t) => {
  const r = parseSiteConfig(VALID, 'site.yaml');
  if (!r.ok) return t.fail(r.issues.map(formatIssue).join('\n'));
  t.deepEqual(r.value, {
    apiVersion: 'geminik8s/v1',
    kind: 'Site',
    site: { id: 'shop-0042' },
    pair: { secret: SECRET, preferredLeader: 'box-a' },
    network: {
      vip: '192.0.2.10/24',
      interface: 'enp1s0',
      gateway: '192.0.2.1',
      witnesses: ['192.0.2.1', '192.0.2.2'],
      addressing: 'static',
      nodes: [
        { name: 'box-a', address: '192.0.2.11/24' },
        { name: 'box-b', address: '192.0.2.12/24' },
      ],
    },
  });
});

test('a minimal dhcp site with a 64-digit hex secret parses', (t) => {
  const text = `apiVersion: geminik8s/v1\nkind: Site\nsite: {id: a}\npair: {secret: ${'ab'.repeat(32)}}\nnetwork: {vip: 10.0.0.5/16, addressing: dhcp}\n`;
  const r = parseSiteConfig(text, 'site.yaml');
  t.true(r.ok, r.ok ? '' : r.issues.map(formatIssue).join('\n'));
});

test('bad YAML names the position of the syntax error', (t) => {
  const e = only(t, 'apiVersion: geminik8s/v1\nkind: Site\nsite:\n  id: [a, b\n', { line: 5, field: '(document)', found: 'invalid YAML' });
  t.regex(e.allowed, /flow sequence/i);
});

test('an unknown field is reported at its key, with the known field it most likely meant', (t) => {
  const e = only(t, VALID.replace('  gateway: 192.0.2.1\n', '  gateway: 192.0.2.1\n  gatway: 192.0.2.1\n'), {
    line: 12,
    column: 3,
    field: 'network.gatway',
    found: 'unknown field "gatway"',
  });
  t.is(e.allowed, 'allowed fields here: vip, interface, gateway, witnesses, addressing, nodes (did you mean "gateway"?)');
  const far = only(t, VALID.replace('  gateway: 192.0.2.1\n', '  gateway: 192.0.2.1\n  router: 192.0.2.1\n'), { field: 'network.router' });
  t.notRegex(far.allowed, /did you mean/, 'no guess when nothing is close');
});

test('a wrong type is reported at the value with what was found and allowed', (t) => {
  const e = only(t, VALID.replace('  id: shop-0042', '  id: 42'), { line: 4, column: 7, field: 'site.id', found: 'number 42' });
  t.is(
    formatIssue(e),
    'site.yaml:4:7: site.id: found number 42; expected string (1-63 characters of a-z, 0-9 and "-", starting and ending with a letter or digit)',
  );
});

test('a missing pair.secret says to run geminik8s init', (t) => {
  const e = only(t, VALID.replace(`  secret: ${SECRET}\n`, ''), { line: 6, column: 3, field: 'pair.secret', found: 'nothing' });
  t.regex(e.allowed, /"secret" is required \(run `geminik8s init` to generate one\)/);
  const empty = only(t, VALID.replace(`  secret: ${SECRET}`, '  secret:'), { line: 6, field: 'pair.secret', found: 'null' });
  t.regex(empty.allowed, /run `geminik8s init` to generate one/);
  const blank = only(t, VALID.replace(`  secret: ${SECRET}`, "  secret: ''"), { line: 6, field: 'pair.secret', found: 'an empty value' });
  t.regex(blank.message ?? '', /run `geminik8s init` to generate one/);
  const noPair = errorsOf(VALID.replace(/pair:\n( {2}.*\n)+/, '')).find((x) => x.field === 'pair');
  t.regex(noPair?.allowed ?? '', /the pair secret: run `geminik8s init`/);
});

test('a weak secret is rejected without echoing it', (t) => {
  const weak = 'c2hvcnQtc2VjcmV0LWJ1dC1iYXNlNjQ=';
  const e = only(t, VALID.replace(SECRET, weak), { line: 6, column: 11, field: 'pair.secret' });
  t.false(JSON.stringify(e).includes(weak));
  t.regex(e.found, /32 characters encoding 23 bytes/);
});

test('a bad VIP is reported with the CIDR form that is allowed', (t) => {
  only(t, VALID.replace('vip: 192.0.2.10/24', 'vip: 192.0.2.300/24'), { line: 9, column: 8, field: 'network.vip', found: 'string "192.0.2.300/24"' });
  only(t, VALID.replace('vip: 192.0.2.10/24', 'vip: 192.0.2.10'), { line: 9, column: 8, field: 'network.vip' });
});

test('static addressing without nodes is an error at addressing', (t) => {
  const text = VALID.replace(/ {2}nodes:\n( {4}.*\n)+/, '').replace('  preferredLeader: box-a\n', '');
  const e = only(t, text, { line: 12, column: 15, field: 'network.nodes' });
  t.regex(e.message ?? '', /addressing: static needs network.nodes/);
});

test('nodes with dhcp, bad witness entries and an unknown preferred leader are all reported in order', (t) => {
  const text = VALID.replace('addressing: static', 'addressing: dhcp')
    .replace('192.0.2.2]', 'gateway]')
    .replace('preferredLeader: box-a', 'preferredLeader: box-c');
  const errors = errorsOf(text);
  t.deepEqual(
    errors.map((e) => `${e.line}:${e.column} ${e.field}`),
    ['7:20 pair.preferredLeader', '12:26 network.witnesses[1]', '14:3 network.nodes'],
  );
});

test('every error names the file given by the caller', (t) => {
  const r = parseSiteConfig('kind: Nope\n', '/oem/site.yaml');
  t.false(r.ok);
  if (!r.ok) for (const e of r.issues) t.is(e.file, '/oem/site.yaml');
});

/** The cross-field address checks, one case per rule: the change to VALID, then each error's `line:column path` and message. */
const ADDRESS_PLAN_CASES: [rule: string, from: string, to: string, errors: [where: string, message: RegExp][]][] = [
  [
    'the VIP differs from a node',
    'address: 192.0.2.12/24',
    'address: 192.0.2.10/24',
    [['18:16 network.nodes[1].address', /^192\.0\.2\.10 is the VIP: each box needs its own address$/]],
  ],
  ['the VIP differs from the gateway', 'gateway: 192.0.2.1', 'gateway: 192.0.2.10', [['11:12 network.gateway', /^the gateway 192\.0\.2\.10 is also the VIP$/]]],
  [
    'node addresses differ from each other',
    'address: 192.0.2.12/24',
    'address: 192.0.2.11/24',
    [['18:16 network.nodes[1].address', /^192\.0\.2\.11 is also network\.nodes\[0\]\.address/]],
  ],
  [
    'a node differs from the gateway',
    'gateway: 192.0.2.1',
    'gateway: 192.0.2.12',
    [['18:16 network.nodes[1].address', /^192\.0\.2\.12 is the gateway's address$/]],
  ],
  [
    'the gateway is in the VIP subnet',
    'gateway: 192.0.2.1',
    'gateway: 198.51.100.1',
    [['11:12 network.gateway', /^the gateway 198\.51\.100\.1 is outside the VIP's subnet 192\.0\.2\.0\/24$/]],
  ],
  [
    'a node is in the VIP subnet',
    'address: 192.0.2.11/24',
    'address: 192.0.3.11/24',
    [['16:16 network.nodes[0].address', /^192\.0\.3\.11 is outside the VIP's subnet 192\.0\.2\.0\/24$/]],
  ],
  [
    'a node has the VIP prefix',
    'address: 192.0.2.11/24',
    'address: 192.0.2.11/25',
    [['16:16 network.nodes[0].address', /^prefix \/25 differs from the VIP's \/24/]],
  ],
  [
    'the VIP is not the network address',
    'vip: 192.0.2.10/24',
    'vip: 192.0.2.0/24',
    [['9:8 network.vip', /^192\.0\.2\.0 is the network address of 192\.0\.2\.0\/24, which no host can hold$/]],
  ],
  [
    'the VIP is not the broadcast address',
    'vip: 192.0.2.10/24',
    'vip: 192.0.2.255/24',
    [['9:8 network.vip', /^192\.0\.2\.255 is the broadcast address of 192\.0\.2\.0\/24/]],
  ],
  [
    'the gateway is not the broadcast address',
    'gateway: 192.0.2.1',
    'gateway: 192.0.2.255',
    [['11:12 network.gateway', /broadcast address of 192\.0\.2\.0\/24/]],
  ],
  [
    'a node is not the network address',
    'address: 192.0.2.12/24',
    'address: 192.0.2.0/24',
    [['18:16 network.nodes[1].address', /network address of 192\.0\.2\.0\/24/]],
  ],
  ['a witness is not the VIP', '192.0.2.2]', '192.0.2.10]', [['12:26 network.witnesses[1]', /^witness 192\.0\.2\.10 is the VIP$/]]],
  ['a witness is not a node', '192.0.2.2]', '192.0.2.12]', [['12:26 network.witnesses[1]', /^witness 192\.0\.2\.12 is network\.nodes\[1\]\.address$/]]],
  [
    'a witness in the VIP subnet is not its broadcast address',
    '192.0.2.2]',
    '192.0.2.255]',
    [['12:26 network.witnesses[1]', /broadcast address of 192\.0\.2\.0\/24/]],
  ],
];

for (const [rule, from, to, expected] of ADDRESS_PLAN_CASES) {
  test(`cross-field address check: ${rule}`, (t) => {
    t.true(VALID.includes(from), `the case edits VALID (${from})`);
    const errors = errorsOf(VALID.replace(from, to));
    t.deepEqual(
      errors.map((e) => `${e.line}:${e.column} ${e.field}`),
      expected.map(([where]) => where),
      errors.map(formatIssue).join('\n'),
    );
    errors.forEach((e, i) => {
      t.regex(e.message ?? '', expected[i]![1]);
      t.is(e.file, 'site.yaml');
      t.true(e.found.length > 0 && e.allowed.length > 0, 'says what was found and what to use instead');
    });
  });
}

test('cross-field address checks accept witnesses outside the subnet and /31 and /32 edge addresses', (t) => {
  for (const text of [
    VALID.replace('192.0.2.2]', '198.51.100.7]'),
    `apiVersion: geminik8s/v1\nkind: Site\nsite: {id: a}\npair: {secret: ${SECRET}}\nnetwork: {vip: 10.0.0.0/31, addressing: dhcp}\n`,
    `apiVersion: geminik8s/v1\nkind: Site\nsite: {id: a}\npair: {secret: ${SECRET}}\nnetwork: {vip: 10.0.0.255/32, addressing: dhcp, witnesses: [10.0.0.1]}\n`,
  ]) {
    const r = parseSiteConfig(text, 'site.yaml');
    t.true(r.ok, r.ok ? '' : r.issues.map(formatIssue).join('\n'));
  }
});

test('failover.timeScale paces the site from 1 to 10; anything else is refused with the range', (t) => {
  const paced = parseSiteConfig(`${VALID}failover:\n  timeScale: 3\n`, 'site.yaml');
  t.true(paced.ok);
  if (paced.ok) t.is(paced.value.failover?.timeScale, 3);
  for (const bad of ['0.5', '11', 'fast']) {
    const issue = only(t, `${VALID}failover:\n  timeScale: ${bad}\n`, { field: 'failover.timeScale', line: 20 });
    t.regex(formatIssue(issue), /expected (a number [<>]= 1?[01] \(|number \()a number from 1 .* to 10/);
  }
});

import test from 'ava';
import { randomBytes } from 'node:crypto';
import {
  conninfo,
  dropAutoConfSettings,
  ensureIncludeLine,
  kineEndpoint,
  fencedHba,
  renderPgHba,
  renderPgpass,
  renderPostgresConf,
  FENCE_CONF,
  slotName,
  synchronousStandbyNames,
  upstreamConninfo,
} from '../../firstboot/src/provision/core/pgconf.ts';
import { BASEBACKUP_ATTEMPTS, basebackupRetryAfter, classifyDataDir, partialPath } from '../../firstboot/src/provision/core/plan.ts';
import { generateCredentials, nodeSans, renderOpensslCaConfig, scramVerifier, validateSecrets } from '../../firstboot/src/provision/core/secrets.ts';
import { mapStandbyRow } from '../../firstboot/src/provision/core/status.ts';

test('pg_hba: replication only from the peer, TLS + scram only, Kine from loopback/peer/VIP', (t) => {
  const hba = renderPgHba({ peerIp: '192.0.2.12', vip: '192.0.2.10', mode: 'physical' });
  const rows = hba.split('\n').filter((l) => l && !l.startsWith('#'));
  t.deepEqual(rows[0]?.split('\t'), ['local', 'all', 'postgres', 'peer map=geminik8s']);
  t.true(rows.includes('hostssl\treplication\treplicator\t192.0.2.12/32\tscram-sha-256'));
  t.is(rows.filter((r) => r.includes('replication')).length, 1);
  for (const src of ['127.0.0.1', '192.0.2.12', '192.0.2.10']) t.true(rows.includes(`hostssl\tkine\tkine\t${src}/32\tscram-sha-256`));
  t.false(
    rows.some((r) => /^host\s/.test(r)),
    'no non-TLS network rule',
  );
  t.false(rows.some((r) => /trust|md5|password\b/.test(r)));
  t.false(hba.includes('kine\treplicator'), 'physical mode: no logical replication rule');
  t.true(renderPgHba({ peerIp: '192.0.2.12', mode: 'logical' }).includes('hostssl\tkine\treplicator\t192.0.2.12/32'));
});

test('pg_hba under the fence: the kine role rejected before any rule admits it; lifting it restores the file', (t) => {
  const hba = renderPgHba({ peerIp: '192.0.2.12', vip: '192.0.2.10', mode: 'physical' });
  const fenced = fencedHba(hba, true);
  const rows = fenced.split('\n').filter((l) => l && !l.startsWith('#'));
  t.deepEqual(rows.slice(0, 2), ['local\tall\tkine\treject', 'host\tall\tkine\tall\treject']);
  t.true(fenced.startsWith('# Written by geminik8s-agent'), 'the header stays first');
  t.is(fencedHba(fenced, true), fenced, 'raising it twice changes nothing');
  t.is(fencedHba(fenced, false), hba);
  t.is(fencedHba(hba, false), hba);
});

test('postgresql include: wal_level by mode, ssl, scram, rewind support, no sync names', (t) => {
  const o = {
    port: 5432,
    listenAddresses: ['192.0.2.11', '127.0.0.1', '127.0.0.1'],
    socketDir: '/run/postgresql',
    hbaFile: '/h',
    identFile: '/i',
    sslCertFile: '/c',
    sslKeyFile: '/k',
    sslCaFile: '/ca',
  };
  const phys = renderPostgresConf({ ...o, mode: 'physical' });
  t.regex(phys, /^listen_addresses = '192\.0\.2\.11,127\.0\.0\.1'$/m);
  t.regex(phys, /^wal_level = replica$/m);
  t.regex(phys, /^ssl = on$/m);
  t.regex(phys, /^password_encryption = 'scram-sha-256'$/m);
  t.regex(phys, /^wal_log_hints = on$/m);
  t.regex(phys, /^hot_standby = on$/m);
  t.notRegex(phys, /synchronous_standby_names/);
  t.regex(renderPostgresConf({ ...o, mode: 'logical' }), /^wal_level = logical$/m);
  t.notRegex(phys, /include_if_exists/);
  // The fence is included last, so nothing earlier in the file can turn it off.
  const fenced = renderPostgresConf({ ...o, mode: 'physical', fenceFile: "/conf/it's fence.conf" });
  t.regex(fenced, /\ninclude_if_exists '\/conf\/it''s fence\.conf'\n$/);
  t.regex(FENCE_CONF, /^default_transaction_read_only = on$/m);
});

test('include line: appended once, re-pointed, idempotent', (t) => {
  const base = '# stock\nmax_connections = 100\n';
  const a = ensureIncludeLine(base, '/a/x.conf');
  t.is(ensureIncludeLine(a, '/a/x.conf'), a);
  const b = ensureIncludeLine(a, "/b/it's.conf");
  t.is(b.match(/geminik8s-agent include/g)?.length, 1);
  t.regex(b, /include '\/b\/it''s\.conf'/);
  t.true(b.startsWith(base.trimEnd()));
});

test('auto.conf: drops only the named settings', (t) => {
  const auto = "# Do not edit\nprimary_conninfo = 'x'\nsynchronous_standby_names = 'FIRST 1 (\"b\")'\nwork_mem = '8MB'\n";
  t.is(dropAutoConfSettings(auto, ['primary_conninfo', 'SYNCHRONOUS_STANDBY_NAMES']), "# Do not edit\nwork_mem = '8MB'\n");
});

test('conninfo, pgpass, kine endpoint: quoting and encoding', (t) => {
  t.is(conninfo({ host: 'h', password: undefined, application_name: "a b'c" }), "host=h application_name='a b\\'c'");
  const up = upstreamConninfo({ host: '192.0.2.10', port: 5432, applicationName: 'node-b', sslRootCert: '/ca.crt', passfile: '/pgpass' });
  t.regex(up, /sslmode=verify-full/);
  t.regex(up, /application_name=node-b/);
  t.notRegex(up, /password=/);
  t.is(renderPgpass([{ host: '*', port: '*', database: '*', user: 'u', password: 'a:b\\c' }]), '*:*:*:u:a\\:b\\\\c\n');
  const ep = kineEndpoint({ host: '192.0.2.10', port: 5432, password: 'p@ss/w:rd', sslRootCert: '/etc/ca.crt' });
  const u = new URL(ep);
  t.is(decodeURIComponent(u.password), 'p@ss/w:rd');
  t.is(u.searchParams.get('sslmode'), 'verify-full');
  t.is(u.searchParams.get('sslrootcert'), '/etc/ca.crt');
  t.is(u.pathname, '/kine');
});

test('sync names and slot names', (t) => {
  t.is(synchronousStandbyNames(null), '');
  t.is(synchronousStandbyNames('node-b'), 'FIRST 1 ("node-b")');
  t.is(slotName('Node-B.x'), 'geminik8s_node_b_x');
});

test('data dir classification: only complete dirs are kept; partial debris is wiped; unknown data is refused', (t) => {
  const f = { exists: false, empty: false, hasPgVersion: false, hasStandbySignal: false, partialExists: false };
  t.deepEqual(classifyDataDir(f), { kind: 'absent', wipePartial: false });
  t.deepEqual(classifyDataDir({ ...f, partialExists: true }), { kind: 'absent', wipePartial: true });
  t.deepEqual(classifyDataDir({ ...f, exists: true, empty: true }), { kind: 'absent', wipePartial: false });
  t.deepEqual(classifyDataDir({ ...f, exists: true }), { kind: 'foreign' });
  t.deepEqual(classifyDataDir({ ...f, exists: true, hasPgVersion: true }), { kind: 'primary' });
  t.deepEqual(classifyDataDir({ ...f, exists: true, hasPgVersion: true, hasStandbySignal: true }), { kind: 'standby' });
  t.is(partialPath('/var/lib/postgresql/15/geminik8s/'), '/var/lib/postgresql/15/geminik8s.partial');
});

test('a cut base backup is tried again after a pause, up to its attempts, then the failure stands', (t) => {
  const waits = Array.from({ length: BASEBACKUP_ATTEMPTS }, (_, i) => basebackupRetryAfter(i + 1));
  t.is(waits.filter((w) => w !== undefined).length, BASEBACKUP_ATTEMPTS - 1);
  t.true(waits.slice(0, -1).every((w) => w !== undefined && w > 0));
  t.is(waits.at(-1), undefined, 'the last attempt gives up');
});

test('credentials: distinct, URL-safe, from the injected random source', (t) => {
  const c = generateCredentials(randomBytes);
  const all = [c.superuserPassword, c.replicationPassword, c.kinePassword, c.k3sToken];
  t.is(new Set(all).size, 4);
  for (const v of all) t.regex(v, /^[A-Za-z0-9_-]{40,}$/);
  let n = 0;
  const fixed = generateCredentials((k) => Buffer.alloc(k, n++));
  t.is(fixed.superuserPassword, Buffer.alloc(32, 0).toString('base64url'));
});

test('SANs and CA config', (t) => {
  t.deepEqual(nodeSans({ name: 'node-a', ip: '192.0.2.11' }, '192.0.2.10'), ['IP:192.0.2.11', 'IP:192.0.2.10', 'IP:127.0.0.1', 'DNS:localhost', 'DNS:node-a']);
  t.deepEqual(nodeSans({ name: 'n', ip: '127.0.0.1' }, undefined), ['IP:127.0.0.1', 'DNS:localhost', 'DNS:n']);
  t.regex(renderOpensslCaConfig(['IP:1.2.3.4']), /subjectAltName = IP:1\.2\.3\.4/);
  t.throws(() => renderOpensslCaConfig(['IP:1.2.3.4\n[evil]']));
});

test('SCRAM verifier: PostgreSQL format, deterministic for a salt', (t) => {
  const salt = Buffer.alloc(16, 7);
  const v = scramVerifier('pencil', salt);
  t.regex(v, /^SCRAM-SHA-256\$4096:[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]{44}:[A-Za-z0-9+/=]{44}$/);
  t.is(scramVerifier('pencil', salt), v);
  t.not(scramVerifier('pencil2', salt), v);
});

test('secrets validation names the field, never the value', (t) => {
  const leaky = 'super-secret-value-that-must-not-leak';
  const e = t.throws(() => validateSecrets({ format: 1, superuserPassword: 'x', replicationPassword: leaky }, 'f.json'));
  t.regex(e?.message ?? '', /^f\.json: superuserPassword:/);
  t.false((e?.message ?? '').includes(leaky));
});

test('status row mapping', (t) => {
  const s = mapStandbyRow({
    application_name: 'node-b',
    client_addr: '192.0.2.12',
    state: 'streaming',
    sync_state: 'sync',
    sent_lsn: '0/3000060',
    write_lag_ms: '1.5',
    replay_lag_bytes: 0,
  });
  t.is(s.writeLagMs, 1.5);
  t.is(s.replayLagBytes, 0);
  t.is(s.flushLagMs, null);
  t.is(s.syncState, 'sync');
});

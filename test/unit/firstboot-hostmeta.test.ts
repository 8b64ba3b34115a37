import test from 'ava';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { writeFileAtomic } from '../../firstboot/src/adapters/atomic-file.ts';
import { IdentityRefused, loadHostMeta, storeHostMeta } from '../../firstboot/src/adapters/hostmeta-store.ts';
import { jsonLogger } from '../../firstboot/src/adapters/output.ts';
import { chooseIdentity, clusterPhases, finishLocalSteps, isNodeId, parseHostMeta, recordLiveness, startBoot } from '../../firstboot/src/core/hostmeta.ts';

const SECRET = 'q4Jr7m8sXvYc2Zb1Lk9PwN3eTg6HfA0dUiOy5RjWlMo=';
const ID_A = '0123456789abcdef0123456789abcdef';
const ID_B = 'fedcba9876543210fedcba9876543210';

async function tempDir(t: import('ava').ExecutionContext): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'g8s-hostmeta-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

const silent = jsonLogger(() => undefined);

test('atomic write replaces the file and leaves no temp file behind', async (t) => {
  const dir = await tempDir(t);
  const path = join(dir, 'x.json');
  writeFileAtomic(path, 'one');
  writeFileAtomic(path, 'two');
  t.is(await readFile(path, 'utf8'), 'two');
  t.deepEqual(await readdir(dir), ['x.json']);
});

test('a temp file left by a power cut is overwritten, not read', async (t) => {
  const dir = await tempDir(t);
  await writeFile(join(dir, '.hostmeta.json.tmp'), '{"half":');
  const meta = startBoot(undefined, new Date(), ID_A);
  storeHostMeta(dir, meta);
  t.deepEqual(loadHostMeta(dir, silent, []), meta);
  t.deepEqual((await readdir(dir)).sort(), ['hostmeta.json', 'hostmeta.json.bak']);
});

test('the node id is generated once and kept; bootCount increments per start', async (t) => {
  const dir = await tempDir(t);
  const t0 = new Date('2020-01-01T00:00:00Z');
  const first = startBoot(loadHostMeta(dir, silent, []), t0, ID_A);
  storeHostMeta(dir, first);
  const second = startBoot(loadHostMeta(dir, silent, []), new Date('2019-06-01T00:00:00Z'), ID_B);
  storeHostMeta(dir, second);
  const third = startBoot(loadHostMeta(dir, silent, []), new Date(), ID_B);
  t.is(first.nodeId, ID_A);
  t.is(second.nodeId, ID_A);
  t.is(third.nodeId, ID_A);
  t.deepEqual([first.bootCount, second.bootCount, third.bootCount], [1, 2, 3]);
  t.is(third.firstBootAt, t0.toISOString(), 'firstBootAt is kept even when the clock went backwards');
  t.like(third, { term: 0, role: 'unassigned', schemaVersion: 1 });
});

test('local steps set phase, site id and data partition; grownAt survives later boots', (t) => {
  const boot1 = startBoot(undefined, new Date('2024-01-01T00:00:00Z'), ID_A);
  const done1 = finishLocalSteps(
    boot1,
    { kind: 'valid', siteId: 'shop-1' },
    { device: '/dev/vda5', sizeBytes: 8 * 2 ** 30, grew: true },
    new Date('2024-01-01T00:00:05Z'),
  );
  t.like(done1, {
    phase: 'local-ready',
    siteId: 'shop-1',
    dataPartition: { device: '/dev/vda5', sizeBytes: 8 * 2 ** 30, grownAt: '2024-01-01T00:00:05.000Z' },
  });
  const done2 = finishLocalSteps(
    startBoot(done1, new Date(), ID_B),
    { kind: 'absent' },
    { device: '/dev/vda5', sizeBytes: 8 * 2 ** 30, grew: false },
    new Date(),
  );
  t.is(done2.phase, 'waiting-for-site');
  t.is(done2.siteId, undefined);
  t.is(done2.dataPartition?.grownAt, '2024-01-01T00:00:05.000Z');
  t.is(finishLocalSteps(done2, { kind: 'invalid' }, undefined, new Date()).phase, 'site-invalid');
});

test('hostmeta and the JSON log never contain the pair secret', async (t) => {
  const dir = await tempDir(t);
  const meta = finishLocalSteps(startBoot(undefined, new Date(), ID_A), { kind: 'valid', siteId: 'shop-1' }, undefined, new Date());
  const path = storeHostMeta(dir, meta);
  const text = await readFile(path, 'utf8');
  t.false(text.includes(SECRET));
  t.false(/secret/i.test(text));
  const lines: string[] = [];
  jsonLogger((l) => lines.push(l)).event('info', 'site-read', { siteId: 'shop-1', pair: { secret: SECRET } });
  t.false(lines.join('').includes(SECRET));
  t.regex(lines[0] ?? '', /"secret":"\[redacted\]"/);
});

test('a corrupt hostmeta on a box without pair data is moved aside and a new identity started', async (t) => {
  const dir = await tempDir(t);
  await writeFile(join(dir, 'hostmeta.json'), '{"schemaVersion":1,"nodeId":"nothex"}');
  const lines: string[] = [];
  const log = jsonLogger((l) => lines.push(l));
  t.is(loadHostMeta(dir, log, [join(dir, 'no-secrets-here.json')]), undefined);
  t.deepEqual((await readdir(dir)).sort(), ['hostmeta.json.corrupt']);
  t.regex(lines.join(''), /hostmeta-corrupt/);
});

test('a corrupt or missing hostmeta comes back from its backup, identity and term kept', async (t) => {
  const dir = await tempDir(t);
  const paired = { ...startBoot(undefined, new Date(), ID_A), phase: 'provisioned' as const, role: 'follower' as const, term: 7 };
  storeHostMeta(dir, paired);
  await writeFile(join(dir, 'hostmeta.json'), '{"schemaVersion":1,"nodeId":"nothex"}');
  const lines: string[] = [];
  const secrets = join(dir, 'cluster.json');
  await writeFile(secrets, '{}');
  t.deepEqual(
    loadHostMeta(
      dir,
      jsonLogger((l) => lines.push(l)),
      [secrets],
    ),
    paired,
  );
  t.regex(lines.join(''), /"event":"hostmeta-from-backup"/);
  // The record is written again from the backup, so the next start reads it first.
  t.deepEqual(parseHostMeta(await readFile(join(dir, 'hostmeta.json'), 'utf8')), { ok: true, meta: paired });
  await rm(join(dir, 'hostmeta.json'));
  t.like(loadHostMeta(dir, silent, [secrets]), { nodeId: ID_A, term: 7 });
});

test('a box holding pair data whose record and backup are both lost refuses to start, saying what to do', async (t) => {
  const dir = await tempDir(t);
  const pgVersion = join(dir, 'PG_VERSION');
  await writeFile(pgVersion, '15\n');
  await writeFile(join(dir, 'hostmeta.json'), 'garbage');
  const lines: string[] = [];
  const e = t.throws(
    () =>
      loadHostMeta(
        dir,
        jsonLogger((l) => lines.push(l)),
        [join(dir, 'cluster.json'), pgVersion],
      ),
    { instanceOf: IdentityRefused },
  );
  t.regex(e?.message ?? '', /hostmeta\.json is unreadable \(not JSON.*\) and its backup is missing, but this box holds the pair's data \(.*PG_VERSION\)/);
  t.regex(e?.message ?? '', /Put back a copy of hostmeta\.json/);
  t.regex(lines.join(''), /"event":"identity-refused"/);
  // The next start (systemd restarts the agent) still refuses: the record was moved aside, not replaced.
  t.throws(() => loadHostMeta(dir, silent, [pgVersion]), { instanceOf: IdentityRefused, message: /hostmeta\.json is missing and its backup is missing/ });
  t.false((await readdir(dir)).includes('hostmeta.json'));
});

test('chooseIdentity: the record first, then the backup; a new identity only without pair data', (t) => {
  const a = startBoot(undefined, new Date(0), ID_A);
  const b = { ...a, term: 3 };
  const absent = { kind: 'absent' } as const;
  const bad = { kind: 'unreadable', reason: 'EIO' } as const;
  t.deepEqual(chooseIdentity({ kind: 'ok', meta: b }, { kind: 'ok', meta: a }, ['x']), { kind: 'continue', meta: b, from: 'record' });
  t.deepEqual(chooseIdentity(bad, { kind: 'ok', meta: a }, ['x']), { kind: 'continue', meta: a, from: 'backup' });
  t.deepEqual(chooseIdentity(absent, bad, []), { kind: 'new' });
  t.like(chooseIdentity(absent, bad, ['/x/cluster.json']), { kind: 'refuse' });
});

test('parseHostMeta rejects what it does not understand', (t) => {
  const good = startBoot(undefined, new Date(), ID_A);
  t.true(parseHostMeta(JSON.stringify(good)).ok);
  t.false(parseHostMeta(JSON.stringify({ ...good, schemaVersion: 2 })).ok);
  t.false(parseHostMeta(JSON.stringify({ ...good, bootCount: -1 })).ok);
  t.false(parseHostMeta(JSON.stringify({ ...good, phase: 'leader' })).ok);
  t.false(parseHostMeta('not json').ok);
  t.true(isNodeId(ID_A));
  t.throws(() => startBoot(undefined, new Date(), 'short'));
});

test('a failover transition persists role, never lowers the term, and records the handover', (t) => {
  const base = {
    ...startBoot(undefined, new Date(0), ID_A),
    phase: 'provisioned' as const,
    role: 'follower' as const,
    term: 3,
    pair: { leader: ID_B, peerNodeId: ID_B, peerName: 'b', peerAddress: '10.0.0.2', peerKey: 'k'.repeat(43) },
  };
  const promoted = recordLiveness(base, { role: 'leader', term: 4, leader: ID_A, handover: false });
  t.like(promoted, { role: 'leader', term: 4, pair: { leader: ID_A } });
  t.false('handover' in promoted);
  const yielding = recordLiveness(promoted, { role: 'fenced', term: 2, handover: true });
  t.like(yielding, { role: 'fenced', term: 4, handover: true });
  const reread = parseHostMeta(JSON.stringify(yielding));
  t.like(reread, { ok: true, meta: { role: 'fenced', handover: true } });
  t.like(parseHostMeta(JSON.stringify({ ...yielding, handover: 'yes' })), { ok: false, reason: 'handover is not a boolean' });
});

test('the last promotion and its cause are kept across later transitions and re-reads', (t) => {
  const base = { ...startBoot(undefined, new Date(0), ID_A), phase: 'provisioned' as const, role: 'follower' as const, term: 3 };
  const promotion = { at: '2026-12-01T10:00:00.000Z', term: 4, cause: 'leader-lost' as const, reason: 'peer silent 5000 ms' };
  const promoted = recordLiveness(base, { role: 'leader', term: 4, handover: false, promotion });
  const fenced = recordLiveness(promoted, { role: 'fenced', term: 4, handover: false });
  t.deepEqual(fenced.lastPromotion, promotion);
  t.like(parseHostMeta(JSON.stringify(fenced)), { ok: true, meta: { lastPromotion: promotion } });
  t.like(parseHostMeta(JSON.stringify({ ...fenced, lastPromotion: { ...promotion, cause: 'boredom' } })), {
    ok: false,
    reason: 'lastPromotion is malformed',
  });
});

test('the cluster phases of a boot follow from what hostmeta.json recorded', (t) => {
  const pair = { leader: 'a', peerNodeId: 'b', peerName: 'node-b', peerAddress: '192.0.2.12', peerKey: 'k' };
  t.deepEqual(clusterPhases({ phase: 'local-ready' }), ['pair', 'provision', 'live'], 'a fresh node pairs and provisions');
  t.deepEqual(clusterPhases({ phase: 'paired', pair }), ['pair', 'provision', 'live'], 'paired but cut before provisioning: agree again');
  t.deepEqual(clusterPhases({ phase: 'provisioned', pair }), ['resume', 'live'], 'provisioned: straight into liveness, without waiting for the peer');
  t.deepEqual(clusterPhases({ phase: 'provisioned' }), ['pair', 'provision', 'live'], 'provisioned without a recorded pair cannot resume');
});

/**
 * replace-node's rules (firstboot/src/core/replacement.ts), what hostmeta.json keeps of it, the
 * operator's plan and progress (builder/src/remote/core/site.ts), and forgetting the replaced
 * box's pinned host key.
 */
import test from 'ava';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { planReplacement, renderSiteTable, replacementProgress, siteView } from '../../builder/src/remote/core/site.ts';
import { forgetHostKeys } from '../../builder/src/remote/ssh.ts';
import { type HostMeta, parseHostMeta, recordReplacement, recordReplacementEnded, recordReplacementOpened } from '../../firstboot/src/core/hostmeta.ts';
import { REPLACE_AFTER_SILENT_MS, replacedPeerIsBack, replacementCandidateRefusal, replacementRefusal } from '../../firstboot/src/core/replacement.ts';

const OLD = 'b'.repeat(32);
const NEW = 'c'.repeat(32);

test('the survivor admits a replacement only as a provisioned leader whose peer has been silent long enough', (t) => {
  const ok = { phase: 'provisioned' as const, role: 'leader', peerSilentMs: REPLACE_AFTER_SILENT_MS };
  t.is(replacementRefusal(ok), undefined);
  t.regex(replacementRefusal({ ...ok, peerSilentMs: 4200 }) ?? '', /^the peer was heard 4\.2 s ago, so it is alive: replace-node replaces a dead box/);
  t.regex(replacementRefusal({ ...ok, peerSilentMs: undefined }) ?? '', /has not measured its peer yet/);
  t.regex(replacementRefusal({ ...ok, role: 'fenced' }) ?? '', /^this box is fenced: the survivor must be the leader/);
  t.regex(replacementRefusal({ ...ok, role: 'follower' }) ?? '', /^this box is follower/);
  t.regex(replacementRefusal({ ...ok, phase: 'local-ready' }) ?? '', /^this box is local-ready, not a provisioned member of a pair/);
});

test('only a freshly flashed box comes in, never the replaced one; the door closes when the replaced box is heard again', (t) => {
  const fresh = { nodeId: NEW, committed: false, term: 0, timeline: 0, lsn: '0/0' };
  t.is(replacementCandidateRefusal(fresh, OLD), undefined);
  // A fresh box that agreed once and then lost the pairing still has no data: it may come.
  t.is(replacementCandidateRefusal({ ...fresh, term: 7, leader: 'a'.repeat(32) }, OLD), undefined);
  t.regex(replacementCandidateRefusal({ ...fresh, nodeId: OLD, committed: true, term: 7 }, OLD) ?? '', /is the box being replaced/);
  t.regex(replacementCandidateRefusal({ ...fresh, committed: true, term: 3 }, OLD) ?? '', /holds cluster data \(term 3\): only a freshly flashed box/);
  t.true(replacedPeerIsBack(900));
  t.false(replacedPeerIsBack(REPLACE_AFTER_SILENT_MS));
});

const provisioned = (): HostMeta => ({
  schemaVersion: 1,
  nodeId: 'a'.repeat(32),
  bootCount: 3,
  firstBootAt: '2026-12-01T00:00:00.000Z',
  lastBootAt: '2026-12-02T00:00:00.000Z',
  phase: 'provisioned',
  term: 5,
  role: 'leader',
  pair: { leader: 'a'.repeat(32), peerNodeId: OLD, peerName: 'node-bbbbbbbb', peerAddress: '192.0.2.12', peerKey: 'k'.repeat(43) },
});

test('hostmeta keeps an open admission across restarts, and the new peer replaces the old one without touching role or term', (t) => {
  const open = recordReplacementOpened(provisioned(), new Date('2026-12-02T03:00:00Z'));
  t.deepEqual(open.replacing, { peerNodeId: OLD, since: '2026-12-02T03:00:00.000Z' });
  const parsed = parseHostMeta(JSON.stringify(open));
  t.true(parsed.ok);
  if (parsed.ok) t.deepEqual(parsed.meta.replacing, open.replacing);
  t.deepEqual(parseHostMeta(JSON.stringify({ ...open, replacing: { peerNodeId: 'x', since: 'now' } })), { ok: false, reason: 'replacing is malformed' });
  t.is(recordReplacementEnded(open).replacing, undefined);
  t.deepEqual(recordReplacementEnded(open).pair, provisioned().pair);

  const pair = { leader: open.nodeId, peerNodeId: NEW, peerName: 'node-cccccccc', peerAddress: '192.0.2.12', peerKey: 'm'.repeat(43) };
  const replaced = recordReplacement(open, pair);
  t.like(replaced, { phase: 'provisioned', role: 'leader', term: 5, pair });
  t.is(replaced.replacing, undefined);
  t.throws(() => recordReplacement(provisioned(), pair), { message: /only on a provisioned box that admits one/ });
  t.throws(() => recordReplacementOpened({ ...provisioned(), pair: undefined } as unknown as HostMeta, new Date()), { message: /needs a recorded pair/ });
});

const survivorStatus = (o: { peerSilentMs?: number; replacing?: boolean; peer?: string; role?: string } = {}) => ({
  nodeId: 'a'.repeat(32),
  name: 'node-aaaaaaaa',
  phase: 'provisioned',
  role: o.role ?? 'leader',
  term: 5,
  peer: { nodeId: o.peer ?? OLD, name: o.peer === NEW ? 'node-cccccccc' : 'node-bbbbbbbb', address: '192.0.2.12' },
  liveness: { peerSilentMs: o.peerSilentMs ?? 45_000 },
  ...(o.replacing ? { replacing: { replaces: 'node-bbbbbbbb', since: '2026-12-02T03:00:00.000Z' } } : {}),
});

test("the operator's plan: the survivor is the one leader; a peer that answers, or one heard recently, is refused", (t) => {
  const plan = planReplacement([
    { host: '192.0.2.11', status: survivorStatus() },
    { host: '192.0.2.12', error: 'connect ETIMEDOUT' },
  ]);
  t.deepEqual(plan, {
    ok: true,
    survivor: '192.0.2.11',
    replaced: { nodeId: OLD, name: 'node-bbbbbbbb', address: '192.0.2.12' },
    alreadyAdmitting: false,
  });
  // A new box already at the dead one's address (not paired) does not stand in the way.
  const withNewBox = planReplacement([
    { host: '192.0.2.11', status: survivorStatus() },
    { host: '192.0.2.12', status: { nodeId: NEW, phase: 'local-ready', role: 'unassigned', term: 0 } },
  ]);
  t.true(withNewBox.ok);
  const alive = planReplacement([
    { host: '192.0.2.11', status: survivorStatus({ peerSilentMs: 300 }) },
    { host: '192.0.2.12', status: { nodeId: OLD, phase: 'provisioned', role: 'follower', term: 5 } },
  ]);
  t.false(alive.ok);
  if (!alive.ok) t.regex(alive.reason, /^192\.0\.2\.12 answers as node-bbbbbbbb, 192\.0\.2\.11's peer: it is alive/);
  const recent = planReplacement([{ host: '192.0.2.11', status: survivorStatus({ peerSilentMs: 3000 }) }]);
  t.false(recent.ok);
  if (!recent.ok) t.regex(recent.reason, /^192\.0\.2\.11: the peer was heard 3\.0 s ago, so it is alive/);
  const noLeader = planReplacement([{ host: '192.0.2.11', status: survivorStatus({ role: 'fenced' }) }]);
  t.false(noLeader.ok);
  if (!noLeader.ok) t.regex(noLeader.reason, /needs exactly one box leading, the survivor \(192\.0\.2\.11: fenced\)/);
  // Asked again while the door is open: it waits on, it does not ask twice.
  const again = planReplacement([{ host: '192.0.2.11', status: survivorStatus({ replacing: true, peerSilentMs: 90_000 }) }]);
  t.like(again, { ok: true, alreadyAdmitting: true });
});

test("the operator follows the survivor's status: admitting, then the new peer, or the door closed without one", (t) => {
  const plan = planReplacement([{ host: '192.0.2.11', status: survivorStatus() }]);
  if (!plan.ok) return t.fail(plan.reason);
  t.deepEqual(replacementProgress(plan, survivorStatus({ replacing: true })), { stage: 'admitting' });
  t.deepEqual(replacementProgress(plan, survivorStatus({ peer: NEW })), {
    stage: 'joined',
    peer: { nodeId: NEW, name: 'node-cccccccc', address: '192.0.2.12' },
  });
  t.is(replacementProgress(plan, survivorStatus()).stage, 'ended');
  // The site table (and each box's status page) says what the box is doing.
  t.regex(
    renderSiteTable(siteView([{ host: '192.0.2.11', status: survivorStatus({ replacing: true }) }])),
    /^replacing +admits one new box in place of node-bbbbbbbb \(since 2026-12-02T03:00:00\.000Z\)$/m,
  );
});

test("forgetting a replaced box's host key keeps every other pinned line", async (t) => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'g8s-known-hosts-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'known_hosts');
  t.is(await forgetHostKeys(file, '192.0.2.12'), 0, 'no file, nothing to forget');
  await writeFile(file, '192.0.2.11 ssh-ed25519 AAAA1\n192.0.2.12 ssh-ed25519 AAAA2\n192.0.2.121 ssh-ed25519 AAAA3\n', { mode: 0o600 });
  t.is(await forgetHostKeys(file, '192.0.2.12'), 1);
  t.is(await readFile(file, 'utf8'), '192.0.2.11 ssh-ed25519 AAAA1\n192.0.2.121 ssh-ed25519 AAAA3\n');
  t.is((await stat(file)).mode & 0o777, 0o600);
  t.is(await forgetHostKeys(file, '192.0.2.12'), 0);
});

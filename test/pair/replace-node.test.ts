/**
 * replace-node (issue 14) end to end on a network-namespace pair with real sshd: the operator CLI
 * on the gateway namespace is refused while the follower is alive and while it has only just died;
 * an admission asked and cancelled leaves the pair as it was; then the dead box is swapped for a
 * freshly flashed one at the same address (empty disk, new node id, new SSH host key, same site
 * file) and `geminik8s replace-node` has the survivor admit it. The new box copies the datastore and becomes the synchronous follower under the writer on the VIP,
 * no acknowledged write is lost, and a planned switchover hands it the lead.
 */
import test from 'ava';
import { execa } from 'execa';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { REPLACE_AFTER_SILENT_MS } from '../../firstboot/src/core/replacement.ts';
import { startWriter, verifyAcked, waitHealthy, type WriteTarget } from '../helpers/fault-matrix.ts';
import { assertHealthyPair, testPair } from '../helpers/pair-checks.ts';
import { eventually } from '../helpers/poll.ts';
import { cliArgvOnLan, cliOnLan, serveSsh, sshdOnNewBox } from '../helpers/sshd.ts';

interface Event {
  event: string;
  name?: string;
  address?: string;
  nodeId?: string;
  leader?: string;
  follower?: string;
  seconds?: number;
  forgottenHostKeys?: number;
}

test.serial('replace-node: refused while the peer lives, then a wiped box at its address joins as the synchronous follower with every write', async (t) => {
  const pair = await testPair(t);
  await assertHealthyPair(t, pair);
  const healthy = await waitHealthy(pair);
  const dir = await mkdtemp(path.join(os.tmpdir(), 'gk8s-replace-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const ssh = await serveSsh(pair, dir);
  const cli = (args: string[], timeoutMs?: number) => cliOnLan(pair, [...args, ...ssh.siteArgs], timeoutMs);
  const survivor = healthy.leader;
  const dead = healthy.follower;
  const deadBefore = await dead.status();

  // Both alive: refused, nothing asked of the survivor.
  const alive = await cli(['replace-node']);
  t.is(alive.code, 2, alive.stderr);
  t.regex(alive.stderr, /answers as .*: it is alive, and replace-node replaces a dead box/);

  const target: WriteTarget = { kind: 'etcd', host: pair.vip, client: await pair.etcdClient(), prefix: '/replace/' };
  const writer = startWriter(pair, target);
  t.teardown(() => writer.stop().then(() => undefined));
  await eventually('writes acknowledged before the box dies', 30_000, () => (writer.acks.length >= 20 ? true : undefined));

  // The follower's box dies. Just dead: the survivor refuses too (it may only be a blip).
  await dead.powerOff();
  const diedAt = Date.now();
  const early = await cli(['replace-node']);
  t.is(early.code, 2, early.stderr);
  t.regex(early.stderr, /the peer was heard [\d.]+ s ago, so it is alive/);

  await new Promise((r) => setTimeout(r, Math.max(0, diedAt + REPLACE_AFTER_SILENT_MS + 2000 - Date.now())));

  // Asked, then cancelled before any new box came: the survivor closes its door and keeps its pair.
  t.is((await cli(['replace-node', '--cancel'])).code, 2, 'nothing to cancel yet');
  const [ip, ...asked] = cliArgvOnLan(pair, ['replace-node', '--json', ...ssh.siteArgs]);
  const waiting = execa(ip!, asked, { reject: false, stdin: 'ignore', timeout: 120_000 });
  await eventually('the survivor admitting a replacement', 60_000, async () => ((await survivor.status()).replacing ? true : undefined));
  const cancelled = await cli(['replace-node', '--cancel', '--json']);
  t.is(cancelled.code, 0, cancelled.stderr);
  const gaveUp = await waiting;
  t.is(gaveUp.exitCode, 1, gaveUp.stderr);
  t.regex(gaveUp.stderr, /replace-node ended without a new box: the survivor stopped admitting/);
  t.like(await survivor.status(), { role: 'leader', peer: { nodeId: deadBefore.nodeId } });
  t.is((await survivor.status()).replacing, undefined);

  // A freshly flashed box takes its place on the LAN: same address and site file, empty disk, new host key.
  await dead.wipe();
  await dead.powerOn();
  await sshdOnNewBox(pair, dead, dir);
  await eventually('the new box blocked from pairing with the formed pair', 60_000, async () =>
    (await dead.log()).some((e) => e.event === 'pairing-blocked') ? true : undefined,
  );

  const askedAt = Date.now();
  const replaced = await cli(['replace-node', '--json', '--timeout', '600'], 660_000);
  t.is(replaced.code, 0, `${replaced.stdout} ${replaced.stderr}`);
  const events = replaced.stdout
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as Event);
  const joined = events.find((e) => e.event === 'joined');
  const done = events.find((e) => e.event === 'done');
  t.is(joined?.address, dead.address);
  t.truthy(joined?.nodeId);
  t.not(joined?.nodeId, deadBefore.nodeId, 'the new box has a node id of its own');
  t.true((joined?.forgottenHostKeys ?? 0) >= 1, "the dead box's pinned host key was forgotten");
  t.like(done, { leader: survivor.address, follower: dead.address });
  t.log(`asked → joined ${joined?.seconds?.toFixed(1)} s → synchronous follower ${done?.seconds?.toFixed(1)} s`);

  // The pair is whole again: the survivor leads, the new box follows in sync, each knows the other.
  const after = await waitHealthy(pair);
  t.is(after.leader.index, survivor.index);
  const [ls, fs] = [await survivor.status(), await dead.status()];
  t.is(fs.nodeId, joined?.nodeId);
  t.like(ls, { peer: { nodeId: joined?.nodeId, address: dead.address } });
  t.is(ls.replacing, undefined);
  const pinned = await readFile(ssh.knownHosts, 'utf8');
  t.is(pinned.split('\n').filter((l) => l.startsWith(`${dead.address} `)).length, 1, "the new box's host key is pinned, once");

  // Every acknowledged write is on the new box too: the writer's last acks came after it caught up.
  await eventually('writes acknowledged once the new box follows', 30_000, () => (writer.firstAckFrom(Date.now() - 1000) ? true : undefined));
  const report = await writer.stop();
  const check = await verifyAcked(
    pair,
    target,
    report.acks.map((a) => a.key),
  );
  t.deepEqual(check.missing, [], 'every acknowledged write survives the replacement');
  // Synchronous commit waits for the standby's flush; replay follows within moments.
  const onNewBox = await eventually('every acknowledged key replayed on the new box', 30_000, async () => {
    const n = Number(await dead.sql("SELECT count(DISTINCT name) FROM kine WHERE name LIKE '/replace/%'", 'kine'));
    return n >= report.acks.length ? n : undefined;
  });
  t.true(onNewBox >= report.acks.length, `the new box's standby holds ${onNewBox} of ${report.acks.length} acknowledged keys`);
  // What the replacement itself cost the writer (the box's death before it made writes wait until the survivor went async).
  const since = report.acks.filter((a) => a.startedAt >= askedAt);
  const longestGapMs = since.slice(1).reduce((m, a, i) => Math.max(m, a.ackedAt - since[i]!.ackedAt), 0);
  t.log(
    `${report.acks.length} writes acknowledged, ${report.failures.length} failed (${report.failures.filter((f) => f.startedAt >= askedAt).length} after replace-node was asked; longest gap between acknowledgements then ${longestGapMs} ms)`,
  );

  // The new box is a real follower: a planned switchover hands it the lead.
  const moved = await cli(['switchover', '--json']);
  t.is(moved.code, 0, `${moved.stdout} ${moved.stderr}`);
  const led = await waitHealthy(pair);
  t.is(led.leader.index, dead.index);
});

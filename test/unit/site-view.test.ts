import test from 'ava';
import { formatEvent, mergeEvents, planSwitchover, renderSiteTable, siteView, switchoverDone } from '../../builder/src/remote/core/site.ts';

const box = (role: string, o: { term?: number; sync?: string; vip?: boolean; name?: string } = {}) => ({
  siteId: 'store-0042',
  name: o.name ?? (role === 'leader' ? 'node-a' : 'node-b'),
  phase: 'provisioned',
  role,
  term: o.term ?? 4,
  liveness: { pg: role === 'leader' ? 'primary' : 'standby', holdsVip: o.vip ?? role === 'leader', receiverStreaming: role === 'follower' },
  replication:
    role === 'leader'
      ? {
          role: 'primary',
          standbys: o.sync === undefined ? [] : [{ applicationName: 'b', state: 'streaming', syncState: o.sync, replayLagBytes: 0, replayLagMs: null }],
        }
      : { role: 'standby' },
});

const healthy = () =>
  siteView([
    { host: '192.0.2.11', status: box('leader', { sync: 'sync' }) },
    { host: '192.0.2.12', status: box('follower') },
  ]);

test('a healthy pair: one leader holding the VIP with a synchronous follower, nothing to report', (t) => {
  const v = healthy();
  t.deepEqual(v.problems, []);
  t.is(v.leader, '192.0.2.11');
  t.is(v.vipHolder, '192.0.2.11');
  const table = renderSiteTable(v);
  t.regex(table, /^role +leader \(term 4\), holds VIP +follower \(term 4\)$/m);
  t.regex(table, /^replication +sync lag 0 B \/ 0.0 s +streaming$/m);
  t.regex(table, /healthy: a leader with a synchronous follower/);
});

test('what keeps a pair from being healthy is named box by box', (t) => {
  const v = siteView([
    { host: '192.0.2.11', status: box('leader', { sync: 'async' }) },
    { host: '192.0.2.12', error: 'connect ECONNREFUSED' },
  ]);
  t.deepEqual(v.problems, [
    '192.0.2.12: unreachable (connect ECONNREFUSED)',
    "node-a's standby streams asynchronously: a failover now could lose acknowledged writes",
  ]);
  t.regex(renderSiteTable(v), /192\.0\.2\.12 unreachable: connect ECONNREFUSED/);
  const split = siteView([
    { host: 'a', status: box('leader', { sync: 'sync', name: 'node-a' }) },
    { host: 'b', status: box('leader', { name: 'node-b' }) },
  ]);
  t.true(split.problems.includes('2 boxes say they lead: node-a, node-b'));
  t.true(split.problems.includes('the VIP is bound on node-a and node-b'));
  t.is(split.leader, null);
});

test('switchover: asked of the leader for the follower; refused when not in sync unless forced, and when a box is unreachable', (t) => {
  t.deepEqual(planSwitchover(healthy(), false), { ok: true, from: '192.0.2.11', to: '192.0.2.12', forced: false });
  const lagging = siteView([
    { host: 'a', status: box('leader', { sync: 'async' }) },
    { host: 'b', status: box('follower') },
  ]);
  const refused = planSwitchover(lagging, false);
  t.false(refused.ok);
  t.regex(refused.ok ? '' : refused.reason, /node-b is not a synchronous standby \(async\).*--force/);
  t.deepEqual(planSwitchover(lagging, true), { ok: true, from: 'a', to: 'b', forced: true });
  const gone = planSwitchover(
    siteView([
      { host: 'a', status: box('leader', { sync: 'sync' }) },
      { host: 'b', error: 'timeout' },
    ]),
    true,
  );
  t.like(gone, { ok: false, reason: 'cannot reach b: a switchover needs both boxes' });
  t.like(
    planSwitchover(
      siteView([
        { host: 'a', status: box('fenced') },
        { host: 'b', status: box('follower') },
      ]),
      true,
    ),
    { ok: false },
  );
});

test('a switchover is done when the follower leads at a higher term with the VIP and the old leader follows it', (t) => {
  const plan = { ok: true as const, from: 'a', to: 'b', forced: false };
  const after = (toRole: string, fromRole: string, term: number) =>
    siteView([
      { host: 'a', status: box(fromRole, { term, name: 'node-a' }) },
      { host: 'b', status: box(toRole, { term, sync: 'sync', name: 'node-b' }) },
    ]);
  t.false(switchoverDone(plan, 4, after('follower', 'leader', 4)));
  t.false(switchoverDone(plan, 4, after('leader', 'fenced', 5)), 'the old leader has not rejoined yet');
  t.false(switchoverDone(plan, 5, after('leader', 'follower', 5)), 'same term: not a new promotion');
  t.true(switchoverDone(plan, 4, after('leader', 'follower', 5)));
});

test("both boxes' events merge by time, each with its host; a line that is not JSON is kept as text", (t) => {
  const merged = mergeEvents([
    { host: 'a', lines: ['{"ts":"2026-12-01T10:00:02.000Z","level":"warn","event":"fenced","term":4}', 'garbage'] },
    { host: 'b', lines: ['{"ts":"2026-12-01T10:00:01.000Z","level":"info","event":"liveness","reason":"peer silent 900 ms"}'] },
  ]);
  t.deepEqual(
    merged.map((e) => `${e.host} ${e.event || e.level}`),
    ['a text', 'b liveness', 'a fenced'],
  );
  t.is(formatEvent(merged[1]!), '2026-12-01T10:00:01.000Z b info  liveness reason="peer silent 900 ms"');
});

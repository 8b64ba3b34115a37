import test from 'ava';
import parsePrometheusTextFormat from 'parse-prometheus-text-format';
import { type AgentStatusJson, lsnBytes, summarizeBox } from '../../firstboot/src/net/core/box-summary.ts';
import { renderMetrics } from '../../firstboot/src/net/core/metrics.ts';
import { renderStatusPage } from '../../firstboot/src/net/core/status-page.ts';

/** GET /status of a leader whose standby streams synchronously, as cluster/run.ts assembles it. */
const leader: AgentStatusJson = {
  nodeId: '0123456789abcdef0123456789abcdef',
  siteId: 'store-0042',
  name: 'node-a',
  address: '192.0.2.11',
  phase: 'provisioned',
  role: 'leader',
  term: 5,
  vip: '192.0.2.10/24',
  lastPromotion: { at: '2026-12-01T10:00:00.000Z', term: 5, cause: 'leader-lost', reason: 'peer silent 5012 ms, witness reachable' },
  liveness: {
    pg: 'primary',
    syncRep: true,
    standbyStreaming: true,
    holdsVip: true,
    witnessOk: true,
    peerSilentMs: 420,
    kineHealthy: true,
    promotions: { 'leader-lost': 1, handover: 0, reclaim: 0 },
  },
  replication: {
    role: 'primary',
    timeline: 3,
    currentLsn: '1/A0000060',
    standbys: [{ applicationName: 'node_b', state: 'streaming', syncState: 'sync', replayLagBytes: 8192, replayLagMs: 12 }],
  },
  kubernetes: { apiserver: 'ready' },
  disk: {
    postgresql: { path: '/var/lib/postgresql/15/geminik8s', totalBytes: 8 * 2 ** 30, freeBytes: 6 * 2 ** 30 },
    state: { path: '/var/lib/geminik8s', error: 'EIO' },
  },
  upgrade: { version: '0.3.0', slots: { booted: 'a', committed: 'a', trying: null } },
};

const follower: AgentStatusJson = {
  siteId: 'store-0042',
  name: 'node-b',
  address: '192.0.2.12',
  phase: 'provisioned',
  role: 'follower',
  term: 5,
  liveness: { pg: 'standby', receiverStreaming: true, holdsVip: false, witnessOk: true, peerSilentMs: 300, kineHealthy: true },
  replication: { role: 'standby', timeline: 3, receiveLsn: '1/A0000060', replayLsn: '1/A0000000', replayBacklogBytes: 96 },
};

/** Every line is a comment, blank, or `name{labels} value` as the exposition format 0.0.4 has it. */
const SAMPLE_RE = /^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\\n]|\\["\\n])*",?)*\})? (-?[0-9.e+-]+|NaN|[+-]Inf)$/;

function families(text: string) {
  for (const line of text.split('\n')) if (line !== '' && !line.startsWith('# ')) if (!SAMPLE_RE.test(line)) throw new Error(`not a sample line: ${line}`);
  return new Map(parsePrometheusTextFormat(text).map((f) => [f.name, f]));
}

test('a leader: role, sync replication, lag, VIP, last promotion and disk are read from its status', (t) => {
  const b = summarizeBox(leader);
  t.like(b, {
    name: 'node-a',
    role: 'leader',
    term: 5,
    postgres: 'primary',
    timeline: 3,
    walLsn: '1/A0000060',
    replication: 'sync',
    lagBytes: 8192,
    lagSeconds: 0.012,
    holdsVip: true,
    fenced: false,
    kubernetesApi: 'ready',
    version: '0.3.0',
  });
  t.deepEqual(
    b.disk,
    [{ name: 'postgresql', path: '/var/lib/postgresql/15/geminik8s', totalBytes: 8 * 2 ** 30, freeBytes: 6 * 2 ** 30 }],
    'an unreadable filesystem is left out',
  );
  t.is(b.lastPromotion?.cause, 'leader-lost');
  // Idle and caught up, PostgreSQL shows no replay lag time at all: that is no lag.
  const idle = {
    ...leader,
    replication: { ...leader.replication, standbys: [{ ...leader.replication!.standbys![0]!, replayLagMs: null, replayLagBytes: 0 }] },
  };
  t.is(summarizeBox(idle).lagSeconds, 0);
  const async = { ...leader, replication: { ...leader.replication, standbys: [{ ...leader.replication!.standbys![0]!, syncState: 'async' }] } };
  t.is(summarizeBox(async).replication, 'async');
  t.is(summarizeBox({ ...leader, replication: { role: 'primary', standbys: [] } }).replication, 'none');
  t.like(summarizeBox({ role: 'fenced', liveness: { pg: 'primary' } }), { fenced: true, name: 'unknown', kubernetesApi: null, lastPromotion: null });
});

test('metrics: Patroni and postgres_exporter names where the meaning is the same, parsed by a Prometheus text parser', (t) => {
  const m = families(renderMetrics(summarizeBox(leader)));
  const value = (name: string, labels: Record<string, string> = {}) =>
    m.get(name)?.metrics.find((s) => Object.entries(labels).every(([k, v]) => s.labels?.[k] === v))?.value;
  t.is(value('patroni_primary'), '1');
  t.is(value('patroni_replica'), '0');
  t.is(value('patroni_postgres_running'), '1');
  t.is(value('patroni_postgres_timeline'), '3');
  t.is(value('patroni_xlog_location'), String(lsnBytes('1/A0000060')));
  t.is(value('patroni_sync_standby'), '1');
  t.is(value('geminik8s_replication_lag_bytes'), '8192');
  t.is(value('geminik8s_replication_lag_seconds'), '0.012');
  t.is(value('geminik8s_role', { role: 'leader' }), '1');
  t.is(value('geminik8s_holds_vip'), '1');
  t.is(value('geminik8s_promotions_total', { cause: 'leader-lost' }), '1');
  t.is(m.get('geminik8s_promotions_total')?.type, 'COUNTER');
  t.is(value('geminik8s_last_promotion_timestamp_seconds', { cause: 'leader-lost' }), String(Date.parse('2026-12-01T10:00:00.000Z') / 1000));
  t.is(value('geminik8s_filesystem_avail_bytes', { filesystem: 'postgresql' }), String(6 * 2 ** 30));
  t.is(value('geminik8s_kubernetes_apiserver_ready'), '1');
  t.deepEqual(m.get('patroni_primary')?.metrics[0]?.labels, { scope: 'store-0042', name: 'node-a' });
  t.is(lsnBytes('1/A0000060'), 2 ** 32 + 0xa0000060);
  t.is(lsnBytes('not an lsn'), null);
});

test('metrics of a follower: replica, received and replayed WAL, its backlog; unknown values are left out, not zero', (t) => {
  const m = families(renderMetrics(summarizeBox(follower)));
  t.is(m.get('patroni_replica')?.metrics[0]?.value, '1');
  t.is(m.get('patroni_primary')?.metrics[0]?.value, '0');
  t.is(m.get('patroni_xlog_received_location')?.metrics[0]?.value, String(lsnBytes('1/A0000060')));
  t.is(m.get('patroni_xlog_replayed_location')?.metrics[0]?.value, String(lsnBytes('1/A0000000')));
  t.is(m.get('geminik8s_replication_lag_bytes')?.metrics[0]?.value, '96');
  for (const absent of ['patroni_xlog_location', 'patroni_sync_standby', 'geminik8s_replication_lag_seconds', 'geminik8s_kubernetes_apiserver_ready'])
    t.false(m.has(absent), absent);
});

test("metrics: label values are escaped, and Kine's own metrics follow ours", (t) => {
  const odd = summarizeBox({ ...leader, siteId: 'a "quoted" \\ site\nname' });
  const text = renderMetrics(odd, '# HELP kine_up x\n# TYPE kine_up gauge\nkine_up 1\n');
  const m = families(text);
  t.is(m.get('patroni_primary')?.metrics[0]?.labels?.scope, 'a "quoted" \\ site\nname');
  t.is(m.get('kine_up')?.metrics[0]?.value, '1');
});

test('status page: the role, replication and lag shown, every value escaped, no script', (t) => {
  const html = renderStatusPage(summarizeBox({ ...leader, name: 'node-<script>alert(1)</script>' }), new Date('2026-12-01T10:00:00Z'));
  t.regex(html, /<span class="role ok" id="role">LEADER<\/span>/);
  t.regex(html, /<span id="replication">sync<\/span>/);
  t.regex(html, /<th>replication<\/th><td>sync lag 8.0 KiB \/ 0.0 s<\/td>/);
  t.regex(html, /last promotion<\/th><td>2026-12-01T10:00:00.000Z term 5, leader-lost: peer silent 5012 ms/);
  t.false(html.includes('<script'), 'no script, and the name is escaped');
  t.true(html.includes('node-&lt;script&gt;'));
  t.regex(renderStatusPage(summarizeBox({ role: 'fenced', liveness: { pg: 'primary' } }), new Date()), /class="role bad"/);
});

/**
 * The box's Prometheus metrics in the text exposition format 0.0.4 (pure), from its summary.
 *
 * Where a meaning is the same, the names are the ones users already graph for Patroni
 * (`patroni_primary`, `patroni_replica`, `patroni_postgres_running`, `patroni_postgres_timeline`,
 * `patroni_xlog_location`, `patroni_xlog_received_location`, `patroni_xlog_replayed_location`,
 * `patroni_sync_standby`, with `scope` = the site and `name` = the box) and postgres_exporter
 * (`pg_up`); the rest are ours, `geminik8s_*`. No label carries a secret or a free-form reason:
 * promotion causes are a fixed set.
 */
import { type BoxSummary, lsnBytes } from './box-summary.ts';

interface Metric {
  name: string;
  help: string;
  type: 'gauge' | 'counter';
  samples: { labels?: Record<string, string>; value: number }[];
}

/** Label values escaped as the exposition format requires (backslash, double quote, newline). */
function escapeLabel(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
}

function formatValue(v: number): string {
  if (Number.isNaN(v)) return 'NaN';
  if (v === Number.POSITIVE_INFINITY) return '+Inf';
  if (v === Number.NEGATIVE_INFINITY) return '-Inf';
  return String(v);
}

export function renderMetrics(b: BoxSummary, extra = ''): string {
  const id = { scope: b.siteId, name: b.name };
  const bool = (v: boolean) => (v ? 1 : 0);
  const gauge = (name: string, help: string, value: number | null, labels: Record<string, string> = {}): Metric => ({
    name,
    help,
    type: 'gauge',
    samples: value === null ? [] : [{ labels: { ...id, ...labels }, value }],
  });
  const primary = b.postgres === 'primary';
  const standby = b.postgres === 'standby';
  const metrics: Metric[] = [
    gauge('geminik8s_info', 'Always 1; the labels name the box, its version and booted slot.', 1, {
      version: b.version ?? 'unknown',
      slot: b.slots.booted ?? 'unknown',
      address: b.address,
    }),
    gauge('patroni_primary', 'Value is 1 if this box is the leader (PostgreSQL primary taking writes), 0 otherwise.', bool(b.role === 'leader' && primary)),
    gauge('patroni_replica', 'Value is 1 if this box is the follower (PostgreSQL standby), 0 otherwise.', bool(b.role === 'follower' && standby)),
    gauge('patroni_postgres_running', 'Value is 1 if PostgreSQL is running, 0 otherwise.', bool(primary || standby)),
    gauge('pg_up', 'Whether PostgreSQL answered the agent.', bool(primary || standby)),
    gauge('patroni_postgres_timeline', 'PostgreSQL timeline of this box.', b.timeline),
    gauge('patroni_xlog_location', 'Current WAL location of the primary (bytes).', primary && b.walLsn ? lsnBytes(b.walLsn) : null),
    gauge('patroni_xlog_received_location', 'WAL location received by this standby (bytes).', standby && b.receivedLsn ? lsnBytes(b.receivedLsn) : null),
    gauge('patroni_xlog_replayed_location', 'WAL location replayed by this standby (bytes).', standby && b.walLsn ? lsnBytes(b.walLsn) : null),
    gauge(
      'patroni_sync_standby',
      "Value is 1 if this box's standby is synchronous (commits wait for it), as the leader sees it.",
      b.role === 'leader' ? bool(b.replication === 'sync') : null,
    ),
    gauge('geminik8s_role', 'Value is 1 for the role this box has now (leader, follower, fenced, ...).', 1, { role: b.role }),
    gauge('geminik8s_term', 'The pair term this box knows (raised by every promotion).', b.term),
    gauge('geminik8s_fenced', 'Value is 1 if this box is fenced: PostgreSQL read-only, no VIP.', bool(b.fenced)),
    gauge('geminik8s_holds_vip', 'Value is 1 if this box holds the virtual IP.', bool(b.holdsVip)),
    gauge(
      'geminik8s_replication_synchronous',
      'Value is 1 if commits wait for the standby (sync), 0 when async or not replicating.',
      bool(b.replication === 'sync'),
    ),
    gauge(
      'geminik8s_replication_streaming',
      'Value is 1 if WAL streams between the boxes (leader: its standby streams; follower: it receives).',
      bool(b.replication !== 'none'),
    ),
    gauge('geminik8s_replication_lag_bytes', "Leader: its standby's replay lag; follower: WAL received but not yet replayed (bytes).", b.lagBytes),
    gauge('geminik8s_replication_lag_seconds', "Leader: its standby's replay lag (seconds; 0 when caught up and idle).", b.lagSeconds),
    gauge('geminik8s_witness_reachable', 'Value is 1 if a failover witness (the gateway by default) answers.', b.witnessOk === null ? null : bool(b.witnessOk)),
    gauge('geminik8s_peer_silent_seconds', "Seconds since the peer's last heartbeat was heard.", b.peerSilentSeconds),
    gauge('geminik8s_kine_healthy', "Value is 1 if this box's Kine answers.", b.kineHealthy === null ? null : bool(b.kineHealthy)),
    gauge(
      'geminik8s_kubernetes_apiserver_ready',
      "Value is 1 if this box's Kubernetes API server is ready (absent on a box without Kubernetes).",
      b.kubernetesApi === null ? null : bool(b.kubernetesApi === 'ready'),
    ),
    {
      name: 'geminik8s_promotions_total',
      help: "Promotions of this box to leader since its agent started, by cause (leader-lost: failover; handover: switchover or the leader's broken PostgreSQL; reclaim).",
      type: 'counter',
      samples: Object.entries(b.promotions).map(([cause, value]) => ({ labels: { ...id, cause }, value })),
    },
    gauge(
      'geminik8s_last_promotion_timestamp_seconds',
      'When this box last became the leader by a promotion (Unix time).',
      b.lastPromotion ? Date.parse(b.lastPromotion.at) / 1000 : null,
      b.lastPromotion ? { cause: b.lastPromotion.cause } : {},
    ),
    {
      name: 'geminik8s_filesystem_size_bytes',
      help: 'Size of the filesystem holding PostgreSQL data (filesystem="postgresql") or the agent state (filesystem="state").',
      type: 'gauge',
      samples: b.disk.map((d) => ({ labels: { ...id, filesystem: d.name }, value: d.totalBytes })),
    },
    {
      name: 'geminik8s_filesystem_avail_bytes',
      help: 'Bytes available to unprivileged users on that filesystem.',
      type: 'gauge',
      samples: b.disk.map((d) => ({ labels: { ...id, filesystem: d.name }, value: d.freeBytes })),
    },
  ];
  const lines: string[] = [];
  for (const m of metrics) {
    if (m.samples.length === 0) continue;
    lines.push(`# HELP ${m.name} ${m.help.replace(/\\/g, '\\\\').replace(/\n/g, '\\n')}`, `# TYPE ${m.name} ${m.type}`);
    for (const s of m.samples) {
      const labels = Object.entries(s.labels ?? {})
        .map(([k, v]) => `${k}="${escapeLabel(v)}"`)
        .join(',');
      lines.push(`${m.name}${labels ? `{${labels}}` : ''} ${formatValue(s.value)}`);
    }
  }
  return `${lines.join('\n')}\n${extra}`;
}

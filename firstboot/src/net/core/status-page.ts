/**
 * The box's status page (pure): one small HTML document for a technician's browser on the site LAN,
 * the same rows as `geminik8s status` (box-summary.ts summaryCells). No script: the page reloads
 * itself every few seconds. Every value is escaped; nothing secret is in the summary.
 */
import { type BoxSummary, summaryCells } from './box-summary.ts';

const REFRESH_SECONDS = 5;

function escapeHtml(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;').replace(/'/g, '&#39;');
}

/** Green for a box doing its job, amber while it is on its way, red when it is not. */
function health(b: BoxSummary): 'ok' | 'wait' | 'bad' {
  if (b.fenced || b.postgres === 'down' || b.lastError) return 'bad';
  if ((b.role === 'leader' && b.postgres === 'primary') || (b.role === 'follower' && b.postgres === 'standby')) return b.replication === 'none' ? 'wait' : 'ok';
  return 'wait';
}

export function renderStatusPage(b: BoxSummary, renderedAt: Date): string {
  const rows = summaryCells(b)
    .map(([k, v]) => `<tr><th>${escapeHtml(k)}</th><td>${escapeHtml(v)}</td></tr>`)
    .join('\n');
  const h = health(b);
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="refresh" content="${REFRESH_SECONDS}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${escapeHtml(`${b.name}: ${b.role}`)} · geminik8s ${escapeHtml(b.siteId)}</title>
<style>
body { font: 16px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.6em; margin: 0 0 .2em; }
.role { display: inline-block; padding: .15em .6em; border-radius: .3em; color: #fff; }
.ok { background: #2e7d32; } .wait { background: #b26a00; } .bad { background: #c62828; }
table { border-collapse: collapse; margin-top: 1em; }
th { text-align: left; padding: .3em 1em .3em 0; color: #555; font-weight: normal; vertical-align: top; }
td { padding: .3em 0; }
footer { margin-top: 1.5em; color: #777; font-size: .85em; }
</style>
</head>
<body>
<h1>${escapeHtml(b.name)} <span class="role ${h}" id="role">${escapeHtml(b.role.toUpperCase())}</span></h1>
<div>site ${escapeHtml(b.siteId)} · term ${b.term} · replication <span id="replication">${escapeHtml(b.replication)}</span></div>
<table>
${rows}
</table>
<footer>read-only; refreshes every ${REFRESH_SECONDS} s · ${escapeHtml(renderedAt.toISOString())} · metrics: <a href="/metrics">/metrics</a></footer>
</body>
</html>
`;
}

/**
 * What the agent tells the console: stable `GEMINIK8S-AGENT:` markers (grepped by the image e2e test
 * on the serial console) and one human summary line. Pure formatting.
 */

export const MARKER = 'GEMINIK8S-AGENT:';

export type DataOutcome =
  | { kind: 'grown'; device: string; partitionBytes: number; fsBytesBefore: number; fsBytesAfter: number }
  | { kind: 'already-grown'; device: string; partitionBytes: number; fsBytes: number }
  | { kind: 'refused'; device: string; partitionBytes: number; reason: string }
  | { kind: 'failed'; device: string; partitionBytes: number; reason: string }
  | { kind: 'not-mounted'; dataDir: string };

export type SiteReport = { kind: 'absent' } | { kind: 'invalid'; errorCount: number } | { kind: 'valid'; siteId: string };

export const markers = {
  started: () => `${MARKER} started`,
  site: (s: SiteReport) => (s.kind === 'valid' ? `${MARKER} site ${s.siteId}` : s.kind === 'absent' ? `${MARKER} no-site` : `${MARKER} site-invalid`),
  /** `data` is the filesystem (after mount); `data-partition` the table entry (before mount). */
  data: (d: DataOutcome, what: 'data' | 'data-partition' = 'data'): string => {
    switch (d.kind) {
      case 'grown':
        return `${MARKER} ${what} grown ${d.fsBytesBefore} -> ${d.fsBytesAfter}`;
      case 'already-grown':
        return `${MARKER} ${what} already-grown ${what === 'data' ? d.fsBytes : d.partitionBytes}`;
      case 'refused':
        return `${MARKER} ${what} not-grown ${d.reason}`;
      case 'failed':
        return `${MARKER} ${what} grow-failed ${d.reason}`;
      case 'not-mounted':
        return `${MARKER} ${what} not-found ${d.dataDir}`;
    }
  },
  hostmetaWritten: () => `${MARKER} hostmeta written`,
  ready: () => `${MARKER} ready`,
};

/** 268435456 → "256MiB", 8589934592 → "8.0GiB". */
export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${i > 0 && v < 10 ? v.toFixed(1) : Math.round(v)}${units[i]}`;
}

function dataSummary(d: DataOutcome): string {
  switch (d.kind) {
    case 'grown':
      return `data=${d.device} grown ${formatBytes(d.fsBytesBefore)}->${formatBytes(d.fsBytesAfter)}`;
    case 'already-grown':
      return `data=${d.device} ${formatBytes(d.fsBytes)} (already grown)`;
    case 'refused':
      return `data=${d.device} not grown (${d.reason})`;
    case 'failed':
      return `data=${d.device} GROW FAILED (${d.reason})`;
    case 'not-mounted':
      return `data=${d.dataDir} NOT MOUNTED`;
  }
}

export function summaryLine(nodeId: string, site: SiteReport, data: DataOutcome, hostmetaPath: string): string {
  const siteText = site.kind === 'valid' ? site.siteId : site.kind === 'absent' ? 'none' : `INVALID(${site.errorCount} errors)`;
  return `geminik8s-agent: started node=${nodeId.slice(0, 8)} site=${siteText} ${dataSummary(data)} hostmeta=${hostmetaPath}`;
}

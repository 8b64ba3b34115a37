/** Prints benchmark figures as one JSON document and as a readable table. */
export function printReport(name: string, rows: { metric: string; value: number; unit: string; target?: string }[]): void {
  process.stdout.write(`${JSON.stringify({ benchmark: name, at: new Date().toISOString(), results: rows })}\n\n`);
  const width = Math.max(...rows.map((r) => r.metric.length));
  for (const r of rows) {
    const value = Number.isInteger(r.value) ? String(r.value) : r.value.toFixed(2);
    process.stdout.write(`${r.metric.padEnd(width)}  ${value.padStart(12)} ${r.unit.padEnd(4)} ${r.target ? `(target ${r.target})` : ''}\n`);
  }
}

/** An integer setting from the environment, checked against its range (a bad value is an error, not a default). */
export function envInt(name: string, fallback: number, min: number, max: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isFinite(n) || n < min || n > max) throw new Error(`${name}=${raw}: expected a number in [${min}, ${max}]`);
  return Math.round(n);
}

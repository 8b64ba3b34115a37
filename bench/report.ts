/** Prints benchmark figures as one JSON document and as a readable table. */
export function printReport(name: string, rows: { metric: string; value: number; unit: string; target?: string }[]): void {
  process.stdout.write(`${JSON.stringify({ benchmark: name, at: new Date().toISOString(), results: rows })}\n\n`);
  const width = Math.max(...rows.map((r) => r.metric.length));
  for (const r of rows) {
    const value = Number.isInteger(r.value) ? String(r.value) : r.value.toFixed(2);
    process.stdout.write(`${r.metric.padEnd(width)}  ${value.padStart(12)} ${r.unit.padEnd(4)} ${r.target ? `(target ${r.target})` : ''}\n`);
  }
}

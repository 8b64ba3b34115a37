/**
 * Measured figures a slow test reports for its benchmark (bench/upgrade.ts): one JSON line per
 * figure appended to $GEMINIK8S_FIGURES when it is set, nothing otherwise. Tests measure; they
 * never assert on a time.
 */
import { appendFile } from 'node:fs/promises';

export async function recordFigure(metric: string, value: number, unit: string, target?: string): Promise<void> {
  const file = process.env.GEMINIK8S_FIGURES;
  if (!file) return;
  await appendFile(file, `${JSON.stringify({ metric, value, unit, ...(target ? { target } : {}) })}\n`);
}

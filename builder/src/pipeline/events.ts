import type { PlannedStep, StepId } from '../plan/plan.ts';

/** What a build reports while it runs; `--json` prints these one per line. */
export type BuildEvent =
  | { event: 'plan'; artifactName: string; dryRun: boolean; steps: (Pick<PlannedStep, 'id' | 'title' | 'key' | 'dependsOn'> & { cached: boolean })[] }
  | { event: 'step-start'; id: StepId; title: string; key: string; index: number; total: number }
  | { event: 'step-log'; id: StepId; line: string }
  | { event: 'step-done'; id: StepId; cached: boolean; seconds: number }
  | { event: 'done'; artifactDir: string; seconds: number; files: string[] }
  | { event: 'waiting'; message: string }
  | { event: 'error'; message: string; step?: StepId };

export type Reporter = (e: BuildEvent) => void;

export function jsonReporter(write: (line: string) => void): Reporter {
  return (e) => write(`${JSON.stringify({ ts: new Date().toISOString(), ...e })}\n`);
}

/** One line per step with its duration; tool output is shown only in verbose mode. */
export function humanReporter(write: (text: string) => void, verbose: boolean): Reporter {
  const started = new Map<StepId, string>();
  return (e) => {
    switch (e.event) {
      case 'plan': {
        write(`${e.dryRun ? 'plan for' : 'building'} ${e.artifactName}: ${e.steps.length} steps\n`);
        if (e.dryRun) {
          for (const s of e.steps) {
            const after = s.dependsOn.length ? ` after ${s.dependsOn.join(', ')}` : '';
            write(`  ${s.id.padEnd(10)} ${s.key}  ${s.cached ? 'cached' : 'to build'}  ${s.title}${after}\n`);
          }
        }
        break;
      }
      case 'step-start': {
        const label = `[${e.index}/${e.total}] ${e.title}`;
        started.set(e.id, label);
        write(`${label} ...\n`);
        break;
      }
      case 'step-log':
        if (verbose) write(`    ${e.line}\n`);
        break;
      case 'step-done':
        write(`${started.get(e.id) ?? e.id}: ${e.cached ? 'cached' : 'built'} (${e.seconds.toFixed(1)} s)\n`);
        break;
      case 'done':
        write(`done in ${e.seconds.toFixed(1)} s: ${e.artifactDir}\n${e.files.map((f) => `  ${f}`).join('\n')}\n`);
        break;
      case 'waiting':
        write(`${e.message}\n`);
        break;
      case 'error':
        write(`error${e.step ? ` in step ${e.step}` : ''}: ${e.message}\n`);
        break;
    }
  };
}

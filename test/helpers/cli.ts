import { execa } from 'execa';
import { fileURLToPath } from 'node:url';

export const REPO = fileURLToPath(new URL('../..', import.meta.url));
const BIN = fileURLToPath(new URL('../../bin/geminik8s.js', import.meta.url));

export interface CliRun {
  exitCode: number;
  stdout: string;
  stderr: string;
}

/** Runs the real `geminik8s` CLI as a user would. */
export async function geminik8s(args: string[], opts: { env?: Record<string, string>; cwd?: string } = {}): Promise<CliRun> {
  const r = await execa('node', [BIN, ...args], { reject: false, cwd: opts.cwd ?? REPO, env: opts.env, all: false });
  return { exitCode: r.exitCode ?? 1, stdout: String(r.stdout), stderr: String(r.stderr) };
}

/** Parses `--json` output: one event per line. */
export function events(stdout: string): Record<string, unknown>[] {
  return stdout
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}

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

/** `geminik8s build --signing-key` of `profile` into `outDir`; the artifact folder it published. */
export async function buildSigned(profile: string, outDir: string, signingKey: string, hardware = 'generic-x86_64-uefi'): Promise<string> {
  const r = await geminik8s(['build', '--profile', profile, '--hardware', hardware, '--out', outDir, '--signing-key', signingKey, '--json']);
  if (r.exitCode !== 0) throw new Error(`build ${profile}: ${r.stderr.slice(-3000)}`);
  const done = events(r.stdout).find((e) => e.event === 'done');
  if (typeof done?.artifactDir !== 'string') throw new Error(`build ${profile}: no "done" event`);
  return done.artifactDir;
}

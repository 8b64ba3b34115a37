import { execa, type Options } from 'execa';

/** Raised when an external tool fails; carries the command line and its stderr tail for the user. */
export class CommandError extends Error {
  constructor(
    readonly command: string,
    readonly exitCode: number | undefined,
    readonly stderrTail: string,
  ) {
    super(`command failed (exit ${exitCode ?? 'signal'}): ${command}\n${stderrTail}`);
    this.name = 'CommandError';
  }
}

export interface RunOptions {
  cwd?: string;
  env?: Record<string, string | undefined>;
  input?: string | Buffer;
  /** Stream the tool's output to our stderr (long-running steps the user should see). */
  inherit?: boolean;
  timeoutMs?: number;
}

/** Runs a tool to completion and returns its stdout; throws CommandError with the stderr tail on failure. */
export async function run(file: string, args: readonly string[], opts: RunOptions = {}): Promise<string> {
  const options: Options = {
    cwd: opts.cwd,
    env: opts.env,
    input: opts.input,
    timeout: opts.timeoutMs,
    reject: false,
    stdout: opts.inherit ? ['pipe', process.stderr] : 'pipe',
    stderr: opts.inherit ? ['pipe', process.stderr] : 'pipe',
    encoding: 'utf8',
    stripFinalNewline: true,
  };
  const result = await execa(file, args, options);
  if (result.failed) {
    const stderr = String(result.stderr ?? '');
    const tail = stderr.split('\n').slice(-20).join('\n');
    throw new CommandError([file, ...args].join(' '), result.exitCode, tail || String(result.message));
  }
  return String(result.stdout ?? '');
}

/** True when `file` is on PATH. */
export async function hasCommand(file: string): Promise<boolean> {
  const result = await execa('sh', ['-c', `command -v "$1"`, 'sh', file], { reject: false });
  return result.exitCode === 0;
}

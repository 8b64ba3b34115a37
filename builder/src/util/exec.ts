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

/**
 * Runs a long tool, handing each line of its output (stdout and stderr, interleaved) to `onLine`;
 * throws CommandError with the last 40 lines when it fails.
 */
export async function runStreaming(
  file: string,
  args: readonly string[],
  opts: { cwd?: string; env?: Record<string, string>; onLine: (line: string) => void },
): Promise<void> {
  const tail: string[] = [];
  const child = execa(file, args, { cwd: opts.cwd, env: opts.env, all: true, reject: false, stdin: 'ignore' });
  for await (const line of child.iterable({ from: 'all' })) {
    const s = String(line);
    tail.push(s);
    if (tail.length > 40) tail.shift();
    opts.onLine(s);
  }
  const r = await child;
  if (r.failed) throw new CommandError([file, ...args].join(' '), r.exitCode, tail.join('\n') || String(r.message));
}

/** Runs a tool whose exit code is an answer, not a failure (cmp, diffoscope): its code and stdout. */
export async function runForAnswer(file: string, args: readonly string[]): Promise<{ code: number | undefined; stdout: string }> {
  const r = await execa(file, args, { reject: false, encoding: 'utf8' });
  return { code: r.exitCode, stdout: String(r.stdout ?? '') };
}

/** True when `file` is on PATH. */
export async function hasCommand(file: string): Promise<boolean> {
  const result = await execa('sh', ['-c', `command -v "$1"`, 'sh', file], { reject: false });
  return result.exitCode === 0;
}

/**
 * Runs system tools on the appliance. Arguments and environment never carry a secret (passwords
 * go through 0600 files such as pgpass or initdb's --pwfile), so a failure message may quote the
 * command line. A missing tool is reported with the Debian package that ships it, so a lean image
 * that forgot one fails with an actionable message.
 */
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import type { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';

/** Debian 12 package of every tool the agent runs. */
export const TOOL_PACKAGES: Readonly<Record<string, string>> = {
  arping: 'arping',
  blkid: 'util-linux',
  dumpe2fs: 'e2fsprogs',
  findmnt: 'util-linux',
  flock: 'util-linux',
  initdb: 'postgresql-15',
  ionice: 'util-linux',
  ip: 'iproute2',
  lsblk: 'util-linux',
  mcopy: 'mtools',
  'mkfs.vfat': 'dosfstools',
  mount: 'mount',
  nice: 'coreutils',
  nft: 'nftables',
  openssl: 'openssl',
  partx: 'util-linux',
  pg_basebackup: 'postgresql-client-15',
  pg_controldata: 'postgresql-15',
  pg_ctl: 'postgresql-15',
  pg_dump: 'postgresql-client-15',
  pg_rewind: 'postgresql-15',
  ping: 'iputils-ping',
  'systemd-notify': 'systemd',
  postgres: 'postgresql-15',
  psql: 'postgresql-client-15',
  resize2fs: 'e2fsprogs',
  runuser: 'util-linux',
  sync: 'coreutils',
  sfdisk: 'fdisk',
  systemctl: 'systemd',
  udevadm: 'udev',
  umount: 'mount',
  zstd: 'zstd',
};

export class ToolError extends Error {
  constructor(
    readonly tool: string,
    readonly code: number | null,
    message: string,
  ) {
    super(message);
    this.name = 'ToolError';
  }
}

export interface ToolOptions {
  input?: string;
  /** Exit codes that count as success (default: only 0). */
  okCodes?: readonly number[];
  env?: Record<string, string>;
  cwd?: string;
  timeoutMs?: number;
  /** Run as this OS user through runuser(1) (the agent is root; PostgreSQL refuses to run as root). */
  asUser?: string;
}

export interface ToolResult {
  code: number;
  stdout: string;
  stderr: string;
}

const baseName = (p: string): string => p.slice(p.lastIndexOf('/') + 1);

/**
 * Runs `tool args…` (PATH lookup or an absolute path), feeding `input` on stdin. Resolves when the
 * exit code is in `okCodes`, otherwise rejects with a ToolError quoting the last lines of stderr.
 */
export function runTool(tool: string, args: readonly string[], o: ToolOptions = {}): Promise<ToolResult> {
  const okCodes = o.okCodes ?? [0];
  const [cmd, argv] = o.asUser ? ['runuser', ['-u', o.asUser, '--', tool, ...args]] : [tool, [...args]];
  const name = baseName(tool);
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, argv, { cwd: o.cwd, stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, LC_ALL: 'C', ...o.env } });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let timedOut = false;
    const timer = o.timeoutMs
      ? setTimeout(() => {
          timedOut = true;
          child.kill('SIGKILL');
        }, o.timeoutMs)
      : undefined;
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    child.on('error', (e: NodeJS.ErrnoException) => {
      if (timer) clearTimeout(timer);
      const missing = baseName(cmd);
      const pkg = TOOL_PACKAGES[missing];
      reject(
        new ToolError(
          missing,
          null,
          e.code === 'ENOENT' ? `${cmd} not found on PATH${pkg ? ` (install the Debian package ${pkg} into the image)` : ''}` : `${cmd}: ${e.message}`,
        ),
      );
    });
    child.on('close', (code, signal) => {
      if (timer) clearTimeout(timer);
      const stdout = Buffer.concat(out).toString('utf8');
      const stderr = Buffer.concat(err).toString('utf8');
      if (code !== null && okCodes.includes(code)) return resolve({ code, stdout, stderr });
      const tail = stderr.trim().split('\n').slice(-6).join(' | ');
      let why = timedOut ? `timed out after ${o.timeoutMs} ms` : `${code ?? signal}`;
      if (code === 127 || /No such file or directory/.test(tail)) {
        const pkg = TOOL_PACKAGES[name];
        if (pkg) why += `; is the Debian package ${pkg} installed?`;
      }
      reject(new ToolError(name, code, `${[tool, ...args].join(' ')} failed (${why}): ${tail}`));
    });
    child.stdin.on('error', () => undefined); // the tool may exit before reading stdin; its exit status tells
    child.stdin.end(o.input ?? '');
  });
}

/**
 * Runs `tool args…` as a filter: `input` into its stdin, its stdout into `output` (e.g. a slot image
 * through `zstd -d`). Resolves when both streams are done and the tool exited 0; otherwise rejects
 * with a ToolError (stderr's last lines), and the tool is killed if a stream fails first.
 */
export async function runFilter(tool: string, args: readonly string[], input: Readable, output: Writable): Promise<void> {
  const name = baseName(tool);
  const child = spawn(tool, [...args], { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, LC_ALL: 'C' } });
  const err: Buffer[] = [];
  child.stderr.on('data', (b: Buffer) => err.push(b));
  const exited = new Promise<number | string>((resolve, reject) => {
    child.on('error', (e: NodeJS.ErrnoException) => {
      const pkg = TOOL_PACKAGES[name];
      reject(
        new ToolError(
          name,
          null,
          e.code === 'ENOENT' ? `${tool} not found on PATH${pkg ? ` (install the Debian package ${pkg} into the image)` : ''}` : `${tool}: ${e.message}`,
        ),
      );
    });
    child.on('close', (code, signal) => resolve(code ?? signal ?? 'unknown'));
  });
  try {
    await Promise.all([pipeline(input, child.stdin), pipeline(child.stdout, output)]);
  } catch (e) {
    child.kill('SIGKILL');
    await exited.catch(() => undefined);
    throw e;
  }
  const code = await exited;
  if (code !== 0)
    throw new ToolError(
      name,
      typeof code === 'number' ? code : null,
      `${[tool, ...args].join(' ')} failed (${code}): ${Buffer.concat(err).toString('utf8').trim().split('\n').slice(-6).join(' | ')}`,
    );
}

/** A long-running tool whose output lines are events (a continuous ping): see {@link watchLines}. */
export interface LineWatch {
  /** Settles when the tool has exited, or could not start. */
  exited: Promise<void>;
  stop(): void;
}

/**
 * Runs `tool args…` until stopped, handing each stdout line to `onLine` (stderr is discarded). For
 * probes that would otherwise start a process every second (under emulation each start costs tens
 * of milliseconds of CPU). Such a tool must print at least once per period: if the agent dies, its
 * next write fails on the closed pipe (SIGPIPE) and it ends too, rather than living on beside the
 * next agent.
 */
export function watchLines(tool: string, args: readonly string[], onLine: (line: string) => void): LineWatch {
  const child = spawn(tool, [...args], { stdio: ['ignore', 'pipe', 'ignore'], env: { ...process.env, LC_ALL: 'C' } });
  createInterface({ input: child.stdout }).on('line', onLine);
  const exited = new Promise<void>((resolve) => {
    child.once('error', () => resolve());
    child.once('close', () => resolve());
  });
  return { exited, stop: () => void child.kill('SIGTERM') };
}

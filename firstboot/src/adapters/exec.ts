/**
 * Runs system tools on the appliance. A missing tool is reported with the Debian package that ships it,
 * so a lean image that forgot one fails with an actionable message.
 */
import { spawn } from 'node:child_process';

/** Debian 12 package of every tool the agent runs. */
export const TOOL_PACKAGES: Readonly<Record<string, string>> = {
  arping: 'arping',
  blkid: 'util-linux',
  findmnt: 'util-linux',
  flock: 'util-linux',
  ip: 'iproute2',
  lsblk: 'util-linux',
  partx: 'util-linux',
  sfdisk: 'fdisk',
  dumpe2fs: 'e2fsprogs',
  resize2fs: 'e2fsprogs',
  udevadm: 'udev',
};

export class ToolError extends Error {
  constructor(
    readonly tool: string,
    message: string,
  ) {
    super(message);
    this.name = 'ToolError';
  }
}

export interface ToolResult {
  code: number;
  stdout: string;
}

/**
 * Runs `tool args…` (PATH lookup), feeding `input` on stdin. Resolves when the exit code is in
 * `okCodes` (default: only 0), otherwise rejects with the last lines of stderr.
 */
export function runTool(tool: string, args: readonly string[], opts: { input?: string; okCodes?: readonly number[] } = {}): Promise<ToolResult> {
  const okCodes = opts.okCodes ?? [0];
  return new Promise((resolve, reject) => {
    const child = spawn(tool, args, { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, LC_ALL: 'C' } });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    child.on('error', (e: NodeJS.ErrnoException) => {
      const pkg = TOOL_PACKAGES[tool];
      reject(
        new ToolError(tool, e.code === 'ENOENT' ? `${tool} not found on PATH${pkg ? ` (install the Debian package ${pkg} into the image)` : ''}` : `${tool}: ${e.message}`),
      );
    });
    child.on('close', (code, signal) => {
      if (code !== null && okCodes.includes(code)) return resolve({ code, stdout: Buffer.concat(out).toString('utf8') });
      const tail = Buffer.concat(err).toString('utf8').trim().split('\n').slice(-5).join(' | ');
      reject(new ToolError(tool, `${[tool, ...args].join(' ')} failed (${code ?? signal}): ${tail}`));
    });
    child.stdin.on('error', () => undefined); // the tool may exit before reading stdin; its exit status tells
    child.stdin.end(opts.input ?? '');
  });
}

/**
 * SSH to a box from the operator's machine (the ssh2 package): root with the operator's key (the
 * agent installs the keys the site file lists; boxes take no passwords), and the box's host key
 * pinned on first contact in an OpenSSH-format known_hosts file and checked on every later contact.
 */
import { mkdir, readFile, appendFile, rename, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { Readable, Writable } from 'node:stream';
import { Client, type ClientChannel } from 'ssh2';

export interface SshIdentity {
  /** The operator's private key file (OpenSSH format), e.g. ~/.ssh/id_ed25519. */
  keyFile: string;
  /** Pinned host keys, OpenSSH known_hosts format (`host type base64`). */
  knownHosts: string;
}

export class HostKeyMismatch extends Error {
  constructor(host: string, file: string) {
    super(
      `${host} presented a host key different from the one pinned in ${file}: refusing to connect (a replaced box, or someone in the middle; after replacing a box, remove its line from ${file})`,
    );
    this.name = 'HostKeyMismatch';
  }
}

/** The key type named inside an SSH public key blob (its first string). */
function blobType(blob: Buffer): string {
  const len = blob.readUInt32BE(0);
  return blob.subarray(4, 4 + len).toString('latin1');
}

async function pinnedKeys(file: string, host: string): Promise<string[]> {
  const text = await readFile(file, 'utf8').catch(() => '');
  return text
    .split('\n')
    .map((l) => l.trim().split(/\s+/))
    .filter((f) => f.length >= 3 && f[0]!.split(',').includes(host))
    .map((f) => f[2]!);
}

/**
 * Forgets the keys pinned for `host` (a box replaced by another at that address: replace-node), so
 * the next contact pins the new box's key. Other hosts' lines are kept as they are. Returns how
 * many lines went.
 */
export async function forgetHostKeys(file: string, host: string): Promise<number> {
  const text = await readFile(file, 'utf8').catch((e: NodeJS.ErrnoException) => {
    if (e.code === 'ENOENT') return undefined;
    throw e;
  });
  if (text === undefined) return 0;
  const lines = text.split('\n');
  const kept = lines.filter((l) => !l.trim().split(/\s+/)[0]?.split(',').includes(host));
  if (kept.length === lines.length) return 0;
  const partial = `${file}.partial`;
  await writeFile(partial, kept.join('\n'), { mode: 0o600 });
  await rename(partial, file);
  return lines.length - kept.length;
}

export interface ExecResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface SshSession {
  host: string;
  /**
   * `stdoutTo`: the command's stdout goes there as bytes (with backpressure) instead of into
   * `stdout`; `stdinFrom`: streamed into the command's stdin, which is closed at its end.
   */
  exec(command: string[], o?: { onStdout?: (chunk: string) => void; stdoutTo?: Writable; stdinFrom?: Readable; timeoutMs?: number }): Promise<ExecResult>;
  upload(localFile: string, remoteFile: string, onProgress?: (done: number, total: number) => void): Promise<void>;
  close(): void;
}

/** Quotes one argv word for the remote shell: ssh hands the remote side one command line, not an argv. */
export function shellQuote(word: string): string {
  return /^[A-Za-z0-9_./=:@%+-]+$/.test(word) ? word : `'${word.replace(/'/g, `'\\''`)}'`;
}

export async function connect(host: string, id: SshIdentity, o: { timeoutMs?: number } = {}): Promise<SshSession> {
  const privateKey = await readFile(id.keyFile).catch((e: NodeJS.ErrnoException) => {
    throw new Error(`${id.keyFile}: cannot read the operator's SSH key (${e.code ?? e.message}); pass --identity`);
  });
  const pinned = await pinnedKeys(id.knownHosts, host);
  let presented: Buffer | undefined;
  const client = new Client();
  await new Promise<void>((resolve, reject) => {
    client.once('ready', () => resolve());
    client.once('error', (e: Error) =>
      reject(presented && pinned.length > 0 && !pinned.includes(presented.toString('base64')) ? new HostKeyMismatch(host, id.knownHosts) : e),
    );
    client.connect({
      host,
      port: 22,
      username: 'root',
      privateKey,
      readyTimeout: o.timeoutMs ?? 20_000,
      hostVerifier: (key: Buffer) => {
        presented = key;
        return pinned.length === 0 || pinned.includes(key.toString('base64'));
      },
    });
  });
  if (pinned.length === 0 && presented) {
    await mkdir(path.dirname(path.resolve(id.knownHosts)), { recursive: true });
    await appendFile(id.knownHosts, `${host} ${blobType(presented)} ${presented.toString('base64')}\n`, { mode: 0o600 });
  }
  return {
    host,
    exec(command, eo = {}) {
      return new Promise((resolve, reject) => {
        client.exec(command.map(shellQuote).join(' '), (err: Error | undefined, stream: ClientChannel) => {
          if (err) return reject(err);
          let stdout = '';
          let stderr = '';
          const timer = eo.timeoutMs
            ? setTimeout(() => {
                stream.close();
                reject(new Error(`${host}: ${command.join(' ')} did not finish within ${eo.timeoutMs} ms`));
              }, eo.timeoutMs)
            : undefined;
          if (eo.stdinFrom) eo.stdinFrom.pipe(stream);
          else stream.end();
          if (eo.stdoutTo) stream.pipe(eo.stdoutTo, { end: false });
          else
            stream.on('data', (d: Buffer) => {
              stdout += d.toString();
              eo.onStdout?.(d.toString());
            });
          stream.stderr.on('data', (d: Buffer) => {
            stderr += d.toString();
          });
          stream.on('close', (code: number | null) => {
            if (timer) clearTimeout(timer);
            resolve({ code: code ?? 255, stdout, stderr });
          });
        });
      });
    },
    upload(localFile, remoteFile, onProgress) {
      return new Promise((resolve, reject) => {
        client.sftp((err, sftp) => {
          if (err) return reject(err);
          sftp.fastPut(localFile, remoteFile, { step: (done: number, _chunk: number, total: number) => onProgress?.(done, total) }, (e?: Error | null) => {
            sftp.end();
            if (e) reject(new Error(`${host}: upload of ${localFile} to ${remoteFile} failed: ${e.message}`));
            else resolve();
          });
        });
      });
    },
    close: () => client.end(),
  };
}

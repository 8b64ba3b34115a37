/**
 * The arbiter's two commands (README "Arbiter"):
 *  - `geminik8s-agent arbiter-cert --address <ip>` on a paired box prints the arbiter's TLS bundle
 *    (JSON: the pair CA, and a server certificate and key for that address from it). The key goes
 *    only to stdout (the operator's SSH session), never to a file or log on the box.
 *  - `geminik8s-agent arbiter --listen <ip>:<port> --dir <dir>` on the third device serves leases
 *    with `<dir>/arbiter-tls.json` (that bundle, 0600) and keeps `<dir>/arbiter-state.json`.
 */
import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { isIP } from 'node:net';
import type { Logger } from '../adapters/output.ts';
import { issueServerCert, loadSecrets } from '../provision/secrets.ts';
import { startArbiter, type ArbiterTls } from './arbiter-server.ts';

export const ARBITER_DEFAULT_PORT = 7950;
export const ARBITER_TLS_FILE = 'arbiter-tls.json';
export const ARBITER_STATE_FILE = 'arbiter-state.json';

export async function printArbiterCert(args: string[], secretsDir: string): Promise<number> {
  const usage = 'usage: geminik8s-agent arbiter-cert --address <IPv4 address the arbiter listens on>';
  const address = args.length === 2 && args[0] === '--address' ? args[1] : undefined;
  if (address === undefined || isIP(address) !== 4) {
    process.stderr.write(`geminik8s-agent: ${address === undefined ? 'missing --address' : `not an IPv4 address: ${JSON.stringify(address)}`}\n${usage}\n`);
    return 2;
  }
  const secrets = loadSecrets(secretsDir);
  if (!secrets) {
    process.stderr.write(`geminik8s-agent: no cluster secrets in ${secretsDir}: this box has not paired yet, so there is no pair CA to issue from\n`);
    return 3;
  }
  const issued = await issueServerCert(secrets.ca, 'geminik8s-arbiter', [`IP:${address}`]);
  process.stdout.write(`${JSON.stringify({ address, ca: secrets.ca.certPem, cert: issued.certPem, key: issued.keyPem })}\n`);
  return 0;
}

/** Reads the bundle, refusing one that others can read (it holds the arbiter's key). */
function readTls(file: string): ArbiterTls {
  const mode = statSync(file).mode & 0o777;
  if (mode & 0o077) throw new Error(`${file}: mode ${mode.toString(8)}, expected 600 (it holds the arbiter's private key): chmod 600 ${file}`);
  const v = JSON.parse(readFileSync(file, 'utf8')) as Partial<ArbiterTls>;
  for (const k of ['ca', 'cert', 'key'] as const) {
    if (typeof v[k] !== 'string' || !v[k]!.includes('-----BEGIN')) {
      throw new Error(`${file}: field "${k}" missing or not PEM; save the output of \`geminik8s-agent arbiter-cert --address <ip>\` from a paired box there`);
    }
  }
  return { ca: v.ca!, cert: v.cert!, key: v.key! };
}

export async function arbiterCommand(args: string[], log: Logger, stopped: Promise<unknown>): Promise<number> {
  const usage = `usage: geminik8s-agent arbiter --listen <ip>[:<port>] --dir <dir>   (port ${ARBITER_DEFAULT_PORT} by default; <dir> holds ${ARBITER_TLS_FILE} and ${ARBITER_STATE_FILE})`;
  const opts = new Map<string, string>();
  for (let k = 0; k < args.length; k += 2) opts.set(args[k] ?? '', args[k + 1] ?? '');
  const listen = opts.get('--listen') ?? '';
  const dir = opts.get('--dir') ?? '';
  const [host, portText] = listen.split(':');
  const port = portText === undefined ? ARBITER_DEFAULT_PORT : Number(portText);
  if (args.length !== 4 || !dir || !host || isIP(host) !== 4 || !Number.isInteger(port) || port < 1 || port > 65535) {
    process.stderr.write(`geminik8s-agent: arbiter: bad arguments ${JSON.stringify(args.join(' '))}\n${usage}\n`);
    return 2;
  }
  let server: Awaited<ReturnType<typeof startArbiter>>;
  try {
    server = await startArbiter({ host, port, tls: readTls(join(dir, ARBITER_TLS_FILE)), stateFile: join(dir, ARBITER_STATE_FILE), log });
  } catch (e) {
    process.stderr.write(`geminik8s-agent: arbiter: ${(e as Error).message}\n`);
    return 1;
  }
  await stopped;
  await server.close();
  return 0;
}

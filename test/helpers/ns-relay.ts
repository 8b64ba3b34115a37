/**
 * A unix-socket relay into a network namespace, so that a test process on the host can talk to an
 * address only that namespace reaches (the QEMU pair's VIP lives on a bridge inside the gateway
 * namespace: test/helpers/netns.ts). A small node process started in the namespace listens on a
 * socket file (the file system is shared; the network is not) and, for each connection accepted,
 * opens one TCP connection to host:port and pipes both ways. Nothing is terminated on the way:
 * TLS is end to end (KubeClient's socketPath option checks the certificate against the real
 * server name), and one connection in is one connection out, so a request after a failover never
 * rides on a socket to the old VIP holder.
 */
import type { ChildProcess } from 'node:child_process';
import type { Topology } from './netns.ts';

/** CommonJS for `node -e`; argv: socket path, host, port. Upstream failures go to stderr, one line each. */
const RELAY = `
const fs = require('node:fs');
const net = require('node:net');
const [socketPath, host, port] = process.argv.slice(1);
fs.rmSync(socketPath, { force: true });
const server = net.createServer((client) => {
  const upstream = net.connect({ host, port: Number(port) });
  const close = () => { client.destroy(); upstream.destroy(); };
  client.on('error', close);
  client.on('close', close);
  upstream.on('error', (e) => { process.stderr.write(new Date().toISOString() + ' ' + host + ':' + port + ': ' + e.message + '\\n'); close(); });
  upstream.on('close', close);
  client.pipe(upstream);
  upstream.pipe(client);
});
server.on('error', (e) => { process.stderr.write('relay: ' + e.message + '\\n'); process.exit(1); });
server.listen(socketPath, () => { fs.chmodSync(socketPath, 0o600); process.stdout.write('listening\\n'); });
process.on('SIGTERM', () => process.exit(0));
`;

export interface Relay {
  socketPath: string;
  /** What the relay wrote to stderr (upstream connection failures), the last few KiB. */
  log(): string;
  /** Ends the relay (the topology's destroy() would too). */
  stop(): void;
}

/** Starts the relay in `ns` and resolves once it listens on `socketPath` (a path in a directory of the test's own). */
export async function startRelay(topology: Topology, ns: string, target: { host: string; port: number }, socketPath: string): Promise<Relay> {
  const child: ChildProcess = topology.spawn(ns, [process.execPath, '-e', RELAY, socketPath, target.host, String(target.port)]);
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4000)));
  await new Promise<void>((resolve, reject) => {
    let stdout = '';
    const timer = setTimeout(
      () => reject(new Error(`the relay to ${target.host}:${target.port} in ${ns} did not listen on ${socketPath} within 30 s: ${stderr.trim()}`)),
      30_000,
    );
    child.stdout?.on('data', (d: Buffer) => {
      stdout += d.toString();
      if (stdout.includes('listening\n')) {
        clearTimeout(timer);
        resolve();
      }
    });
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`the relay to ${target.host}:${target.port} in ${ns} exited (${signal ?? code}) before listening: ${stderr.trim()}`));
    });
  });
  return {
    socketPath,
    log: () => stderr,
    stop: () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
    },
  };
}

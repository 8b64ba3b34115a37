/**
 * An etcd client of Kine from outside the node, the way a remote Kubernetes server is one: a client
 * certificate from the pair CA (issued by the real `geminik8s-agent etcd-client-cert` on a node) and
 * TLS to Kine on the node or the VIP. Shared by the pair tests, the fault matrix and the benchmarks:
 * etcdctl flags for one-off commands, and an HTTP/2 session for writers that count every acknowledged
 * put (firstboot/src/adapters/etcd-grpc.ts etcdPut).
 *
 * Static imports are node builtins only, so a writer child process that imports this starts fast.
 */
import { execFile } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import type http2 from 'node:http2';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { connectEtcd } from '../../firstboot/src/adapters/etcd-grpc.ts';

const AGENT_ENTRY = fileURLToPath(new URL('../../firstboot/src/main.ts', import.meta.url));

/** PEM files of one client certificate (0600) and the pair CA. */
export interface EtcdClientFiles {
  caFile: string;
  certFile: string;
  keyFile: string;
}

/**
 * Runs the agent's `etcd-client-cert` against a node's state directory (as root on the box would)
 * and writes the bundle it prints into `dir`.
 */
export async function issueEtcdClientCert(stateDir: string, dir: string, name = 'test-client'): Promise<EtcdClientFiles> {
  const stdout = await new Promise<string>((resolve, reject) => {
    execFile(
      process.execPath,
      ['--import', 'tsx', AGENT_ENTRY, 'etcd-client-cert', '--name', name],
      { env: { PATH: process.env.PATH ?? '/usr/bin:/bin', GEMINIK8S_STATE_DIR: stateDir }, timeout: 60_000 },
      (err, out, errOut) => (err ? reject(new Error(`etcd-client-cert on ${stateDir}: ${errOut.trim() || err.message}`)) : resolve(out)),
    );
  });
  const bundle = JSON.parse(stdout) as { ca: string; cert: string; key: string };
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const files = { caFile: path.join(dir, 'ca.crt'), certFile: path.join(dir, 'client.crt'), keyFile: path.join(dir, 'client.key') };
  await writeFile(files.caFile, bundle.ca, { mode: 0o600 });
  await writeFile(files.certFile, bundle.cert, { mode: 0o600 });
  await writeFile(files.keyFile, bundle.key, { mode: 0o600 });
  return files;
}

/** etcdctl flags for Kine at `host` (port 2379) with this client certificate. */
export function etcdctlFlags(host: string, c: EtcdClientFiles): string[] {
  return [`--endpoints=https://${host}:2379`, `--cacert=${c.caFile}`, `--cert=${c.certFile}`, `--key=${c.keyFile}`];
}

/** An HTTP/2 session to Kine at `host`:2379 over mTLS (the server certificate is checked against the pair CA). */
export function connectKine(host: string, c: EtcdClientFiles): http2.ClientHttp2Session {
  return connectEtcd({ endpoint: `https://${host}:2379`, tls: c });
}

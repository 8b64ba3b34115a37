/**
 * Real sshd on each node of a network-namespace pair, as the appliance runs it: root by key only
 * (an operator key made here), its own host key per node. What differs from a box: the agent
 * executable the operator CLI runs (/usr/lib/geminik8s/geminik8s-agent) is this repository's agent
 * under tsx with the node's folders, through sshd's ForceCommand; every other command runs as sent.
 */
import { constants } from 'node:fs';
import { access, chmod, mkdir, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { must, run } from './netns.ts';
import type { Pair, PairAgent } from './pair-agents.ts';
import { eventually } from './poll.ts';

const REPO = fileURLToPath(new URL('../..', import.meta.url));
const SSHD = '/usr/sbin/sshd';

export interface PairSsh {
  /** The operator's private key (its public key is the one each sshd accepts). */
  identity: string;
  /** Where the CLI pins host keys; starts empty. */
  knownHosts: string;
  /** The CLI's site options for this pair: its site file, both boxes, this identity and known_hosts. */
  siteArgs: string[];
}

function shim(a: PairAgent): string {
  const env = Object.entries(a.env).map(([k, v]) => `'${k}=${v}'`);
  return `#!/bin/bash
# sshd ForceCommand of test node ${a.index + 1}: the box's agent executable is the repository's agent.
eval "set -- $SSH_ORIGINAL_COMMAND"
if [ "\${1:-}" = /usr/lib/geminik8s/geminik8s-agent ]; then
  shift
  cd ${REPO} && exec env -i ${env.join(' ')} ${process.execPath} --import tsx firstboot/src/main.ts "$@"
fi
exec /bin/bash -c "$SSH_ORIGINAL_COMMAND"
`;
}

/** Starts sshd in every node namespace of `pair` (stopped with the namespaces) and waits until each answers. */
export async function serveSsh(pair: Pair, dir: string): Promise<PairSsh> {
  await access(SSHD, constants.X_OK).catch(() => {
    throw new Error(`${SSHD} is missing: install the Debian package openssh-server (make test does)`);
  });
  await mkdir(dir, { recursive: true });
  // sshd's privilege separation folder.
  await mkdir('/run/sshd', { recursive: true, mode: 0o755 });
  const identity = path.join(dir, 'operator');
  await must(['ssh-keygen', '-q', '-t', 'ed25519', '-N', '', '-C', 'geminik8s-test-operator', '-f', identity]);
  const authorizedKeys = path.join(dir, 'authorized_keys');
  await writeFile(authorizedKeys, await must(['cat', `${identity}.pub`]), { mode: 0o600 });
  for (const a of pair.agents) await startSshd(pair, a, dir, authorizedKeys);
  for (const a of pair.agents) await sshdAnswers(pair, a);
  const knownHosts = path.join(dir, 'known_hosts');
  const [a, b] = pair.agents as [PairAgent, PairAgent];
  const siteArgs = [
    '--site',
    path.join(a.dirs.oem, 'site.yaml'),
    '--host',
    a.address,
    '--host',
    b.address,
    '--identity',
    identity,
    '--known-hosts',
    knownHosts,
  ];
  return { identity, knownHosts, siteArgs };
}

/** sshd for one node, with a host key made now (a new box is a new host key). */
async function startSshd(pair: Pair, a: PairAgent, dir: string, authorizedKeys: string): Promise<void> {
  const nodeDir = path.join(dir, `n${a.index + 1}`);
  await mkdir(nodeDir, { recursive: true });
  const hostKey = path.join(nodeDir, 'ssh_host_ed25519_key');
  await rm(hostKey, { force: true });
  await rm(`${hostKey}.pub`, { force: true });
  await must(['ssh-keygen', '-q', '-t', 'ed25519', '-N', '', '-f', hostKey]);
  const forceCommand = path.join(nodeDir, 'agent-shim');
  await writeFile(forceCommand, shim(a));
  await chmod(forceCommand, 0o755);
  const config = path.join(nodeDir, 'sshd_config');
  await writeFile(
    config,
    [
      `ListenAddress ${a.address}`,
      'Port 22',
      `HostKey ${hostKey}`,
      `AuthorizedKeysFile ${authorizedKeys}`,
      'PermitRootLogin prohibit-password',
      'PasswordAuthentication no',
      'KbdInteractiveAuthentication no',
      'UsePAM no',
      // The test folder is under /tmp (world-writable parents).
      'StrictModes no',
      `PidFile ${path.join(nodeDir, 'sshd.pid')}`,
      `ForceCommand ${forceCommand}`,
      '',
    ].join('\n'),
  );
  pair.topology.spawn(a.ns, [SSHD, '-D', '-e', '-f', config], { stdio: 'ignore' });
}

async function sshdAnswers(pair: Pair, a: PairAgent): Promise<void> {
  await eventually(`sshd on node ${a.index + 1}`, 15_000, async () => {
    const r = await run(['ip', 'netns', 'exec', pair.topology.gw.ns, 'ssh-keyscan', '-T', '2', '-t', 'ed25519', a.address], { timeoutMs: 10_000 });
    if (!r.stdout.includes('ssh-ed25519')) throw new Error(`no host key yet: ${r.stderr.trim()}`);
    return true;
  });
}

/**
 * The node's box was replaced by a freshly flashed one (PairAgent.wipe): its sshd, killed with the
 * old box, starts again with a new host key and the same operator key.
 */
export async function sshdOnNewBox(pair: Pair, a: PairAgent, dir: string): Promise<void> {
  await startSshd(pair, a, dir, path.join(dir, 'authorized_keys'));
  await sshdAnswers(pair, a);
}

/** Runs the real `geminik8s` CLI in the gateway namespace (the operator's laptop on the site LAN). */
export function cliOnLan(pair: Pair, args: string[], timeoutMs = 180_000) {
  return run(cliArgvOnLan(pair, args), { timeoutMs });
}

/** The argv of the `geminik8s` CLI run on the LAN (the gateway namespace), for a caller that streams or stops it itself. */
export function cliArgvOnLan(pair: Pair, args: string[]): string[] {
  return ['ip', 'netns', 'exec', pair.topology.gw.ns, process.execPath, path.join(REPO, 'bin/geminik8s.js'), ...args];
}

/** GET http://host:port/path from the gateway namespace; the body, or throws with the status. */
export async function httpGetOnLan(pair: Pair, url: string): Promise<string> {
  const script = `fetch(${JSON.stringify(url)}, { signal: AbortSignal.timeout(10000) }).then(async (r) => { const t = await r.text(); if (!r.ok) { console.error(r.status + ' ' + t); process.exit(1); } process.stdout.write(t); }, (e) => { console.error(String(e)); process.exit(1); })`;
  const r = await run(['ip', 'netns', 'exec', pair.topology.gw.ns, process.execPath, '-e', script], { timeoutMs: 20_000 });
  if (r.code !== 0) throw new Error(`GET ${url}: ${r.stderr.trim()}`);
  return r.stdout;
}

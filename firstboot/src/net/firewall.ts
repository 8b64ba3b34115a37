/**
 * Puts the host firewall (net/core/firewall.ts) in place with `nft -f -`: one atomic transaction
 * that replaces our table, so applying the same input again changes nothing and there is never a
 * moment without rules. Per network namespace (tests run one agent per namespace).
 */
import { existsSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { runTool } from '../adapters/exec.ts';
import type { Logger } from '../adapters/output.ts';
import type { ClusterSettings } from '../cluster/settings.ts';
import { K3S_FLANNEL_VXLAN_PORT } from '../kubernetes/core/k3s.ts';
import { KUBELET_PORT } from '../kubernetes/core/worker.ts';
import { FIREWALL_TABLE, renderFirewall, type FirewallInput } from './core/firewall.ts';

const RETRY_MAX_MS = 30_000;
/**
 * By absolute path: a PATH lookup can find another program called nft first (npm's
 * node_modules/.bin holds one, @vercel/nft, on every machine that runs this repository's tests).
 */
const NFT = '/usr/sbin/nft';
/** Profiles that list openssh-server get it (and the ssh overlay); SSH is open only where sshd is. */
const SSHD = '/usr/sbin/sshd';

/**
 * This node's firewall: the ports its settings serve on, LAN services on its LAN interface, and
 * the peer-only services for `peerAddress` once it is paired. The Kubernetes API (ports.kubeApi)
 * is added when the image runs Kubernetes, the kubelet and the pod range when the box is a worker.
 */
export function nodeFirewall(settings: ClusterSettings, lanInterface: string, peerAddress?: string): FirewallInput {
  return {
    lanInterface,
    ...(peerAddress !== undefined ? { peerAddress } : {}),
    kineRemote: settings.kineRemoteClients,
    sshOpen: existsSync(SSHD),
    ports: {
      ssh: 22,
      statusPage: settings.statusPagePort,
      discovery: settings.discoveryPort,
      channel: settings.channelPort,
      postgres: settings.pgPort,
      kine: settings.kinePort,
      ...(settings.kubernetes ? { kubeApi: settings.kubeApiPort } : {}),
      // Both distributions run a kubelet on every box; K3s links the boxes' pods with flannel's VXLAN.
      ...(settings.kubernetes?.worker ? { kubelet: KUBELET_PORT } : {}),
      ...(settings.kubernetes?.worker && settings.kubernetes.distribution === 'k3s' ? { podOverlay: K3S_FLANNEL_VXLAN_PORT } : {}),
    },
    ...(settings.kubernetes?.worker ? { podRange: settings.kubernetes.clusterCidr } : {}),
  };
}

/** Applies the ruleset once; throws a ToolError (nft missing or refusing) or a FirewallInputError. */
export async function applyFirewall(input: FirewallInput, log: Logger): Promise<void> {
  await runTool(NFT, ['-f', '-'], { input: renderFirewall(input), timeoutMs: 15_000 });
  log.event('info', 'firewall-applied', {
    table: `inet ${FIREWALL_TABLE}`,
    lanInterface: input.lanInterface ?? '(any)',
    peer: input.peerAddress ?? null,
    kineRemote: input.kineRemote,
    sshOpen: input.sshOpen,
  });
}

/**
 * Applies the ruleset, retrying (1 s doubling to 30 s, one error event per failed try) until it is
 * in place; rejects only when `signal` aborts. The caller waits on it: see run.ts for why the agent
 * does not go on without its firewall.
 */
export async function ensureFirewall(input: FirewallInput, log: Logger, signal: AbortSignal): Promise<void> {
  for (let delay = 1000; ; delay = Math.min(delay * 2, RETRY_MAX_MS)) {
    try {
      return await applyFirewall(input, log);
    } catch (e) {
      log.event('error', 'firewall-apply-failed', { peer: input.peerAddress ?? null, error: (e as Error).message, retryInMs: delay });
    }
    await sleep(delay, undefined, { signal }).catch(() => {
      throw new Error('stopped while applying the host firewall');
    });
  }
}

/**
 * Puts the host firewall (net/core/firewall.ts) in place with `nft -f -`: one atomic transaction
 * that replaces our table, so applying the same input again changes nothing and there is never a
 * moment without rules. Per network namespace (tests run one agent per namespace).
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { runTool } from '../adapters/exec.ts';
import type { Logger } from '../adapters/output.ts';
import { FIREWALL_TABLE, renderFirewall, type FirewallInput } from './core/firewall.ts';

const RETRY_MAX_MS = 30_000;

/** Applies the ruleset once; throws a ToolError (nft missing or refusing) or a FirewallInputError. */
export async function applyFirewall(input: FirewallInput, log: Logger): Promise<void> {
  await runTool('nft', ['-f', '-'], { input: renderFirewall(input), timeoutMs: 15_000 });
  log.event('info', 'firewall-applied', {
    table: `inet ${FIREWALL_TABLE}`, lanInterface: input.lanInterface ?? '(any)', peer: input.peerAddress ?? null, kineRemote: input.kineRemote, sshOpen: input.sshOpen,
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

import { writeFileSync } from 'node:fs';
import { runTool } from '../adapters/exec.ts';
import type { Logger } from '../adapters/output.ts';
import { pickLanAddress, type InterfaceAddress } from '../core/subnet.ts';

async function ipv4Addresses(): Promise<InterfaceAddress[]> {
  const out = await runTool('ip', ['-j', '-4', 'addr', 'show', 'scope', 'global']);
  const links = JSON.parse(out.stdout) as { ifname: string; addr_info?: { family: string; local: string; prefixlen: number }[] }[];
  return links.flatMap((l) => (l.addr_info ?? []).filter((a) => a.family === 'inet').map((a) => ({ ifname: l.ifname, ip: a.local, prefix: a.prefixlen })));
}

/** Waits (DHCP may be slow, a cable may be plugged late) until the box has an address on the VIP's LAN. */
export async function waitForLanAddress(vipCidr: string, iface: string | undefined, log: Logger, signal: AbortSignal): Promise<InterfaceAddress> {
  let warned = false;
  for (;;) {
    const found = pickLanAddress(await ipv4Addresses(), vipCidr, iface);
    if (found) return found;
    if (!warned) {
      log.event('warn', 'lan-address-wait', { vip: vipCidr, interface: iface ?? '(any in the VIP subnet)' });
      warned = true;
    }
    if (signal.aborted) throw new Error('stopped while waiting for a LAN address');
    await new Promise((r) => setTimeout(r, 1000));
  }
}

/**
 * PostgreSQL listens on the VIP too; the VIP comes and goes with the primary role, so the kernel
 * must let a socket bind an address this box does not hold (yet). Per network namespace.
 */
export function allowNonLocalBind(): void {
  writeFileSync('/proc/sys/net/ipv4/ip_nonlocal_bind', '1\n');
}

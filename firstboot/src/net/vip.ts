/**
 * The virtual IP that follows the PostgreSQL primary: `ip addr` to hold it, gratuitous ARP so the
 * LAN's caches (switches, the gateway, the peer) move to this box at once instead of timing out.
 */
import { runTool } from '../adapters/exec.ts';
import { serialQueue } from '../adapters/serial.ts';

interface IpAddrInfo {
  ifname: string;
  addr_info?: { family: string; local: string; prefixlen: number }[];
}

function split(cidr: string): { ip: string; prefix: number } {
  const [ip, prefix] = cidr.split('/');
  return { ip: ip ?? '', prefix: Number(prefix) };
}

/** Interfaces that currently carry `ip` (normally none or one). */
export async function interfacesWith(cidr: string): Promise<string[]> {
  const { ip } = split(cidr);
  // A deadline: the liveness tick awaits this look, and a hung `ip` must not stall it past the watchdog.
  const out = await runTool('ip', ['-j', 'addr', 'show'], { timeoutMs: 10_000 });
  const links = JSON.parse(out.stdout) as IpAddrInfo[];
  return links.filter((l) => (l.addr_info ?? []).some((a) => a.family === 'inet' && a.local === ip)).map((l) => l.ifname);
}

/**
 * Binding and releasing run one after the other, never interleaved: a release asked while a bind
 * (look, add, announce) is under way waits for it, so a bind cut short by a step-down can never
 * add the VIP, or announce it, after the release took it away. Each call has a deadline.
 */
const oneAtATime = serialQueue();

/** Adds the VIP to `iface` (no-op when already there) and announces it with gratuitous ARP. */
export function bindVip(iface: string, cidr: string): Promise<{ added: boolean }> {
  return oneAtATime(() => bind(iface, cidr));
}

async function bind(iface: string, cidr: string): Promise<{ added: boolean }> {
  const { ip } = split(cidr);
  const holders = await interfacesWith(cidr);
  const added = !holders.includes(iface);
  if (added) {
    // `nodad`/`noprefixroute` do not apply to IPv4; a /32 would break the subnet route only if the
    // node had no address of its own in the subnet, so the site's prefix is kept as given.
    await runTool('ip', ['addr', 'add', cidr, 'dev', iface], { timeoutMs: 10_000 });
  }
  // Unsolicited ARP (Habets arping): -U broadcast announce, -S source = the VIP itself.
  await runTool('arping', ['-q', '-U', '-c', '3', '-W', '0.2', '-i', iface, '-S', ip, ip], { okCodes: [0, 1], timeoutMs: 10_000 });
  return { added };
}

/** Removes the VIP from every interface of this box (fencing, demotion). */
export function releaseVip(cidr: string): Promise<{ removed: string[] }> {
  return oneAtATime(async () => {
    const holders = await interfacesWith(cidr);
    for (const iface of holders) await runTool('ip', ['addr', 'del', cidr, 'dev', iface], { okCodes: [0, 2], timeoutMs: 10_000 });
    return { removed: holders };
  });
}

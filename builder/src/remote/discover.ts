/**
 * Finding a site's two boxes from the operator's machine on the site LAN, for DHCP sites whose
 * addresses nobody wrote down: the boxes broadcast an announce about every second, authenticated
 * with a key derived from the site's pair secret (firstboot/src/pairing/core/beacon.ts), which the
 * site file holds. Only announces that authenticate, name this site and come from the address they
 * claim count. A forged or replayed announce can at most point at an address: SSH then still
 * checks the box's pinned host key.
 */
import { createSocket } from 'node:dgram';
import { decodeBeacon } from '../../../firstboot/src/pairing/core/beacon.ts';
import { DEFAULT_BEACON_PORT, derivePairKeys } from '../../../firstboot/src/pairing/index.ts';

export interface HeardBox {
  address: string;
  nodeId: string;
  name?: string;
  role: string;
}

/** Listens until two boxes of the site were heard, or `timeoutMs`; the boxes heard, sorted by address. */
export async function discoverBoxes(o: { siteId: string; pairSecret: string; timeoutMs: number; port?: number }): Promise<HeardBox[]> {
  const macKey = derivePairKeys(o.pairSecret, o.siteId).beaconMac;
  const heard = new Map<string, HeardBox>();
  const socket = createSocket({ type: 'udp4', reuseAddr: true });
  try {
    await new Promise<void>((resolve, reject) => {
      socket.once('error', reject);
      // Every address of the operator's machine, for the ~10 s of listening only: the boxes'
      // announces are broadcasts to the site LAN. Anyone on that LAN may send here; a datagram
      // counts only if its HMAC (key from the site's pair secret) verifies, it names this site and
      // it comes from the address it claims; nothing is ever sent back.
      socket.bind(o.port ?? DEFAULT_BEACON_PORT, '0.0.0.0', () => resolve());
    });
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, o.timeoutMs);
      socket.on('message', (packet, from) => {
        const d = decodeBeacon(packet, macKey, o.siteId);
        if (!d.ok || d.msg.t !== 'announce' || d.msg.addr !== from.address) return;
        heard.set(d.msg.node, { address: d.msg.addr, nodeId: d.msg.node, role: d.msg.state.role, ...(d.msg.state.name ? { name: d.msg.state.name } : {}) });
        if (heard.size >= 2) {
          clearTimeout(timer);
          resolve();
        }
      });
    });
  } finally {
    socket.close();
  }
  return [...heard.values()].sort((a, b) => a.address.localeCompare(b.address));
}

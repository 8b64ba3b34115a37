/**
 * Background probes the liveness loop reads each tick (times on the monotonic clock, ms):
 *  - witnesses: ICMP echo to the site gateway / witness addresses (any answer counts), or to the
 *    default gateway when the site names none: "am I still on the LAN?";
 *  - the VIP: an ARP request for it, answered by whichever box holds it. ARP rather than ICMP so
 *    an IP-level filter between the boxes cannot hide a leader that is alive on the LAN.
 * Each probe runs about once a second and is bounded by its own timeout.
 */
import { runTool } from '../adapters/exec.ts';

export interface ProbeTimes {
  /** Last witness answer, undefined before the first. */
  witnessOkAt?: number;
  /** Start of the current run of witness answers without a gap of `witnessLostMs`. */
  witnessOkSince?: number;
  witnessesProbed: string[];
  /** Last ARP answer for the VIP. */
  vipAnswerAt?: number;
}

export interface Probes {
  times: ProbeTimes;
  stop(): void;
}

export interface ProbeOptions {
  ifname: string;
  vip: string;
  /** Site gateway and witness addresses; empty: the default gateway(s) of this box. */
  witnesses: readonly string[];
  intervalMs: number;
  witnessLostMs: number;
  /** The VIP is not probed while this box holds it (it would answer itself). */
  holdsVip(): boolean;
}

/** The gateways of this box's IPv4 default routes (from the site's static plan or DHCP). */
export async function defaultGateways(): Promise<string[]> {
  const out = await runTool('ip', ['-j', '-4', 'route', 'show', 'default']);
  return (JSON.parse(out.stdout) as { gateway?: string }[]).flatMap((r) => (r.gateway ? [r.gateway] : []));
}

async function pingAny(addresses: readonly string[], timeoutSec: number): Promise<boolean> {
  const answers = await Promise.all(
    addresses.map((a) =>
      runTool('ping', ['-n', '-q', '-c', '1', '-W', String(timeoutSec), a], { okCodes: [0, 1, 2], timeoutMs: (timeoutSec + 1) * 1000 }).then(
        (r) => r.code === 0,
        () => false,
      ),
    ),
  );
  return answers.some(Boolean);
}

async function arpAnswers(ifname: string, ip: string, timeoutSec: number): Promise<boolean> {
  const r = await runTool('arping', ['-q', '-c', '1', '-w', String(timeoutSec), '-i', ifname, ip], {
    okCodes: [0, 1],
    timeoutMs: (timeoutSec + 1) * 1000,
  }).catch(() => undefined);
  return r?.code === 0;
}

/** Runs `probe` about every `intervalMs` (never two at once) until stopped. */
function every(intervalMs: number, probe: () => Promise<void>, stopped: () => boolean): void {
  const loop = async (): Promise<void> => {
    while (!stopped()) {
      const t = performance.now();
      await probe().catch(() => undefined);
      await new Promise((r) => setTimeout(r, Math.max(50, intervalMs - (performance.now() - t))));
    }
  };
  void loop();
}

export function startProbes(o: ProbeOptions): Probes {
  const times: ProbeTimes = { witnessesProbed: [...o.witnesses] };
  let stopped = false;
  const timeoutSec = Math.max(1, Math.round(o.intervalMs / 1000));
  every(
    o.intervalMs,
    async () => {
      const targets = o.witnesses.length > 0 ? o.witnesses : await defaultGateways().catch(() => []);
      times.witnessesProbed = [...targets];
      if (targets.length === 0 || !(await pingAny(targets, timeoutSec))) return;
      const now = performance.now();
      if (times.witnessOkAt === undefined || now - times.witnessOkAt >= o.witnessLostMs) times.witnessOkSince = now;
      times.witnessOkAt = now;
    },
    () => stopped,
  );
  every(
    o.intervalMs,
    async () => {
      if (o.holdsVip()) return;
      if (await arpAnswers(o.ifname, o.vip, timeoutSec)) times.vipAnswerAt = performance.now();
    },
    () => stopped,
  );
  return {
    times,
    stop: () => {
      stopped = true;
    },
  };
}

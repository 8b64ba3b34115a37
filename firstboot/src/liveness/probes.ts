/**
 * Background probes the liveness loop reads each tick (times on the monotonic clock, ms):
 *  - witnesses: ICMP echo to the site gateway / witness addresses (any answer counts), or to the
 *    default gateway when the site names none: "am I still on the LAN?";
 *  - the VIP: an ARP request for it, answered by whichever box holds it. ARP rather than ICMP so
 *    an IP-level filter between the boxes cannot hide a leader that is alive on the LAN.
 * Each probe runs about once a second (the VIP probe interval), in a ping or arping that keeps running.
 */
import { type LineWatch, runTool, watchLines } from '../adapters/exec.ts';

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

/**
 * Keeps one long-running prober going: `answered` is called on each line `isAnswer` accepts; when
 * the tool exits (an interface gone, a route missing at start) it is started again `restartMs`
 * later. Silent, as the probes always were: a missing answer is what the liveness rules read.
 */
class Prober {
  #watch: LineWatch | undefined;
  #stopped = false;
  #timer: NodeJS.Timeout | undefined;

  constructor(
    readonly tool: string,
    readonly args: readonly string[],
    readonly isAnswer: (line: string) => boolean,
    readonly answered: () => void,
    readonly restartMs: number,
  ) {
    this.#start();
  }

  #start(): void {
    if (this.#stopped) return;
    const watch = watchLines(this.tool, this.args, (line) => {
      if (this.isAnswer(line)) this.answered();
    });
    this.#watch = watch;
    void watch.exited.then(() => {
      if (this.#watch !== watch || this.#stopped) return;
      this.#timer = setTimeout(() => this.#start(), this.restartMs);
    });
  }

  stop(): void {
    this.#stopped = true;
    if (this.#timer) clearTimeout(this.#timer);
    this.#watch?.stop();
  }
}

/**
 * The line ping prints for an echo reply and arping for an ARP reply. For a request left
 * unanswered ping (-O) prints "no answer yet for icmp_seq=N", arping "Timeout".
 */
const REPLY_LINE = /^\d+ bytes from /;

/** How often the default gateways are read again when the site names no witness. */
const GATEWAY_REFRESH_MS = 10_000;

/**
 * The probes as long-running ping and arping processes, one line per probe: neither starts a
 * process per probe (issue 9: under emulation the agent's probes and Kine checks, one process
 * each a second, took about a third of a box's CPU from Kubernetes). Both print a line every
 * period, answered or not, so a probe left behind by a dead agent ends at its next write.
 */
export function startProbes(o: ProbeOptions): Probes {
  const times: ProbeTimes = { witnessesProbed: [...o.witnesses] };
  let stopped = false;
  const seconds = String(o.intervalMs / 1000);
  const pingers = new Map<string, Prober>();
  const witnessAnswered = (): void => {
    const now = performance.now();
    if (times.witnessOkAt === undefined || now - times.witnessOkAt >= o.witnessLostMs) times.witnessOkSince = now;
    times.witnessOkAt = now;
  };
  const probeWitnesses = (targets: readonly string[]): void => {
    times.witnessesProbed = [...targets];
    for (const [address, pinger] of pingers)
      if (!targets.includes(address)) {
        pinger.stop();
        pingers.delete(address);
      }
    for (const address of targets)
      if (!pingers.has(address))
        pingers.set(address, new Prober('ping', ['-n', '-O', '-i', seconds, '-W', seconds, address], (l) => REPLY_LINE.test(l), witnessAnswered, o.intervalMs));
  };
  let gatewayTimer: NodeJS.Timeout | undefined;
  if (o.witnesses.length > 0) probeWitnesses(o.witnesses);
  else {
    const refresh = async (): Promise<void> => {
      const gateways = await defaultGateways().catch(() => []);
      if (stopped) return;
      probeWitnesses(gateways);
      gatewayTimer = setTimeout(() => void refresh(), gateways.length > 0 ? GATEWAY_REFRESH_MS : o.intervalMs);
    };
    void refresh();
  }

  // The VIP is not probed while this box holds it: it would not answer itself.
  let arper: Prober | undefined;
  const vipTimer = setInterval(() => {
    if (o.holdsVip()) {
      arper?.stop();
      arper = undefined;
    } else
      arper ??= new Prober(
        'arping',
        ['-i', o.ifname, '-W', seconds, o.vip],
        (l) => REPLY_LINE.test(l),
        () => {
          times.vipAnswerAt = performance.now();
        },
        o.intervalMs,
      );
  }, o.intervalMs);

  return {
    times,
    stop: () => {
      stopped = true;
      if (gatewayTimer) clearTimeout(gatewayTimer);
      clearInterval(vipTimer);
      arper?.stop();
      for (const p of pingers.values()) p.stop();
    },
  };
}

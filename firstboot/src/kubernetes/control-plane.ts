/**
 * Runs this appliance's Kubernetes server: upstream's control plane (core/control-plane.ts decides
 * what) or `k3s server` (core/k3s.ts). Issues its certificates from the pair CA once, writes what
 * the programs read, starts the programs once the local Kine answers, restarts one that exits,
 * and probes the API server. Both distributions serve the API with the pair CA and get the same
 * admin kubeconfig for the VIP.
 *
 * The programs keep running across agent restarts: they are children the unit does not kill
 * (KillMode=process), found again by their command line when the agent comes back and adopted
 * when it is exactly the one wanted (otherwise replaced). So an agent upgrade or crash does not
 * take the API away.
 *
 * Files:
 *   <stateDir>/kubernetes/            root 0700, on the data partition: survives reboots
 *     certificates.json               every issued certificate and key (0600), reused while unchanged
 *     admin.kubeconfig                the operator's, for the VIP (0600)
 *   <runDir>/kubernetes/pki/          0700, owned by the user the programs run as: what they read
 *   <runDir>/kubernetes/<program>.log
 */
import { createPublicKey } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { adoptDaemon, processesRunning, spawnDaemon, stopProcesses, type Daemon } from '../adapters/daemons.ts';
import { writeFileAtomic } from '../adapters/atomic-file.ts';
import type { Logger } from '../adapters/output.ts';
import { ensureDir, lookupUser, pathExists, type OsUser } from '../provision/files.ts';
import type { ClusterSecrets, PemPair } from '../provision/core/secrets.ts';
import { issueClientCert, issueServerCert } from '../provision/secrets.ts';
import { runTool } from '../adapters/exec.ts';
import { K3S_APPLIANCE, k3sServerArgv, renderK3sConfig } from './core/k3s.ts';
import { KubeApi } from './api.ts';
import { coreDnsObjects } from './core/addons.ts';
import {
  CLUSTER_DOMAIN,
  peerPodRoute,
  UPSTREAM_RESOLV_CONF,
  upstreamResolvConf,
  WORKER_APPLIANCE,
  workerCertificateRequests,
  workerFiles,
  type WorkerInput,
} from './core/worker.ts';
import {
  certificateRequests,
  kubeconfigPlan,
  KUBE_API_PORT,
  KUBERNETES_NICENESS,
  mayStart,
  programArgs,
  renderKubeconfig,
  type CertificateRequest,
  type ControlPlaneInput,
} from './core/control-plane.ts';

/** The unprivileged user the Kubernetes control plane runs as on the appliance (sysusers.d). */
export const KUBE_USER = 'geminik8s-kube';

export type ApiServerState = 'ready' | 'starting' | 'down';

export interface ControlPlaneOptions {
  distribution: 'upstream' | 'k3s';
  binary: string;
  input: Omit<ControlPlaneInput, 'pkiDir' | 'worker'> & {
    kinePort: number;
    k3sDisable: readonly string[];
    /** Upstream on the appliance: this box is also a worker (the units of overlays/kubernetes). */
    worker?: Pick<WorkerInput, 'peer' | 'podRangeFirst' | 'lanInterface' | 'pauseImage' | 'clusterDns' | 'upstreamDns'> & { coreDnsImage: string };
  };
  stateDir: string;
  runDir: string;
  log: Logger;
  /**
   * The box's DNS servers now (core/worker.ts upstreamNameservers), read again with each re-assert
   * of the peer route: a DHCP lease that names a server after the agent started is picked up.
   */
  upstreamDns?: () => Promise<string[]>;
}

type Issued = Record<string, PemPair & { request: string }>;

export class ControlPlane {
  readonly #o: ControlPlaneOptions;
  readonly #input: ControlPlaneInput;
  readonly #k3s: { kinePort: number; disable: readonly string[] };
  readonly #owner: OsUser | undefined;
  /** Program name → its arguments after the binary (upstream: three programs; K3s: one). */
  #programs: Record<string, string[]> = {};
  readonly #daemons = new Map<string, Daemon>();
  readonly #restartAt = new Map<string, number>();
  readonly #failures = new Map<string, number>();
  #admin: { ca: string; cert: string; key: string } | undefined;
  #started = false;
  #stopping = false;
  #probing = false;
  /** The probe's client of this box's API server: one kept connection (api.ts keepAlive). */
  #healthClient: KubeApi | undefined;
  #api: ApiServerState = 'down';
  /** This box's API server answered ready at least once since this agent started the control plane. */
  #apiReadyOnce = false;
  #startedAt = 0;
  /** The worker: units started and cluster DNS applied (once per agent run), the peer route re-asserted now and then. */
  #worker = { busy: false, unitsStarted: false, addonsApplied: false, nextAt: 0 };
  readonly #coreDnsImage: string;

  constructor(o: ControlPlaneOptions) {
    this.#o = o;
    const { kinePort, k3sDisable, worker, ...input } = o.input;
    this.#coreDnsImage = worker?.coreDnsImage ?? '';
    this.#input = {
      ...input,
      pkiDir: join(o.runDir, 'kubernetes', 'pki'),
      ...(worker && o.distribution === 'upstream'
        ? {
            worker: {
              peer: worker.peer,
              ...(worker.podRangeFirst !== undefined ? { podRangeFirst: worker.podRangeFirst } : {}),
              lanInterface: worker.lanInterface,
              pauseImage: worker.pauseImage,
              clusterDns: worker.clusterDns,
              upstreamDns: worker.upstreamDns,
              node: input.node,
              clusterCidr: input.clusterCidr,
              serviceCidr: input.serviceCidr,
              apiPort: input.apiPort ?? KUBE_API_PORT,
              nodeDir: WORKER_APPLIANCE.nodeDir,
              cniConfDir: WORKER_APPLIANCE.cniConfDir,
              cniStateDir: WORKER_APPLIANCE.cniStateDir,
            },
          }
        : {}),
    };
    this.#k3s = { kinePort, disable: k3sDisable };
    // K3s runs its kubelet and container runtime in-process: it needs root.
    this.#owner =
      o.distribution === 'k3s'
        ? undefined
        : (() => {
            try {
              return lookupUser(KUBE_USER);
            } catch {
              return undefined; // not on the appliance (tests): the programs run as the agent's user
            }
          })();
  }

  get adminKubeconfig(): string {
    return join(this.#o.stateDir, 'kubernetes', 'admin.kubeconfig');
  }

  /**
   * Issues (or reuses) the certificates and writes every file the programs and the operator read.
   * Idempotent; rewriting identical files does not disturb adopted programs.
   */
  async prepare(secrets: ClusterSecrets): Promise<void> {
    const stateDir = join(this.#o.stateDir, 'kubernetes');
    ensureDir(stateDir, 0o700);
    const store = join(stateDir, 'certificates.json');
    const issued: Issued = pathExists(store) ? (JSON.parse(readFileSync(store, 'utf8')) as Issued) : {};
    let changed = false;
    // K3s issues its own serving and component certificates from the CA it is given; the admin's is ours.
    const requests = certificateRequests(this.#input).filter((r) => this.#o.distribution === 'upstream' || r.file === 'admin' || r.file === 'etcd-client');
    for (const req of requests) {
      // A certificate is reissued only when what it asserts changed (an address, a SAN), and must chain to today's CA.
      const fingerprint = JSON.stringify({ req, ca: secrets.ca.certPem });
      if (issued[req.file]?.request === fingerprint) continue;
      issued[req.file] = { ...(await issue(secrets.ca, req)), request: fingerprint };
      changed = true;
    }
    if (changed) writeFileAtomic(store, `${JSON.stringify(issued, null, 2)}\n`, 0o600);
    ensureDir(join(this.#o.runDir, 'kubernetes'), 0o755);
    if (this.#o.distribution === 'upstream') this.#prepareUpstream(secrets, issued);
    else this.#prepareK3s(secrets, issued);
    // The operator's kubeconfig, for the VIP, stays with root.
    const admin = need(issued, 'admin');
    const port = this.#input.apiPort ?? KUBE_API_PORT;
    writeFileAtomic(
      this.adminKubeconfig,
      renderKubeconfig({
        server: `https://${this.#input.vip}:${port}`,
        caPem: secrets.ca.certPem,
        certPem: admin.certPem,
        keyPem: admin.keyPem,
        user: 'admin',
      }),
      0o600,
    );
    this.#admin = { ca: secrets.ca.certPem, cert: admin.certPem, key: admin.keyPem };
    // Certificates may have been issued anew: the probe's next connection presents these.
    this.#healthClient?.close();
    this.#healthClient = undefined;
  }

  #prepareUpstream(secrets: ClusterSecrets, issued: Issued): void {
    const pki = this.#input.pkiDir;
    const worker = this.#input.worker;
    ensureDir(pki, 0o700, this.#owner);
    // The control plane's files belong to its user; the worker's (the node's identity) to root only.
    const put = (dir: 'pki' | 'node', name: string, text: string): void => {
      if (dir === 'pki') writeFileAtomic(join(pki, name), text, 0o600, this.#owner);
      else if (worker) writeFileAtomic(join(worker.nodeDir, name), text, 0o600);
    };
    if (worker) {
      ensureDir(worker.nodeDir, 0o700);
      put('node', 'ca.crt', secrets.ca.certPem);
    }
    put('pki', 'ca.crt', secrets.ca.certPem);
    put('pki', 'service-account.key', secrets.serviceAccountKeyPem);
    put('pki', 'service-account.pub', createPublicKey(secrets.serviceAccountKeyPem).export({ type: 'spki', format: 'pem' }).toString());
    // Certificates a kubeconfig embeds are written only there (the admin's: by prepare, for root
    // only); the others as .crt/.key files, in the folder of the program that presents them.
    const kubeconfigs = kubeconfigPlan(this.#input);
    const workerCerts = new Set(worker ? workerCertificateRequests(worker).map((r) => r.file) : []);
    for (const r of certificateRequests(this.#input).filter((c) => c.file !== 'admin' && !kubeconfigs.some((k) => k.certificate === c.file))) {
      const c = need(issued, r.file);
      const dir = workerCerts.has(r.file) ? 'node' : 'pki';
      put(dir, `${r.file}.crt`, c.certPem);
      put(dir, `${r.file}.key`, c.keyPem);
    }
    for (const k of kubeconfigs.filter((c) => c.certificate !== 'admin')) {
      const cert = need(issued, k.certificate);
      put(k.dir, k.file, renderKubeconfig({ server: k.server, caPem: secrets.ca.certPem, certPem: cert.certPem, keyPem: cert.keyPem, user: k.certificate }));
    }
    if (worker) {
      for (const f of workerFiles(worker)) {
        if (f.path.startsWith('/')) {
          ensureDir(dirname(f.path), 0o755);
          writeFileAtomic(f.path, f.text, 0o644);
        } else put('node', f.path, f.text);
      }
    }
    this.#programs = programArgs(this.#input);
  }

  /**
   * K3s: its config file (with the token: /run, 0600), the pair CA as its server and client CA and
   * the shared service-account key, placed where K3s looks before its first start (it then signs
   * its own certificates with them), and the admin kubeconfig for the VIP as for upstream.
   */
  #prepareK3s(secrets: ClusterSecrets, issued: Issued): void {
    const i = this.#input;
    const configDir = join(this.#o.runDir, 'k3s');
    ensureDir(configDir, 0o700);
    const put = (name: string, text: string): string => {
      writeFileAtomic(join(configDir, name), text, 0o600);
      return join(configDir, name);
    };
    // Kine serving remote clients wants a client certificate on loopback too.
    const etcd = issued['etcd-client'];
    const kineTls =
      i.etcdTls && etcd
        ? { caFile: put('kine-ca.crt', secrets.ca.certPem), certFile: put('kine-client.crt', etcd.certPem), keyFile: put('kine-client.key', etcd.keyPem) }
        : undefined;
    const configFile = put(
      'config.yaml',
      renderK3sConfig({
        node: i.node,
        vip: i.vip,
        token: secrets.k3sToken,
        kine: { port: this.#k3s.kinePort, ...(kineTls ? { tls: kineTls } : {}) },
        clusterCidr: i.clusterCidr,
        serviceCidr: i.serviceCidr,
        disable: this.#k3s.disable,
        dataDir: K3S_APPLIANCE.dataDir,
        kubeconfigFile: K3S_APPLIANCE.kubeconfigFile,
      }),
    );
    ensureDir(K3S_APPLIANCE.nodePasswordDir, 0o700);
    const tls = join(K3S_APPLIANCE.dataDir, 'server', 'tls');
    ensureDir(tls, 0o700);
    for (const ca of ['server-ca', 'client-ca']) {
      writeFileAtomic(join(tls, `${ca}.crt`), secrets.ca.certPem, 0o600);
      writeFileAtomic(join(tls, `${ca}.key`), secrets.ca.keyPem, 0o600);
    }
    writeFileAtomic(join(tls, 'service.key'), secrets.serviceAccountKeyPem, 0o600);
    this.#programs = { 'k3s-server': k3sServerArgv(configFile) };
  }

  /**
   * Starts (or adopts) every program that is not running and may start (core `mayStart`: the API
   * server first); call while the local datastore answers. A program that exited is started again
   * after a backoff (1 s doubling to 30 s).
   */
  ensureRunning(): void {
    if (this.#stopping) return;
    if (!this.#started) {
      this.#started = true;
      this.#startedAt = performance.now();
      this.#adoptOrClear();
    }
    for (const [program, args] of Object.entries(this.#programs)) {
      if (this.#daemons.has(program) || performance.now() < (this.#restartAt.get(program) ?? 0) || !mayStart(program, this.#apiReadyOnce)) continue;
      const d = spawnDaemon({
        binary: this.#o.binary,
        args,
        logFile: join(this.#o.runDir, 'kubernetes', `${program}.log`),
        niceness: KUBERNETES_NICENESS,
        ...(this.#owner ? { runAs: { uid: this.#owner.uid, gid: this.#owner.gid } } : {}),
      });
      this.#o.log.event('info', 'kube-program-started', { program, pid: d.pid });
      this.#track(program, d);
    }
  }

  /** Programs left by an earlier agent: kept when they run exactly what is wanted, else stopped (in the background). */
  #adoptOrClear(): void {
    const unwanted: number[] = [];
    for (const p of processesRunning(this.#o.binary)) {
      const program = Object.keys(this.#programs).find((name) => JSON.stringify(p.argv.slice(1)) === JSON.stringify(this.#programs[name]));
      if (program === undefined || this.#daemons.has(program)) {
        unwanted.push(p.pid);
        continue;
      }
      this.#o.log.event('info', 'kube-program-adopted', { program, pid: p.pid });
      this.#track(program, adoptDaemon(p.pid));
    }
    if (unwanted.length > 0) {
      this.#o.log.event('info', 'kube-programs-replaced', { pids: unwanted });
      // Until they are gone their successors cannot bind: hold the starts back meanwhile.
      const held = Object.keys(this.#programs).filter((program) => !this.#daemons.has(program));
      for (const program of held) this.#restartAt.set(program, Number.POSITIVE_INFINITY);
      void stopProcesses(unwanted).then(() => {
        for (const program of held) this.#restartAt.delete(program);
      });
    }
  }

  #track(program: string, d: Daemon): void {
    this.#daemons.set(program, d);
    void d.exited.then((how) => {
      if (this.#daemons.get(program) !== d) return;
      this.#daemons.delete(program);
      if (this.#stopping) return;
      const failures = (this.#failures.get(program) ?? 0) + 1;
      this.#failures.set(program, failures);
      const delayMs = Math.min(1000 * 2 ** (failures - 1), 30_000);
      this.#restartAt.set(program, performance.now() + delayMs);
      this.#o.log.event('warn', 'kube-program-exited', {
        program,
        pid: d.pid,
        ...how,
        restartInMs: delayMs,
        log: join(this.#o.runDir, 'kubernetes', `${program}.log`),
      });
    });
  }

  /** One liveness tick: (re)starts what is missing while the local datastore answers, and probes the API. */
  observe(datastoreReady: boolean): void {
    if (datastoreReady) this.ensureRunning();
    this.checkHealth();
    this.#ensureWorker();
  }

  /**
   * Once this box's API server is ready: the route to the peer's pods (again every 30 s, since a
   * link that went down took it away) and the worker's units, which systemd then keeps running
   * (Restart=always) across agent restarts. In the background; a failure is retried in 5 s.
   */
  #ensureWorker(): void {
    const w = this.#input.worker;
    if (!w || this.#api !== 'ready' || this.#worker.busy || this.#stopping || performance.now() < this.#worker.nextAt) return;
    this.#worker.busy = true;
    void (async () => {
      const route = peerPodRoute(w);
      await runTool('ip', ['route', 'replace', route.destination, 'via', route.via, 'dev', route.dev], { timeoutMs: 10_000 });
      const upstreamDns = (await this.#o.upstreamDns?.()) ?? [];
      if (upstreamDns.length > 0 && upstreamDns.join(' ') !== w.upstreamDns.join(' ')) {
        // Pods started from now on (a restarted CoreDNS among them) get the new list.
        writeFileAtomic(join(w.nodeDir, UPSTREAM_RESOLV_CONF), upstreamResolvConf(upstreamDns), 0o600);
        this.#o.log.event('info', 'kube-upstream-dns', { nameservers: upstreamDns, before: w.upstreamDns });
        w.upstreamDns = upstreamDns;
      }
      if (!this.#worker.unitsStarted) {
        await runTool('systemctl', ['start', '--no-block', ...WORKER_APPLIANCE.units], { timeoutMs: 30_000 });
        this.#worker.unitsStarted = true;
        this.#o.log.event('info', 'kube-worker-started', { units: WORKER_APPLIANCE.units, podRoute: route });
      }
      if (!this.#worker.addonsApplied && this.#admin) {
        // Both boxes apply the same objects (server-side apply, one field manager): whichever comes
        // first creates them, the other changes nothing.
        const api = new KubeApi({ server: `https://127.0.0.1:${w.apiPort}`, credentials: this.#admin, timeoutMs: 15_000 });
        const objects = coreDnsObjects({ image: this.#coreDnsImage, serviceCidr: w.serviceCidr, clusterDomain: CLUSTER_DOMAIN, replicas: 2 });
        for (const obj of objects) await api.apply(obj, 'geminik8s');
        this.#worker.addonsApplied = true;
        this.#o.log.event('info', 'kube-addons-applied', { addon: 'coredns', objects: objects.length });
      }
      this.#worker.nextAt = performance.now() + 30_000;
    })()
      .catch((e: unknown) => {
        this.#worker.nextAt = performance.now() + 5_000;
        this.#o.log.event('warn', 'kube-worker-start-failed', { error: (e as Error).message, retryInMs: 5_000 });
      })
      .finally(() => (this.#worker.busy = false));
  }

  /**
   * Deletes a Node object, as the admin, through this box's API server: a replaced box's Node would
   * otherwise stay NotReady for good, with its pods never rescheduled. 404 counts as done.
   */
  async deleteNode(name: string): Promise<'deleted' | 'absent'> {
    if (!this.#admin || this.#api !== 'ready') throw new Error(`this box's API server is ${this.#api}`);
    const api = new KubeApi({ server: `https://127.0.0.1:${this.#input.apiPort ?? KUBE_API_PORT}`, credentials: this.#admin, timeoutMs: 15_000 });
    const r = await api.request('DELETE', `/api/v1/nodes/${encodeURIComponent(name)}`);
    if (r.status === 404) return 'absent';
    if (r.status >= 300) throw new Error(`DELETE node ${name}: HTTP ${r.status} ${r.text.slice(0, 200)}`);
    return 'deleted';
  }

  /** undefined until the control plane was first started (nothing to judge yet). */
  apiHealthy(): boolean | undefined {
    return this.#started ? this.#api === 'ready' : undefined;
  }

  /**
   * Refreshes the API server's state in the background: GET /readyz on this node, as the admin.
   * One probe at a time, each given 10 s: a starting API server on a slow box (measured: minutes
   * under emulation) accepts connections long before it answers, and probes abandoned after a
   * shorter wait piled up in its accept queue (800 seen), each costing it a TLS handshake later.
   */
  checkHealth(): void {
    const server = this.#o.distribution === 'k3s' ? 'k3s-server' : 'kube-apiserver';
    if (this.#probing || !this.#admin || !this.#daemons.has(server)) {
      if (!this.#daemons.has(server)) this.#api = 'down';
      return;
    }
    this.#probing = true;
    this.#healthClient ??= new KubeApi({
      server: `https://127.0.0.1:${this.#input.apiPort ?? KUBE_API_PORT}`,
      credentials: this.#admin,
      timeoutMs: 10_000,
      keepAlive: true,
    });
    void this.#healthClient
      .readyz()
      .then((ok) => {
        const was = this.#api;
        this.#api = ok ? 'ready' : 'starting';
        if (ok) {
          this.#failures.delete(server);
          // The held programs start on the next tick (observe → ensureRunning).
          this.#apiReadyOnce = true;
        }
        if (was !== this.#api)
          this.#o.log.event('info', 'kube-apiserver-state', { state: this.#api, sinceStartMs: Math.round(performance.now() - this.#startedAt) });
      })
      .finally(() => (this.#probing = false));
  }

  get apiServer(): ApiServerState {
    return this.#api;
  }

  /** For GET /status. */
  status(): { apiserver: ApiServerState; programs: Record<string, { pid: number; adopted: boolean } | null>; adminKubeconfig: string } {
    return {
      apiserver: this.#api,
      programs: Object.fromEntries(
        Object.keys(this.#programs).map((p) => {
          const d = this.#daemons.get(p);
          return [p, d ? { pid: d.pid, adopted: d.adopted } : null];
        }),
      ),
      adminKubeconfig: this.adminKubeconfig,
    };
  }

  /**
   * Stops every program so that the next tick starts them afresh: after a restore their caches and
   * watches describe a datastore that is gone.
   */
  async restartPrograms(): Promise<void> {
    const running = [...this.#daemons.entries()];
    // Out of the map first: their exits are then not counted as failures with a backoff.
    this.#daemons.clear();
    await Promise.all(running.map(([, d]) => d.stop()));
    for (const [program] of running) this.#restartAt.delete(program);
    this.#o.log.event('info', 'kube-programs-restarted', { programs: running.map(([p]) => p) });
  }

  /** Stops every program (replace-node, tests); an agent that merely exits leaves them running. */
  async stop(): Promise<void> {
    this.#stopping = true;
    await Promise.all([...this.#daemons.values()].map((d) => d.stop()));
    this.#daemons.clear();
    this.#healthClient?.close();
  }
}

function need(issued: Issued, file: string): PemPair {
  const c = issued[file];
  if (!c) throw new Error(`internal: no certificate ${file} was issued`);
  return c;
}

function issue(ca: PemPair, req: CertificateRequest): Promise<PemPair> {
  return req.usage === 'server' ? issueServerCert(ca, req.commonName, req.sans) : issueClientCert(ca, req.commonName, req.organization);
}

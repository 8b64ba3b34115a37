/**
 * The site file (`site.yaml` on the OEM partition): schema, parsing and validation.
 *
 * Pure: no I/O. The agent reads the file and calls {@link parseSiteConfig}; the builder imports the
 * same function for `geminik8s init` / `geminik8s stamp`, so both sides agree on one schema and one
 * error format. Errors never echo the pair secret.
 */
import { isMap, isScalar, isSeq, LineCounter, parseDocument, type Node, type Pair, type Scalar, type YAMLMap } from 'yaml';
import { reservedAddressKind, sameSubnet, splitCidr, subnetOf } from './subnet.ts';
import { SSH_KEY_ALLOWED, sshPublicKeyProblem } from './ssh-keys.ts';

export const SITE_API_VERSION = 'geminik8s/v1';
export const SITE_KIND = 'Site';
/** Bytes of entropy the pair secret must carry (HKDF input for beacon auth and the secret channel). */
export const PAIR_SECRET_MIN_BYTES = 32;

export interface SiteNode {
  name: string;
  /** IPv4 address with prefix length, e.g. 192.0.2.11/24. */
  address: string;
}

export interface SiteConfig {
  apiVersion: typeof SITE_API_VERSION;
  kind: typeof SITE_KIND;
  site: { id: string };
  pair: { secret: string; preferredLeader?: string };
  network: {
    /** IPv4 address with prefix length, e.g. 192.0.2.10/24. */
    vip: string;
    interface?: string;
    gateway?: string;
    witnesses?: string[];
    addressing: 'dhcp' | 'static';
    nodes?: SiteNode[];
  };
  /** Operators' OpenSSH public keys; the agent installs them for root on every boot. */
  ssh?: { authorizedKeys: string[] };
}

export interface SiteError {
  file: string;
  /** 1-based. */
  line: number;
  /** 1-based. */
  column: number;
  /** Dotted field path, e.g. `network.nodes[1].address`; empty for the document itself. */
  path: string;
  found: string;
  allowed: string;
  message: string;
}

export type SiteParseResult = { ok: true; config: SiteConfig } | { ok: false; errors: SiteError[] };

/** `site.yaml:12:5: network.vip: <message> (found "x"; allowed: y)` — one line per error, for logs and CLIs. */
export function formatSiteError(e: SiteError): string {
  const where = `${e.file}:${e.line}:${e.column}`;
  const field = e.path ? ` ${e.path}:` : '';
  return `${where}:${field} ${e.message} (found ${e.found}; allowed: ${e.allowed})`;
}

const LABEL_RE = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;
const LABEL_ALLOWED = '1-63 characters of a-z, 0-9 and "-", starting and ending with a letter or digit';
const IFNAME_RE = /^[A-Za-z0-9_.:-]{1,15}$/;
const HEX_RE = /^[0-9a-fA-F]+$/;
const BASE64_RE = /^[A-Za-z0-9+/_-]+={0,2}$/;
const CIDR_ALLOWED = 'an IPv4 address with prefix length, like 192.0.2.10/24';
const IPV4_ALLOWED = 'an IPv4 address, like 192.0.2.1';
const SECRET_ALLOWED = `base64 (at least 43 characters) or hex (at least 64 characters) encoding ${PAIR_SECRET_MIN_BYTES} random bytes`;
const NO_SECRET_MESSAGE = 'site file has no pair.secret: run `geminik8s init` to generate one';

export function isIPv4(text: string): boolean {
  const parts = text.split('.');
  return parts.length === 4 && parts.every((p) => /^(0|[1-9][0-9]{0,2})$/.test(p) && Number(p) <= 255);
}

export function isIPv4Cidr(text: string): boolean {
  const m = /^([^/]+)\/(0|[1-9][0-9]?)$/.exec(text);
  return m !== null && isIPv4(m[1] ?? '') && Number(m[2]) >= 1 && Number(m[2]) <= 32;
}

/** Bytes encoded by a hex or base64 pair secret, or undefined when it is neither. */
export function pairSecretBytes(secret: string): number | undefined {
  if (HEX_RE.test(secret)) return secret.length % 2 === 0 ? secret.length / 2 : undefined;
  if (!BASE64_RE.test(secret)) return undefined;
  const body = secret.replace(/=+$/, '');
  if (body.length % 4 === 1) return undefined;
  return Math.floor((body.length * 3) / 4);
}

class Checker {
  readonly errors: SiteError[] = [];
  constructor(
    private readonly file: string,
    private readonly lines: LineCounter,
  ) {}

  error(offset: number, path: string, message: string, found: string, allowed: string): void {
    const pos = this.lines.linePos(offset);
    this.errors.push({ file: this.file, line: pos.line, column: pos.col, path, found, allowed, message });
  }

  at(node: Node | null | undefined, fallback: number, path: string, message: string, found: string, allowed: string): void {
    this.error(node?.range?.[0] ?? fallback, path, message, found, allowed);
  }

  /** Checks a mapping's keys against `fields`; returns its present values by key, or undefined when `node` is no mapping. */
  fields(
    node: Node | null,
    fallback: number,
    path: string,
    fields: Record<string, { required: boolean; missing?: string }>,
  ): Map<string, { pair: Pair<Scalar, Node | null>; offset: number }> | undefined {
    if (!isMap(node)) {
      this.at(node, fallback, path, `${path || 'the document'} must be a mapping`, describe(node), `a mapping with fields ${Object.keys(fields).join(', ')}`);
      return undefined;
    }
    const out = new Map<string, { pair: Pair<Scalar, Node | null>; offset: number }>();
    for (const pair of (node as YAMLMap<unknown, unknown>).items) {
      const key = pair.key as Node | null;
      const keyOffset = key?.range?.[0] ?? node.range?.[0] ?? fallback;
      const name = isScalar(key) ? String(key.value) : undefined;
      const fieldPath = join(path, name ?? '?');
      if (name === undefined || !(name in fields)) {
        this.error(keyOffset, fieldPath, `unknown field ${JSON.stringify(name ?? describe(key))}`, describe(key), `one of ${Object.keys(fields).join(', ')}`);
        continue;
      }
      out.set(name, { pair: pair as Pair<Scalar, Node | null>, offset: keyOffset });
    }
    for (const [name, spec] of Object.entries(fields)) {
      if (spec.required && !out.has(name)) {
        const message = spec.missing ?? `missing required field ${name}`;
        this.at(node, fallback, join(path, name), message, 'nothing', 'a value');
      }
    }
    return out;
  }

  string(entry: { pair: Pair<Scalar, Node | null>; offset: number } | undefined, path: string): { value: string; node: Node } | undefined {
    if (!entry) return undefined;
    const node = entry.pair.value;
    if (!isScalar(node) || typeof node.value !== 'string') {
      this.at(node, entry.offset, path, `${path} must be a string`, describe(node), 'a string');
      return undefined;
    }
    return { value: node.value, node };
  }

  pattern(entry: { pair: Pair<Scalar, Node | null>; offset: number } | undefined, path: string, ok: (v: string) => boolean, allowed: string): string | undefined {
    const s = this.string(entry, path);
    if (!s) return undefined;
    if (!ok(s.value)) {
      this.at(s.node, entry?.offset ?? 0, path, `invalid ${path}`, JSON.stringify(s.value), allowed);
      return undefined;
    }
    return s.value;
  }
}

function join(path: string, name: string): string {
  return path ? `${path}.${name}` : name;
}

function describe(node: unknown): string {
  if (node === null || node === undefined) return 'nothing';
  if (isMap(node)) return 'a mapping';
  if (isSeq(node)) return 'a list';
  if (isScalar(node)) return node.value === null ? 'null' : JSON.stringify(node.value);
  return 'an unsupported YAML node';
}

/** An address field as written (`text` already valid on its own), with its YAML node for the error position. */
interface AddressField {
  path: string;
  node: Node | null | undefined;
  text: string;
}

interface AddressFields {
  gateway?: AddressField;
  witnesses: AddressField[];
  nodes: AddressField[];
}

/**
 * The checks a network engineer makes across fields: the VIP, the boxes' static addresses and the
 * gateway are distinct hosts of the VIP's subnet (the boxes with the VIP's prefix), and none is the
 * subnet's network or broadcast address; a witness may sit anywhere but is never the VIP or a box.
 * One error per field, at its value. Returns false when it reported anything.
 */
function checkAddressPlan(c: Checker, vipField: AddressField, f: AddressFields): boolean {
  const before = c.errors.length;
  const { ip: vip, prefix } = splitCidr(vipField.text);
  const subnet = subnetOf(vip, prefix);
  const report = (a: AddressField, message: string, allowed: string) => c.at(a.node, 0, a.path, message, JSON.stringify(a.text), allowed);
  /** Reports `ip` when it is its subnet's network or broadcast address; true when it did. */
  const reserved = (a: AddressField, ip: string, p: number): boolean => {
    const kind = reservedAddressKind(ip, p);
    if (kind) report(a, `${ip} is the ${kind} address of ${subnetOf(ip, p)}, which no host can hold`, `a host address inside ${subnetOf(ip, p)}`);
    return kind !== undefined;
  };
  const hostAllowed = `a free host address in the VIP's subnet ${subnet}, other than the VIP, the gateway and the other box`;

  reserved(vipField, vip, prefix);
  const gatewayIp = f.gateway?.text;
  if (f.gateway && gatewayIp !== undefined) {
    if (gatewayIp === vip) report(f.gateway, `the gateway ${gatewayIp} is also the VIP`, `the router's own address; the VIP must be a free address in ${subnet}`);
    else if (!sameSubnet(gatewayIp, vip, prefix)) report(f.gateway, `the gateway ${gatewayIp} is outside the VIP's subnet ${subnet}`, `the router's address in ${subnet}, or a VIP in the gateway's subnet`);
    else reserved(f.gateway, gatewayIp, prefix);
  }
  const seen = new Map<string, string>();
  for (const n of f.nodes) {
    const { ip, prefix: p } = splitCidr(n.text);
    if (p !== prefix) report(n, `prefix /${p} differs from the VIP's /${prefix}: the boxes and the VIP share one subnet`, `${ip}/${prefix}`);
    else if (!sameSubnet(ip, vip, prefix)) report(n, `${ip} is outside the VIP's subnet ${subnet}`, hostAllowed);
    else if (ip === vip) report(n, `${ip} is the VIP: each box needs its own address`, hostAllowed);
    else if (seen.has(ip)) report(n, `${ip} is also ${seen.get(ip)}: each box needs its own address`, hostAllowed);
    else if (ip === gatewayIp) report(n, `${ip} is the gateway's address`, hostAllowed);
    else reserved(n, ip, p);
    if (!seen.has(ip)) seen.set(ip, n.path);
  }
  for (const w of f.witnesses) {
    const witnessAllowed = 'a third device that answers ping (the gateway is a good one), not the VIP or a box';
    if (w.text === vip) report(w, `witness ${w.text} is the VIP`, witnessAllowed);
    else if (seen.has(w.text)) report(w, `witness ${w.text} is ${seen.get(w.text)}`, witnessAllowed);
    else if (sameSubnet(w.text, vip, prefix)) reserved(w, w.text, prefix);
  }
  return c.errors.length === before;
}

/**
 * Parses and validates a site file. `fileName` is only used in error messages.
 * Every problem found is reported (not just the first), sorted by position.
 */
export function parseSiteConfig(text: string, fileName: string): SiteParseResult {
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines, prettyErrors: false, uniqueKeys: true });
  const c = new Checker(fileName, lines);
  if (doc.errors.length > 0) {
    for (const e of doc.errors) {
      c.error(e.pos[0], '', `invalid YAML: ${e.message.split('\n')[0]}`, 'malformed YAML', 'a YAML mapping');
    }
    return { ok: false, errors: c.errors };
  }
  const root = doc.contents as Node | null;
  if (root === null || (isScalar(root) && root.value === null)) {
    c.error(0, '', 'site file is empty', 'an empty document', `a mapping with apiVersion: ${SITE_API_VERSION} and kind: ${SITE_KIND}`);
    return { ok: false, errors: c.errors };
  }

  const top = c.fields(root, 0, '', {
    apiVersion: { required: true },
    kind: { required: true },
    site: { required: true },
    pair: { required: true, missing: NO_SECRET_MESSAGE },
    network: { required: true },
    ssh: { required: false },
  });
  if (!top) return { ok: false, errors: c.errors };

  const apiVersion = c.pattern(top.get('apiVersion'), 'apiVersion', (v) => v === SITE_API_VERSION, JSON.stringify(SITE_API_VERSION));
  const kind = c.pattern(top.get('kind'), 'kind', (v) => v === SITE_KIND, JSON.stringify(SITE_KIND));

  let siteId: string | undefined;
  const siteEntry = top.get('site');
  if (siteEntry) {
    const site = c.fields(siteEntry.pair.value, siteEntry.offset, 'site', { id: { required: true } });
    if (site) siteId = c.pattern(site.get('id'), 'site.id', (v) => LABEL_RE.test(v), LABEL_ALLOWED);
  }

  let secret: string | undefined;
  let preferredLeader: string | undefined;
  let preferredLeaderNode: Node | undefined;
  const pairEntry = top.get('pair');
  if (pairEntry) {
    const pair = c.fields(pairEntry.pair.value, pairEntry.offset, 'pair', {
      secret: { required: true, missing: NO_SECRET_MESSAGE },
      preferredLeader: { required: false },
    });
    if (pair) {
      const secretEntry = pair.get('secret');
      const secretNode = secretEntry?.pair.value;
      const empty = secretEntry && (secretNode === null || (isScalar(secretNode) && (secretNode.value === null || secretNode.value === '')));
      const s = empty ? undefined : c.string(secretEntry, 'pair.secret');
      if (empty) c.at(secretNode, secretEntry.offset, 'pair.secret', NO_SECRET_MESSAGE, 'an empty value', SECRET_ALLOWED);
      if (s) {
        const bytes = pairSecretBytes(s.value);
        if (bytes === undefined || bytes < PAIR_SECRET_MIN_BYTES) {
          // Never echo the secret, not even a wrong one: it may be a real secret pasted badly.
          const found = bytes === undefined ? `a ${s.value.length}-character string that is neither hex nor base64` : `${s.value.length} characters encoding ${bytes} bytes`;
          c.at(s.node, 0, 'pair.secret', 'pair.secret is too weak or malformed: run `geminik8s init` to generate one', found, SECRET_ALLOWED);
        } else {
          secret = s.value;
        }
      }
      const pl = pair.get('preferredLeader');
      preferredLeader = c.pattern(pl, 'pair.preferredLeader', (v) => LABEL_RE.test(v), `a node name: ${LABEL_ALLOWED}`);
      preferredLeaderNode = pl?.pair.value ?? undefined;
    }
  }

  let network: SiteConfig['network'] | undefined;
  const netEntry = top.get('network');
  if (netEntry) {
    const net = c.fields(netEntry.pair.value, netEntry.offset, 'network', {
      vip: { required: true },
      interface: { required: false },
      gateway: { required: false },
      witnesses: { required: false },
      addressing: { required: true },
      nodes: { required: false },
    });
    if (net) {
      let valid = true;
      const vip = c.pattern(net.get('vip'), 'network.vip', isIPv4Cidr, CIDR_ALLOWED);
      const ifEntry = net.get('interface');
      const iface = c.pattern(ifEntry, 'network.interface', (v) => IFNAME_RE.test(v), 'a Linux interface name (1-15 characters of A-Z a-z 0-9 _ . : -)');
      const gwEntry = net.get('gateway');
      const gateway = c.pattern(gwEntry, 'network.gateway', isIPv4, IPV4_ALLOWED);
      const addressFields: AddressFields = { witnesses: [], nodes: [] };
      if (gateway !== undefined) addressFields.gateway = { path: 'network.gateway', node: gwEntry?.pair.value, text: gateway };
      if ((ifEntry && iface === undefined) || (gwEntry && gateway === undefined)) valid = false;
      const addrEntry = net.get('addressing');
      const addressing = c.pattern(addrEntry, 'network.addressing', (v) => v === 'dhcp' || v === 'static', '"dhcp" or "static"') as
        | 'dhcp'
        | 'static'
        | undefined;

      let witnesses: string[] | undefined;
      const wEntry = net.get('witnesses');
      if (wEntry) {
        const seq = wEntry.pair.value;
        if (!isSeq(seq)) {
          c.at(seq, wEntry.offset, 'network.witnesses', 'network.witnesses must be a list', describe(seq), `a list of ${IPV4_ALLOWED}`);
          valid = false;
        } else {
          witnesses = [];
          seq.items.forEach((item, i) => {
            const path = `network.witnesses[${i}]`;
            const node = item as Node | null;
            if (isScalar(node) && typeof node.value === 'string' && isIPv4(node.value)) {
              witnesses?.push(node.value);
              addressFields.witnesses.push({ path, node, text: node.value });
            } else {
              c.at(node, seq.range?.[0] ?? wEntry.offset, path, `invalid ${path}`, describe(node), IPV4_ALLOWED);
              valid = false;
            }
          });
        }
      }

      let nodes: SiteNode[] | undefined;
      const nEntry = net.get('nodes');
      if (nEntry) {
        const seq = nEntry.pair.value;
        if (addressing === 'dhcp') {
          c.at(nEntry.pair.key, nEntry.offset, 'network.nodes', 'network.nodes is only used with addressing: static', 'nodes with addressing: dhcp', 'no nodes field, or addressing: static');
          valid = false;
        }
        if (!isSeq(seq) || seq.items.length === 0) {
          c.at(seq, nEntry.offset, 'network.nodes', 'network.nodes must be a non-empty list', describe(seq), 'a list of {name, address}');
          valid = false;
        } else {
          nodes = [];
          const names = new Set<string>();
          seq.items.forEach((item, i) => {
            const path = `network.nodes[${i}]`;
            const node = item as Node | null;
            const f = c.fields(node, seq.range?.[0] ?? nEntry.offset, path, { name: { required: true }, address: { required: true } });
            if (!f) return void (valid = false);
            const name = c.pattern(f.get('name'), `${path}.name`, (v) => LABEL_RE.test(v), LABEL_ALLOWED);
            const address = c.pattern(f.get('address'), `${path}.address`, isIPv4Cidr, CIDR_ALLOWED);
            if (name === undefined || address === undefined) return void (valid = false);
            if (names.has(name)) {
              c.at(f.get('name')?.pair.value, 0, `${path}.name`, `duplicate node name ${JSON.stringify(name)}`, JSON.stringify(name), 'a name not used by another node');
              valid = false;
            }
            names.add(name);
            nodes?.push({ name, address });
            addressFields.nodes.push({ path: `${path}.address`, node: f.get('address')?.pair.value, text: address });
          });
        }
      } else if (addressing === 'static') {
        c.at(addrEntry?.pair.value, netEntry.offset, 'network.nodes', 'addressing: static needs network.nodes (one {name, address} per box)', 'no nodes', 'a list of {name, address}');
        valid = false;
      }

      if (preferredLeader !== undefined && nodes !== undefined && !nodes.some((n) => n.name === preferredLeader)) {
        c.at(preferredLeaderNode, 0, 'pair.preferredLeader', 'pair.preferredLeader names no node in network.nodes', JSON.stringify(preferredLeader), nodes.map((n) => JSON.stringify(n.name)).join(' or '));
      }

      if (vip !== undefined && !checkAddressPlan(c, { path: 'network.vip', node: net.get('vip')?.pair.value, text: vip }, addressFields)) valid = false;

      if (valid && vip !== undefined && addressing !== undefined) {
        network = { vip, addressing };
        if (iface !== undefined) network.interface = iface;
        if (gateway !== undefined) network.gateway = gateway;
        if (witnesses !== undefined) network.witnesses = witnesses;
        if (nodes !== undefined) network.nodes = nodes;
      }
    }
  }

  const sshEntry = top.get('ssh');
  const ssh = sshEntry ? parseSsh(c, sshEntry) : undefined;

  if (c.errors.length > 0 || !apiVersion || !kind || !siteId || !secret || !network) {
    c.errors.sort((a, b) => a.line - b.line || a.column - b.column);
    return { ok: false, errors: c.errors };
  }
  const pair: SiteConfig['pair'] = { secret };
  if (preferredLeader !== undefined) pair.preferredLeader = preferredLeader;
  return { ok: true, config: { apiVersion: SITE_API_VERSION, kind: SITE_KIND, site: { id: siteId }, pair, network, ...(ssh ? { ssh } : {}) } };
}

/** The optional `ssh` section. A key is never echoed in an error: it may be a private key pasted by mistake. */
function parseSsh(c: Checker, entry: { pair: Pair<Scalar, Node | null>; offset: number }): SiteConfig['ssh'] | undefined {
  const ssh = c.fields(entry.pair.value, entry.offset, 'ssh', { authorizedKeys: { required: true } });
  const keysEntry = ssh?.get('authorizedKeys');
  if (!keysEntry) return undefined;
  const seq = keysEntry.pair.value;
  if (!isSeq(seq)) {
    c.at(seq, keysEntry.offset, 'ssh.authorizedKeys', 'ssh.authorizedKeys must be a list', isScalar(seq) ? 'a single value' : describe(seq), `a list, each item ${SSH_KEY_ALLOWED}`);
    return undefined;
  }
  const authorizedKeys: string[] = [];
  seq.items.forEach((item, i) => {
    const path = `ssh.authorizedKeys[${i}]`;
    const node = item as Node | null;
    if (!isScalar(node) || typeof node.value !== 'string') {
      c.at(node, seq.range?.[0] ?? keysEntry.offset, path, `${path} must be a string`, isScalar(node) ? `a ${typeof node.value}` : describe(node), SSH_KEY_ALLOWED);
      return;
    }
    const problem = sshPublicKeyProblem(node.value);
    if (problem) c.at(node, keysEntry.offset, path, `invalid ${path}: ${problem.message}`, problem.found, SSH_KEY_ALLOWED);
    else authorizedKeys.push(node.value.trim());
  });
  return authorizedKeys.length === seq.items.length ? { authorizedKeys } : undefined;
}

/**
 * The site file (`site.yaml` on the OEM partition): its schema, from which its type comes, and the
 * cross-field checks a schema cannot state (the address plan, the secret's strength, the operator
 * keys' shape).
 *
 * Pure: no I/O. The agent reads the file and calls {@link parseSiteConfig}; the builder imports the
 * same function for `geminik8s init` / `geminik8s stamp`, so both sides agree on one schema and one
 * error format (core/config-file.ts). Errors never echo the pair secret or a key.
 */
import { MAX_FAILOVER_TIME_SCALE } from '../liveness/core/types.ts';
import type { FromSchema } from 'json-schema-to-ts';
import { fieldName, parseYamlWithSchema, type CrossCheck, type FieldPath, type Parsed } from './config-file.ts';
import { isIPv4Cidr, reservedAddressKind, sameSubnet, splitCidr, subnetOf } from './subnet.ts';
import { SSH_KEY_ALLOWED, sshPublicKeyProblem } from './ssh-keys.ts';

export const SITE_API_VERSION = 'geminik8s/v1';
export const SITE_KIND = 'Site';
/** Bytes of entropy the pair secret must carry (HKDF input for beacon auth and the secret channel). */
export const PAIR_SECRET_MIN_BYTES = 32;

const LABEL_PATTERN = '^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$';
const LABEL_ALLOWED = '1-63 characters of a-z, 0-9 and "-", starting and ending with a letter or digit';
const HEX_RE = /^[0-9a-fA-F]+$/;
const BASE64_RE = /^[A-Za-z0-9+/_-]+={0,2}$/;
const CIDR_ALLOWED = 'an IPv4 address with prefix length, like 192.0.2.10/24';
const IPV4_ALLOWED = 'an IPv4 address, like 192.0.2.1';
const SECRET_ALLOWED = `base64 (at least 43 characters) or hex (at least 64 characters) encoding ${PAIR_SECRET_MIN_BYTES} random bytes`;
const INIT_HINT = 'run `geminik8s init` to generate one';

const label = { type: 'string', pattern: LABEL_PATTERN, description: LABEL_ALLOWED } as const;
const hostCidr = { type: 'string', format: 'ipv4-cidr', description: CIDR_ALLOWED } as const;
const ipv4 = { type: 'string', format: 'ipv4', description: IPV4_ALLOWED } as const;

export const siteSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['apiVersion', 'kind', 'site', 'pair', 'network'],
  properties: {
    apiVersion: { const: SITE_API_VERSION },
    kind: { const: SITE_KIND },
    site: { type: 'object', additionalProperties: false, required: ['id'], properties: { id: label } },
    pair: {
      type: 'object',
      additionalProperties: false,
      required: ['secret'],
      'x-hint': `it holds the pair secret: ${INIT_HINT}`,
      properties: {
        secret: { type: 'string', 'x-secret': true, 'x-hint': INIT_HINT, description: SECRET_ALLOWED },
        preferredLeader: { ...label, description: `a node name: ${LABEL_ALLOWED}` },
      },
    },
    network: {
      type: 'object',
      additionalProperties: false,
      required: ['vip', 'addressing'],
      properties: {
        vip: hostCidr,
        interface: { type: 'string', pattern: '^[A-Za-z0-9_.:-]{1,15}$', description: 'a Linux interface name (1-15 characters of A-Z a-z 0-9 _ . : -)' },
        gateway: ipv4,
        witnesses: { type: 'array', items: ipv4, description: `a list of ${IPV4_ALLOWED}` },
        addressing: { enum: ['dhcp', 'static'] },
        nodes: {
          type: 'array',
          minItems: 1,
          description: 'a list of {name, address}, one per box (addressing: static)',
          items: { type: 'object', additionalProperties: false, required: ['name', 'address'], properties: { name: label, address: hostCidr } },
        },
      },
    },
    failover: {
      type: 'object',
      additionalProperties: false,
      description: 'how quickly a silent box is taken for dead (README "Failover pace")',
      properties: {
        timeScale: {
          type: 'number',
          minimum: 1,
          maximum: MAX_FAILOVER_TIME_SCALE,
          description: `a number from 1 (the default: a cut-off leader fences within 2 s, its peer takes over after 5 s) to ${MAX_FAILOVER_TIME_SCALE}, which multiplies every failover threshold`,
        },
      },
    },
    arbiter: {
      type: 'object',
      additionalProperties: false,
      required: ['address'],
      description:
        'a third device running `geminik8s-agent arbiter` (README "Arbiter"): with it, a takeover or the switch to asynchronous replication needs its lease',
      properties: {
        address: ipv4,
        port: { type: 'integer', minimum: 1, maximum: 65535, description: 'a TCP port, 1-65535 (default 7950)' },
      },
    },
    ssh: {
      type: 'object',
      additionalProperties: false,
      required: ['authorizedKeys'],
      description: "operators' OpenSSH public keys; the agent installs them for root on every boot",
      properties: {
        authorizedKeys: {
          type: 'array',
          'x-secret': true,
          description: `a list, each item ${SSH_KEY_ALLOWED}`,
          items: { type: 'string', 'x-secret': true, description: SSH_KEY_ALLOWED },
        },
      },
    },
  },
} as const;

export type SiteConfig = FromSchema<typeof siteSchema>;
export type SiteNode = NonNullable<SiteConfig['network']['nodes']>[number];

/** Bytes encoded by a hex or base64 pair secret, or undefined when it is neither. */
/** The site's failover pace (README "Failover pace"): `failover.timeScale`, or 1 when the site sets none. */
export function failoverPace(site: Pick<SiteConfig, 'failover'>): number {
  return site.failover?.timeScale ?? 1;
}

export function pairSecretBytes(secret: string): number | undefined {
  if (HEX_RE.test(secret)) return secret.length % 2 === 0 ? secret.length / 2 : undefined;
  if (!BASE64_RE.test(secret)) return undefined;
  const body = secret.replace(/=+$/, '');
  if (body.length % 4 === 1) return undefined;
  return Math.floor((body.length * 3) / 4);
}

/**
 * Parses and validates a site file. `fileName` is only used in issues. Every problem is reported
 * (not just the first), sorted by position.
 */
export function parseSiteConfig(text: string, fileName: string): Parsed<SiteConfig> {
  const r = parseYamlWithSchema<SiteConfig>(text, fileName, siteSchema, crossCheckSite);
  if (!r.ok) return r;
  const keys = r.value.ssh?.authorizedKeys;
  return keys ? { ok: true, value: { ...r.value, ssh: { authorizedKeys: keys.map((k) => k.trim()) } } } : r;
}

/** What the schema cannot say. Each rule reads only fields the schema found well-formed. */
function crossCheckSite(c: CrossCheck): void {
  const v = c.value as Partial<Record<string, unknown>>;
  const obj = (x: unknown): Record<string, unknown> => (x !== null && typeof x === 'object' && !Array.isArray(x) ? (x as Record<string, unknown>) : {});
  const pair = obj(v.pair);
  const net = obj(v.network);
  const ok = (path: FieldPath, x: unknown): x is string => typeof x === 'string' && !c.failed(path);

  if (ok(['pair', 'secret'], pair.secret)) {
    const secret = pair.secret;
    const bytes = pairSecretBytes(secret);
    if (bytes === undefined || bytes < PAIR_SECRET_MIN_BYTES) {
      // Never echo the secret, not even a wrong one: it may be a real secret pasted badly.
      const found =
        secret === ''
          ? 'an empty value'
          : bytes === undefined
            ? `a ${secret.length}-character string that is neither hex nor base64`
            : `${secret.length} characters encoding ${bytes} bytes`;
      c.report(['pair', 'secret'], { message: `too weak or malformed: ${INIT_HINT}`, found, allowed: `expected ${SECRET_ALLOWED}` });
    }
  }

  const keys = obj(v.ssh).authorizedKeys;
  if (Array.isArray(keys)) {
    keys.forEach((key, i) => {
      const path = ['ssh', 'authorizedKeys', i];
      if (!ok(path, key)) return;
      const problem = sshPublicKeyProblem(key);
      if (problem) c.report(path, { message: problem.message, found: problem.found, allowed: `expected ${SSH_KEY_ALLOWED}` });
    });
  }

  const addressing = net.addressing;
  const nodes = Array.isArray(net.nodes) && !c.failed(['network', 'nodes']) ? (net.nodes as SiteNode[]) : undefined;
  if ('nodes' in net && addressing === 'dhcp') {
    c.report(
      ['network', 'nodes'],
      { message: 'only used with addressing: static', found: 'nodes with addressing: dhcp', allowed: 'expected no nodes field, or addressing: static' },
      'key',
    );
  } else if (!('nodes' in net) && addressing === 'static') {
    c.report(
      ['network', 'nodes'],
      { message: 'addressing: static needs network.nodes (one {name, address} per box)', found: 'no nodes', allowed: 'expected a list of {name, address}' },
      ['network', 'addressing'],
    );
  }
  const names = new Map<string, number>();
  nodes?.forEach((n, i) => {
    const first = names.get(n.name);
    if (first !== undefined)
      c.report(['network', 'nodes', i, 'name'], {
        message: `duplicate node name ${JSON.stringify(n.name)}, also network.nodes[${first}]`,
        found: JSON.stringify(n.name),
        allowed: 'expected a name no other node has',
      });
    else names.set(n.name, i);
  });
  if (ok(['pair', 'preferredLeader'], pair.preferredLeader) && nodes && !names.has(pair.preferredLeader)) {
    c.report(['pair', 'preferredLeader'], {
      message: 'names no node in network.nodes',
      found: JSON.stringify(pair.preferredLeader),
      allowed: `expected ${nodes.map((n) => JSON.stringify(n.name)).join(' or ')}`,
    });
  }

  if (!ok(['network', 'vip'], net.vip) || !isIPv4Cidr(net.vip)) return;
  const fields: AddressFields = { witnesses: [], nodes: [] };
  if (ok(['network', 'gateway'], net.gateway)) fields.gateway = { path: ['network', 'gateway'], text: net.gateway };
  if (Array.isArray(net.witnesses)) {
    net.witnesses.forEach((w, i) => {
      if (ok(['network', 'witnesses', i], w)) fields.witnesses.push({ path: ['network', 'witnesses', i], text: w });
    });
  }
  nodes?.forEach((n, i) => {
    fields.nodes.push({ path: ['network', 'nodes', i, 'address'], text: n.address });
  });
  checkAddressPlan(c, { path: ['network', 'vip'], text: net.vip }, fields);
}

/** An address field as written (`text` already valid on its own) and where it is. */
interface AddressField {
  path: FieldPath;
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
 * One issue per field, at its value.
 */
function checkAddressPlan(c: CrossCheck, vipField: AddressField, f: AddressFields): void {
  const { ip: vip, prefix } = splitCidr(vipField.text);
  const subnet = subnetOf(vip, prefix);
  const report = (a: AddressField, message: string, allowed: string) =>
    c.report(a.path, { message, found: JSON.stringify(a.text), allowed: `expected ${allowed}` });
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
    if (gatewayIp === vip)
      report(f.gateway, `the gateway ${gatewayIp} is also the VIP`, `the router's own address; the VIP must be a free address in ${subnet}`);
    else if (!sameSubnet(gatewayIp, vip, prefix))
      report(
        f.gateway,
        `the gateway ${gatewayIp} is outside the VIP's subnet ${subnet}`,
        `the router's address in ${subnet}, or a VIP in the gateway's subnet`,
      );
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
    if (!seen.has(ip)) seen.set(ip, fieldName(n.path));
  }
  for (const w of f.witnesses) {
    const witnessAllowed = 'a third device that answers ping (the gateway is a good one), not the VIP or a box';
    if (w.text === vip) report(w, `witness ${w.text} is the VIP`, witnessAllowed);
    else if (seen.has(w.text)) report(w, `witness ${w.text} is ${seen.get(w.text)}`, witnessAllowed);
    else if (sameSubnet(w.text, vip, prefix)) reserved(w, w.text, prefix);
  }
}

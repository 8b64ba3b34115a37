/**
 * The image's description of itself (/etc/geminik8s/image.yaml): written by the builder from the
 * profile (overlays/base/etc/geminik8s/image.yaml.hbs), read by the agent. One schema, from which its
 * type comes; the agent refuses a file that does not match it (a hand-edited or truncated file must
 * not start a half-configured cluster) rather than falling back to defaults field by field.
 *
 * Pure: the caller reads the file.
 */
import type { FromSchema } from 'json-schema-to-ts';
import { parseYamlWithSchema, type Parsed } from './config-file.ts';

/**
 * How a box accepts a new root slot (issue 12): the health gate's deadline and the profile's own
 * health commands. Declared once: the profile's `upgrade` section (builder) is rendered into
 * image.yaml and read back with this schema.
 */
export const upgradePolicySchema = {
  type: 'object',
  additionalProperties: false,
  default: {},
  properties: {
    gateSeconds: {
      type: 'integer',
      minimum: 30,
      maximum: 3600,
      default: 600,
      description: 'seconds a new slot has, from boot, to pass its health gate before the box goes back to the old one',
    },
    healthChecks: {
      type: 'array',
      default: [],
      description: 'commands that must exit 0 before a new slot is committed (besides the agent, PostgreSQL, Kine, Kubernetes and the peer)',
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['name', 'command'],
        properties: {
          name: { type: 'string', pattern: '^[a-z0-9][a-z0-9-]{0,62}$', description: 'a short name (lowercase letters, digits, dashes)' },
          command: { type: 'array', minItems: 1, items: { type: 'string', minLength: 1 }, description: 'argv, the program as an absolute path first' },
          timeoutSeconds: { type: 'integer', minimum: 1, maximum: 300, default: 30 },
        },
      },
    },
  },
} as const;

export const imageFactsSchema = {
  type: 'object',
  additionalProperties: false,
  // What the agent needs is all it requires; the rest describes the image for people and `status`.
  required: ['postgresql', 'kine', 'cluster'],
  properties: {
    name: { type: 'string' },
    version: { type: 'string' },
    sourceDateEpoch: { type: 'integer', minimum: 0 },
    profile: { type: 'string' },
    hardware: { type: 'string' },
    arch: { enum: ['amd64', 'arm64'] },
    bootloader: { enum: ['grub-efi', 'rpi-tryboot'], description: 'how the agent sets the A/B slot to boot (the hardware definition)' },
    postgresql: {
      type: 'object',
      additionalProperties: false,
      required: ['replication'],
      properties: {
        version: { enum: [15] },
        replication: { enum: ['physical', 'logical'] },
      },
    },
    kine: {
      type: 'object',
      additionalProperties: false,
      required: ['remoteClients'],
      properties: {
        version: { type: 'string' },
        remoteClients: { type: 'boolean', description: 'true: the etcd API is served on the LAN with mTLS; false: loopback only' },
      },
    },
    kubernetes: {
      type: 'object',
      additionalProperties: false,
      required: ['distribution', 'version', 'clusterCidr', 'serviceCidr'],
      description: 'the Kubernetes this image runs; absent: a datastore-only image',
      properties: {
        distribution: { enum: ['upstream', 'k3s'] },
        version: { type: 'string', pattern: '^v[0-9]+\\.[0-9]+\\.[0-9]+', description: 'a version like v1.37.2' },
        clusterCidr: { type: 'string', format: 'ipv4-range', description: 'an IPv4 CIDR like 10.42.0.0/16' },
        serviceCidr: { type: 'string', format: 'ipv4-range', description: 'an IPv4 CIDR like 10.43.0.0/16' },
        worker: { type: 'boolean', default: false, description: "both boxes run pods (the tests' agents run the control plane only)" },
        disable: { type: 'array', items: { type: 'string' }, default: [], description: 'K3s add-ons left out' },
      },
    },
    upgrade: upgradePolicySchema,
    cluster: {
      type: 'object',
      additionalProperties: false,
      required: ['preferredLeader'],
      properties: { preferredLeader: { type: 'string', description: "a node name, or empty for no preference (the site file's pair.preferredLeader wins)" } },
    },
  },
} as const;

export type ImageFacts = FromSchema<typeof imageFactsSchema>;
export type KubernetesFacts = NonNullable<ImageFacts['kubernetes']>;
export type UpgradePolicy = FromSchema<typeof upgradePolicySchema>;

export function parseImageFacts(text: string, file: string): Parsed<ImageFacts> {
  return parseYamlWithSchema<ImageFacts>(text, file, imageFactsSchema);
}

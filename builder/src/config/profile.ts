import type { FromSchema } from 'json-schema-to-ts';
import { componentSources, debianPackageList, name } from './schema-parts.ts';
import { upgradePolicySchema } from '../../../firstboot/src/core/image-facts.ts';

export const K3S_BUNDLED = ['traefik', 'servicelb', 'metrics-server', 'local-storage', 'coredns'] as const;

/**
 * Which Kubernetes the image runs: `upstream` is built here from the k8s.io/kubernetes Go module
 * (components/kubernetes); `k3s` is K3s' release binary, pinned by sha256.
 */
export const KUBERNETES_DISTRIBUTIONS = ['upstream', 'k3s'] as const;

/** Pod and Service ranges both servers share (K3s' defaults, so the two distributions agree). */
export const DEFAULT_CLUSTER_CIDR = '10.42.0.0/16';
export const DEFAULT_SERVICE_CIDR = '10.43.0.0/16';

const CIDR = '^([0-9]{1,3}\\.){3}[0-9]{1,3}/([0-9]|[12][0-9]|3[0-2])$';

/**
 * Where an image archive may come from: the component source fragment narrowed to files that
 * exist already (an archive is not built from a Go package).
 */
const imageArchiveSources = {
  ...componentSources,
  items: {
    ...componentSources.items,
    properties: {
      artifactDir: { type: 'string', minLength: 1, description: 'a local directory laid out as <dir>/<name>/<version>/<arch>/<name>.tar' },
      url: componentSources.items.properties.url,
      sha256: componentSources.items.properties.sha256,
    },
    oneOf: [{ required: ['artifactDir'] }, { required: ['url', 'sha256'] }],
  },
} as const;

const version = {
  type: 'string',
  pattern: '^v?[0-9]+\\.[0-9]+\\.[0-9]+([-+][0-9A-Za-z.+-]+)?$',
  description: 'a version like "v1.2.3" or "v1.33.1+k3s1"',
} as const;

export const profileSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['apiVersion', 'kind', 'name', 'description', 'version', 'debian', 'network', 'postgresql', 'components'],
  properties: {
    apiVersion: { const: 'geminik8s/v1' },
    kind: { const: 'Profile' },
    name,
    description: { type: 'string', minLength: 1 },
    version,
    debian: {
      type: 'object',
      additionalProperties: false,
      required: ['suite'],
      properties: {
        suite: { enum: ['bookworm'] },
        mirror: { type: 'string', pattern: '^https?://', description: 'an http(s):// Debian mirror URL' },
        securityMirror: { type: 'string', pattern: '^https?://', description: 'an http(s):// Debian security mirror URL' },
        packages: debianPackageList,
      },
    },
    kernel: {
      type: 'object',
      additionalProperties: false,
      properties: { cmdline: { type: 'array', items: { type: 'string', pattern: '^[^\\s]+$', description: 'one kernel argument without spaces' } } },
    },
    network: {
      type: 'object',
      additionalProperties: false,
      required: ['addressing'],
      properties: { addressing: { enum: ['dhcp', 'static'] } },
    },
    postgresql: {
      type: 'object',
      additionalProperties: false,
      required: ['version', 'replication'],
      properties: {
        version: { enum: [15] },
        replication: { enum: ['physical', 'logical'] },
      },
    },
    components: {
      type: 'object',
      additionalProperties: false,
      required: ['kine'],
      properties: {
        kine: {
          type: 'object',
          additionalProperties: false,
          required: ['version', 'sources'],
          properties: {
            version,
            sources: componentSources,
            remoteClients: {
              type: 'boolean',
              description: 'true: Kine serves etcd clients on other hosts over mTLS (client certificates from the pair CA); false (default): loopback only',
            },
          },
        },
        kubernetes: {
          type: 'object',
          additionalProperties: false,
          required: ['distribution', 'version', 'sources'],
          description: 'the Kubernetes both appliances run as control-plane servers and workers; leave it out for a datastore-only image',
          properties: {
            distribution: { enum: [...KUBERNETES_DISTRIBUTIONS] },
            version,
            sources: componentSources,
            disable: {
              type: 'array',
              uniqueItems: true,
              items: { enum: [...K3S_BUNDLED] },
              default: [],
              description: 'K3s add-ons to leave out (distribution k3s only)',
            },
            clusterCidr: { type: 'string', pattern: CIDR, default: DEFAULT_CLUSTER_CIDR, description: 'the pod range, an IPv4 CIDR like "10.42.0.0/16"' },
            serviceCidr: { type: 'string', pattern: CIDR, default: DEFAULT_SERVICE_CIDR, description: 'the Service range, an IPv4 CIDR like "10.43.0.0/16"' },
            images: {
              type: 'array',
              description:
                'more OCI image archives imported into the runtime at boot, next to the baked-in pause, hello and coredns (distribution upstream only)',
              items: {
                type: 'object',
                additionalProperties: false,
                required: ['name', 'version', 'sources'],
                properties: {
                  name: {
                    type: 'string',
                    // The baked-in images' names, and the components', would share their cache folders.
                    pattern: '^(?!(pause|hello|coredns|kine|kubernetes|k3s)$)[a-z0-9][a-z0-9_-]{0,62}$',
                    description: "the archive's name (lowercase letters, digits, dashes, underscores), other than pause, hello, coredns, kine, kubernetes, k3s",
                  },
                  version,
                  sources: imageArchiveSources,
                },
              },
            },
          },
          // K3s imports its own image tarballs: a list it would never read must not look as if it did.
          // (A type no list has, so the validator's message carries the description.)
          if: { properties: { distribution: { const: 'k3s' } } },
          // biome-ignore lint/suspicious/noThenProperty: JSON schema's if/then keyword, not a thenable
          then: {
            properties: { images: { type: 'null', description: 'no images list with distribution k3s, which imports the tarballs in its own images folder' } },
          },
        },
      },
    },
    cluster: {
      type: 'object',
      additionalProperties: false,
      properties: { preferredLeader: { type: 'string', minLength: 1 } },
    },
    upgrade: upgradePolicySchema,
  },
} as const;

/** A product profile: what goes into an image, independent of site and hardware. The schema above is its one declaration. */
export type Profile = FromSchema<typeof profileSchema>;
/** A container image archive the profile adds to the baked-in ones (upstream distribution). */
export type ImageArchive = NonNullable<NonNullable<Profile['components']['kubernetes']>['images']>[number];

import { componentSources, debianPackageList, name } from './schema-parts.ts';

export type ComponentSource =
  | { artifactDir: string }
  | { url: string; sha256: Partial<Record<'amd64' | 'arm64', string>> }
  | { goModule: string };

export const K3S_BUNDLED = ['traefik', 'servicelb', 'metrics-server', 'local-storage', 'coredns'] as const;
export type K3sBundled = (typeof K3S_BUNDLED)[number];

/** A product profile: what goes into an image, independent of site and hardware. */
export interface Profile {
  apiVersion: 'geminik8s/v1';
  kind: 'Profile';
  name: string;
  description: string;
  version: string;
  debian: { suite: 'bookworm'; mirror?: string; securityMirror?: string; packages?: string[] };
  kernel?: { cmdline?: string[] };
  network: { addressing: 'dhcp' | 'static' };
  postgresql: { version: 15; replication: 'physical' | 'logical'; synchronous: boolean };
  components: {
    kine: { version: string; sources: ComponentSource[]; remoteClients?: boolean };
    k3s: { enabled: boolean; version?: string; sources?: ComponentSource[]; disable?: K3sBundled[] };
  };
  cluster?: { preferredLeader?: string };
}

const version = { type: 'string', pattern: '^v?[0-9]+\\.[0-9]+\\.[0-9]+([-+][0-9A-Za-z.+-]+)?$', description: 'a version like "v1.2.3" or "v1.33.1+k3s1"' } as const;

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
      required: ['version', 'replication', 'synchronous'],
      properties: {
        version: { enum: [15] },
        replication: { enum: ['physical', 'logical'] },
        synchronous: { type: 'boolean' },
      },
    },
    components: {
      type: 'object',
      additionalProperties: false,
      required: ['kine', 'k3s'],
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
        k3s: {
          type: 'object',
          additionalProperties: false,
          required: ['enabled'],
          properties: {
            enabled: { type: 'boolean' },
            version,
            sources: componentSources,
            disable: { type: 'array', uniqueItems: true, items: { enum: [...K3S_BUNDLED] } },
          },
          if: { properties: { enabled: { const: true } } },
          then: { required: ['version', 'sources'] },
        },
      },
    },
    cluster: {
      type: 'object',
      additionalProperties: false,
      properties: { preferredLeader: { type: 'string', minLength: 1 } },
    },
  },
} as const;

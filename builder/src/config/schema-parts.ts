/** JSON-schema fragments shared by the profile and hardware schemas. */

export const NAME_PATTERN = '^[a-z0-9][a-z0-9_-]{0,62}$';

export const name = {
  type: 'string',
  pattern: NAME_PATTERN,
  description: 'lowercase letters, digits, dashes and underscores (1-63), e.g. "edge-standard"',
} as const;

export const debianPackageList = {
  type: 'array',
  items: { type: 'string', pattern: '^[a-z0-9][a-z0-9+.-]+$', description: 'a Debian package name, e.g. "chrony"' },
  uniqueItems: true,
} as const;

export const architectures = ['amd64', 'arm64'] as const;
export type Arch = (typeof architectures)[number];

/** Where a binary component may come from, tried in order (see builder/src/components). */
export const componentSources = {
  type: 'array',
  minItems: 1,
  items: {
    type: 'object',
    additionalProperties: false,
    properties: {
      artifactDir: { type: 'string', minLength: 1, description: 'a local directory laid out as <dir>/<name>/<version>/<arch>/<name>' },
      url: {
        anyOf: [
          { type: 'string', pattern: '^https://', description: 'an https:// URL; {version} and {arch} are substituted' },
          {
            type: 'object',
            additionalProperties: false,
            minProperties: 1,
            properties: { amd64: { type: 'string', pattern: '^https://' }, arm64: { type: 'string', pattern: '^https://' } },
            description: 'one https:// URL per arch (amd64, arm64); {version} is substituted',
          },
        ],
      },
      sha256: {
        type: 'object',
        additionalProperties: false,
        properties: { amd64: { type: 'string', pattern: '^[0-9a-f]{64}$' }, arm64: { type: 'string', pattern: '^[0-9a-f]{64}$' } },
      },
      goModule: { type: 'string', pattern: '^[a-z0-9.-]+(/[A-Za-z0-9._-]+)+$', description: 'a Go module path, e.g. "github.com/k3s-io/kine"' },
      goMain: { type: 'string', pattern: '^components/[a-z0-9-]+$', description: 'a main package of this repository, e.g. "components/kubernetes"' },
    },
    oneOf: [{ required: ['artifactDir'] }, { required: ['url', 'sha256'] }, { required: ['goModule'] }, { required: ['goMain'] }],
  },
} as const;

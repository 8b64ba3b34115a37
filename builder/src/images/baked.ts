/**
 * The container images every upstream-Kubernetes image carries, since an appliance has no registry
 * to pull from: the pod sandbox, the small workload the tests deploy, and cluster DNS. Each is one
 * static binary in one layer (builder/src/images/oci.ts).
 */
import { corednsSpec, type ComponentSpec } from '../components/resolve.ts';

/**
 * The registry part of every baked image's name. No such host exists: a runtime asked for an
 * image it does not hold fails at once instead of reaching for a network the site does not have.
 */
export const IMAGE_REGISTRY = 'geminik8s.local';

/** Where the image archives (and images.json, what they hold) sit in the root filesystem. */
export const IMAGES_DIR = '/usr/lib/geminik8s/images';

export const COREDNS_VERSION = 'v1.15.0';

export interface BakedImage {
  name: 'pause' | 'hello' | 'coredns';
  /** The binary; its version is the image's tag. */
  component: ComponentSpec;
  /** Where the binary sits in the image, and the entrypoint. */
  path: string;
  /** uid:gid it runs as unless the pod says otherwise; absent: root. */
  user?: string;
  exposedPorts?: string[];
}

export const BAKED_IMAGES: readonly BakedImage[] = [
  // 65535: the sandbox needs no privilege and no account of its own.
  { name: 'pause', component: { name: 'pause', version: 'v1.0.0', sources: [{ goMain: 'components/pause' }] }, path: '/pause', user: '65535:65535' },
  {
    name: 'hello',
    component: { name: 'hello', version: 'v1.0.0', sources: [{ goMain: 'components/hello' }] },
    path: '/hello',
    user: '65532:65532',
    exposedPorts: ['8080/tcp'],
  },
  // Root: CoreDNS binds port 53, which a non-root user could do only through a file capability or
  // a pod sysctl; its Deployment is the place to drop every capability but NET_BIND_SERVICE.
  { name: 'coredns', component: corednsSpec(COREDNS_VERSION), path: '/coredns', exposedPorts: ['53/tcp', '53/udp', '9153/tcp'] },
];

/** The name a runtime knows a baked image by, e.g. geminik8s.local/pause:v1.0.0. */
export function bakedImageReference(image: BakedImage): string {
  return `${IMAGE_REGISTRY}/${image.name}:${image.component.version}`;
}

/** The repository main packages (components/<name>) the baked images are built from. */
export function bakedGoMains(): string[] {
  return BAKED_IMAGES.flatMap((i) => i.component.sources.flatMap((s) => ('goMain' in s ? [s.goMain] : [])));
}

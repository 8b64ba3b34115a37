import { chmod, copyFile, lstat, mkdir, readFile, readdir, readlink, symlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import Handlebars from 'handlebars';
import { BOOT_STATE_MOUNT } from '../../../image/src/layout.ts';
import type { ResolvedConfig } from '../config/resolve.ts';

/** Overlay layers applied in order; later layers win. Which ones apply follows from the profile. */
export function overlayLayers(config: ResolvedConfig): string[] {
  const layers = ['base', `network-${config.profile.network.addressing}`];
  if (config.packages.includes('openssh-server')) layers.push('ssh');
  // Upstream Kubernetes: the worker's units (containerd, image import, kubelet, kube-proxy), which
  // read what the agent writes at run time. K3s: links from its fixed paths under the read-only /etc.
  const distribution = config.profile.components.kubernetes?.distribution;
  if (distribution === 'upstream') layers.push('kubernetes');
  if (distribution === 'k3s') layers.push('k3s');
  return layers;
}

export interface TemplateContext {
  profile: ResolvedConfig['profile'];
  hardware: ResolvedConfig['hardware'];
  image: { name: string; version: string; sourceDateEpoch: number };
}

/**
 * Copies each layer of overlays/ into outDir, rendering `*.hbs` files with the resolved config
 * (the `.hbs` suffix is dropped). Templates are strict: a missing value is an error, not a blank.
 */
export async function renderOverlays(overlaysRoot: string, layers: string[], context: TemplateContext, outDir: string): Promise<string[]> {
  const written: string[] = [];
  for (const layer of layers) {
    const layerDir = path.join(overlaysRoot, layer);
    await copyLayer(layerDir, '', outDir, context, written);
  }
  return written;
}

async function copyLayer(layerDir: string, rel: string, outDir: string, context: TemplateContext, written: string[]): Promise<void> {
  const entries = (await readdir(path.join(layerDir, rel))).sort();
  for (const name of entries) {
    const relPath = path.join(rel, name);
    const src = path.join(layerDir, relPath);
    const st = await lstat(src);
    if (st.isDirectory()) {
      await mkdir(path.join(outDir, relPath), { recursive: true });
      await copyLayer(layerDir, relPath, outDir, context, written);
    } else if (st.isSymbolicLink()) {
      await symlink(await readlink(src), path.join(outDir, relPath)).catch(async (err: NodeJS.ErrnoException) => {
        if (err.code !== 'EEXIST') throw err;
      });
      written.push(relPath);
    } else if (name.endsWith('.hbs')) {
      const target = path.join(outDir, relPath.slice(0, -'.hbs'.length));
      const template = Handlebars.compile(await readFile(src, 'utf8'), { strict: true, noEscape: true });
      try {
        // `json`: a value written as JSON, which YAML templates read back as the same value.
        // `bootState`: where the bootloader's A/B state partition is mounted (fstab), from the hardware.
        const data = { ...context, bootState: BOOT_STATE_MOUNT[context.hardware.bootloader] };
        await writeFile(target, template(data, { helpers: { json: (v: unknown) => JSON.stringify(v) } }));
      } catch (err) {
        throw new Error(`overlay template ${path.join(path.basename(layerDir), relPath)}: ${(err as Error).message}`);
      }
      await chmod(target, st.mode & 0o7777);
      written.push(relPath.slice(0, -'.hbs'.length));
    } else {
      const target = path.join(outDir, relPath);
      await copyFile(src, target);
      await chmod(target, st.mode & 0o7777);
      written.push(relPath);
    }
  }
}

/** Reads the list of container images the OS image carries (core/baked-images.ts says what it holds). */
import { readFileSync } from 'node:fs';
import { BAKED_IMAGES_FILE, parseBakedImages, type BakedImage } from './core/baked-images.ts';

export function readBakedImages(file = BAKED_IMAGES_FILE): BakedImage[] {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new Error(`${file}: cannot read the list of baked container images (an image built without Kubernetes images has none): ${(e as Error).message}`);
  }
  return parseBakedImages(text, file);
}

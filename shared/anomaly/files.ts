/**
 * The comparable numbers of a files backup (until filesKind declares them as its metrics part):
 * the files it holds (their bytes are the artifact's content-bytes).
 */
import type { Manifest } from '../catalog/manifest.ts';

export function filesMetrics(manifest: Manifest): Record<string, number> {
  const files = (manifest.facts as { files?: unknown }).files;
  return typeof files === 'number' ? { files } : {};
}

/** The backup a new backup (or a verified one) is compared with: the previous committed one of its set. */
import type { Catalog } from '../catalog/catalog.ts';
import { compareIdsNewestFirst, isBackupId } from '../catalog/ids.ts';
import type { Manifest } from '../catalog/manifest.ts';
import { messageOf, UserError } from '../errors.ts';

/** Damaged manifests passed over before giving up: each is a read of the storage. */
const maxDamaged = 10;

export interface PreviousBackup {
  manifest?: Manifest;
  /** Older backups whose manifest could not be used, with why (each passed over). */
  passedOver: string[];
}

/**
 * The newest committed backup of `current`'s set that is older than it (by id), itself left
 * out. A damaged manifest (not JSON, not the schema, another folder's) is passed over and
 * named, and the next older one is used; none: a first backup.
 */
export async function previousBackup(
  catalog: Catalog,
  current: { set: string; id: string },
): Promise<PreviousBackup> {
  const older = (await catalog.listBackups(current.set)).filter(
    (b) =>
      b.committed && b.id !== current.id && isBackupId(b.id) && compareIdsNewestFirst(current.id, b.id) < 0,
  );
  const passedOver: string[] = [];
  for (const entry of older) {
    if (passedOver.length >= maxDamaged) break;
    try {
      return { manifest: await catalog.readManifest(current.set, entry.id), passedOver };
    } catch (error) {
      if (!(error instanceof UserError)) throw error;
      passedOver.push(`${entry.id} (${messageOf(error)})`);
    }
  }
  return { passedOver };
}

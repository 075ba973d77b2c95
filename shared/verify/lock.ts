import { manifestName } from '../catalog/catalog.ts';
import { type Manifest, recordedLock } from '../catalog/manifest.ts';
import { messageOf } from '../errors.ts';
import { lockCovers } from '../storage/locking.ts';
import type { ObjectLock, Storage } from '../storage/storage.ts';
import { type CheckRow, failed, passed, skipped } from './checks.ts';

export const lockCheckName = 'retention lock';

function describe(lock: ObjectLock | undefined): string {
  if (!lock) return 'no lock';
  const retention = lock.mode
    ? `${lock.mode}${lock.until ? ` until ${lock.until.toISOString()}` : ' (immutable flag)'}`
    : '';
  return [retention, lock.legalHold ? 'legal hold' : ''].filter(Boolean).join(' and ');
}

/**
 * Whether the backup's lock is in place: the manifest and every artifact hold a retention on
 * the storage at least as long and as strict as the manifest records (lockOf each). Checked
 * when the manifest records a lock, or when `requireLock` says the set is meant to be locked:
 * then a backup taken without lock-for fails. A lock that has passed is not checked (skipped):
 * the backup may rightly be deleted by then.
 */
export async function lockCheck(
  storage: Storage,
  manifest: Manifest,
  requireLock: boolean,
  now = new Date(),
): Promise<CheckRow | undefined> {
  const wanted = recordedLock(manifest);
  if (!wanted) {
    return requireLock
      ? failed(
          lockCheckName,
          'require-lock: the manifest records no lock (the backup was taken without lock-for), so whoever holds the backup credentials can delete it',
        )
      : undefined;
  }
  const terms = `${wanted.mode} until ${wanted.until.toISOString()}`;
  if (wanted.until <= now) return skipped(lockCheckName, `the lock (${terms}) has passed`);
  const names = [manifestName, ...manifest.artifacts.map((a) => a.name)];
  const short: string[] = [];
  try {
    for (const name of names) {
      const held = await storage.lockOf(`${manifest.set}/${manifest.id}/${name}`);
      if (!lockCovers(held, wanted)) short.push(`${name}: ${describe(held)}`);
    }
  } catch (error) {
    return failed(lockCheckName, `the locks could not be read: ${messageOf(error)}`);
  }
  if (short.length) {
    return failed(
      lockCheckName,
      `${short.length} of ${names.length} object(s) do not hold the recorded lock (${terms}): ${short.slice(0, 3).join('; ')}${short.length > 3 ? '; …' : ''}`,
    );
  }
  return passed(
    lockCheckName,
    `the manifest and ${names.length - 1} artifact(s) are locked (${terms}, or longer) on the storage`,
  );
}

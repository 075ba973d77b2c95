/**
 * What a storage holds, as `list`, `status` and prune's keep-verified see it: committed backups
 * with their newest verification, and the folders whose manifest is refused, each apart.
 */

import { messageOf, UserError } from '../errors.ts';
import { forEachLimit } from '../storage/storage.ts';
import type { Catalog } from './catalog.ts';
import { isAheadOfClock, parseBackupId } from './ids.ts';
import { totalBytes } from './manifest.ts';

export interface ListedBackup {
  set: string;
  id: string;
  kind: string;
  mode: string;
  bytes: number;
  finishedAt: string;
  ageSeconds: number;
  lastVerification: { at: string; passed: boolean } | null;
  /** What that verification measured (RTO, RPO) and which checks failed: what the report charts. */
  verified?: { restoreSeconds: number | null; rpoSeconds: number | null; failedChecks: string[] };
  /** Its newest verification record is damaged (the reason); lastVerification is then null. */
  verificationDamaged?: string;
  /**
   * Its id is dated ahead of the clock by more than clockSkewMs (a runner's clock was
   * ahead): it is never `latest`, and prune-retention's newest rule does not protect it.
   */
  aheadOfClock: boolean;
  /** The retention lock its objects were written under (lock-for), as the manifest records it. */
  lock: { mode: string; until: string } | null;
}

/** A folder with a manifest that Lifeboat refuses: not listed as a backup, never restored. */
export interface DamagedBackup {
  set: string;
  id: string;
  reason: string;
}

/**
 * Every committed backup (newest first per set), the count of unfinished folders, and the
 * folders whose manifest is refused (damaged: not JSON, not the schema, a newer format, or
 * not describing its own folder), each listed on its own so that one damaged backup never
 * hides the others. `only` must be a set of the storage (a typo is refused, naming the sets).
 */
export async function listCatalog(catalog: Catalog, only?: string, now = new Date()) {
  const all = await catalog.listSets();
  if (only && !all.includes(only)) {
    throw new UserError(
      `set: '${only}' is not a set in ${catalog.storage.url}; ${all.length ? `sets here: ${all.join(', ')}` : 'the storage holds no sets'}`,
    );
  }
  const sets = only ? [only] : all;
  const backups: ListedBackup[] = [];
  const damaged: DamagedBackup[] = [];
  let unfinished = 0;
  for (const set of sets) {
    const entries = await catalog.listBackups(set);
    unfinished += entries.filter((e) => !e.committed).length;
    const committed = entries.filter((e) => e.committed);
    const rows: (ListedBackup | DamagedBackup)[] = new Array(committed.length);
    await forEachLimit(
      committed.map((entry, index) => ({ entry, index })),
      8,
      async ({ entry, index }) => {
        const [read, last] = await Promise.allSettled([
          catalog.readManifest(set, entry.id),
          catalog.readLastVerification(entry),
        ]);
        if (read.status === 'rejected') {
          if (!(read.reason instanceof UserError)) throw read.reason;
          rows[index] = { set, id: entry.id, reason: messageOf(read.reason) };
          return;
        }
        if (last.status === 'rejected') throw last.reason;
        const manifest = read.value;
        const { verification, damaged: verificationDamaged } = last.value;
        const time = parseBackupId(entry.id)?.time;
        rows[index] = {
          set,
          id: entry.id,
          kind: manifest.kind,
          mode: manifest.mode,
          bytes: totalBytes(manifest),
          finishedAt: manifest.finishedAt,
          ageSeconds: Math.max(0, (now.getTime() - Date.parse(manifest.finishedAt)) / 1000),
          lastVerification: verification ? { at: verification.at, passed: verification.passed } : null,
          ...(verification
            ? {
                verified: {
                  restoreSeconds: verification.restoreSeconds ?? null,
                  rpoSeconds: verification.ageSeconds ?? null,
                  failedChecks: verification.checks.filter((c) => !c.passed && !c.skipped).map((c) => c.name),
                },
              }
            : {}),
          ...(verificationDamaged ? { verificationDamaged } : {}),
          aheadOfClock: time !== undefined && isAheadOfClock(time, now),
          lock: manifest.lock ?? null,
        };
      },
    );
    for (const row of rows) {
      if ('reason' in row) damaged.push(row);
      else backups.push(row);
    }
  }
  return { sets, backups, unfinished, damaged };
}

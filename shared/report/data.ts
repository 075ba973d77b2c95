/**
 * What the HTML report shows, read from a storage: each set judged as status judges it, and
 * its last N backups with size, and RTO and RPO from their newest verification record.
 */
import type { ListedBackup } from '../catalog/listing.ts';
import {
  type FreshnessRules,
  failuresFirst,
  judgeSet,
  missingSet,
  type SetFreshness,
} from '../status/freshness.ts';
import { gatherSets, type SetSelection } from '../status/gather.ts';
import type { Storage } from '../storage/storage.ts';
import { version } from '../version.ts';

/** A backup as the report shows it: as listed, with its newest verification's figures. */
export type ReportBackup = Pick<
  ListedBackup,
  'id' | 'kind' | 'mode' | 'bytes' | 'finishedAt' | 'ageSeconds'
> & {
  /** Its newest verification record, if it has one that reads. */
  verification: ({ at: string; passed: boolean } & NonNullable<ListedBackup['verified']>) | null;
  verificationDamaged?: string;
};

export interface ReportSet {
  freshness: SetFreshness;
  /** The last `last` backups, newest first. */
  recent: ReportBackup[];
  damaged: number;
}

export interface ReportData {
  storage: string;
  generatedAt: string;
  version: string;
  rules: FreshnessRules;
  last: number;
  /** Failures first. */
  sets: ReportSet[];
}

export async function gatherReport(
  storage: Storage,
  selection: SetSelection,
  options: { last: number; rules: FreshnessRules; now: Date },
): Promise<ReportData> {
  const { now, last, rules } = options;
  const gathered = await gatherSets(storage, selection, now);
  const sets: ReportSet[] = [];
  for (const listing of gathered.listings) {
    const freshness = judgeSet(listing.set, listing.backups, listing.damaged.length, rules, now);
    const recent = listing.backups
      .filter((b) => !b.aheadOfClock)
      .slice(0, last)
      .map(
        (b): ReportBackup => ({
          id: b.id,
          kind: b.kind,
          mode: b.mode,
          bytes: b.bytes,
          finishedAt: b.finishedAt,
          ageSeconds: b.ageSeconds,
          verification: b.lastVerification && b.verified ? { ...b.lastVerification, ...b.verified } : null,
          ...(b.verificationDamaged ? { verificationDamaged: b.verificationDamaged } : {}),
        }),
      );
    sets.push({ freshness, recent, damaged: listing.damaged.length });
  }
  for (const set of gathered.missing)
    sets.push({ freshness: missingSet(set, gathered.known), recent: [], damaged: 0 });
  sets.sort((a, b) => failuresFirst(a.freshness, b.freshness));
  return { storage: storage.url, generatedAt: now.toISOString(), version, rules, last, sets };
}

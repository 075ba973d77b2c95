/**
 * What the HTML report shows, read from a storage: each set judged as status judges it, and
 * its last N backups with size, and RTO and RPO from their newest verification record.
 */
import { Catalog } from '../catalog/catalog.ts';
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

export interface ReportBackup {
  id: string;
  kind: string;
  mode: string;
  /** Bytes stored (the artifacts, as the manifest records them). */
  bytes: number;
  finishedAt: string;
  ageSeconds: number;
  /** Its newest verification record, if it has one that reads. */
  verification: {
    at: string;
    passed: boolean;
    /** RTO: how long the restore took. */
    restoreSeconds: number | null;
    /** RPO: the backup's age when it was verified. */
    rpoSeconds: number | null;
    /** The names of the checks that failed. */
    failedChecks: string[];
  } | null;
  verificationDamaged?: string;
}

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
  const catalog = new Catalog(storage);
  const sets: ReportSet[] = [];
  for (const listing of gathered.listings) {
    const freshness = judgeSet(listing.set, listing.backups, listing.damaged.length, rules, now);
    const recent = listing.backups.filter((b) => !b.aheadOfClock).slice(0, last);
    const entries = new Map((await catalog.listBackups(listing.set)).map((e) => [e.id, e]));
    const backups: ReportBackup[] = [];
    for (const b of recent) {
      const entry = entries.get(b.id);
      const record =
        entry && b.lastVerification ? (await catalog.readLastVerification(entry)).verification : undefined;
      backups.push({
        id: b.id,
        kind: b.kind,
        mode: b.mode,
        bytes: b.bytes,
        finishedAt: b.finishedAt,
        ageSeconds: b.ageSeconds,
        verification: record
          ? {
              at: record.at,
              passed: record.passed,
              restoreSeconds: record.restoreSeconds ?? null,
              rpoSeconds: record.ageSeconds ?? null,
              failedChecks: record.checks.filter((c) => !c.passed && !c.skipped).map((c) => c.name),
            }
          : null,
        ...(b.verificationDamaged ? { verificationDamaged: b.verificationDamaged } : {}),
      });
    }
    sets.push({ freshness, recent: backups, damaged: listing.damaged.length });
  }
  for (const set of gathered.missing)
    sets.push({ freshness: missingSet(set, gathered.known), recent: [], damaged: 0 });
  sets.sort((a, b) => failuresFirst(a.freshness, b.freshness));
  return { storage: storage.url, generatedAt: now.toISOString(), version, rules, last, sets };
}

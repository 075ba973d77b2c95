import { type BackupEntry, Catalog } from '../catalog/catalog.ts';
import { parseBackupId } from '../catalog/ids.ts';
import { deleteSnapshots, type SnapshotDeletion, type SnapshotRef, snapshotsOf } from '../ebs/delete.ts';
import { ebsFacts } from '../ebs/snapshot.ts';
import type { Logger } from '../pipeline/progress.ts';
import { formatBytes } from '../pipeline/progress.ts';
import { forEachLimit, type Storage } from '../storage/storage.ts';
import {
  type BackupFacts,
  type OrphanFacts,
  planRetention,
  type RetentionPlan,
  type RetentionPolicy,
} from './plan.ts';

export interface PruneOptions {
  storage: Storage;
  /** The sets to prune, or '*' for every set of the storage, each on its own. */
  sets: string[] | '*';
  policy: RetentionPolicy;
  dryRun: boolean;
  logger: Logger;
  signal?: AbortSignal;
  now?: () => Date;
}

export interface SetPrune {
  set: string;
  plan: RetentionPlan;
  deletedBackups: string[];
  deletedOrphans: string[];
  /** Backups the policy would delete but whose manifest a retention lock protects: kept whole. */
  keptByLock: string[];
  /** Objects of deleted backups or orphans that a lock left in place (removed by a later run). */
  lockedObjects: string[];
  /** EBS backups: snapshots deleted (in every region), and those EC2 kept (in use by an AMI, locked). */
  snapshots: SnapshotDeletion;
}

export interface PruneReport {
  dryRun: boolean;
  sets: SetPrune[];
  freedBytes: number;
}

/** A backup's time: from its id (the UTC minute it started), else its newest object. */
function timeOf(entry: BackupEntry): Date {
  return parseBackupId(entry.id)?.time ?? entry.modified;
}

/** What the planner needs of a set, with as few reads as the policy allows. */
async function gather(catalog: Catalog, set: string, policy: RetentionPolicy) {
  const entries = await catalog.listBackups(set);
  const committed = entries.filter((e) => e.committed);
  const facts: BackupFacts[] = committed.map((e) => ({
    id: e.id,
    time: timeOf(e),
    bytes: e.bytes,
    tags: [],
  }));
  if (policy.tags.length > 0) {
    // Tags live in the manifests: read them only when the policy keeps by tag.
    await forEachLimit(facts, 16, async (fact) => {
      fact.tags = (await catalog.readManifest(set, fact.id)).tags;
    });
  }
  // The newest backups whose last verification passed: read records newest first, until enough.
  let found = 0;
  for (const [index, entry] of committed.entries()) {
    if (found >= policy.keepVerified) break;
    if (entry.verifications.length === 0) continue;
    const verification = await catalog.lastVerification(entry);
    facts[index]!.verified = verification?.passed;
    if (verification?.passed) found++;
  }
  const orphans: OrphanFacts[] = entries
    .filter((e) => !e.committed)
    .map((e) => ({ id: e.id, modified: e.modified, bytes: e.bytes }));
  return { entries: new Map(entries.map((e) => [e.id, e])), facts, orphans };
}

/** The EC2 snapshots of the doomed backups that are EBS backups, by backup id. */
async function ebsSnapshotsOf(catalog: Catalog, set: string, doomed: BackupEntry[]) {
  const refs = new Map<string, SnapshotRef[]>();
  await forEachLimit(doomed, 16, async (entry) => {
    const manifest = await catalog.readManifest(set, entry.id);
    if (manifest.kind === 'ebs') refs.set(entry.id, snapshotsOf(ebsFacts(manifest)));
  });
  return refs;
}

/**
 * Plans and (unless dry-run) carries out retention on each set. Deletion is manifest first
 * across the whole set: every doomed manifest goes (in batches) before any artifact, so the
 * backups stop being visible at once, and a run that dies part-way leaves only uncommitted
 * folders, which the next run removes as orphans.
 */
export async function prune(options: PruneOptions): Promise<PruneReport> {
  const now = (options.now ?? (() => new Date()))();
  const catalog = new Catalog(options.storage);
  const sets = options.sets === '*' ? await catalog.listSets() : options.sets;
  const report: PruneReport = { dryRun: options.dryRun, sets: [], freedBytes: 0 };
  for (const set of sets) {
    options.signal?.throwIfAborted();
    const { entries, facts, orphans } = await gather(catalog, set, options.policy);
    const plan = planRetention(facts, orphans, options.policy, now);
    const doomed = plan.backups.filter((b) => !b.keep).map((b) => entries.get(b.id)!);
    const doomedOrphans = plan.orphans.filter((o) => o.delete).map((o) => entries.get(o.id)!);
    const kept = plan.backups.length - doomed.length;
    options.logger.info(
      `${set}: keep ${kept} of ${plan.backups.length} backup(s), delete ${doomed.length} and ${doomedOrphans.length} unfinished folder(s), freeing ${formatBytes(plan.freedBytes)}${options.dryRun ? ' (dry run: nothing deleted)' : ''}`,
    );
    if (plan.capacity && !plan.capacity.met) {
      options.logger.warn(
        `${set}: the kept backups take ${formatBytes(plan.keptBytes)}, over the limit of ${formatBytes(plan.capacity.limitBytes)}; the safety rules keep them`,
      );
    }
    let keptByLock = new Set<string>();
    let lockedObjects: string[] = [];
    const snapshots: SnapshotDeletion = { deleted: [], kept: [] };
    if (!options.dryRun && (doomed.length > 0 || doomedOrphans.length > 0)) {
      // EBS backups keep their data in EC2: read which snapshots before the manifests go.
      const ebs = await ebsSnapshotsOf(catalog, set, doomed);
      const deleted = await catalog.deleteBackups([...doomed, ...doomedOrphans], options.signal);
      keptByLock = new Set(deleted.keptByLock);
      lockedObjects = deleted.lockedObjects;
      for (const b of plan.backups) {
        if (!keptByLock.has(b.id)) continue;
        b.keep = true;
        b.reasons = ['locked'];
        delete b.deleteReason;
        plan.freedBytes -= b.bytes;
        plan.keptBytes += b.bytes;
      }
      if (keptByLock.size)
        options.logger.info(`${set}: ${keptByLock.size} backup(s) kept by a retention lock`);
      if (lockedObjects.length) {
        options.logger.warn(
          `${set}: ${lockedObjects.length} object(s) of deleted backups are locked and stay until their lock ends`,
        );
      }
      const refs = [...ebs].filter(([id]) => !keptByLock.has(id)).flatMap(([, r]) => r);
      Object.assign(snapshots, await deleteSnapshots(refs, options.logger));
      if (refs.length) {
        options.logger.info(
          `${set}: deleted ${snapshots.deleted.length} EBS snapshot(s)${snapshots.kept.length ? `, kept ${snapshots.kept.length} that EC2 would not delete (in use by an AMI or locked)` : ''}`,
        );
      }
    }
    report.sets.push({
      set,
      plan,
      deletedBackups: options.dryRun ? [] : doomed.filter((e) => !keptByLock.has(e.id)).map((e) => e.id),
      deletedOrphans: options.dryRun ? [] : doomedOrphans.map((e) => e.id),
      keptByLock: [...keptByLock],
      lockedObjects,
      snapshots,
    });
    report.freedBytes += plan.freedBytes;
  }
  return report;
}

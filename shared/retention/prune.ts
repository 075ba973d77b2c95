import { type BackupEntry, Catalog } from '../catalog/catalog.ts';
import { parseBackupId } from '../catalog/ids.ts';
import type { Manifest } from '../catalog/manifest.ts';
import { deleteSnapshots, type SnapshotDeletion, type SnapshotRef, snapshotsOf } from '../ebs/delete.ts';
import { ebsFacts } from '../ebs/snapshot.ts';
import { messageOf, UserError } from '../errors.ts';
import type { K8sFacts } from '../k8s/backup.ts';
import { deleteVeleroFolder, veleroCopyOwner } from '../k8s/velero-layout.ts';
import type { Logger } from '../pipeline/progress.ts';
import { formatBytes } from '../pipeline/progress.ts';
import { openStorage } from '../storage/open.ts';
import { forEachLimit, type IncompleteUpload, type Storage, StorageError } from '../storage/storage.ts';
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
  /** Opens the storage of a k8s backup's Velero copy (default: openStorage, this environment). */
  openVeleroStorage?: (url: string) => Storage;
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
  /**
   * k8s backups written with velero-storage: their Velero copies deleted (`<storage> backups/<name>/`),
   * those already gone (a warning: Velero's garbage collection or a person deleted them), and
   * those left in place (not the copy Lifeboat wrote, or the delete failed; each warned about).
   */
  veleroCopies: { deleted: string[]; missing: string[]; left: string[] };
  /**
   * Uploads a killed run left and nothing lists as objects (a folder storage's temporary
   * files, S3 multipart uploads): those older than the orphan grace are removed (in a dry
   * run: would be), with their bytes where the provider says.
   */
  incomplete: { removed: string[]; kept: number; bytes: number };
  /** Bytes really removed (in a dry run: that would be); a locked object is not counted. */
  freedBytes: number;
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

/**
 * The unfinished uploads of a set. Without the permission to list them (a prune role from
 * before S3 multipart uploads were listed), or on a server that does not implement the
 * listing, prune goes on without them and says so.
 */
async function incompleteOf(storage: Storage, set: string, logger: Logger): Promise<IncompleteUpload[]> {
  try {
    return await storage.listIncomplete(`${set}/`);
  } catch (error) {
    if (!(error instanceof StorageError) || (error.code !== 'denied' && error.code !== 'invalid'))
      throw error;
    logger.warn(
      `${set}: unfinished uploads were not listed (${error.message}); on S3 grant prune s3:ListBucketMultipartUploads and s3:AbortMultipartUpload, and keep an AbortIncompleteMultipartUpload lifecycle rule`,
    );
    return [];
  }
}

/** What the planner needs of a set, with as few reads as the policy allows. */
async function gather(
  catalog: Catalog,
  set: string,
  policy: RetentionPolicy,
  incomplete: IncompleteUpload[],
) {
  const entries = await catalog.listBackups(set);
  const committed = entries.filter((e) => e.committed);
  const facts: BackupFacts[] = committed.map((e) => ({
    id: e.id,
    time: timeOf(e),
    bytes: e.bytes,
    tags: [],
  }));
  if (policy.tags.length > 0 || (policy.tagLists?.length ?? 0) > 0) {
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
  // An unfinished backup is as young as its newest write, a temporary file or an upload part
  // included, and holds their bytes too.
  const orphans: OrphanFacts[] = entries
    .filter((e) => !e.committed)
    .map((e) => {
      const own = incomplete.filter((u) => u.key.startsWith(`${set}/${e.id}/`));
      const newest = Math.max(e.modified.getTime(), ...own.map((u) => u.started.getTime()));
      const bytes = own.reduce((n, u) => n + (u.bytes ?? 0), e.bytes);
      return { id: e.id, modified: new Date(newest), bytes };
    });
  return { entries: new Map(entries.map((e) => [e.id, e])), facts, orphans };
}

/**
 * What the doomed backups keep outside the catalog, by backup id: the EC2 snapshots of EBS
 * backups, and the Velero copies of k8s backups.
 */
async function ebsSnapshotsOf(
  catalog: Catalog,
  set: string,
  doomed: BackupEntry[],
  read: Map<string, Manifest>,
) {
  const refs = new Map<string, SnapshotRef[]>();
  const velero = new Map<string, { storage: string; name: string }>();
  await forEachLimit(doomed, 16, async (entry) => {
    const manifest = read.get(entry.id) ?? (await catalog.readManifest(set, entry.id));
    if (manifest.kind === 'ebs') refs.set(entry.id, snapshotsOf(ebsFacts(manifest)));
    const copy = manifest.kind === 'k8s' ? (manifest.facts as unknown as K8sFacts).velero : undefined;
    if (typeof copy?.storage === 'string' && typeof copy.name === 'string')
      velero.set(entry.id, { storage: copy.storage, name: copy.name });
  });
  return { refs, velero };
}

/**
 * Deletes the Velero copies of deleted k8s backups: every object under `backups/<name>/` of
 * the copy's storage, once its velero-backup.json shows it is the copy Lifeboat wrote for that
 * backup (the manifest names the storage, and whoever can write the catalog writes manifests:
 * nothing else is deleted on its word). A copy already gone, or one that cannot be deleted, is
 * a warning: the backup itself is gone by then.
 */
async function deleteVeleroCopies(
  set: string,
  copies: [string, { storage: string; name: string }][],
  options: PruneOptions,
): Promise<SetPrune['veleroCopies']> {
  const result: SetPrune['veleroCopies'] = { deleted: [], missing: [], left: [] };
  const open = options.openVeleroStorage ?? ((url: string) => openStorage(url));
  for (const [id, copy] of copies) {
    const where = `${copy.storage} backups/${copy.name}/`;
    try {
      const storage = open(copy.storage);
      const owner = await veleroCopyOwner(storage, copy.name, set, id);
      if (owner === 'missing') {
        options.logger.warn(
          `${set}/${id}: its Velero copy ${where} is gone already (Velero's garbage collection, or a person, deleted it)`,
        );
        result.missing.push(where);
      } else if (owner === 'foreign') {
        options.logger.warn(
          `${set}/${id}: ${where} is not the Velero copy Lifeboat wrote for this backup (its velero-backup.json does not name it): left in place`,
        );
        result.left.push(where);
      } else {
        await deleteVeleroFolder(storage, copy.name);
        result.deleted.push(where);
      }
    } catch (error) {
      options.logger.warn(
        `${set}/${id}: its Velero copy ${where} could not be deleted (${messageOf(error)}); delete that folder by hand (or let Velero's garbage collection take it when it expires)`,
      );
      result.left.push(where);
    }
  }
  return result;
}

/**
 * Plans with the retention locks the manifests record: those of the backups the plan would
 * delete are read, a lock still in force keeps its backup, and the plan is made again until
 * every backup it deletes was read (capacity may then pick others). A damaged manifest counts
 * as no recorded lock (the storage still refuses to delete what it locks). Returns the plan,
 * the manifests read, and the backups (`<set>/<id>`) whose recorded lock has passed.
 */
async function planWithLocks(
  catalog: Catalog,
  set: string,
  gathered: Awaited<ReturnType<typeof gather>>,
  policy: RetentionPolicy,
  now: Date,
) {
  const { facts, orphans } = gathered;
  const manifests = new Map<string, Manifest>();
  const lockPassed = new Set<string>();
  const looked = new Set<string>();
  for (;;) {
    const plan = planRetention(facts, orphans, policy, now);
    const unread = facts.filter(
      (f) => !looked.has(f.id) && plan.backups.some((b) => b.id === f.id && !b.keep),
    );
    let locked = 0;
    await forEachLimit(unread, 16, async (fact) => {
      looked.add(fact.id);
      let manifest: Manifest;
      try {
        manifest = await catalog.readManifest(set, fact.id);
      } catch (error) {
        if (error instanceof UserError) return;
        throw error;
      }
      manifests.set(fact.id, manifest);
      if (!manifest.lock) return;
      const until = new Date(manifest.lock.until);
      if (until > now) {
        fact.lockedUntil = until;
        locked++;
      } else lockPassed.add(`${set}/${fact.id}`);
    });
    if (locked === 0) return { plan, manifests, lockPassed };
  }
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
    const incomplete = await incompleteOf(options.storage, set, options.logger);
    const gathered = await gather(catalog, set, options.policy, incomplete);
    const { entries } = gathered;
    const { plan, manifests, lockPassed } = await planWithLocks(catalog, set, gathered, options.policy, now);
    // Past the grace an unfinished upload is dead: its run was killed or lost its connection.
    const graceMs = options.policy.orphanGraceSeconds * 1000;
    const deadUploads = incomplete.filter((u) => now.getTime() - u.started.getTime() > graceMs);
    const inDoomedOrphan = (u: IncompleteUpload) =>
      plan.orphans.some((o) => o.delete && u.key.startsWith(`${set}/${o.id}/`));
    // Bytes of uploads in doomed unfinished backups are in the plan already.
    const deadBytes = deadUploads.filter((u) => !inDoomedOrphan(u)).reduce((n, u) => n + (u.bytes ?? 0), 0);
    if (deadUploads.length) {
      options.logger.info(
        `${set}: ${options.dryRun ? 'would remove' : 'removing'} ${deadUploads.length} unfinished upload(s) older than the orphan grace${deadUploads.some((u) => u.bytes !== undefined) ? ` (${formatBytes(deadUploads.reduce((n, u) => n + (u.bytes ?? 0), 0))})` : ''}: ${deadUploads
          .slice(0, 5)
          .map((u) => u.key)
          .join(', ')}${deadUploads.length > 5 ? ', …' : ''}`,
      );
    }
    // Removed first: a folder storage can then remove the unfinished folders they were in.
    if (!options.dryRun && deadUploads.length) await options.storage.removeIncomplete(deadUploads);
    options.signal?.throwIfAborted();
    const doomed = plan.backups.filter((b) => !b.keep).map((b) => entries.get(b.id)!);
    // A zfs backup's data are snapshots on its host, pruned there by snapshot-zfs's own policy:
    // deleting its catalog entry here would only lose track of them.
    const zfs = doomed.find((e) => manifests.get(e.id)?.kind === 'zfs');
    if (zfs) {
      const why = `${set}/${zfs.id} is a zfs backup: prune-retention does not prune zfs sets in this version (snapshot-zfs prunes their snapshots on the host, with its keep-* rules and max-pool-usage); nothing of ${set} was deleted`;
      if (options.sets !== '*') throw new UserError(`set: ${why}`);
      options.logger.warn(why);
      continue;
    }
    const doomedOrphans = plan.orphans.filter((o) => o.delete).map((o) => entries.get(o.id)!);
    const kept = plan.backups.length - doomed.length;
    options.logger.info(
      `${set}: keep ${kept} of ${plan.backups.length} backup(s), delete ${doomed.length} and ${doomedOrphans.length} unfinished folder(s), freeing ${formatBytes(plan.freedBytes)}${options.dryRun ? ' (dry run: nothing deleted)' : ''}`,
    );
    const lockedBackups = plan.backups.filter((b) => b.lockedUntil && b.reasons.length === 1);
    if (lockedBackups.length) {
      options.logger.info(
        `${set}: ${lockedBackups.length} backup(s) the policy would delete are locked: ${lockedBackups.map((b) => `${b.id} until ${b.lockedUntil}`).join(', ')}`,
      );
    }
    if (plan.capacity && !plan.capacity.met) {
      options.logger.warn(
        `${set}: the kept backups take ${formatBytes(plan.keptBytes)}, over the limit of ${formatBytes(plan.capacity.limitBytes)}; the safety rules keep them`,
      );
    }
    let keptByLock = new Set<string>();
    let lockedObjects: string[] = [];
    let freedBytes = plan.freedBytes + deadBytes;
    const snapshots: SnapshotDeletion = { deleted: [], kept: [] };
    let veleroCopies: SetPrune['veleroCopies'] = { deleted: [], missing: [], left: [] };
    if (!options.dryRun && (doomed.length > 0 || doomedOrphans.length > 0)) {
      // EBS backups keep their data in EC2, k8s backups may have a Velero copy: read where
      // before the manifests go.
      const { refs: ebs, velero } = await ebsSnapshotsOf(catalog, set, doomed, manifests);
      const deleted = await catalog.deleteBackups([...doomed, ...doomedOrphans], options.signal, lockPassed);
      keptByLock = new Set(deleted.keptByLock);
      lockedObjects = deleted.lockedObjects;
      // What was really removed: on a versioned bucket every version, never a locked one.
      freedBytes = deleted.freedBytes + deadUploads.reduce((n, u) => n + (u.bytes ?? 0), 0);
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
      const copies = [...velero].filter(([id]) => !keptByLock.has(id));
      veleroCopies = await deleteVeleroCopies(set, copies, options);
      if (veleroCopies.deleted.length)
        options.logger.info(`${set}: deleted ${veleroCopies.deleted.length} Velero copy(ies)`);
    }
    report.sets.push({
      set,
      plan,
      deletedBackups: options.dryRun ? [] : doomed.filter((e) => !keptByLock.has(e.id)).map((e) => e.id),
      deletedOrphans: options.dryRun ? [] : doomedOrphans.map((e) => e.id),
      keptByLock: [...keptByLock],
      lockedObjects,
      snapshots,
      veleroCopies,
      incomplete: {
        removed: options.dryRun ? [] : deadUploads.map((u) => u.key),
        kept: incomplete.length - deadUploads.length,
        bytes: deadBytes,
      },
      freedBytes,
    });
    report.freedBytes += freedBytes;
  }
  return report;
}

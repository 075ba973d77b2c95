import { type BackupEntry, Catalog } from '../catalog/catalog.ts';
import { parseBackupId } from '../catalog/ids.ts';
import type { Manifest } from '../catalog/manifest.ts';
import type { SnapshotDeletion } from '../ebs/delete.ts';
import { UserError } from '../errors.ts';
import { prunePartOf } from '../kinds/index.ts';
import type { OutsidePart } from '../kinds/kind.ts';
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
  /**
   * Opens a storage a manifest names, such as a k8s backup's Velero copy (default: openStorage,
   * this environment); the kinds' prune parts get it as `openStorage`.
   */
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

/** The report fields a kind's prune part fills with what it removed outside the catalog (kind.ts). */
export type OutsideReport = Pick<SetPrune, 'snapshots' | 'veleroCopies'>;

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

/**
 * What the planner needs of a set, with as few reads as the policy allows; returns the
 * manifests it read, too.
 */
async function gather(
  catalog: Catalog,
  set: string,
  policy: RetentionPolicy,
  incomplete: IncompleteUpload[],
  logger: Logger,
) {
  const entries = await catalog.listBackups(set);
  const committed = entries.filter((e) => e.committed);
  const facts: BackupFacts[] = committed.map((e) => ({
    id: e.id,
    time: timeOf(e),
    bytes: e.bytes,
    tags: [],
  }));
  const manifests = new Map<string, Manifest>();
  if (policy.tags.length > 0 || (policy.tagLists?.length ?? 0) > 0) {
    // Tags live in the manifests: read them only when the policy keeps by tag.
    await forEachLimit(facts, 16, async (fact) => {
      const manifest = await catalog.readManifest(set, fact.id);
      manifests.set(fact.id, manifest);
      fact.tags = manifest.tags;
    });
  }
  // The parent of each incremental backup (its id says the mode: no other manifest is read).
  // A damaged manifest counts as no parent: that backup cannot be restored, so the backup it
  // would apply on top of is not kept for it (the rules, or another backup, may keep it).
  const incremental = facts.filter((f) => parseBackupId(f.id)?.mode === 'incremental');
  await forEachLimit(incremental, 16, async (fact) => {
    let manifest = manifests.get(fact.id);
    try {
      manifest ??= await catalog.readManifest(set, fact.id);
    } catch (error) {
      if (!(error instanceof UserError)) throw error;
      logger.warn(
        `${set}/${fact.id}: its manifest cannot be read (${error.message}): the backup it applies on top of is not kept for it`,
      );
      return;
    }
    manifests.set(fact.id, manifest);
    fact.parent = manifest.parent;
  });
  const ids = new Set(facts.map((f) => f.id));
  for (const fact of incremental) {
    if (fact.parent !== undefined && !ids.has(fact.parent))
      logger.warn(
        `${set}/${fact.id}: the backup it applies on top of, ${fact.parent}, is not a committed backup of ${set}: it cannot be restored`,
      );
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
  return { entries: new Map(entries.map((e) => [e.id, e])), facts, orphans, manifests };
}

/**
 * What the doomed backups keep outside the catalog (EC2 snapshots, Velero copies, …: each kind
 * with a prune part says), in the order of `doomed`: read before the manifests go.
 */
async function outsideOf(catalog: Catalog, set: string, doomed: BackupEntry[], read: Map<string, Manifest>) {
  const found: ({ id: string; part: OutsidePart<unknown>; ref: unknown } | undefined)[] = [];
  await forEachLimit([...doomed.entries()], 16, async ([index, entry]) => {
    const manifest = read.get(entry.id) ?? (await catalog.readManifest(set, entry.id));
    const part = prunePartOf(manifest.kind).outside;
    const ref = part?.of(manifest);
    if (part && ref !== undefined) found[index] = { id: entry.id, part, ref };
  });
  return found.filter((f) => f !== undefined);
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
  const manifests = new Map(gathered.manifests);
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
      let manifest = manifests.get(fact.id);
      try {
        manifest ??= await catalog.readManifest(set, fact.id);
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
    const gathered = await gather(catalog, set, options.policy, incomplete, options.logger);
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
    // A backup whose kind prunes it elsewhere (a zfs backup of snapshots on its host, pruned
    // there by snapshot-zfs's own policy): deleting its catalog entry would only lose track of it.
    const refused = doomed
      .map((e) => {
        const manifest = manifests.get(e.id);
        const why = manifest && prunePartOf(manifest.kind).refuse?.(manifest);
        return why ? `${set}/${e.id} ${why}; nothing of ${set} was deleted` : undefined;
      })
      .find((why) => why !== undefined);
    if (refused) {
      if (options.sets !== '*') throw new UserError(`set: ${refused}`);
      options.logger.warn(refused);
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
    const outside: OutsideReport = {
      snapshots: { deleted: [], kept: [] },
      veleroCopies: { deleted: [], missing: [], left: [] },
    };
    if (!options.dryRun && (doomed.length > 0 || doomedOrphans.length > 0)) {
      // Some kinds keep data outside the catalog (EBS snapshots, Velero copies): read where
      // before the manifests go.
      const found = await outsideOf(catalog, set, doomed, manifests);
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
      // Each kind removes what its deleted backups had, into the report field it names.
      const context = {
        set,
        logger: options.logger,
        openStorage: options.openVeleroStorage ?? ((url: string) => openStorage(url)),
      };
      for (const part of new Set(found.map((f) => f.part))) {
        const refs = found.filter((f) => f.part === part && !keptByLock.has(f.id));
        if (refs.length) Object.assign(outside, { [part.report]: await part.remove(refs, context) });
      }
    }
    report.sets.push({
      set,
      plan,
      deletedBackups: options.dryRun ? [] : doomed.filter((e) => !keptByLock.has(e.id)).map((e) => e.id),
      deletedOrphans: options.dryRun ? [] : doomedOrphans.map((e) => e.id),
      keptByLock: [...keptByLock],
      lockedObjects,
      snapshots: outside.snapshots,
      veleroCopies: outside.veleroCopies,
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

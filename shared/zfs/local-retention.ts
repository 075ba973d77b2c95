/**
 * Local retention of a snapshot-zfs set: the snapshots stay on the host, so the policy is
 * applied there. A backup of the set is every snapshot carrying its `lifeboat:set` and one
 * `lifeboat:backup-id` (user properties set when it was taken), below the given datasets.
 *
 * - The restic policy (shared/retention/plan.ts, the same planner prune-retention uses) is
 *   applied to these backups, timed by their backup ids (so `now` injection works like in the
 *   other engines; an id that does not parse falls back to the snapshot's creation).
 * - Kept backups get the hold `lifeboat` (when asked); dropped ones lose it, then are
 *   destroyed one snapshot at a time. A snapshot still held after that is held by someone
 *   else: it stays, and is reported. Snapshots without this set's property are never looked
 *   at again after listing; the newest backup is always kept (the planner's safety rule).
 * - max-pool-usage: after the policy, while a pool's capacity (read with settle: zfs-fuse
 *   shows freed space late) is above the limit, the oldest kept backup with snapshots in that
 *   pool that no safety rule protects (newest, min-keep) is destroyed. When the limit cannot
 *   be met, that is a warning, not a failure.
 */
import { parseBackupId } from '../catalog/ids.ts';
import type { Logger } from '../pipeline/progress.ts';
import {
  type BackupFacts,
  planRetention,
  type RetentionPlan,
  type RetentionPolicy,
} from '../retention/plan.ts';
import { lifeboatProperties, type Zfs, type ZfsEntry } from './zfs.ts';

/** The hold tag Lifeboat puts on the snapshots a set's policy keeps. */
export const holdTag = 'lifeboat';

const [setProperty, idProperty] = lifeboatProperties as [string, string];

/** One backup of the set on this host: its snapshots, oldest dataset first. */
export interface LocalBackup {
  id: string;
  time: Date;
  snapshots: ZfsEntry[];
  /** Sum of the snapshots' `used`: what destroying them frees (about). */
  bytes: number;
}

export interface LocalRetentionOptions {
  zfs: Zfs;
  set: string;
  /** The datasets the set snapshots (their trees are searched). */
  datasets: string[];
  /** Without one, every backup is kept by policy (max-pool-usage may still delete). */
  policy?: RetentionPolicy;
  /** Percent of the pool allocated above which the oldest unprotected backups go. */
  maxPoolUsage?: number;
  hold: boolean;
  dryRun: boolean;
  logger: Logger;
  now: Date;
  /** A backup that is not in the listing yet (a dry run's would-be snapshot). */
  pretend?: LocalBackup;
}

export interface LocalDecision {
  id: string;
  time: string;
  bytes: number;
  keep: boolean;
  reasons: string[];
  deleteReason?: 'policy' | 'pool-usage';
  /** Snapshots of it that could not be destroyed (held by someone else, clones, busy). */
  notDestroyed: { snapshot: string; reason: string }[];
  snapshots: string[];
}

export interface LocalRetentionReport {
  backups: LocalDecision[];
  destroyed: string[];
  held: string[];
  released: string[];
  pools: { pool: string; capacity: number; limit?: number; met: boolean }[];
  warnings: string[];
  dryRun: boolean;
}

/** The backups of `set` found below `datasets`, newest first. */
export async function listLocalBackups(zfs: Zfs, set: string, datasets: string[]): Promise<LocalBackup[]> {
  const byId = new Map<string, ZfsEntry[]>();
  const seen = new Set<string>();
  for (const dataset of datasets) {
    for (const s of await zfs.snapshots(dataset)) {
      if (seen.has(s.name)) continue;
      seen.add(s.name);
      if (s.properties[setProperty] !== set) continue;
      const id = s.properties[idProperty];
      if (!id) continue;
      if (!byId.has(id)) byId.set(id, []);
      byId.get(id)!.push(s);
    }
  }
  const backups = [...byId].map(([id, snapshots]) => ({
    id,
    time: parseBackupId(id)?.time ?? new Date(Math.min(...snapshots.map((s) => s.creation)) * 1000),
    snapshots,
    bytes: snapshots.reduce((sum, s) => sum + s.used, 0),
  }));
  return backups.sort((a, b) => b.time.getTime() - a.time.getTime() || (a.id < b.id ? 1 : -1));
}

const poolOf = (name: string) => name.split('/')[0]!.split('@')[0]!;

/** Applies the policy and max-pool-usage to the set's local snapshots (see the file comment). */
export async function applyLocalRetention(options: LocalRetentionOptions): Promise<LocalRetentionReport> {
  const { zfs, logger, dryRun } = options;
  const listed = await listLocalBackups(zfs, options.set, options.datasets);
  const backups = options.pretend ? [options.pretend, ...listed] : listed;
  const facts: BackupFacts[] = backups.map((b) => ({ id: b.id, time: b.time, bytes: b.bytes, tags: [] }));
  const policy: RetentionPolicy = options.policy ?? {
    last: -1,
    tags: [],
    timezone: 'UTC',
    keepVerified: 0,
    minKeep: 1,
    orphanGraceSeconds: 0,
  };
  const plan: RetentionPlan = planRetention(facts, [], { ...policy, keepVerified: 0 }, options.now);
  const byId = new Map(backups.map((b) => [b.id, b]));
  const report: LocalRetentionReport = {
    backups: plan.backups.map((p) => ({
      id: p.id,
      time: p.time,
      bytes: p.bytes,
      keep: p.keep,
      reasons: p.reasons,
      ...(p.keep ? {} : { deleteReason: 'policy' as const }),
      notDestroyed: [],
      snapshots: byId.get(p.id)!.snapshots.map((s) => s.name),
    })),
    destroyed: [],
    held: [],
    released: [],
    pools: [],
    warnings: [],
    dryRun,
  };
  const pretended = (d: LocalDecision) => d.id === options.pretend?.id;

  /** Releases our hold and destroys each snapshot of `decision`; says whether all went. */
  const destroy = async (decision: LocalDecision): Promise<boolean> => {
    if (dryRun || pretended(decision)) return true;
    for (const snapshot of byId.get(decision.id)!.snapshots) {
      if ((await zfs.release(snapshot.name, holdTag).catch(() => 'not-held')) === 'released')
        report.released.push(snapshot.name);
      const result = await zfs.destroySnapshot(snapshot.name);
      if (result.destroyed) report.destroyed.push(snapshot.name);
      else if (result.reason !== 'missing') {
        decision.notDestroyed.push({ snapshot: snapshot.name, reason: result.reason });
        const why =
          result.reason === 'held' ? 'held by someone else (not the lifeboat hold)' : result.message;
        report.warnings.push(`${snapshot.name}: not destroyed: ${why}`);
        logger.warn(`${snapshot.name}: not destroyed: ${why}`);
        // Our hold goes back on what stays, so it is protected like the set's kept snapshots.
        if (options.hold) await zfs.hold(snapshot.name, holdTag).catch(() => {});
      }
    }
    return decision.notDestroyed.length === 0;
  };

  for (const decision of report.backups.filter((d) => !d.keep)) {
    logger.info(
      `${options.set}/${decision.id}: ${dryRun ? 'would destroy' : 'destroying'} (not kept by the policy)`,
    );
    await destroy(decision);
  }
  if (options.hold && !dryRun) {
    for (const decision of report.backups.filter((d) => d.keep && !pretended(d))) {
      for (const snapshot of byId.get(decision.id)!.snapshots) {
        if ((await zfs.hold(snapshot.name, holdTag)) === 'held') report.held.push(snapshot.name);
      }
    }
  }

  if (options.maxPoolUsage !== undefined) {
    const limit = options.maxPoolUsage;
    const pools = [...new Set(options.datasets.map(poolOf))];
    for (const pool of pools) {
      let capacity = (await zfs.capacity(pool, { settle: true })).capacity;
      const tried = new Set<string>();
      while (capacity > limit) {
        // Oldest first; never the newest or min-keep, never one already tried.
        const candidate = [...report.backups]
          .reverse()
          .find(
            (d) =>
              d.keep &&
              !tried.has(d.id) &&
              !d.reasons.includes('newest') &&
              !d.reasons.includes('min-keep') &&
              d.snapshots.some((s) => poolOf(s) === pool),
          );
        if (!candidate) break;
        tried.add(candidate.id);
        logger.info(
          `${pool}: ${capacity}% used, above max-pool-usage ${limit}%: ${dryRun ? 'would destroy' : 'destroying'} ${options.set}/${candidate.id}, the oldest unprotected backup`,
        );
        candidate.keep = false;
        candidate.deleteReason = 'pool-usage';
        candidate.reasons = [];
        const gone = await destroy(candidate);
        if (!gone) {
          candidate.keep = true;
          candidate.reasons = ['held by someone else'];
          delete candidate.deleteReason;
        }
        if (dryRun) break; // Nothing is freed in a dry run: one step of the plan is what it can say.
        capacity = (await zfs.capacity(pool, { settle: true })).capacity;
      }
      const met = capacity <= limit;
      report.pools.push({ pool, capacity, limit, met });
      if (!met && !dryRun) {
        const line = `${pool}: ${capacity}% used, above max-pool-usage ${limit}%, and no snapshot of ${options.set} is left to destroy (the newest, min-keep and snapshots held by others stay; other data fills the pool)`;
        report.warnings.push(line);
        logger.warn(line);
      }
    }
  }
  return report;
}

/**
 * The retention planner: pure, no I/O. restic's `forget` semantics, plus Lifeboat's safety
 * rules and a capacity limit.
 *
 * - Backups are taken newest first (ties broken by id, so that the plan never depends on
 *   listing order). `latest` is the newest backup not in the future.
 * - keep-last N keeps the N newest. keep-hourly/daily/weekly/monthly/yearly N keeps a backup
 *   when its bucket (hour, day, ISO week, month, year in `timezone`) differs from the last
 *   bucket that rule kept, while the rule has slots left; while it still has slots at the
 *   oldest backup, that one is kept too. Rules count independently; one backup may satisfy
 *   several. -1 means no limit.
 * - keep-within D keeps backups newer than latest − D; keep-tagged keeps backups with any of
 *   the tags.
 * - Safety: the newest backup, the newest `keepVerified` backups whose last verification
 *   passed, and the newest `minKeep` backups are always kept.
 * - Capacity: if what is kept still exceeds `maxTotalBytes`, the oldest kept backups that no
 *   safety rule or tag protects are deleted until it fits; the plan says when it cannot.
 * - Orphans (folders without a manifest) older than the grace period are deleted.
 */
import { type BucketRule, bucketOf, bucketRules, localTime } from './calendar.ts';

export interface RetentionPolicy {
  last?: number;
  hourly?: number;
  daily?: number;
  weekly?: number;
  monthly?: number;
  yearly?: number;
  withinSeconds?: number;
  tags: string[];
  timezone: string;
  keepVerified: number;
  minKeep: number;
  maxTotalBytes?: number;
  orphanGraceSeconds: number;
}

export interface BackupFacts {
  id: string;
  time: Date;
  bytes: number;
  tags: string[];
  /** Whether its newest verification passed; undefined when never verified (or not looked up). */
  verified?: boolean;
}

export interface OrphanFacts {
  id: string;
  /** The newest modification time of its objects. */
  modified: Date;
  bytes: number;
}

export interface PlannedBackup {
  id: string;
  time: string;
  bytes: number;
  keep: boolean;
  /** Why it is kept: rule names such as daily, within, verified; empty when deleted. */
  reasons: string[];
  /** Why it is deleted: not kept by the policy, or deleted to meet the capacity limit. */
  deleteReason?: 'policy' | 'capacity';
}

export interface RetentionPlan {
  backups: PlannedBackup[];
  orphans: (OrphanFacts & { delete: boolean; ageSeconds: number })[];
  keptBytes: number;
  freedBytes: number;
  capacity?: { limitBytes: number; met: boolean };
}

const countRules = [['last', 'last'], ...bucketRules.map((r) => [r, r])] as [
  keyof RetentionPolicy,
  'last' | BucketRule,
][];

/** Whether the policy names any rule that keeps backups (an empty policy would delete all). */
export function hasKeepRule(policy: RetentionPolicy): boolean {
  return (
    countRules.some(([key]) => policy[key] !== undefined) ||
    policy.withinSeconds !== undefined ||
    policy.tags.length > 0
  );
}

export function newestFirst(a: { id: string; time: Date }, b: { id: string; time: Date }): number {
  return b.time.getTime() - a.time.getTime() || (a.id < b.id ? 1 : a.id > b.id ? -1 : 0);
}

export function planRetention(
  backups: BackupFacts[],
  orphans: OrphanFacts[],
  policy: RetentionPolicy,
  now: Date,
): RetentionPlan {
  const list = [...backups].sort(newestFirst);
  const reasons = list.map(() => new Set<string>());
  const latest = list.find((b) => b.time.getTime() < now.getTime())?.time ?? now;

  for (const [index, backup] of list.entries()) {
    if (policy.tags.some((t) => backup.tags.includes(t))) reasons[index]!.add('tagged');
    if (
      policy.withinSeconds !== undefined &&
      backup.time.getTime() > latest.getTime() - policy.withinSeconds * 1000
    ) {
      reasons[index]!.add('within');
    }
  }
  for (const [key, rule] of countRules) {
    let count = policy[key] as number | undefined;
    if (count === undefined || count === 0) continue;
    let last: number | undefined;
    for (const [index, backup] of list.entries()) {
      if (count === 0) break;
      const bucket = rule === 'last' ? index : bucketOf(rule, localTime(backup.time, policy.timezone));
      if (bucket !== last || index === list.length - 1) {
        reasons[index]!.add(bucket === last ? `oldest ${rule}` : rule);
        last = bucket;
        if (count > 0) count--;
      }
    }
  }

  // Safety rules, which capacity never overrides.
  const safe = list.map(() => false);
  const protect = (index: number, why: string) => {
    reasons[index]!.add(why);
    safe[index] = true;
  };
  if (list.length > 0) protect(0, 'newest');
  for (let i = 0; i < Math.min(policy.minKeep, list.length); i++) protect(i, 'min-keep');
  let verified = 0;
  for (const [index, backup] of list.entries()) {
    if (verified >= policy.keepVerified) break;
    if (backup.verified) {
      protect(index, 'verified');
      verified++;
    }
  }
  for (const [index, set] of reasons.entries()) if (set.has('tagged')) safe[index] = true;

  const planned: PlannedBackup[] = list.map((b, i) => {
    const keep = reasons[i]!.size > 0;
    return {
      id: b.id,
      time: b.time.toISOString(),
      bytes: b.bytes,
      keep,
      reasons: [...reasons[i]!],
      ...(keep ? {} : { deleteReason: 'policy' as const }),
    };
  });

  let keptBytes = planned.reduce((sum, p) => sum + (p.keep ? p.bytes : 0), 0);
  let capacity: RetentionPlan['capacity'];
  if (policy.maxTotalBytes !== undefined) {
    for (let i = planned.length - 1; i >= 0 && keptBytes > policy.maxTotalBytes; i--) {
      const p = planned[i]!;
      if (!p.keep || safe[i]) continue;
      p.keep = false;
      p.reasons = [];
      p.deleteReason = 'capacity';
      keptBytes -= p.bytes;
    }
    capacity = { limitBytes: policy.maxTotalBytes, met: keptBytes <= policy.maxTotalBytes };
  }

  const plannedOrphans = orphans
    .map((o) => {
      const ageSeconds = Math.max(0, (now.getTime() - o.modified.getTime()) / 1000);
      return { ...o, ageSeconds, delete: ageSeconds > policy.orphanGraceSeconds };
    })
    .sort((a, b) => (a.id < b.id ? -1 : 1));
  const freedBytes =
    planned.reduce((sum, p) => sum + (p.keep ? 0 : p.bytes), 0) +
    plannedOrphans.reduce((sum, o) => sum + (o.delete ? o.bytes : 0), 0);
  return { backups: planned, orphans: plannedOrphans, keptBytes, freedBytes, capacity };
}

/**
 * The retention planner: pure, no I/O. restic's `forget` semantics, plus Lifeboat's safety
 * rules and a capacity limit.
 *
 * - Backups are taken newest first (ties broken by id, sequences as numbers, so that the plan
 *   never depends on listing order). `latest` is the newest backup not ahead of the clock
 *   (more than clockSkewMs after `now`: a runner's clock was ahead when it was taken).
 * - keep-last N keeps the N newest. keep-hourly/daily/weekly/monthly/yearly N keeps a backup
 *   when its bucket (hour, day, ISO week, month, year in `timezone`) differs from the last
 *   bucket that rule kept, while the rule has slots left; while it still has slots at the
 *   oldest backup, that one is kept too. Rules count independently; one backup may satisfy
 *   several. -1 means no limit; 0 (like undefined) means the rule is not given.
 * - keep-within D keeps backups newer than latest − D (calendar arithmetic in `timezone`, as
 *   restic's Go does it). keep-within-hourly/daily/weekly/monthly/yearly D keeps, among the
 *   backups newer than latest − D, the newest of each hour, day, … (and the oldest backup of
 *   the set when it is among them).
 * - keep-tagged keeps backups with any of its tags; keep-tag lists keep backups that carry
 *   every tag of at least one list (restic's --keep-tag).
 * - Safety: the newest backup, the newest `keepVerified` backups whose last verification
 *   passed, and the newest `minKeep` backups are always kept. For these, backups ahead of the
 *   clock count after all the others: such a backup is never "the newest" while another is
 *   not ahead (and when all are, the newest of them is kept, so a set is never emptied).
 * - Capacity: if what is kept still exceeds `maxTotalBytes`, the oldest kept backups that no
 *   safety rule or tag protects are deleted until it fits; the plan says when it cannot.
 * - Locks: a backup whose recorded retention lock has not passed (`lockedUntil`) is kept
 *   ("locked"), by policy and capacity alike: the storage would refuse to delete it.
 * - Orphans (folders without a manifest) older than the grace period are deleted.
 */
import { compareIdsNewestFirst, isAheadOfClock } from '../catalog/ids.ts';
import {
  type BucketRule,
  bucketOf,
  bucketRules,
  type CalendarDuration,
  isZeroDuration,
  localTime,
  minusCalendar,
} from './calendar.ts';

export interface RetentionPolicy {
  last?: number;
  hourly?: number;
  daily?: number;
  weekly?: number;
  monthly?: number;
  yearly?: number;
  /** keep-within: every backup newer than the newest minus this. */
  within?: CalendarDuration;
  /** keep-within-hourly … -yearly: the newest of each bucket among backups within this of the newest. */
  withinHourly?: CalendarDuration;
  withinDaily?: CalendarDuration;
  withinWeekly?: CalendarDuration;
  withinMonthly?: CalendarDuration;
  withinYearly?: CalendarDuration;
  /** Like within, as exact seconds (for programs; the keep-within input gives `within`). */
  withinSeconds?: number;
  /** keep-tagged: backups with any of these tags. */
  tags: string[];
  /** keep-tag: backups with every tag of at least one of these lists. */
  tagLists?: string[][];
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
  /** The end of its retention lock (from its manifest), when that is after now. */
  lockedUntil?: Date;
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
  /** Why it is kept: rule names such as daily, within, within-daily, verified; empty when deleted. */
  reasons: string[];
  /** Why it is deleted: not kept by the policy, or deleted to meet the capacity limit. */
  deleteReason?: 'policy' | 'capacity';
  /** Its time is ahead of the clock (more than clockSkewMs): not taken as the newest backup. */
  aheadOfClock: boolean;
  /** Kept by its retention lock, which ends then (reason 'locked'). */
  lockedUntil?: string;
}

export interface RetentionPlan {
  backups: PlannedBackup[];
  orphans: (OrphanFacts & { delete: boolean; ageSeconds: number })[];
  keptBytes: number;
  freedBytes: number;
  capacity?: { limitBytes: number; met: boolean };
  /** The time keep-within* counts back from: the newest backup not ahead of the clock (else now). */
  latest: string;
}

const countRules = [['last', 'last'], ...bucketRules.map((r) => [r, r])] as [
  keyof RetentionPolicy,
  'last' | BucketRule,
][];

/** The policy field of each keep-within-<bucket> rule. */
export const withinRules = {
  hourly: 'withinHourly',
  daily: 'withinDaily',
  weekly: 'withinWeekly',
  monthly: 'withinMonthly',
  yearly: 'withinYearly',
} as const satisfies Record<BucketRule, keyof RetentionPolicy>;

const given = (d: CalendarDuration | undefined): d is CalendarDuration =>
  d !== undefined && !isZeroDuration(d);

/**
 * Whether the policy names any rule that keeps backups (an empty policy would delete all).
 * As in restic, a count or a duration of 0 is not a rule.
 */
export function hasKeepRule(policy: RetentionPolicy): boolean {
  return (
    countRules.some(([key]) => {
      const n = policy[key] as number | undefined;
      return n !== undefined && n !== 0;
    }) ||
    given(policy.within) ||
    bucketRules.some((rule) => given(policy[withinRules[rule]])) ||
    (policy.withinSeconds ?? 0) > 0 ||
    policy.tags.length > 0 ||
    (policy.tagLists ?? []).some((list) => list.length > 0)
  );
}

/** Newest first: by time, then by id (sequences compared as numbers). */
export function newestFirst(a: { id: string; time: Date }, b: { id: string; time: Date }): number {
  return b.time.getTime() - a.time.getTime() || compareIdsNewestFirst(a.id, b.id);
}

export function planRetention(
  backups: BackupFacts[],
  orphans: OrphanFacts[],
  policy: RetentionPolicy,
  now: Date,
): RetentionPlan {
  const list = [...backups].sort(newestFirst);
  const reasons = list.map(() => new Set<string>());
  const ahead = list.map((b) => isAheadOfClock(b.time, now));
  const latest = list.find((_, i) => !ahead[i])?.time ?? now;
  const zone = policy.timezone;
  const tagLists = [...policy.tags.map((t) => [t]), ...(policy.tagLists ?? []).filter((l) => l.length)];
  // Local calendar fields, once per backup (time zone conversion is the costly part).
  const local = list.map((b) => localTime(b.time, zone));

  const within = given(policy.within) ? minusCalendar(latest, policy.within, zone).getTime() : undefined;
  const withinExact =
    (policy.withinSeconds ?? 0) > 0 ? latest.getTime() - policy.withinSeconds! * 1000 : undefined;
  for (const [index, backup] of list.entries()) {
    const time = backup.time.getTime();
    if (tagLists.some((l) => l.every((t) => backup.tags.includes(t)))) reasons[index]!.add('tagged');
    if ((within !== undefined && time > within) || (withinExact !== undefined && time > withinExact))
      reasons[index]!.add('within');
  }
  for (const [key, rule] of countRules) {
    let count = policy[key] as number | undefined;
    if (count === undefined || count === 0) continue;
    let last: number | undefined;
    for (const index of list.keys()) {
      if (count === 0) break;
      const bucket = rule === 'last' ? index : bucketOf(rule, local[index]!);
      if (bucket !== last || index === list.length - 1) {
        reasons[index]!.add(bucket === last ? `oldest ${rule}` : rule);
        last = bucket;
        if (count > 0) count--;
      }
    }
  }
  for (const rule of bucketRules) {
    const duration = policy[withinRules[rule]];
    if (!given(duration)) continue;
    const since = minusCalendar(latest, duration, zone).getTime();
    let last: number | undefined;
    for (const [index, backup] of list.entries()) {
      if (backup.time.getTime() <= since) continue;
      const bucket = bucketOf(rule, local[index]!);
      if (bucket !== last || index === list.length - 1) {
        reasons[index]!.add(bucket === last ? `oldest within-${rule}` : `within-${rule}`);
        last = bucket;
      }
    }
  }

  // Safety rules, which capacity never overrides. Backups ahead of the clock come last here.
  const safe = list.map(() => false);
  const protect = (index: number, why: string) => {
    reasons[index]!.add(why);
    safe[index] = true;
  };
  const order = [...list.keys()].sort((a, b) => Number(ahead[a]) - Number(ahead[b]) || a - b);
  if (order.length > 0) protect(order[0]!, 'newest');
  for (const index of order.slice(0, policy.minKeep)) protect(index, 'min-keep');
  for (const index of order.filter((i) => list[i]!.verified).slice(0, policy.keepVerified))
    protect(index, 'verified');
  for (const [index, set] of reasons.entries()) if (set.has('tagged')) safe[index] = true;
  for (const [index, backup] of list.entries())
    if (backup.lockedUntil && backup.lockedUntil > now) protect(index, 'locked');

  const planned: PlannedBackup[] = list.map((b, i) => {
    const keep = reasons[i]!.size > 0;
    return {
      id: b.id,
      time: b.time.toISOString(),
      bytes: b.bytes,
      keep,
      reasons: [...reasons[i]!],
      ...(keep ? {} : { deleteReason: 'policy' as const }),
      aheadOfClock: ahead[i]!,
      ...(b.lockedUntil && b.lockedUntil > now ? { lockedUntil: b.lockedUntil.toISOString() } : {}),
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
  return {
    backups: planned,
    orphans: plannedOrphans,
    keptBytes,
    freedBytes,
    capacity,
    latest: latest.toISOString(),
  };
}

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
 * - Incremental chains: an incremental backup (`parent`) is restored on top of its parent, and
 *   that one on top of its own, down to a full backup. After the rules above, every kept
 *   backup's chain (parent → parent …, those in the set) is kept too, with the reason
 *   `parent of <id>`, naming the newest kept backup whose parent it is (one such reason per
 *   backup). The chain of a backup a safety rule keeps is safe as well. Capacity deletes only
 *   backups that no kept backup needs: when it deletes one, the parents kept for it alone go
 *   with it, and a parent it needed is again a candidate (oldest first, as before). A parent
 *   missing from the set is not the planner's concern (restore reports it).
 * - Orphans (folders without a manifest) older than the grace period are deleted.
 */
import { compareIdsNewestFirst, isAheadOfClock } from '../catalog/ids.ts';
import {
  type BucketRule,
  bucketOf,
  bucketRules,
  type CalendarDuration,
  isZeroDuration,
  type LocalTime,
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
  /** An incremental backup: the id of the backup it applies on top of (its manifest's `parent`). */
  parent?: string;
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
  /**
   * Why it is kept: rule names such as daily, within, within-daily, verified, and `parent of
   * <id>` for the parent of a kept incremental backup; empty when deleted.
   */
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
  // Sets only for backups a rule names (most of a large set is named by none).
  const reasons: (Set<string> | undefined)[] = new Array(list.length);
  const because = (index: number, why: string) => {
    const set = reasons[index];
    if (set) set.add(why);
    else reasons[index] = new Set([why]);
  };
  const ahead = list.map((b) => isAheadOfClock(b.time, now));
  const latest = list.find((_, i) => !ahead[i])?.time ?? now;
  const zone = policy.timezone;
  const tagLists = [...policy.tags.map((t) => [t]), ...(policy.tagLists ?? []).filter((l) => l.length)];
  // Local calendar fields, once per backup and only where a rule looks (time zone conversion
  // is the costly part, and the bucket rules stop once they have their backups).
  const locals: LocalTime[] = new Array(list.length);
  const local = (index: number) => {
    locals[index] ??= localTime(list[index]!.time, zone);
    return locals[index];
  };

  const within = given(policy.within) ? minusCalendar(latest, policy.within, zone).getTime() : undefined;
  const withinExact =
    (policy.withinSeconds ?? 0) > 0 ? latest.getTime() - policy.withinSeconds! * 1000 : undefined;
  for (let index = 0; index < list.length; index++) {
    const backup = list[index]!;
    const time = backup.time.getTime();
    if (tagLists.length > 0 && tagLists.some((l) => l.every((t) => backup.tags.includes(t))))
      because(index, 'tagged');
    if ((within !== undefined && time > within) || (withinExact !== undefined && time > withinExact))
      because(index, 'within');
  }
  for (const [key, rule] of countRules) {
    let count = policy[key] as number | undefined;
    if (count === undefined || count === 0) continue;
    let last: number | undefined;
    for (let index = 0; index < list.length; index++) {
      if (count === 0) break;
      const bucket = rule === 'last' ? index : bucketOf(rule, local(index));
      if (bucket !== last || index === list.length - 1) {
        because(index, bucket === last ? `oldest ${rule}` : rule);
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
    for (let index = 0; index < list.length; index++) {
      if (list[index]!.time.getTime() <= since) break; // newest first: the rest are older still
      const bucket = bucketOf(rule, local(index));
      if (bucket !== last || index === list.length - 1) {
        because(index, bucket === last ? `oldest within-${rule}` : `within-${rule}`);
        last = bucket;
      }
    }
  }

  // Safety rules, which capacity never overrides. Backups ahead of the clock come last here.
  const safe = list.map(() => false);
  const protect = (index: number, why: string) => {
    because(index, why);
    safe[index] = true;
  };
  // Newest first, those ahead of the clock last (stable: the list's own order otherwise).
  const order = [...list.keys()];
  if (ahead.some(Boolean)) order.sort((a, b) => Number(ahead[a]) - Number(ahead[b]) || a - b);
  if (order.length > 0) protect(order[0]!, 'newest');
  for (const index of order.slice(0, policy.minKeep)) protect(index, 'min-keep');
  for (const index of order.filter((i) => list[i]!.verified).slice(0, policy.keepVerified))
    protect(index, 'verified');
  for (let index = 0; index < list.length; index++) {
    if (reasons[index]?.has('tagged')) safe[index] = true;
    const until = list[index]!.lockedUntil;
    if (until && until > now) protect(index, 'locked');
  }

  // Incremental chains: each backup's parent in `list` (-1: none, or not in the set), and the
  // backups each one needs, nearest first (a cycle a hand-made manifest makes ends the walk).
  const incremental = list.some((b) => b.parent !== undefined);
  const indexOf = incremental ? new Map(list.map((b, i) => [b.id, i])) : undefined;
  const parentOf = list.map((b) => (b.parent === undefined ? -1 : (indexOf!.get(b.parent) ?? -1)));
  const none: number[] = [];
  const chains = list.map((_, index) => {
    if (parentOf[index]! < 0) return none;
    const chain: number[] = [];
    const seen = new Set([index]);
    for (let p = parentOf[index]!; p >= 0 && !seen.has(p); p = parentOf[p]!) {
      seen.add(p);
      chain.push(p);
    }
    return chain;
  });
  for (let index = 0; index < list.length; index++)
    if (safe[index]) for (const p of chains[index]!) safe[p] = true;
  // A backup is kept by a rule of its own (`ruled`), or because `needed` kept ones apply on it.
  const ruled = Array.from(reasons, (r) => r !== undefined);
  const needed = list.map(() => 0);
  for (let index = 0; index < list.length; index++)
    if (ruled[index]) for (const p of chains[index]!) needed[p]!++;

  const planned: PlannedBackup[] = list.map((b, i) => {
    const keep = ruled[i]! || needed[i]! > 0;
    const p: PlannedBackup = {
      id: b.id,
      time: b.time.toISOString(),
      bytes: b.bytes,
      keep,
      reasons: [],
      aheadOfClock: ahead[i]!,
    };
    if (!keep) p.deleteReason = 'policy';
    if (b.lockedUntil && b.lockedUntil > now) p.lockedUntil = b.lockedUntil.toISOString();
    return p;
  });

  let keptBytes = planned.reduce((sum, p) => sum + (p.keep ? p.bytes : 0), 0);
  let capacity: RetentionPlan['capacity'];
  if (policy.maxTotalBytes !== undefined) {
    const drop = (index: number) => {
      const p = planned[index]!;
      p.keep = false;
      p.deleteReason = 'capacity';
      keptBytes -= p.bytes;
    };
    // Oldest first; a backup a kept one needs waits until that one goes (or stays).
    let i = planned.length - 1;
    while (i >= 0 && keptBytes > policy.maxTotalBytes) {
      if (!ruled[i] || safe[i] || needed[i]! > 0) {
        i--;
        continue;
      }
      ruled[i] = false;
      drop(i);
      let next = i - 1;
      for (const p of chains[i]!) {
        if (--needed[p]! > 0) continue;
        if (!ruled[p]) drop(p);
        else if (!safe[p]) next = Math.max(next, p);
      }
      i = next;
    }
    capacity = { limitBytes: policy.maxTotalBytes, met: keptBytes <= policy.maxTotalBytes };
  }
  // The reasons, now that what is kept is known: a parent names its newest kept child.
  const parentReason: (string | undefined)[] = list.map(() => undefined);
  for (let index = 0; index < list.length; index++) {
    const p = parentOf[index]!;
    if (p >= 0 && p !== index && planned[index]!.keep && planned[p]!.keep && parentReason[p] === undefined)
      parentReason[p] = `parent of ${list[index]!.id}`;
  }
  for (let index = 0; index < planned.length; index++) {
    const p = planned[index]!;
    if (!p.keep) continue;
    const parent = parentReason[index];
    p.reasons = [...((ruled[index] && reasons[index]) || []), ...(parent ? [parent] : [])];
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

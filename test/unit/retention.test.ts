/**
 * The retention planner: worked examples (the README's), then properties on random backup
 * histories, including a comparison with a plain reference model of the rules.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { backupIdWithSequence, baseBackupId, clockSkewMs } from '../../shared/catalog/ids.ts';
import {
  type BucketRule,
  bucketOf,
  bucketRules,
  type CalendarDuration,
  isoWeek,
  localTime,
  minusCalendar,
} from '../../shared/retention/calendar.ts';
import {
  type BackupFacts,
  hasKeepRule,
  newestFirst,
  planRetention,
  type RetentionPolicy,
  withinRules,
} from '../../shared/retention/plan.ts';

const base: RetentionPolicy = {
  tags: [],
  timezone: 'UTC',
  keepVerified: 0,
  minKeep: 0,
  orphanGraceSeconds: 86_400,
};
const at = (iso: string, extra: Partial<BackupFacts> = {}): BackupFacts => ({
  id: iso,
  time: new Date(iso),
  bytes: 100,
  tags: [],
  ...extra,
});
const kept = (plan: ReturnType<typeof planRetention>) => plan.backups.filter((b) => b.keep).map((b) => b.id);
const span = (d: Partial<CalendarDuration>): CalendarDuration => ({
  years: 0,
  months: 0,
  days: 0,
  hours: 0,
  ...d,
});

/** Nightly backups at 03:15 UTC for `days` days up to 2026-11-21. */
function nightly(days: number): BackupFacts[] {
  return Array.from({ length: days }, (_, i) =>
    at(new Date(Date.UTC(2026, 10, 21 - i, 3, 15)).toISOString()),
  );
}

test('README example: 7 daily + 4 weekly over 60 nightly backups keeps 7 days and 4 more Sundays', () => {
  const plan = planRetention(
    nightly(60),
    [],
    { ...base, daily: 7, weekly: 4 },
    new Date('2026-11-21T12:00:00Z'),
  );
  assert.deepEqual(kept(plan), [
    '2026-11-21T03:15:00.000Z', // Saturday: daily, and weekly (week 47)
    '2026-11-20T03:15:00.000Z',
    '2026-11-19T03:15:00.000Z',
    '2026-11-18T03:15:00.000Z',
    '2026-11-17T03:15:00.000Z',
    '2026-11-16T03:15:00.000Z', // Monday: daily
    '2026-11-15T03:15:00.000Z', // Sunday: daily, and weekly (week 46)
    '2026-11-08T03:15:00.000Z', // weekly (week 45)
    '2026-11-01T03:15:00.000Z', // weekly (week 44)
  ]);
  assert.deepEqual(plan.backups[0]!.reasons.sort(), ['daily', 'newest', 'weekly']);
});

test('README example: keep-within 2d is measured from the newest backup, not from now', () => {
  const plan = planRetention(
    nightly(10),
    [],
    { ...base, within: span({ days: 2 }) },
    new Date('2027-06-01T00:00:00Z'),
  );
  assert.deepEqual(kept(plan), ['2026-11-21T03:15:00.000Z', '2026-11-20T03:15:00.000Z']);
});

test('README example: while a rule has slots left, the oldest backup is kept', () => {
  const plan = planRetention(nightly(3), [], { ...base, monthly: 6 }, new Date('2026-11-22T00:00:00Z'));
  assert.deepEqual(kept(plan), ['2026-11-21T03:15:00.000Z', '2026-11-19T03:15:00.000Z']);
  assert.deepEqual(plan.backups[2]!.reasons, ['oldest monthly']);
});

test('README example: safety rules and capacity', () => {
  const history = nightly(10).map((b, i) => ({ ...b, bytes: 10, verified: i === 6 }));
  history[8]!.tags = ['before-upgrade'];
  const plan = planRetention(
    history,
    [],
    { ...base, last: 5, tags: ['before-upgrade'], keepVerified: 1, minKeep: 2, maxTotalBytes: 40 },
    new Date('2026-11-22T00:00:00Z'),
  );
  const decisions = Object.fromEntries(
    plan.backups.map((b) => [b.id.slice(0, 10), b.keep ? b.reasons.sort().join('+') : b.deleteReason]),
  );
  assert.deepEqual(decisions, {
    '2026-11-21': 'last+min-keep+newest',
    '2026-11-20': 'last+min-keep',
    '2026-11-19': 'capacity',
    '2026-11-18': 'capacity',
    '2026-11-17': 'capacity',
    '2026-11-16': 'policy',
    '2026-11-15': 'verified',
    '2026-11-14': 'policy',
    '2026-11-13': 'tagged',
    '2026-11-12': 'policy',
  });
  assert.deepEqual(plan.capacity, { limitBytes: 40, met: true });
  const tight = planRetention(
    history,
    [],
    { ...base, last: 5, tags: ['before-upgrade'], keepVerified: 1, minKeep: 2, maxTotalBytes: 15 },
    new Date('2026-11-22T00:00:00Z'),
  );
  assert.deepEqual(tight.capacity, { limitBytes: 15, met: false });
  assert.equal(tight.keptBytes, 40);
});

test('orphans are deleted only after the grace period', () => {
  const now = new Date('2026-11-21T12:00:00Z');
  const plan = planRetention(
    [],
    [
      { id: 'old', modified: new Date('2026-11-19T12:00:00Z'), bytes: 5 },
      { id: 'uploading', modified: new Date('2026-11-21T11:00:00Z'), bytes: 7 },
    ],
    { ...base, last: 1 },
    now,
  );
  assert.deepEqual(
    plan.orphans.map((o) => [o.id, o.delete]),
    [
      ['old', true],
      ['uploading', false],
    ],
  );
  assert.equal(plan.freedBytes, 5);
});

test("keep-within 1m is restic's month: 40 nightly backups keep the last month, not one backup", () => {
  const plan = planRetention(
    nightly(40),
    [],
    { ...base, within: span({ months: 1 }) },
    new Date('2026-11-21T12:00:00Z'),
  );
  // Newer than 2026-10-21 03:15 (the newest minus one month): 10-22 … 11-21.
  assert.equal(kept(plan).length, 31);
  assert.equal(kept(plan).at(-1), '2026-10-22T03:15:00.000Z');
  assert.ok(plan.backups.filter((b) => b.keep).every((b) => b.reasons.includes('within')));
});

test('keep-within 1y and combined durations use calendar arithmetic from the newest backup', () => {
  const yearly = Array.from({ length: 4 }, (_, i) => at(`${2026 - i}-11-21T03:15:00.000Z`));
  const plan = planRetention(
    yearly,
    [],
    { ...base, within: span({ years: 2 }) },
    new Date('2027-01-01T00:00:00Z'),
  );
  // Exactly two years before the newest is not newer than it: restic compares with After.
  assert.deepEqual(kept(plan), ['2026-11-21T03:15:00.000Z', '2025-11-21T03:15:00.000Z']);
  const combined = planRetention(
    [at('2026-11-21T03:15:00.000Z'), at('2024-06-14T00:16:00.000Z'), at('2024-06-14T00:15:00.000Z')],
    [],
    { ...base, within: span({ years: 2, months: 5, days: 7, hours: 3 }) },
    new Date('2027-01-01T00:00:00Z'),
  );
  assert.deepEqual(kept(combined), ['2026-11-21T03:15:00.000Z', '2024-06-14T00:16:00.000Z']);
});

test('a count of 0 is not a rule, as in restic: keep-daily 0 alone is an empty policy', () => {
  assert.equal(hasKeepRule({ ...base, daily: 0 }), false);
  assert.equal(hasKeepRule({ ...base, last: 0, within: span({}) }), false);
  assert.equal(hasKeepRule({ ...base, daily: 0, weekly: 1 }), true);
  assert.equal(hasKeepRule({ ...base, withinDaily: span({ days: 1 }) }), true);
  assert.equal(hasKeepRule({ ...base, tagLists: [['a', 'b']] }), true);
});

test('sequences compare as numbers: of 11 backups in one minute the newest is -11, not -9', () => {
  const minute = new Date('2026-11-21T03:15:00Z');
  const ids = Array.from({ length: 11 }, (_, i) =>
    i === 0 ? '2026-11-21-0315-backup-full' : `2026-11-21-0315-backup-full-${i + 1}`,
  );
  const facts = ids.map((id) => ({ id, time: minute, bytes: 1, tags: [] }));
  const plan = planRetention(facts, [], { ...base, last: 1 }, new Date('2026-11-22T00:00:00Z'));
  assert.deepEqual(kept(plan), ['2026-11-21-0315-backup-full-11']);
  assert.deepEqual(
    plan.backups.map((b) => b.id),
    [...ids].reverse(),
  );
});

test('a backup from the future is not the newest: the real newest is kept and keep-within counts from it', () => {
  const now = new Date('2026-11-21T12:00:00Z');
  const history = [
    at('2027-11-21T03:15:00.000Z'), // a runner whose clock was a year ahead
    ...nightly(5),
  ];
  const plan = planRetention(history, [], { ...base, tags: ['pinned'] }, now);
  assert.deepEqual(kept(plan), ['2026-11-21T03:15:00.000Z']);
  assert.deepEqual(plan.backups[1]!.reasons, ['newest']);
  assert.equal(plan.backups[0]!.aheadOfClock, true);
  assert.equal(plan.backups[0]!.keep, false, 'nothing keeps the future backup: the newest rule does not');
  assert.equal(plan.latest, '2026-11-21T03:15:00.000Z');
  // keep-within measures from the real newest; the future backup is within, as in restic.
  const within = planRetention(history, [], { ...base, within: span({ days: 2 }) }, now);
  assert.deepEqual(kept(within), [
    '2027-11-21T03:15:00.000Z',
    '2026-11-21T03:15:00.000Z',
    '2026-11-20T03:15:00.000Z',
  ]);
  // min-keep counts the real backups first.
  const minKeep = planRetention(history, [], { ...base, tags: ['pinned'], minKeep: 2 }, now);
  assert.deepEqual(kept(minKeep), ['2026-11-21T03:15:00.000Z', '2026-11-20T03:15:00.000Z']);
  // Within the skew it is the newest (a clock a little ahead is normal).
  const skewed = new Date(now.getTime() + clockSkewMs - 60_000);
  const close = planRetention([at(skewed.toISOString()), ...nightly(2)], [], { ...base, tags: ['x'] }, now);
  assert.deepEqual(kept(close), [skewed.toISOString()]);
  // When every backup is ahead of the clock, the newest of them is still kept.
  const allAhead = planRetention(
    [at('2027-11-21T03:15:00.000Z'), at('2027-11-20T03:15:00.000Z')],
    [],
    { ...base, tags: ['x'] },
    now,
  );
  assert.deepEqual(kept(allAhead), ['2027-11-21T03:15:00.000Z']);
});

test("keep-within-daily keeps the newest of each day within the duration of the newest (restic's rule)", () => {
  // Two backups a day, 03:15 and 15:15, for ten days up to 11-21.
  const history = nightly(10).flatMap((b) => [
    at(new Date(b.time.getTime() + 12 * 3_600_000).toISOString()),
    b,
  ]);
  const plan = planRetention(
    history,
    [],
    { ...base, withinDaily: span({ days: 3 }) },
    new Date('2026-11-22T00:00:00Z'),
  );
  // Newer than 11-18 15:15: the 15:15 of 11-21, 11-20 and 11-19 (not 11-18 15:15 itself).
  assert.deepEqual(kept(plan), [
    '2026-11-21T15:15:00.000Z',
    '2026-11-20T15:15:00.000Z',
    '2026-11-19T15:15:00.000Z',
  ]);
  assert.deepEqual(plan.backups[0]!.reasons.sort(), ['newest', 'within-daily']);
  // The oldest backup of the set is kept when it is within, as restic does.
  const short = planRetention(
    history.slice(0, 2),
    [],
    { ...base, withinDaily: span({ days: 3 }) },
    new Date('2026-11-22T00:00:00Z'),
  );
  assert.deepEqual(
    short.backups.map((b) => [b.id, b.reasons]),
    [
      ['2026-11-21T15:15:00.000Z', ['within-daily', 'newest']],
      ['2026-11-21T03:15:00.000Z', ['oldest within-daily']],
    ],
  );
});

test('keep-tag lists: every tag of one list (AND), any of the lists (OR); keep-tagged: any tag', () => {
  const history = [
    at('2026-11-21T03:15:00.000Z'),
    at('2026-11-20T03:15:00.000Z', { tags: ['foo', 'bar'] }),
    at('2026-11-19T03:15:00.000Z', { tags: ['foo'] }),
    at('2026-11-18T03:15:00.000Z', { tags: ['bar'] }),
    at('2026-11-17T03:15:00.000Z', { tags: ['baz'] }),
  ];
  const now = new Date('2026-11-22T00:00:00Z');
  const both = planRetention(history, [], { ...base, tagLists: [['foo', 'bar']] }, now);
  assert.deepEqual(kept(both), ['2026-11-21T03:15:00.000Z', '2026-11-20T03:15:00.000Z']);
  const either = planRetention(history, [], { ...base, tagLists: [['foo', 'bar'], ['baz']] }, now);
  assert.deepEqual(kept(either), [
    '2026-11-21T03:15:00.000Z',
    '2026-11-20T03:15:00.000Z',
    '2026-11-17T03:15:00.000Z',
  ]);
  const any = planRetention(history, [], { ...base, tags: ['foo', 'bar'] }, now);
  assert.deepEqual(kept(any), [
    '2026-11-21T03:15:00.000Z',
    '2026-11-20T03:15:00.000Z',
    '2026-11-19T03:15:00.000Z',
    '2026-11-18T03:15:00.000Z',
  ]);
  // Tagged backups are pinned: capacity does not delete them.
  const tight = planRetention(history, [], { ...base, tagLists: [['foo', 'bar']], maxTotalBytes: 1 }, now);
  assert.deepEqual(kept(tight), ['2026-11-21T03:15:00.000Z', '2026-11-20T03:15:00.000Z']);
});

test('calendar arithmetic as Go does it: months normalize, days keep the wall clock across DST', () => {
  const minus = (iso: string, d: Partial<CalendarDuration>, zone = 'UTC') =>
    minusCalendar(new Date(iso), span(d), zone).toISOString();
  assert.equal(minus('2026-03-31T03:15:00Z', { months: 1 }), '2026-03-03T03:15:00.000Z'); // 31 February
  assert.equal(minus('2028-02-29T03:15:00Z', { years: 1 }), '2027-03-01T03:15:00.000Z');
  assert.equal(
    minus('2026-11-21T03:15:00Z', { years: 2, months: 5, days: 7, hours: 3 }),
    '2024-06-14T00:15:00.000Z',
  );
  // Berlin, the night the clocks go forward: one day back is 23 hours back, 03:15 local both times.
  assert.equal(minus('2026-03-29T01:15:00Z', { days: 1 }, 'Europe/Berlin'), '2026-03-28T02:15:00.000Z');
  // Hours are elapsed time, after the calendar part.
  assert.equal(minus('2026-03-29T01:15:00Z', { hours: 24 }, 'Europe/Berlin'), '2026-03-28T01:15:00.000Z');
  assert.equal(minus('2026-11-21T03:15:00Z', { years: 9999 }), '-007973-11-21T03:15:00.000Z');
  assert.ok(!Number.isNaN(minusCalendar(new Date(), span({ years: 1_000_000 }), 'UTC').getTime()));
});

test('calendar: ISO weeks and local time across a DST change', () => {
  assert.deepEqual(isoWeek(2026, 1, 1), { year: 2026, week: 1 });
  assert.deepEqual(isoWeek(2027, 1, 1), { year: 2026, week: 53 });
  assert.deepEqual(isoWeek(2024, 12, 30), { year: 2025, week: 1 });
  assert.deepEqual(localTime(new Date('2026-10-25T00:30:00Z'), 'Europe/Berlin'), {
    year: 2026,
    month: 10,
    day: 25,
    hour: 2,
  });
  assert.deepEqual(localTime(new Date('2026-10-25T01:30:00Z'), 'Europe/Berlin'), {
    year: 2026,
    month: 10,
    day: 25,
    hour: 2,
  });
});

// ---- properties on random histories ----

function random(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const zones = ['UTC', 'Europe/Berlin', 'America/New_York', 'Australia/Lord_Howe'];

function randomCase(seed: number) {
  const r = random(seed);
  const n = Math.floor(r() * 60);
  let t = Date.UTC(2026, 2, 20); // spans the March and October DST changes
  const backups: BackupFacts[] = [];
  const tagPool = ['pin', 'foo', 'bar'];
  for (let i = 0; i < n; i++) {
    const gap =
      r() < 0.2 ? 0 : r() < 0.5 ? r() * 3_600_000 : r() < 0.8 ? r() * 86_400_000 * 2 : r() * 86_400_000 * 40;
    t += Math.floor(gap / 60_000) * 60_000;
    backups.push({
      // Real ids, so that ties in one minute are broken by sequence (-2 … -12).
      id: backupIdWithSequence(baseBackupId(new Date(t), 'full'), i + 2),
      time: new Date(t),
      bytes: 1 + Math.floor(r() * 50),
      tags: tagPool.filter(() => r() < 0.15),
      verified: r() < 0.3 ? true : r() < 0.2 ? false : undefined,
    });
  }
  const count = () => (r() < 0.5 ? undefined : Math.floor(r() * 8) - 1);
  const duration = () =>
    r() < 0.7
      ? undefined
      : span({
          years: r() < 0.1 ? 1 : 0,
          months: r() < 0.3 ? Math.floor(r() * 3) : 0,
          days: Math.floor(r() * 10),
          hours: r() < 0.5 ? Math.floor(r() * 30) : 0,
        });
  const policy: RetentionPolicy = {
    last: count(),
    hourly: count(),
    daily: count(),
    weekly: count(),
    monthly: count(),
    yearly: count(),
    within: duration(),
    withinHourly: duration(),
    withinDaily: duration(),
    withinWeekly: duration(),
    withinMonthly: duration(),
    withinYearly: duration(),
    tags: r() < 0.3 ? ['pin'] : [],
    tagLists: r() < 0.3 ? [['foo', 'bar'], ...(r() < 0.5 ? [['pin']] : [])] : [],
    timezone: zones[Math.floor(r() * zones.length)]!,
    keepVerified: Math.floor(r() * 3),
    minKeep: Math.floor(r() * 3),
    maxTotalBytes: r() < 0.3 ? Math.floor(r() * 400) : undefined,
    orphanGraceSeconds: 86_400,
  };
  // Sometimes the newest backups lie in the future (a runner's clock ahead), sometimes just
  // within the allowed skew.
  const now = new Date(
    t + (r() < 0.2 ? -86_400_000 * (1 + r() * 5) : r() < 0.1 ? -clockSkewMs + 60_000 : 3_600_000),
  );
  return { backups, policy, now, shuffle: (list: BackupFacts[]) => [...list].sort(() => r() - 0.5) };
}

/** The rules written plainly: group by bucket, take the newest of the N newest buckets. */
function reference(backups: BackupFacts[], p: RetentionPolicy, now: Date): Set<string> {
  const list = [...backups].sort(
    (a, b) =>
      b.time.getTime() - a.time.getTime() ||
      Number(/-(\d+)$/.exec(b.id)![1]) - Number(/-(\d+)$/.exec(a.id)![1]),
  );
  const keep = new Set<string>();
  const ahead = (b: BackupFacts) => b.time.getTime() - now.getTime() > 5 * 60_000;
  const latest = list.find((b) => !ahead(b))?.time ?? now;
  const bucketFn = (rule: BucketRule) => (b: BackupFacts) => bucketOf(rule, localTime(b.time, p.timezone));
  const tagged = (b: BackupFacts) =>
    p.tags.some((t) => b.tags.includes(t)) ||
    (p.tagLists ?? []).some((l) => l.every((t) => b.tags.includes(t)));
  const isWithin = (b: BackupFacts, d: CalendarDuration) =>
    b.time.getTime() > minusCalendar(latest, d, p.timezone).getTime();
  const newestOfEach = (candidates: BackupFacts[], bucket: (b: BackupFacts, i: number) => number) => {
    const groups = new Map<number, BackupFacts[]>();
    for (const [i, b] of candidates.entries())
      groups.set(bucket(b, i), [...(groups.get(bucket(b, i)) ?? []), b]);
    return [...groups.values()];
  };
  for (const b of list) {
    if (tagged(b)) keep.add(b.id);
    if (p.within && Object.values(p.within).some((v) => v !== 0) && isWithin(b, p.within)) keep.add(b.id);
  }
  const rules: [number | undefined, (b: BackupFacts, i: number) => number][] = [
    [p.last, (_b, i) => i],
    ...bucketRules.map(
      (rule) => [p[rule], bucketFn(rule)] as [number | undefined, (b: BackupFacts) => number],
    ),
  ];
  for (const [n, bucket] of rules) {
    if (!n) continue;
    const ordered = newestOfEach(list, bucket);
    for (const group of n === -1 ? ordered : ordered.slice(0, n)) keep.add(group[0]!.id);
    if (list.length && (n === -1 || ordered.length < n)) keep.add(list.at(-1)!.id);
  }
  for (const rule of bucketRules) {
    const d = p[withinRules[rule]];
    if (!d || Object.values(d).every((v) => v === 0)) continue; // as restic: a zero duration is no rule
    const candidates = list.filter((b) => isWithin(b, d));
    for (const group of newestOfEach(candidates, bucketFn(rule))) keep.add(group[0]!.id);
    if (list.length && isWithin(list.at(-1)!, d)) keep.add(list.at(-1)!.id);
  }
  const safe = new Set<string>(list.filter(tagged).map((b) => b.id));
  const byAge = [...list.filter((b) => !ahead(b)), ...list.filter(ahead)];
  for (const b of [
    byAge[0],
    ...byAge.slice(0, p.minKeep),
    ...byAge.filter((b) => b.verified).slice(0, p.keepVerified),
  ]) {
    if (b) {
      keep.add(b.id);
      safe.add(b.id);
    }
  }
  if (p.maxTotalBytes !== undefined) {
    let total = list.filter((b) => keep.has(b.id)).reduce((s, b) => s + b.bytes, 0);
    for (const b of [...list].reverse()) {
      if (total <= p.maxTotalBytes) break;
      if (keep.has(b.id) && !safe.has(b.id)) {
        keep.delete(b.id);
        total -= b.bytes;
      }
    }
  }
  return keep;
}

test('properties over 3,000 random histories', () => {
  for (let seed = 1; seed <= 3000; seed++) {
    const { backups, policy, now, shuffle } = randomCase(seed);
    const plan = planRetention(backups, [], policy, now);
    const keep = new Set(kept(plan));
    const sorted = [...backups].sort(newestFirst);
    const where = `seed ${seed}`;
    const present = sorted.filter((b) => b.time.getTime() <= now.getTime() + clockSkewMs);
    if (sorted.length)
      assert.ok(
        keep.has((present[0] ?? sorted[0])!.id),
        `${where}: the newest backup not ahead of the clock is kept`,
      );
    const newestVerified = [...present, ...sorted.filter((b) => !present.includes(b))].find(
      (b) => b.verified,
    );
    if (newestVerified && policy.keepVerified > 0)
      assert.ok(keep.has(newestVerified.id), `${where}: the newest verified backup is kept`);
    assert.deepEqual(
      kept(planRetention(shuffle(backups), [], policy, now)),
      kept(plan),
      `${where}: listing order does not matter`,
    );
    assert.deepEqual(keep, reference(backups, policy, now), `${where}: the plan equals the reference model`);
    const again = planRetention(
      backups.filter((b) => keep.has(b.id)),
      [],
      policy,
      now,
    );
    assert.deepEqual(kept(again), kept(plan), `${where}: a second run deletes nothing more`);
    if (plan.capacity?.met === false)
      assert.ok(plan.backups.every((b) => b.deleteReason !== 'policy' || !b.keep));
  }
});

// ---- incremental chains ----

/** A backup of 2026-11-<day> at 03:15, `full` or `incremental` on top of `parent`. */
const chainLink = (day: number, mode: 'full' | 'incremental', parent?: string, bytes = 10) => {
  const time = new Date(Date.UTC(2026, 10, day, 3, 15));
  return { id: baseBackupId(time, mode), time, bytes, tags: [], ...(parent ? { parent } : {}) };
};
const decisionsOf = (plan: ReturnType<typeof planRetention>) =>
  Object.fromEntries(plan.backups.map((b) => [b.id, b.keep ? b.reasons.join('+') : b.deleteReason]));

test('incremental chains: keep-last 1 keeps the newest incremental and every backup it applies on top of', () => {
  const full = chainLink(1, 'full');
  const inc1 = chainLink(2, 'incremental', full.id);
  const inc2 = chainLink(3, 'incremental', inc1.id);
  const plan = planRetention(
    [full, inc1, inc2],
    [],
    { ...base, last: 1, minKeep: 1 },
    new Date('2026-11-04'),
  );
  assert.deepEqual(decisionsOf(plan), {
    [inc2.id]: 'last+newest+min-keep',
    [inc1.id]: `parent of ${inc2.id}`,
    [full.id]: `parent of ${inc1.id}`,
  });
  assert.equal(plan.keptBytes, 30);
  // A parent a rule keeps anyway says both; one that is not in the set is not an error.
  const orphaned = chainLink(5, 'incremental', chainLink(4, 'full').id);
  const both = planRetention(
    [full, inc1, inc2, orphaned],
    [],
    { ...base, last: 2, minKeep: 1 },
    new Date('2026-11-06'),
  );
  assert.deepEqual(decisionsOf(both), {
    [orphaned.id]: 'last+newest+min-keep',
    [inc2.id]: 'last',
    [inc1.id]: `parent of ${inc2.id}`,
    [full.id]: `parent of ${inc1.id}`,
  });
});

test('incremental chains: an old chain no kept backup needs is deleted whole; a kept member keeps its chain', () => {
  const full1 = chainLink(1, 'full');
  const inc1a = chainLink(2, 'incremental', full1.id);
  const inc1b = chainLink(3, 'incremental', inc1a.id);
  const full2 = chainLink(4, 'full');
  const inc2a = chainLink(5, 'incremental', full2.id);
  const history = [inc1b, full2, inc1a, inc2a, full1]; // listing order does not matter
  const plan = planRetention(history, [], { ...base, last: 1, minKeep: 1 }, new Date('2026-11-06'));
  assert.deepEqual(decisionsOf(plan), {
    [inc2a.id]: 'last+newest+min-keep',
    [full2.id]: `parent of ${inc2a.id}`,
    [inc1b.id]: 'policy',
    [inc1a.id]: 'policy',
    [full1.id]: 'policy',
  });
  // keep-last 3 reaches the old chain's newest incremental: its whole chain stays.
  const three = planRetention(history, [], { ...base, last: 3, minKeep: 1 }, new Date('2026-11-06'));
  assert.deepEqual(decisionsOf(three), {
    [inc2a.id]: 'last+newest+min-keep',
    [full2.id]: `last+parent of ${inc2a.id}`,
    [inc1b.id]: 'last',
    [inc1a.id]: `parent of ${inc1b.id}`,
    [full1.id]: `parent of ${inc1a.id}`,
  });
  // A self-referencing or cyclic parent (a hand-made manifest) ends the walk.
  const loopA = {
    ...chainLink(7, 'incremental'),
    parent: baseBackupId(new Date(Date.UTC(2026, 10, 8, 3, 15)), 'incremental'),
  };
  const loopB = chainLink(8, 'incremental', loopA.id);
  const loop = planRetention([loopA, loopB], [], { ...base, last: 1, minKeep: 1 }, new Date('2026-11-09'));
  assert.deepEqual(decisionsOf(loop), {
    [loopB.id]: `last+newest+min-keep+parent of ${loopA.id}`,
    [loopA.id]: `parent of ${loopB.id}`,
  });
});

test('incremental chains: capacity never deletes a parent of a kept incremental', () => {
  const full = chainLink(1, 'full');
  const inc = chainLink(2, 'incremental', full.id);
  const newest = chainLink(3, 'full');
  const now = new Date('2026-11-04');
  const policy = { ...base, last: 3, minKeep: 1 };
  // The oldest (the full backup) waits: its incremental goes first, then it fits.
  const fits = planRetention([full, inc, newest], [], { ...policy, maxTotalBytes: 25 }, now);
  assert.deepEqual(decisionsOf(fits), {
    [newest.id]: 'last+newest+min-keep',
    [inc.id]: 'capacity',
    [full.id]: 'last',
  });
  assert.deepEqual(fits.capacity, { limitBytes: 25, met: true });
  const tight = planRetention([full, inc, newest], [], { ...policy, maxTotalBytes: 15 }, now);
  assert.deepEqual(kept(tight), [newest.id]);
  assert.deepEqual(tight.capacity, { limitBytes: 15, met: true });
  // A parent kept only for its incremental goes with it.
  const alone = planRetention([full, inc, newest], [], { ...policy, last: 2, maxTotalBytes: 25 }, now);
  assert.deepEqual(decisionsOf(alone), {
    [newest.id]: 'last+newest+min-keep',
    [inc.id]: 'capacity',
    [full.id]: 'capacity',
  });
  // The chain of a backup the safety rules keep is safe: the limit is then not met.
  const head = chainLink(4, 'incremental', inc.id);
  const safe = planRetention(
    [full, inc, newest, head],
    [],
    { ...policy, maxTotalBytes: 15 },
    new Date('2026-11-05'),
  );
  assert.deepEqual(decisionsOf(safe), {
    [head.id]: 'last+newest+min-keep',
    [newest.id]: 'capacity',
    [inc.id]: `last+parent of ${head.id}`,
    [full.id]: `parent of ${inc.id}`,
  });
  assert.deepEqual(safe.capacity, { limitBytes: 15, met: false });
});

test('incremental chains: properties over 2,000 random histories with parents', () => {
  for (let seed = 1; seed <= 2000; seed++) {
    const { backups, policy, now, shuffle } = randomCase(seed);
    let x = seed * 7919;
    const r = () => {
      x = (x * 48271) % 2147483647;
      return x / 2147483647;
    };
    const sorted = [...backups].sort(newestFirst);
    // Each backup applies on top of an older one (or, rarely, one not in the set).
    const withParents = sorted.map((b, i) => {
      const older = sorted.length - i - 1;
      if (older === 0 || r() < 0.4) return b;
      const parent = r() < 0.05 ? 'gone' : sorted[i + 1 + Math.floor(r() * Math.min(older, 3))]!.id;
      return { ...b, parent };
    });
    const where = `seed ${seed}`;
    const plan = planRetention(withParents, [], policy, now);
    const keep = new Set(kept(plan));
    for (const b of withParents)
      if (keep.has(b.id) && b.parent && b.parent !== 'gone')
        assert.ok(keep.has(b.parent), `${where}: ${b.id} is kept, so is its parent ${b.parent}`);
    assert.deepEqual(
      kept(planRetention(shuffle(withParents), [], policy, now)),
      kept(plan),
      `${where}: listing order does not matter`,
    );
    for (const b of plan.backups) {
      const parentReasons = b.reasons.filter((reason) => reason.startsWith('parent of '));
      assert.ok(parentReasons.length <= 1, `${where}: one parent reason`);
      assert.equal(b.keep, b.reasons.length > 0, `${where}: kept exactly when it has a reason`);
    }
    assert.equal(
      plan.keptBytes,
      plan.backups.reduce((n, b) => n + (b.keep ? b.bytes : 0), 0),
    );
    if (policy.maxTotalBytes === undefined) {
      // Without capacity: what the rules keep, plus their chains.
      const ruled = new Set(kept(planRetention(backups, [], policy, now)));
      const byId = new Map(withParents.map((b) => [b.id, b]));
      for (const id of [...ruled])
        for (let p = byId.get(id)?.parent; p && byId.has(p) && !ruled.has(p); p = byId.get(p)?.parent)
          ruled.add(p);
      assert.deepEqual(keep, ruled, `${where}: the rules' backups and their chains`);
    }
  }
});

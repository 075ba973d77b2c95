/**
 * The retention planner: worked examples (the README's), then properties on random backup
 * histories, including a comparison with a plain reference model of the rules.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  type BucketRule,
  bucketOf,
  bucketRules,
  isoWeek,
  localTime,
} from '../../shared/retention/calendar.ts';
import {
  type BackupFacts,
  newestFirst,
  planRetention,
  type RetentionPolicy,
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
    { ...base, withinSeconds: 2 * 86_400 },
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
  for (let i = 0; i < n; i++) {
    const gap =
      r() < 0.2 ? 0 : r() < 0.5 ? r() * 3_600_000 : r() < 0.8 ? r() * 86_400_000 * 2 : r() * 86_400_000 * 40;
    t += Math.floor(gap / 60_000) * 60_000;
    backups.push({
      id: `b${String(i).padStart(3, '0')}`,
      time: new Date(t),
      bytes: 1 + Math.floor(r() * 50),
      tags: r() < 0.1 ? ['pin'] : [],
      verified: r() < 0.3 ? true : r() < 0.2 ? false : undefined,
    });
  }
  const count = () => (r() < 0.5 ? undefined : Math.floor(r() * 8) - 1);
  const policy: RetentionPolicy = {
    last: count(),
    hourly: count(),
    daily: count(),
    weekly: count(),
    monthly: count(),
    yearly: count(),
    withinSeconds: r() < 0.3 ? Math.floor(r() * 10 * 86_400) : undefined,
    tags: r() < 0.3 ? ['pin'] : [],
    timezone: zones[Math.floor(r() * zones.length)]!,
    keepVerified: Math.floor(r() * 3),
    minKeep: Math.floor(r() * 3),
    maxTotalBytes: r() < 0.3 ? Math.floor(r() * 400) : undefined,
    orphanGraceSeconds: 86_400,
  };
  const now = new Date(t + (r() < 0.2 ? -86_400_000 : 3_600_000)); // sometimes backups lie in the future
  return { backups, policy, now, shuffle: (list: BackupFacts[]) => [...list].sort(() => r() - 0.5) };
}

/** The rules written plainly: group by bucket, take the newest of the N newest buckets. */
function reference(backups: BackupFacts[], p: RetentionPolicy, now: Date): Set<string> {
  const list = [...backups].sort(newestFirst);
  const keep = new Set<string>();
  const latest = list.find((b) => b.time < now)?.time ?? now;
  for (const b of list) {
    if (p.tags.some((t) => b.tags.includes(t))) keep.add(b.id);
    if (p.withinSeconds !== undefined && b.time.getTime() > latest.getTime() - p.withinSeconds * 1000)
      keep.add(b.id);
  }
  const rules: [number | undefined, (b: BackupFacts, i: number) => number][] = [
    [p.last, (_b, i) => i],
    ...bucketRules.map(
      (rule: BucketRule) =>
        [p[rule], (b: BackupFacts) => bucketOf(rule, localTime(b.time, p.timezone))] as [
          number | undefined,
          (b: BackupFacts, i: number) => number,
        ],
    ),
  ];
  for (const [n, bucket] of rules) {
    if (!n) continue;
    const groups = new Map<number, BackupFacts[]>();
    for (const [i, b] of list.entries()) groups.set(bucket(b, i), [...(groups.get(bucket(b, i)) ?? []), b]);
    const ordered = [...groups.values()];
    for (const group of n === -1 ? ordered : ordered.slice(0, n)) keep.add(group[0]!.id);
    if (list.length && (n === -1 || ordered.length < n)) keep.add(list.at(-1)!.id);
  }
  const safe = new Set<string>(list.filter((b) => p.tags.some((t) => b.tags.includes(t))).map((b) => b.id));
  for (const b of [
    list[0],
    ...list.slice(0, p.minKeep),
    ...list.filter((b) => b.verified).slice(0, p.keepVerified),
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
    if (sorted.length) assert.ok(keep.has(sorted[0]!.id), `${where}: the newest backup is kept`);
    const newestVerified = sorted.find((b) => b.verified);
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

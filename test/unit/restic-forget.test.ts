/**
 * The planner against restic's own test of `forget`: the 103 snapshots and 40 policies of
 * restic's TestApplyPolicy, and what restic's golden files say it keeps and why
 * (restic-forget.json, taken from restic/restic; see its `source`). Durations go through
 * the keep-within parser, so restic's spellings (1m = one month, 1y1d1m, 13d23h) are tested
 * too. Lifeboat's safety rule keeps the newest backup in addition; nothing else may differ.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { parseWithin } from '../../shared/commands/prune-retention.ts';
import { hasKeepRule, planRetention, type RetentionPolicy } from '../../shared/retention/plan.ts';

interface Case {
  policy: Record<string, number | string | string[][]>;
  keep: [time: string, tags: string[], matches: string[]][];
}
const fixture = JSON.parse(fs.readFileSync(path.join(import.meta.dirname, 'restic-forget.json'), 'utf8')) as {
  snapshots: [time: string, tags: string[]][];
  cases: Case[];
};

// restic sorts stably, newest first: among equal times the input order stays. Ids that sort
// (as Lifeboat breaks ties, by name, descending) in input order do the same.
const backups = fixture.snapshots.map(([time, tags], i) => ({
  id: String(1000 - i).padStart(4, '0'),
  time: new Date(time),
  bytes: 1,
  tags,
}));

const counts: Record<string, keyof RetentionPolicy> = {
  Last: 'last',
  Hourly: 'hourly',
  Daily: 'daily',
  Weekly: 'weekly',
  Monthly: 'monthly',
  Yearly: 'yearly',
};
const durations: Record<string, keyof RetentionPolicy> = {
  Within: 'within',
  WithinHourly: 'withinHourly',
  WithinDaily: 'withinDaily',
  WithinWeekly: 'withinWeekly',
  WithinMonthly: 'withinMonthly',
  WithinYearly: 'withinYearly',
};

function policyOf(restic: Case['policy']): RetentionPolicy {
  const policy: RetentionPolicy = {
    tags: [],
    timezone: 'UTC',
    keepVerified: 0,
    minKeep: 0,
    orphanGraceSeconds: 86_400,
  };
  for (const [key, value] of Object.entries(restic)) {
    if (key in counts) Object.assign(policy, { [counts[key]!]: value });
    else if (key in durations) Object.assign(policy, { [durations[key]!]: parseWithin(key, String(value)) });
    else if (key === 'Tags') policy.tagLists = value as string[][];
    else throw new Error(`restic policy field ${key} is not mapped`);
  }
  return policy;
}

/** restic's words for why a snapshot is kept, in Lifeboat's. */
function reasonOf(match: string): string {
  const m =
    /^(oldest )?(last|hourly|daily|weekly|monthly|yearly) snapshot$/.exec(match) ??
    /^(oldest )?(hourly|daily|weekly|monthly|yearly) within \S+$/.exec(match);
  if (m) return `${m[1] ?? ''}${match.includes(' within ') ? 'within-' : ''}${m[2]}`;
  if (/^within \S+$/.test(match)) return 'within';
  if (/^has tags \[.*\]$/.test(match)) return 'tagged';
  throw new Error(`restic reason '${match}' is not mapped`);
}

const now = new Date('2026-01-01T00:00:00Z');
const newest = '2016-01-18T12:02:03.000Z';

for (const [n, c] of fixture.cases.entries()) {
  test(`restic policy ${n} ${JSON.stringify(c.policy)}`, () => {
    const policy = policyOf(c.policy);
    if (Object.keys(c.policy).length === 0) {
      // restic removes everything; Lifeboat refuses an empty policy before planning.
      assert.equal(hasKeepRule(policy), false);
      return;
    }
    assert.equal(hasKeepRule(policy), true);
    const plan = planRetention(backups, [], policy, now);
    const ours = plan.backups
      .map((b, i) => ({ ...b, tags: backups.find((x) => x.id === b.id)!.tags, i }))
      .filter((b) => b.reasons.some((r) => r !== 'newest'))
      .map((b) => [b.time, b.tags, b.reasons.filter((r) => r !== 'newest').sort()]);
    const theirs = c.keep.map(([time, tags, matches]) => [
      new Date(time).toISOString(),
      tags,
      [...new Set(matches.map(reasonOf))].sort(),
    ]);
    assert.deepEqual(ours, theirs);
    // On top of restic: the newest backup, whatever the policy.
    assert.ok(plan.backups.find((b) => b.time === newest)?.keep);
  });
}

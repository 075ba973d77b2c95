/**
 * prune-retention's policy inputs: restic's words mean what restic means. keep-within*
 * take restic's units exactly (m is months), counts of 0 are "not given", keep-tag is
 * restic's AND list, and a policy that keeps nothing is refused.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { InputErrors } from '../../shared/action/inputs.ts';
import { makeReader } from '../../shared/action/run.ts';
import type { Command } from '../../shared/action/spec.ts';
import { parseTagLists, parseWithin, pruneRetentionCommand } from '../../shared/commands/prune-retention.ts';
import type { RetentionPolicy } from '../../shared/retention/plan.ts';

const command = pruneRetentionCommand as unknown as Command<never>;

/** The policy that these inputs (and the spec's defaults) make, or the error lines. */
function parse(inputs: Record<string, string>): RetentionPolicy | string[] {
  try {
    const read = makeReader(command, (spec) => ({ set: 'etc', ...inputs })[spec.name] ?? spec.default);
    return (command.parse(read) as unknown as { policy: RetentionPolicy }).policy;
  } catch (error) {
    if (error instanceof InputErrors) return error.lines;
    throw error;
  }
}

const emptyPolicy =
  /^keep-last: the policy keeps nothing by rule; give at least one of keep-last, .*keep-within-hourly\/daily\/weekly\/monthly\/yearly, keep-tag or keep-tagged, with a count or duration other than 0 \(an empty policy would delete everything\)$/;

test("keep-within takes restic's units: 1m is a month, 1y a year, combined like 2y5m7d3h", () => {
  assert.deepEqual(parseWithin('keep-within', '1m'), { years: 0, months: 1, days: 0, hours: 0 });
  assert.deepEqual(parseWithin('keep-within', '1y'), { years: 1, months: 0, days: 0, hours: 0 });
  assert.deepEqual(parseWithin('keep-within', ' 2y5m7d3h '), { years: 2, months: 5, days: 7, hours: 3 });
  assert.deepEqual(parseWithin('keep-within', '3h7d'), { years: 0, months: 0, days: 7, hours: 3 });
  assert.deepEqual(parseWithin('keep-within', '14d'), { years: 0, months: 0, days: 14, hours: 0 });
  assert.equal(parseWithin('keep-within', '0d'), undefined, 'zero, as in restic, is not a rule');
  assert.equal(parseWithin('keep-within', ''), undefined);
  const policy = parse({ 'keep-within': '1m', 'keep-within-daily': '7d', 'keep-within-yearly': '9999y' });
  assert.ok(!Array.isArray(policy));
  assert.deepEqual(policy.within, { years: 0, months: 1, days: 0, hours: 0 });
  assert.deepEqual(policy.withinDaily, { years: 0, months: 0, days: 7, hours: 0 });
  assert.deepEqual(policy.withinYearly, { years: 9999, months: 0, days: 0, hours: 0 });
  assert.equal(policy.withinSeconds, undefined);
});

test('keep-within refuses what restic refuses, saying why', () => {
  const refusals: [string, RegExp][] = [
    ['1w', /restic has no weeks: write 7d for 1w/],
    ['30min', /restic has no minutes, and m is months/],
    ['90s', /restic has no seconds/],
    ['1.5d', /whole numbers only/],
    ['6M', /units are lowercase, as in restic: m is months/],
    ['2d 3h', /no spaces/],
    ['1d1d', /d is given twice/],
    ['7', /a number needs a unit/],
    ['-1d', /not accepted; accepted: restic's units/],
    ['forever', /not accepted; accepted: restic's units/],
    ['1constructor', /'constructor' is not a unit/],
  ];
  for (const [value, message] of refusals) {
    assert.throws(
      () => parseWithin('keep-within', value),
      (e: Error) =>
        e.message.startsWith(`keep-within: '${value}' is not accepted`) &&
        message.test(e.message) &&
        e.message.includes('y (years), m (months), d (days) and h (hours)'),
      value,
    );
  }
  const lines = parse({ 'keep-daily': '7', 'keep-within-weekly': '1w' });
  assert.ok(Array.isArray(lines));
  assert.deepEqual(lines.length, 1);
  assert.match(lines[0]!, /^keep-within-weekly: '1w' is not accepted/);
});

test('a count of 0 is not given: keep-daily 0 alone is an empty policy, refused', () => {
  const lines = parse({ 'keep-daily': '0' });
  assert.ok(Array.isArray(lines), 'refused');
  assert.equal(lines.length, 1);
  assert.match(lines[0]!, emptyPolicy);
  const zeros = parse({ 'keep-last': '0', 'keep-within': '0d', 'keep-within-daily': '0y0m0d0h' });
  assert.ok(Array.isArray(zeros));
  assert.match(zeros[0]!, emptyPolicy);
  const policy = parse({ 'keep-daily': '0', 'keep-weekly': '4' });
  assert.ok(!Array.isArray(policy));
  assert.equal(policy.daily, undefined);
  assert.equal(policy.weekly, 4);
  assert.equal((parse({ 'keep-last': 'unlimited' }) as RetentionPolicy).last, -1);
  assert.match((parse({ 'keep-last': '-2' }) as string[])[0]!, /keep-last: '-2' is not accepted/);
});

test("keep-tag is restic's tag list: foo,bar is both, each line another list; keep-tagged is any tag", () => {
  assert.deepEqual(parseTagLists('foo,bar'), [['foo', 'bar']]);
  assert.deepEqual(parseTagLists('foo, bar\nbaz\n\n  # a comment\nqux # pinned by hand'), [
    ['foo', 'bar'],
    ['baz'],
    ['qux'],
  ]);
  const policy = parse({ 'keep-tag': 'foo,bar\nbaz', 'keep-tagged': 'pinned, before-upgrade' });
  assert.ok(!Array.isArray(policy));
  assert.deepEqual(policy.tagLists, [['foo', 'bar'], ['baz']]);
  assert.deepEqual(policy.tags, ['pinned', 'before-upgrade']);
  const only = parse({ 'keep-tag': 'foo,bar' });
  assert.ok(!Array.isArray(only), 'keep-tag alone is a policy');
});

import { InputCollector, parseBoolean, parseDuration, parseInteger, parseSize } from '../action/inputs.ts';
import type { InputReader } from '../action/spec.ts';
import { defineCommand } from '../action/spec.ts';
import { Catalog } from '../catalog/catalog.ts';
import { clockSkewMs, validateSetName } from '../catalog/ids.ts';
import { UserError } from '../errors.ts';
import { splitList } from '../pipeline/encryption.ts';
import { formatBytes } from '../pipeline/progress.ts';
import {
  type BucketRule,
  bucketRules,
  type CalendarDuration,
  isTimeZone,
  isZeroDuration,
} from '../retention/calendar.ts';
import { hasKeepRule, type RetentionPolicy, withinRules } from '../retention/plan.ts';
import { prune } from '../retention/prune.ts';
import { type CommonOptions, parseStorage, parseTimeout, storageInput, timeoutInput } from './common.ts';

interface Options extends CommonOptions {
  sets: string[] | '*';
  policy: RetentionPolicy;
  dryRun: boolean;
}

export const countRules = ['last', 'hourly', 'daily', 'weekly', 'monthly', 'yearly'] as const;
const bucketWords: Record<BucketRule, string> = {
  hourly: 'hour',
  daily: 'day',
  weekly: 'ISO week',
  monthly: 'month',
  yearly: 'year',
};

/**
 * The time rules of a policy — keep-last … keep-yearly, keep-within, keep-within-<bucket> —
 * and the timezone they count in: what prune-retention and snapshot-zfs's local retention
 * both read.
 */
export function parseKeepRules(
  read: InputReader,
  c: InputCollector,
): Omit<
  RetentionPolicy,
  'tags' | 'tagLists' | 'keepVerified' | 'minKeep' | 'maxTotalBytes' | 'orphanGraceSeconds'
> {
  const timezone = read('timezone')?.trim() || 'UTC';
  c.field(() => {
    if (!isTimeZone(timezone))
      throw new UserError(
        `timezone: '${timezone}' is not an IANA time zone; accepted: UTC, Europe/Berlin, America/New_York, …`,
      );
  });
  return {
    ...Object.fromEntries(
      countRules.map((rule) => [rule, c.field(() => parseCount(`keep-${rule}`, read(`keep-${rule}`)))]),
    ),
    within: c.field(() => parseWithin('keep-within', read('keep-within'))),
    ...Object.fromEntries(
      bucketRules.map((rule) => [
        withinRules[rule],
        c.field(() => parseWithin(`keep-within-${rule}`, read(`keep-within-${rule}`))),
      ]),
    ),
    timezone,
  };
}

/** A keep-<rule> count: -1 (unlimited) or a whole number; 0, as in restic, is not a rule. */
export function parseCount(name: string, value: string | undefined): number | undefined {
  const v = value?.trim().toLowerCase();
  if (!v) return undefined;
  if (v === 'unlimited' || v === 'all' || v === '-1') return -1;
  const n = parseInteger(name, v, { min: 0, max: 1_000_000 });
  return n === 0 ? undefined : n;
}

const withinAccepted =
  "restic's units: whole numbers of y (years), m (months), d (days) and h (hours), alone or combined like 2y5m7d3h";

/**
 * A keep-within* duration exactly as restic's forget takes it: `y`, `m` (months, not
 * minutes), `d`, `h`, each at most once, combined like `2y5m7d3h`. Zero (`0d`) is not a rule,
 * as in restic.
 */
export function parseWithin(name: string, value: string | undefined): CalendarDuration | undefined {
  const v = value?.trim();
  if (!v) return undefined;
  const refuse = (why: string) =>
    new UserError(`${name}: '${value}' is not accepted${why}; accepted: ${withinAccepted}`);
  if (v !== v.toLowerCase()) throw refuse(' (units are lowercase, as in restic: m is months)');
  const parts = [...v.matchAll(/(\d+)([a-z]*)/g)];
  if (parts.map((p) => p[0]).join('') !== v) {
    throw refuse(
      /\d\.\d/.test(v) ? ' (whole numbers only: 36h, not 1.5d)' : /\s/.test(v) ? ' (no spaces)' : '',
    );
  }
  const d: CalendarDuration = { years: 0, months: 0, days: 0, hours: 0 };
  const fields = { y: 'years', m: 'months', d: 'days', h: 'hours' } as const;
  const seen = new Set<string>();
  for (const [, digits, unit] of parts) {
    const field = Object.hasOwn(fields, unit!) ? fields[unit as keyof typeof fields] : undefined;
    if (!field) {
      const hint: Record<string, string> = {
        '': ' (a number needs a unit)',
        w: ' (restic has no weeks: write 7d for 1w)',
        min: ' (restic has no minutes, and m is months)',
        s: ' (restic has no seconds)',
        mo: ' (months are m)',
      };
      throw refuse(Object.hasOwn(hint, unit!) ? hint[unit!]! : ` ('${unit}' is not a unit)`);
    }
    if (seen.has(unit!)) throw refuse(` (${unit} is given twice)`);
    seen.add(unit!);
    const n = Number(digits);
    if (n > 1_000_000) throw refuse(` (${digits} is more than 1000000)`);
    d[field] = n;
  }
  return isZeroDuration(d) ? undefined : d;
}

/**
 * keep-tag as restic's --keep-tag: each line (or each value) is a tag list, its tags comma
 * separated, and a backup is kept when it has every tag of at least one list.
 */
export function parseTagLists(value: string | undefined): string[][] {
  return (value ?? '')
    .split(/\r?\n/)
    .map((line) => splitList(line))
    .filter((list) => list.length > 0);
}

/** `auto` is a dry run in pull requests, a real run elsewhere. */
function parseDryRun(read: InputReader): boolean {
  const value = read('dry-run')?.trim().toLowerCase();
  if (!value || value === 'auto') return /^pull_request/.test(process.env.GITHUB_EVENT_NAME ?? '');
  return parseBoolean('dry-run', value, false);
}

function parseSets(value: string | undefined): string[] | '*' {
  const v = value?.trim();
  if (!v)
    throw new UserError(
      "set: required; accepted: a set name, several separated by commas, or '*' for every set",
    );
  if (v === '*') return '*';
  return splitList(v).map((s) => validateSetName(s));
}

export const pruneRetentionCommand = defineCommand<Options>({
  name: 'prune-retention',
  description:
    'Delete backups that a retention policy (restic forget semantics, plus safety rules and a capacity limit) no longer keeps.',
  inputs: [
    storageInput,
    {
      name: 'set',
      description: "The set to prune; several separated by commas; '*' for every set (each on its own).",
      required: true,
    },
    {
      name: 'keep-last',
      description: 'Keep the N newest backups (unlimited: -1; 0, as in restic, is no rule).',
    },
    {
      name: 'keep-hourly',
      description: 'Keep the newest backup of each of the N most recent hours that have one.',
    },
    {
      name: 'keep-daily',
      description: 'Keep the newest backup of each of the N most recent days that have one.',
    },
    {
      name: 'keep-weekly',
      description: 'Keep the newest backup of each of the N most recent ISO weeks that have one.',
    },
    {
      name: 'keep-monthly',
      description: 'Keep the newest backup of each of the N most recent months that have one.',
    },
    {
      name: 'keep-yearly',
      description: 'Keep the newest backup of each of the N most recent years that have one.',
    },
    {
      name: 'keep-within',
      description:
        "Keep every backup newer than the newest backup minus this duration, in restic's units: y, m (months), d, h, e.g. 14d or 2y5m7d3h.",
    },
    ...bucketRules.map((rule) => ({
      name: `keep-within-${rule}`,
      description: `Keep the newest backup of each ${bucketWords[rule]} among the backups newer than the newest minus this duration (restic's units: y, m = months, d, h).`,
    })),
    {
      name: 'keep-tag',
      description:
        "Keep (pin) backups that have every tag of a tag list, as restic's --keep-tag: tags comma separated (foo,bar: both), one list per line (any of the lines); capacity never deletes them.",
    },
    {
      name: 'keep-tagged',
      description: 'Keep (pin) backups with any of these tags, comma separated; capacity never deletes them.',
    },
    {
      name: 'timezone',
      description:
        'The IANA time zone hours, days, weeks, months and years are counted in (and keep-within* calendar durations).',
      default: 'UTC',
    },
    {
      name: 'keep-verified',
      description: 'Always keep the newest N backups whose last verification passed.',
      default: '1',
    },
    { name: 'min-keep', description: 'Always keep at least the newest N backups.', default: '1' },
    {
      name: 'max-total-size',
      description:
        'Delete the oldest kept backups (never those the safety rules keep) until the set fits, e.g. 500GiB.',
    },
    {
      name: 'max-usage-percent',
      description: 'With quota: keep the set under this percentage of the quota, e.g. 70.',
    },
    { name: 'quota', description: 'The space the set may use, e.g. 2TiB (for max-usage-percent).' },
    {
      name: 'orphan-grace',
      description: 'Remove unfinished backups (no manifest) once their newest object is older than this.',
      default: '24h',
    },
    {
      name: 'dry-run',
      description: 'true: print the plan and delete nothing; auto: a dry run in pull requests.',
      default: 'auto',
    },
    timeoutInput('1h'),
  ],
  outputs: [
    { name: 'deleted', description: 'How many backups were deleted (0 in a dry run).' },
    { name: 'bytes-freed', description: 'Bytes freed (or that would be, in a dry run).' },
    {
      name: 'result',
      description: 'Every backup with keep or delete and the rules that kept it, per set, as JSON.',
    },
  ],
  parse(read) {
    const c = new InputCollector();
    const maxTotal = c.field(() => parseSize('max-total-size', read('max-total-size')));
    const percent = c.field(() =>
      parseInteger('max-usage-percent', read('max-usage-percent'), { min: 1, max: 100 }),
    );
    const quota = c.field(() => parseSize('quota', read('quota')));
    const policy: RetentionPolicy = {
      ...parseKeepRules(read, c),
      tags: splitList(read('keep-tagged')),
      tagLists: parseTagLists(read('keep-tag')),
      keepVerified:
        c.field(() =>
          parseInteger('keep-verified', read('keep-verified') || '1', { min: 0, max: 1_000_000 }),
        ) ?? 1,
      minKeep:
        c.field(() => parseInteger('min-keep', read('min-keep') || '1', { min: 1, max: 1_000_000 })) ?? 1,
      maxTotalBytes: maxTotal,
      orphanGraceSeconds: c.field(() => parseDuration('orphan-grace', read('orphan-grace'), '24h')),
    };
    c.field(() => {
      if ((percent === undefined) !== (quota === undefined))
        throw new UserError('max-usage-percent: give it together with quota (or use max-total-size)');
      if (percent !== undefined && maxTotal !== undefined)
        throw new UserError(
          'max-usage-percent: give either max-total-size or max-usage-percent with quota, not both',
        );
      if (percent !== undefined && quota !== undefined)
        policy.maxTotalBytes = Math.floor((quota * percent) / 100);
      if (!hasKeepRule(policy)) {
        throw new UserError(
          'keep-last: the policy keeps nothing by rule; give at least one of keep-last, keep-hourly, keep-daily, keep-weekly, keep-monthly, keep-yearly, keep-within, keep-within-hourly/daily/weekly/monthly/yearly, keep-tag or keep-tagged, with a count or duration other than 0 (an empty policy would delete everything)',
        );
      }
    });
    const options: Options = {
      storage: c.field(() => parseStorage(read)),
      sets: c.field(() => parseSets(read('set'))),
      policy,
      dryRun: c.field(() => parseDryRun(read)),
      timeoutSeconds: c.field(() => parseTimeout(read, '1h')),
      progressIntervalMs: 10_000,
    };
    c.finish();
    return options;
  },
  async execute(options, { logger, signal }) {
    await options.storage.check();
    if (options.sets !== '*') {
      // A set name that matches nothing is a typo: pruning it would quietly do nothing while
      // the real set grows.
      const known = await new Catalog(options.storage).listSets();
      const unknown = options.sets.filter((s) => !known.includes(s));
      if (unknown.length) {
        throw new UserError(
          `set: ${unknown.map((s) => `'${s}'`).join(', ')} ${unknown.length > 1 ? 'are not sets' : 'is not a set'} in ${options.storage.url}; ${known.length ? `sets here: ${known.join(', ')}` : 'the storage holds no sets'}`,
        );
      }
    }
    const report = await prune({
      storage: options.storage,
      sets: options.sets,
      policy: options.policy,
      dryRun: options.dryRun,
      logger,
      signal,
    });
    const deleted = report.sets.reduce((n, s) => n + s.deletedBackups.length, 0);
    const table = [['Set', 'Backup', 'Decision', 'Why', 'Size']];
    for (const s of report.sets) {
      for (const b of s.plan.backups) {
        table.push([
          s.set,
          b.id,
          b.keep
            ? b.reasons.length === 1 && b.reasons[0] === 'locked'
              ? 'kept by lock'
              : 'keep'
            : report.dryRun
              ? 'would delete'
              : 'deleted',
          `${b.keep ? b.reasons.map((r) => (r === 'locked' && b.lockedUntil ? `locked until ${b.lockedUntil}` : r)).join(', ') : (b.deleteReason ?? '')}${b.aheadOfClock ? '; dated ahead of the clock' : ''}`,
          formatBytes(b.bytes),
        ]);
      }
      for (const o of s.plan.orphans) {
        table.push([
          s.set,
          o.id,
          o.delete ? (report.dryRun ? 'would delete' : 'deleted') : 'keep',
          o.delete ? 'unfinished, past the grace period' : 'unfinished, may still be uploading',
          formatBytes(o.bytes),
        ]);
      }
    }
    const notes = [
      `${report.dryRun ? 'Dry run: nothing was deleted. ' : ''}${report.dryRun ? 'Would free' : 'Freed'} ${formatBytes(report.freedBytes)}.`,
    ];
    for (const s of report.sets) {
      const locked = s.plan.backups.filter((b) => b.lockedUntil && b.reasons.length === 1);
      if (locked.length) {
        notes.push(
          `${s.set}: kept by their retention lock (the storage refuses to delete them before it ends): ${locked.map((b) => `${b.id} locked until ${b.lockedUntil}`).join(', ')}.`,
        );
      }
      const parents = s.plan.backups.filter(
        (b) => b.keep && b.reasons.every((r) => r.startsWith('parent of ')),
      );
      if (parents.length) {
        notes.push(
          `${s.set}: kept only because a kept incremental backup applies on top of them (restoring it needs them): ${parents.map((b) => b.id).join(', ')}.`,
        );
      }
      if (s.lockedObjects.length) {
        notes.push(
          `${s.set}: ${s.lockedObjects.length} object(s) of deleted backups are locked and stay (not counted as freed) until their lock ends; a later run removes them.`,
        );
      }
      const ahead = s.plan.backups.filter((b) => b.aheadOfClock);
      if (ahead.length) {
        const line = `${s.set}: ${ahead.map((b) => b.id).join(', ')} ${ahead.length > 1 ? 'are' : 'is'} dated ahead of this machine's clock by more than ${clockSkewMs / 60_000} minutes (a runner's clock was ahead): not taken as the newest backup, which is ${s.plan.backups.find((b) => !b.aheadOfClock)?.id ?? 'none'}; keep-within counts back from ${s.plan.latest}`;
        logger.warn(line);
        notes.push(line);
      }
      if (s.plan.capacity && !s.plan.capacity.met) {
        notes.push(
          `${s.set}: the limit of ${formatBytes(s.plan.capacity.limitBytes)} cannot be met: the backups the safety rules keep take ${formatBytes(s.plan.keptBytes)}.`,
        );
      }
    }
    return {
      outputs: {
        deleted: String(deleted),
        'bytes-freed': String(report.freedBytes),
        result: JSON.stringify(report),
      },
      summary: { heading: `Retention in ${options.storage.url}`, table, notes },
    };
  },
});

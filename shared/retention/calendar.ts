/** Calendar fields of an instant in one IANA time zone, and the buckets retention counts in. */

export interface LocalTime {
  year: number;
  month: number;
  day: number;
  hour: number;
}

const formatters = new Map<string, Intl.DateTimeFormat>();

export function isTimeZone(zone: string): boolean {
  try {
    new Intl.DateTimeFormat('en-US', { timeZone: zone });
    return true;
  } catch {
    return false;
  }
}

export function localTime(instant: Date, zone: string): LocalTime {
  if (zone === 'UTC') {
    return {
      year: instant.getUTCFullYear(),
      month: instant.getUTCMonth() + 1,
      day: instant.getUTCDate(),
      hour: instant.getUTCHours(),
    };
  }
  let format = formatters.get(zone);
  if (!format) {
    format = new Intl.DateTimeFormat('en-US', {
      timeZone: zone,
      year: 'numeric',
      month: 'numeric',
      day: 'numeric',
      hour: 'numeric',
      hourCycle: 'h23',
    });
    formatters.set(zone, format);
  }
  const parts: Record<string, number> = {};
  for (const p of format.formatToParts(instant)) if (p.type !== 'literal') parts[p.type] = Number(p.value);
  return { year: parts.year!, month: parts.month!, day: parts.day!, hour: parts.hour! };
}

/** ISO 8601 week-numbering year and week of a calendar date. */
export function isoWeek(year: number, month: number, day: number): { year: number; week: number } {
  const date = new Date(Date.UTC(year, month - 1, day));
  const weekday = date.getUTCDay() || 7; // Monday 1 … Sunday 7
  date.setUTCDate(date.getUTCDate() + 4 - weekday); // the Thursday of this week decides the year
  const weekYear = date.getUTCFullYear();
  const week = Math.ceil(((date.getTime() - Date.UTC(weekYear, 0, 1)) / 86_400_000 + 1) / 7);
  return { year: weekYear, week };
}

export const bucketRules = ['hourly', 'daily', 'weekly', 'monthly', 'yearly'] as const;
export type BucketRule = (typeof bucketRules)[number];

/** The bucket of a local time for a rule: equal numbers mean the same hour, day, ISO week, month or year. */
export function bucketOf(rule: BucketRule, t: LocalTime): number {
  switch (rule) {
    case 'hourly':
      return ((t.year * 100 + t.month) * 100 + t.day) * 100 + t.hour;
    case 'daily':
      return (t.year * 100 + t.month) * 100 + t.day;
    case 'weekly': {
      const w = isoWeek(t.year, t.month, t.day);
      return w.year * 100 + w.week;
    }
    case 'monthly':
      return t.year * 100 + t.month;
    case 'yearly':
      return t.year;
  }
}

/**
 * A duration as restic's `--keep-within*` flags take it: whole years, months, days and hours
 * (`2y5m7d3h`), applied with calendar arithmetic. There are no minutes: `m` is months.
 */
export interface CalendarDuration {
  years: number;
  months: number;
  days: number;
  hours: number;
}

export function isZeroDuration(d: CalendarDuration): boolean {
  return d.years === 0 && d.months === 0 && d.days === 0 && d.hours === 0;
}

/** restic's spelling of a duration: `2y5m7d3h`, zero parts left out. */
export function formatCalendarDuration(d: CalendarDuration): string {
  const parts: [number, string][] = [
    [d.years, 'y'],
    [d.months, 'm'],
    [d.days, 'd'],
    [d.hours, 'h'],
  ];
  return parts
    .filter(([n]) => n !== 0)
    .map(([n, unit]) => `${n}${unit}`)
    .join('');
}

const offsetFormatters = new Map<string, Intl.DateTimeFormat>();

/** How far the wall clock of `zone` is ahead of UTC at `instant` (ms since the epoch), in ms. */
export function zoneOffsetMs(instant: number, zone: string): number {
  if (zone === 'UTC') return 0;
  let format = offsetFormatters.get(zone);
  if (!format) {
    format = new Intl.DateTimeFormat('en-US', {
      timeZone: zone,
      era: 'short',
      year: 'numeric',
      month: 'numeric',
      day: 'numeric',
      hour: 'numeric',
      minute: 'numeric',
      second: 'numeric',
      hourCycle: 'h23',
    });
    offsetFormatters.set(zone, format);
  }
  const whole = Math.floor(instant / 1000) * 1000;
  const parts: Record<string, string> = {};
  for (const p of format.formatToParts(whole)) if (p.type !== 'literal') parts[p.type] = p.value;
  const year = parts.era === 'BC' || parts.era === 'B' ? 1 - Number(parts.year) : Number(parts.year);
  const wall = new Date(0);
  wall.setUTCFullYear(year, Number(parts.month) - 1, Number(parts.day));
  wall.setUTCHours(Number(parts.hour), Number(parts.minute), Number(parts.second), 0);
  return wall.getTime() - whole;
}

/**
 * `instant` minus `d` as Go's `t.AddDate(-y, -m, -d).Add(-h hours)` computes it, which restic's
 * forget uses: years, months and days move the wall clock of `zone` (the hour of day stays
 * across a DST change; 31 March minus one month is 3 March, as Go normalizes 31 February),
 * then hours are subtracted as elapsed time. Beyond the range of dates, the earliest date.
 */
export function minusCalendar(instant: Date, d: CalendarDuration, zone: string): Date {
  const t = instant.getTime();
  const wall = new Date(t + zoneOffsetMs(t, zone));
  const shifted = new Date(0);
  shifted.setUTCFullYear(
    wall.getUTCFullYear() - d.years,
    wall.getUTCMonth() - d.months,
    wall.getUTCDate() - d.days,
  );
  shifted.setUTCHours(
    wall.getUTCHours(),
    wall.getUTCMinutes(),
    wall.getUTCSeconds(),
    wall.getUTCMilliseconds(),
  );
  const target = shifted.getTime();
  if (Number.isNaN(target)) return new Date(-8.64e15);
  // The instant whose wall clock is `target`: the offset there, found in two steps.
  const first = target - zoneOffsetMs(target, zone);
  const result = target - zoneOffsetMs(first, zone) - d.hours * 3_600_000;
  return new Date(Math.max(result, -8.64e15));
}

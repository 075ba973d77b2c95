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

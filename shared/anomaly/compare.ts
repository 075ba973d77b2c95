/**
 * The comparable numbers of a backup (its metrics: stored bytes, files, rows per table,
 * objects per resource, volume sizes) and their changes since the previous backup of the set.
 */

/** A backup's comparable numbers by name: 'stored-bytes', 'files', 'rows:<db>.<table>', … */
export type Metrics = Record<string, number>;

/** One metric then and now; `change` is a fraction (-0.003 = −0.3%). */
export interface Delta {
  name: string;
  previous: number;
  current: number;
  change: number;
  /** Set by the rules (rules.ts) when the change is an anomaly: why, in words. */
  anomaly?: string;
}

/** What the comparison of two backups' metrics found. */
export interface Comparison {
  deltas: Delta[];
  /** Metrics with nothing to compare with: not in the previous backup, or 0 there. */
  added: string[];
}

/**
 * Only what can be a metric: finite, non-negative numbers (a manifest read from storage may
 * hold anything), in an object without a prototype, so no name is special.
 */
export function cleanMetrics(metrics: Record<string, unknown>): Metrics {
  const clean: Metrics = Object.create(null);
  for (const [name, value] of Object.entries(metrics)) {
    if (typeof value === 'number' && Number.isFinite(value) && value >= 0) clean[name] = value;
  }
  return clean;
}

/**
 * Every metric of either backup, the current one's first (in their order), then those only
 * the previous one had (now 0: a table that is gone shrank by 100%). A metric the previous
 * backup lacks or held 0 of has no base for a change: it is listed in `added`, not compared.
 */
export function compareMetrics(previous: Metrics, current: Metrics): Comparison {
  const deltas: Delta[] = [];
  const added: string[] = [];
  const names = [...Object.keys(current), ...Object.keys(previous).filter((n) => !Object.hasOwn(current, n))];
  for (const name of names) {
    const before = Object.hasOwn(previous, name) ? previous[name]! : 0;
    const now = Object.hasOwn(current, name) ? current[name]! : 0;
    if (before === 0 && now > 0) {
      added.push(name);
      continue;
    }
    deltas.push({ name, previous: before, current: now, change: before === 0 ? 0 : (now - before) / before });
  }
  return { deltas, added };
}

/** A metric's name as shown in a log line or summary: control characters escaped (names come from backups). */
export function shownName(name: string): string {
  return name.replace(
    /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g,
    (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`,
  );
}

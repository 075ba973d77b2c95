/** The thresholds that make a change an anomaly: max-shrink, max-growth and per-table row floors. */

import { globRegex } from '../glob.ts';
import { formatBytes } from '../pipeline/progress.ts';
import { type Comparison, type Delta, type Metrics, shownName } from './compare.ts';

/** A floor of rows for the tables a glob over `<database>.<table>` matches (min-rows app.users=1000). */
export interface RowFloor {
  tables: string;
  min: number;
}

export interface AnomalyRules {
  /** The largest shrink allowed, as a fraction (0.2 = 20%); null: off. */
  maxShrink: number | null;
  /** The largest growth allowed, as a fraction (3 = 300%); null: off. */
  maxGrowth: number | null;
  minRows: RowFloor[];
}

/** A change as a signed percentage: -0.4 → "-40.0%". */
export function percent(fraction: number): string {
  return `${fraction > 0 ? '+' : ''}${(fraction * 100).toFixed(1)}%`;
}

/** A limit as the user gave it: 0.2 → "20%". */
export function limit(fraction: number): string {
  return `${Number((fraction * 100).toFixed(4))}%`;
}

/** A metric's value for people: bytes as KiB/MiB/…, counts as they are. */
export function formatMetric(name: string, value: number): string {
  return /bytes/.test(name.split(':')[0]!) ? formatBytes(value) : String(value);
}

const rowsPrefix = 'rows:';

/**
 * The deltas with each anomaly set, and every anomaly as a message: a change past max-shrink
 * or max-growth, and (on the current backup alone, so also for a first backup) a table below
 * its min-rows floor or missing from the backup.
 */
export function applyRules(
  comparison: Comparison,
  current: Metrics,
  rules: AnomalyRules,
): { deltas: Delta[]; anomalies: string[] } {
  const anomalies: string[] = [];
  const deltas = comparison.deltas.map((d) => {
    const anomaly = changeAnomaly(d, rules);
    if (anomaly) anomalies.push(anomaly);
    return anomaly ? { ...d, anomaly } : { ...d };
  });
  for (const { name, message } of floorAnomalies(current, rules.minRows)) {
    anomalies.push(message);
    const delta = deltas.find((d) => d.name === name);
    if (delta) delta.anomaly = delta.anomaly ? `${delta.anomaly}; ${message}` : message;
  }
  return { deltas, anomalies };
}

function changeAnomaly(d: Delta, rules: AnomalyRules): string | undefined {
  const values = `${formatMetric(d.name, d.previous)} → ${formatMetric(d.name, d.current)}`;
  if (rules.maxShrink !== null && -d.change > rules.maxShrink) {
    return `${shownName(d.name)} shrank by ${percent(-d.change).slice(1)} (${values}), more than max-shrink ${limit(rules.maxShrink)}`;
  }
  if (rules.maxGrowth !== null && d.change > rules.maxGrowth) {
    return `${shownName(d.name)} grew by ${percent(d.change).slice(1)} (${values}), more than max-growth ${limit(rules.maxGrowth)}`;
  }
  return undefined;
}

/**
 * The tables below their floor: each table takes the highest floor whose glob matches it; a
 * floor that matches no table of the backup is an anomaly too (the table is gone).
 */
export function floorAnomalies(current: Metrics, floors: RowFloor[]): { name: string; message: string }[] {
  const tables = Object.keys(current)
    .filter((n) => n.startsWith(rowsPrefix))
    .map((n) => n.slice(rowsPrefix.length));
  const found: { name: string; message: string }[] = [];
  const compiled = floors.map((f) => ({ ...f, re: globRegex(f.tables) }));
  for (const floor of compiled) {
    if (!tables.some((t) => floor.re.test(t))) {
      found.push({
        name: `${rowsPrefix}${floor.tables}`,
        message: `min-rows ${shownName(floor.tables)}=${floor.min}: ${/[*?]/.test(floor.tables) ? 'matches no table' : 'the table is not'} in the backup`,
      });
    }
  }
  for (const table of tables) {
    const strictest = compiled.filter((f) => f.re.test(table)).sort((a, b) => b.min - a.min)[0];
    const rows = current[`${rowsPrefix}${table}`]!;
    if (strictest && rows < strictest.min) {
      found.push({
        name: `${rowsPrefix}${table}`,
        message: `${shownName(`${rowsPrefix}${table}`)} holds ${rows} rows, below min-rows ${shownName(strictest.tables)}=${strictest.min}`,
      });
    }
  }
  return found;
}

/**
 * The anomaly gates every backup command and verify-restore run: the backup's metrics against
 * those of the previous committed backup of its set, judged by max-shrink, max-growth and
 * min-rows. What they find is data (deltas, anomalies, notes); the command layer turns it into
 * outputs, summary rows and, with fail-on-anomaly, a failed step.
 */
import type { Catalog } from '../catalog/catalog.ts';
import type { Manifest } from '../catalog/manifest.ts';
import { messageOf } from '../errors.ts';
import type { Logger } from '../pipeline/progress.ts';
import { cleanMetrics, compareMetrics, type Delta, type Metrics, shownName } from './compare.ts';
import { previousBackup } from './previous.ts';
import { type AnomalyRules, applyRules, formatMetric, percent } from './rules.ts';

export interface AnomalyOptions extends AnomalyRules {
  /** true: an anomaly fails the command (a backup stays committed); false: a warning. */
  failOnAnomaly: boolean;
}

/** A kind's comparable numbers of one of its manifests (Kind.metrics). */
export type KindMetrics = (manifest: Manifest) => Record<string, number>;

export interface AnomalyReport {
  /** The id of the backup compared with; undefined when there was none. */
  previous?: string;
  deltas: Delta[];
  anomalies: string[];
  /** What the summary says besides the rows: a first backup, what was passed over, new metrics. */
  notes: string[];
  failOnAnomaly: boolean;
}

const sizeMetrics = ['stored-bytes', 'content-bytes'];

/**
 * A manifest's metrics: bytes stored and before compression (when it has artifacts), then its
 * kind's. The manifest may come from storage: what its facts hold that is not a count or size
 * is left out, and facts the kind cannot read make a UserError.
 */
export function manifestMetrics(manifest: Manifest, kind?: KindMetrics): Metrics {
  const own: Record<string, unknown> = {};
  if (manifest.artifacts.length) {
    own['stored-bytes'] = manifest.artifacts.reduce((n, a) => n + a.bytes, 0);
    own['content-bytes'] = manifest.artifacts.reduce((n, a) => n + a.contentBytes, 0);
  }
  return cleanMetrics({ ...own, ...(kind ? kind(manifest) : {}) });
}

/**
 * Compares `manifest` (just committed, or being verified) with the previous committed backup
 * of its set in `catalog`. Sizes as stored are
 * compared only between backups of one mode that is not incremental (an incremental's size
 * says how much changed, not how much is kept). A comparison that cannot be made (the storage
 * fails, the previous manifest's facts are unreadable) is a warning and a note, never an
 * anomaly. Without fail-on-anomaly each anomaly is logged as a warning.
 */
export async function checkAnomalies(
  options: AnomalyOptions,
  input: { catalog: Catalog; manifest: Manifest; metrics?: KindMetrics; logger: Logger },
): Promise<AnomalyReport> {
  const { catalog, manifest, metrics, logger } = input;
  const report: AnomalyReport = {
    deltas: [],
    anomalies: [],
    notes: [],
    failOnAnomaly: options.failOnAnomaly,
  };
  let current: Metrics;
  try {
    current = manifestMetrics(manifest, metrics);
  } catch (error) {
    report.notes.push(`Not compared: the facts of ${manifest.id} cannot be read (${messageOf(error)}).`);
    logger.warn(`anomaly gates: ${manifest.set}/${manifest.id} not compared: ${messageOf(error)}`);
    return report;
  }
  const previous = await findPrevious(catalog, manifest, report, logger);
  let before: Metrics | undefined;
  if (previous) {
    try {
      before = manifestMetrics(previous, metrics);
    } catch (error) {
      report.notes.push(`Not compared with ${previous.id}: its facts cannot be read (${messageOf(error)}).`);
      logger.warn(
        `anomaly gates: the previous backup ${previous.id} cannot be compared: ${messageOf(error)}`,
      );
    }
  }
  let comparison = { deltas: [] as Delta[], added: [] as string[] };
  if (previous && before) {
    report.previous = previous.id;
    if (previous.mode !== manifest.mode || manifest.mode === 'incremental') {
      for (const name of sizeMetrics) {
        delete before[name];
        delete current[name];
      }
      report.notes.push(
        `Sizes as stored not compared: ${manifest.id} is ${manifest.mode}, ${previous.id} ${previous.mode}${manifest.mode === 'incremental' ? " (an incremental's size is what changed)" : ''}.`,
      );
    }
    comparison = compareMetrics(before, current);
    if (comparison.added.length)
      report.notes.push(
        `New since ${previous.id} (nothing to compare with): ${comparison.added.slice(0, 10).map(shownName).join(', ')}${comparison.added.length > 10 ? `, and ${comparison.added.length - 10} more` : ''}.`,
      );
  }
  const judged = applyRules(comparison, current, options);
  report.deltas = judged.deltas;
  report.anomalies = judged.anomalies;
  logger.info(
    report.previous
      ? `compared with ${manifest.set}/${report.previous}: ${report.deltas.length} metric(s), ${report.anomalies.length} anomal${report.anomalies.length === 1 ? 'y' : 'ies'}`
      : `${manifest.set}/${manifest.id}: no earlier backup compared${report.anomalies.length ? `; ${report.anomalies.length} below min-rows` : ''}`,
  );
  if (!options.failOnAnomaly) for (const a of report.anomalies) logger.warn(`anomaly: ${a}`);
  return report;
}

/** The report of a backup that is not compared (`why`: no storage, a dry run). */
export function notCompared(options: AnomalyOptions, why: string): AnomalyReport {
  return {
    deltas: [],
    anomalies: [],
    notes: [`Not compared with earlier backups: ${why}.`],
    failOnAnomaly: options.failOnAnomaly,
  };
}

async function findPrevious(
  catalog: Catalog,
  manifest: Manifest,
  report: AnomalyReport,
  logger: Logger,
): Promise<Manifest | undefined> {
  try {
    const found = await previousBackup(catalog, manifest);
    if (found.passedOver.length) {
      const line = `passed over (damaged manifest): ${found.passedOver.join('; ')}`;
      report.notes.push(`Comparison ${line}.`);
      logger.warn(`anomaly gates: ${line}`);
    }
    if (!found.manifest) report.notes.push(`First backup of set ${manifest.set}: nothing to compare with.`);
    return found.manifest;
  } catch (error) {
    report.notes.push(`Not compared: the earlier backups could not be read (${messageOf(error)}).`);
    logger.warn(
      `anomaly gates: the earlier backups of ${manifest.set} could not be read: ${messageOf(error)}`,
    );
    return undefined;
  }
}

/** Rows of other metrics shown besides the totals and the anomalies; the rest are in the deltas output. */
const shownChanges = 20;

/**
 * Summary rows (metric, previous, now, change, ✅/❌) after a heading row naming the backup
 * compared with: every anomaly and every total (a name without ':'), then the per-table,
 * per-resource and per-volume metrics that changed, up to shownChanges; and the notes,
 * each anomaly listed.
 */
export function anomalySummary(report: AnomalyReport): { rows: string[][]; notes: string[] } {
  const notes = [...report.notes];
  const rows: string[][] = [];
  if (report.previous) {
    const always = report.deltas.filter((d) => d.anomaly || !d.name.includes(':'));
    const changed = report.deltas.filter((d) => !d.anomaly && d.name.includes(':') && d.change !== 0);
    const shown = new Set([...always, ...changed.slice(0, shownChanges)]);
    rows.push([`Compared with ${report.previous}`, 'Previous', 'Now', 'Change', '']);
    for (const d of report.deltas.filter((x) => shown.has(x))) {
      rows.push([
        shownName(d.name),
        formatMetric(d.name, d.previous),
        formatMetric(d.name, d.current),
        percent(d.change),
        d.anomaly ? '❌' : '✅',
      ]);
    }
    const rest = report.deltas.length - shown.size;
    if (rest > 0) notes.push(`${rest} more metric(s) compared within the limits: see the deltas output.`);
  }
  for (const a of report.anomalies) notes.push(`❌ anomaly: ${a}`);
  if (report.anomalies.length && !report.failOnAnomaly)
    notes.push('fail-on-anomaly is false: the anomalies are warnings.');
  return { rows, notes };
}

/** The outputs `anomalies` (messages) and `deltas` ({ name, previous, current, change, anomaly? }), as JSON. */
export function anomalyOutputs(report: AnomalyReport): { anomalies: string; deltas: string } {
  return { anomalies: JSON.stringify(report.anomalies), deltas: JSON.stringify(report.deltas) };
}

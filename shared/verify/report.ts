import type { Manifest, Verification } from '../catalog/manifest.ts';
import { totalBytes } from '../catalog/manifest.ts';
import { formatBytes, formatDuration } from '../pipeline/progress.ts';
import { version } from '../version.ts';
import { type CheckRow, failed, passed, skipped } from './checks.ts';

/** What one verify-restore run found: every check, RTO, RPO, sizes and where the time went. */
export interface VerifyReport {
  format: 1;
  set: string;
  backupId: string;
  kind: Manifest['kind'];
  uri: string;
  /** When the verification ran (its end). */
  at: string;
  passed: boolean;
  environment: Record<string, unknown> & { type: string; removed: boolean };
  checks: CheckRow[];
  /** RTO: how long the restore took (download, decrypt, load, swap: streamed together). */
  restoreSeconds: number | null;
  /** RPO: the backup's age at verification, from the moment its snapshot was taken. */
  ageSeconds: number;
  limits: { maxAgeSeconds: number | null; maxRestoreSeconds: number | null };
  sizes: { storedBytes: number; contentBytes: number; tables?: number; rows?: number };
  /** Seconds per phase: environment start, restore, checks, teardown. */
  timings: Record<string, number>;
}

/** The RPO and RTO rows: checked against their limits when given, reported either way. */
export function limitRows(
  ageSeconds: number,
  restoreSeconds: number | null,
  limits: VerifyReport['limits'],
): CheckRow[] {
  const rows: CheckRow[] = [];
  const age = `the backup is ${formatDuration(ageSeconds)} old (snapshot taken then)`;
  if (limits.maxAgeSeconds !== null) {
    const name = `RPO: max-age ${formatDuration(limits.maxAgeSeconds)}`;
    rows.push(
      ageSeconds <= limits.maxAgeSeconds ? passed(name, age) : failed(name, `${age}: older than allowed`),
    );
  }
  if (limits.maxRestoreSeconds !== null) {
    const name = `RTO: max-restore-time ${formatDuration(limits.maxRestoreSeconds)}`;
    if (restoreSeconds === null) rows.push(skipped(name, 'the restore did not finish'));
    else {
      const took = `restored in ${formatDuration(restoreSeconds)}`;
      rows.push(
        restoreSeconds <= limits.maxRestoreSeconds
          ? passed(name, took)
          : failed(name, `${took}: slower than allowed`),
      );
    }
  }
  return rows;
}

/** What an engine's verification found, before RPO, RTO limits and sizes are added. */
export interface VerifyOutcome {
  checks: CheckRow[];
  restoreSeconds: number | null;
  environment: VerifyReport['environment'];
  timings: Record<string, number>;
  /** What was restored, where the engine counts it (mysql: tables and rows). */
  counted?: { tables: number; rows: number };
}

export function newReport(
  manifest: Manifest,
  uri: string,
  fields: VerifyOutcome & Pick<VerifyReport, 'limits'>,
  now: Date,
): VerifyReport {
  const ageSeconds = Math.max(0, (now.getTime() - Date.parse(manifest.startedAt)) / 1000);
  const checks = [...fields.checks, ...limitRows(ageSeconds, fields.restoreSeconds, fields.limits)];
  return {
    format: 1,
    set: manifest.set,
    backupId: manifest.id,
    kind: manifest.kind,
    uri,
    at: now.toISOString(),
    passed: checks.every((c) => c.status !== 'failed') && checks.some((c) => c.status === 'passed'),
    environment: fields.environment,
    checks,
    restoreSeconds: fields.restoreSeconds,
    ageSeconds: Math.round(ageSeconds),
    limits: fields.limits,
    sizes: {
      storedBytes: totalBytes(manifest),
      contentBytes: manifest.artifacts.reduce((n, a) => n + a.contentBytes, 0),
      ...fields.counted,
    },
    timings: fields.timings,
  };
}

/** The catalog's record of a verification (verifications/<time>.json): what list and prune read. */
export function verificationRecord(report: VerifyReport): Verification {
  return {
    format: 1,
    backupId: report.backupId,
    set: report.set,
    at: report.at,
    passed: report.passed,
    checks: report.checks.map((c) => ({
      name: c.name,
      passed: c.status === 'passed',
      ...(c.status === 'skipped' ? { skipped: true } : {}),
      detail: c.detail,
    })),
    ...(report.restoreSeconds !== null ? { restoreSeconds: report.restoreSeconds } : {}),
    ageSeconds: report.ageSeconds,
    environment: report.environment.type,
    tool: { name: 'lifeboat', version },
  };
}

const mark = { passed: '✅ pass', failed: '❌ FAIL', skipped: '➖ not run' } as const;

/** The job summary: one row per check, then RTO, RPO, sizes and the time breakdown. */
export function reportSummary(report: VerifyReport) {
  const timing = Object.entries(report.timings)
    .map(([phase, s]) => `${phase} ${s.toFixed(1)} s`)
    .join(', ');
  return {
    heading: `Restore verification of ${report.set}/${report.backupId}: ${report.passed ? 'PASSED' : 'FAILED'}`,
    table: [['Check', 'Result', 'Detail'], ...report.checks.map((c) => [c.name, mark[c.status], c.detail])],
    notes: [
      `RTO (restore time): ${report.restoreSeconds === null ? 'not measured (the restore did not finish)' : formatDuration(report.restoreSeconds)}. RPO (backup age): ${formatDuration(report.ageSeconds)}.`,
      `Backup ${report.uri}: ${formatBytes(report.sizes.storedBytes)} stored, ${formatBytes(report.sizes.contentBytes)} of content${report.sizes.tables !== undefined ? `, ${report.sizes.tables} tables, ${report.sizes.rows} rows` : ''}.`,
      `Environment: ${report.environment.type}${report.environment.server ? ` (${report.environment.server})` : ''}, ${report.environment.removed ? 'removed afterwards' : 'NOT removed: see the log'}. Time: ${timing}.`,
    ],
  };
}

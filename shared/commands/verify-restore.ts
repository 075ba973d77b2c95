import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { InputCollector, parseBoolean, parseDuration } from '../action/inputs.ts';
import { type CommandResult, defineCommand } from '../action/spec.ts';
import { type AnomalyOptions, type AnomalyReport, checkAnomalies } from '../anomaly/run.ts';
import { Catalog } from '../catalog/catalog.ts';
import { validateBackupRef } from '../catalog/ids.ts';
import { type Manifest, recordedLock } from '../catalog/manifest.ts';
import { UserError } from '../errors.ts';
import { kindFor, kindInputs, kinds, parseKinds, removeKindLeftovers } from '../kinds/index.ts';
import type { DecryptionKeys } from '../pipeline/encryption.ts';
import { formatDuration, type Logger } from '../pipeline/progress.ts';
import { lockCheck } from '../verify/lock.ts';
import { newReport, reportSummary, type VerifyReport, verificationRecord } from '../verify/report.ts';
import {
  anomalyInputs,
  anomalyOutputSpecs,
  backupUri,
  type CommonOptions,
  decryptionInputs,
  minRowsInput,
  parseAnomalyOptions,
  parseDecryption,
  parseProgress,
  parseSet,
  parseStorage,
  parseTimeout,
  progressInput,
  setInput,
  storageInput,
  timeoutInput,
  withAnomalies,
} from './common.ts';

interface Options extends CommonOptions {
  set: string;
  backup: string;
  randomWithinSeconds?: number;
  workDir: string;
  /** Each kind's own options, by kind name. */
  kinds: Record<string, unknown>;
  maxAgeSeconds: number | null;
  maxRestoreSeconds: number | null;
  keys: DecryptionKeys;
  reportFile?: string;
  record: boolean;
  requireLock: boolean;
  anomaly: AnomalyOptions;
}

const optionalDuration = (name: string, value: string | undefined) =>
  value?.trim() ? parseDuration(name, value) : null;

export const verifyRestoreCommand = defineCommand<Options>({
  name: 'verify-restore',
  description: `Restore a backup into a throwaway environment and check it (${kinds.flatMap((k) => (k.verify ? [`${k.name}: ${k.verify.checks}`] : [])).join('; ')}), and report RTO and RPO.`,
  inputs: [
    storageInput,
    setInput,
    {
      name: 'backup',
      description: 'The backup to verify: latest (the newest committed one) or a backup id.',
      default: 'latest',
    },
    {
      name: 'random-within',
      description:
        'Instead of backup: pick a committed backup at random among those taken within this long, e.g. 30d, so older backups are proven too.',
    },
    {
      name: 'work-dir',
      description:
        'local: the folder the throwaway datadir goes in (default: RUNNER_TEMP or the system temp folder).',
    },
    ...kindInputs('verify'),
    { name: 'max-age', description: 'RPO: fail when the backup is older than this, e.g. 26h.' },
    { name: 'max-restore-time', description: 'RTO: fail when the restore takes longer than this, e.g. 30m.' },
    ...decryptionInputs,
    {
      name: 'report-file',
      description:
        'Where to write the JSON report (default: lifeboat-verify-<set>-<backup>.json in RUNNER_TEMP or the system temp folder).',
    },
    {
      name: 'record',
      description:
        'Write the result into the catalog (verifications/<time>.json), for list and prune-retention.',
      default: 'true',
    },
    {
      name: 'require-lock',
      description:
        "true: the set is meant to be locked (lock-for), so the 'retention lock' check fails for a backup whose manifest records no lock. The check (that the manifest and every artifact are locked on the storage until the recorded date) runs anyway for a backup that records one. The record of a locked backup is locked until the backup's own date.",
      default: 'false',
    },
    ...anomalyInputs,
    minRowsInput,
    timeoutInput('6h'),
    progressInput,
  ],
  outputs: [
    { name: 'backup-id', description: 'The id of the verified backup.' },
    { name: 'uri', description: 'The URL of the verified backup folder.' },
    { name: 'passed', description: 'true when every check passed.' },
    { name: 'report', description: 'The path of the JSON report.' },
    { name: 'rto-seconds', description: 'How long the restore took, in seconds (empty when it failed).' },
    { name: 'rpo-seconds', description: "The backup's age when verified, in seconds." },
    { name: 'result', description: 'The report, as JSON (with the deltas and anomalies).' },
    ...anomalyOutputSpecs,
  ],
  parse(read) {
    const c = new InputCollector();
    const options: Options = {
      storage: c.field(() => parseStorage(read)),
      set: c.field(() => parseSet(read)),
      backup: c.field(() => validateBackupRef(read('backup') || 'latest')),
      randomWithinSeconds: c.field(
        () => optionalDuration('random-within', read('random-within')) ?? undefined,
      ),
      workDir: read('work-dir')?.trim() || process.env.RUNNER_TEMP || os.tmpdir(),
      kinds: parseKinds('verify', read, c),
      maxAgeSeconds: c.field(() => optionalDuration('max-age', read('max-age'))),
      maxRestoreSeconds: c.field(() => optionalDuration('max-restore-time', read('max-restore-time'))),
      keys: c.field(() => parseDecryption(read)),
      reportFile: read('report-file')?.trim() || undefined,
      record: c.field(() => parseBoolean('record', read('record'), true)),
      requireLock: c.field(() => parseBoolean('require-lock', read('require-lock'), false)),
      anomaly: parseAnomalyOptions(read, c, { minRows: true }),
      timeoutSeconds: c.field(() => parseTimeout(read, '6h')),
      progressIntervalMs: c.field(() => parseProgress(read)),
    };
    if (options.randomWithinSeconds !== undefined && options.backup !== 'latest') {
      c.field(() => {
        throw new UserError(
          `random-within: give either backup (${options.backup}) or random-within, not both`,
        );
      });
    }
    c.finish();
    return options;
  },
  async execute(options, { logger, signal, leftovers }) {
    await options.storage.check();
    const catalog = new Catalog(options.storage);
    const manifest =
      options.randomWithinSeconds !== undefined
        ? await catalog.pickRandom(options.set, options.randomWithinSeconds, new Date())
        : await catalog.resolve(options.set, options.backup);
    const uri = backupUri(options.storage, manifest.set, manifest.id);
    // The record of a locked backup gets its lock: fail now, not after the restore, where it cannot.
    const lock = recordedLock(manifest);
    if (options.record && lock && lock.until > new Date()) await options.storage.checkLocks(lock.mode);
    const kind = kindFor('verify', manifest, 'verify-restore');
    const { storage, keys, progressIntervalMs, workDir } = options;
    const common = { logger, signal, leftovers, storage, keys, progressIntervalMs, workDir, uri };
    const outcome = await kind.verify!.run(options.kinds[kind.name], manifest, {
      ...common,
      started: Date.now(),
    });
    const lockRow = await lockCheck(options.storage, manifest, options.requireLock);
    if (lockRow) outcome.checks.push(lockRow);
    const limits = { maxAgeSeconds: options.maxAgeSeconds, maxRestoreSeconds: options.maxRestoreSeconds };
    const { stopped, ...found } = outcome;
    const report = newReport(manifest, uri, { ...found, limits }, new Date());
    // The verified backup's recorded numbers (which its restore was just checked against) vs
    // those of the backup before it.
    const gates = stopped
      ? undefined
      : await checkAnomalies(options.anomaly, {
          catalog,
          manifest,
          metrics: kind.metrics,
          logger,
        });
    return finish(options, catalog, manifest, report, logger, gates, stopped);
  },
  cleanup: (state, read, logger) => removeKindLeftovers('verify', state, read, logger),
});

/**
 * Writes the report file (with the anomaly gates' deltas and anomalies) and the catalog
 * record, logs each check, and fails on a failed check, and with fail-on-anomaly on an anomaly.
 * The record says what the restore checks found, anomalies or not.
 * A run that was stopped (`stopped`: the timeout, an interrupt) still writes its report, then
 * throws the reason, recording nothing in the catalog (it proved nothing either way).
 */
async function finish(
  options: Options,
  catalog: Catalog,
  manifest: Manifest,
  report: VerifyReport,
  logger: Logger,
  gates: AnomalyReport | undefined,
  stopped?: Error,
): Promise<CommandResult> {
  const reportFile = path.resolve(
    options.reportFile ?? path.join(options.workDir, `lifeboat-verify-${manifest.set}-${manifest.id}.json`),
  );
  await fs.mkdir(path.dirname(reportFile), { recursive: true });
  const written = gates
    ? { ...report, comparedWith: gates.previous ?? null, deltas: gates.deltas, anomalies: gates.anomalies }
    : report;
  await fs.writeFile(reportFile, `${JSON.stringify(written, null, 2)}\n`);
  for (const check of report.checks) logger.info(`${check.status.padEnd(7)} ${check.name}: ${check.detail}`);
  if (stopped) {
    // The step fails as the timeout or interrupt says (its exit status too); the report stays.
    logger.warn(`verify-restore was stopped; the report of how far it got: ${reportFile}`);
    throw stopped;
  }
  if (options.record) {
    const key = await catalog.recordVerification(verificationRecord(report), recordedLock(manifest));
    logger.info(`recorded in the catalog: ${key}`);
  }
  const failures = report.checks.filter((c) => c.status === 'failed');
  logger.info(
    `verification ${report.passed ? 'passed' : 'FAILED'}: RTO ${report.restoreSeconds === null ? 'not measured' : formatDuration(report.restoreSeconds)}, RPO ${formatDuration(report.ageSeconds)}; report ${reportFile}`,
  );
  const result: CommandResult = {
    outputs: {
      'backup-id': manifest.id,
      uri: report.uri,
      passed: String(report.passed),
      report: reportFile,
      'rto-seconds': report.restoreSeconds === null ? '' : report.restoreSeconds.toFixed(3),
      'rpo-seconds': String(report.ageSeconds),
      result: JSON.stringify(written),
    },
    summary: reportSummary(report),
    failed: report.passed
      ? undefined
      : failures.length
        ? failures.map((c) => `verify-restore: check '${c.name}' failed: ${c.detail}`)
        : ['verify-restore: no check passed'],
  };
  return gates
    ? withAnomalies(
        result,
        gates,
        `verify-restore fails on the anomalies; the verification record in the catalog says what the restore checks found (${report.passed ? 'passed' : 'failed'})`,
      )
    : result;
}

import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { InputCollector, parseBoolean, parseChoice, parseDuration, parseInteger } from '../action/inputs.ts';
import { type CommandContext, type CommandResult, defineCommand } from '../action/spec.ts';
import { Catalog } from '../catalog/catalog.ts';
import { validateBackupRef } from '../catalog/ids.ts';
import { type Manifest, recordedLock } from '../catalog/manifest.ts';
import { type EbsLeftovers, removeEbsLeftovers, verifyEbs } from '../ebs/verify.ts';
import { UserError } from '../errors.ts';
import { KubeClient } from '../k8s/client.ts';
import { deleteNamespaces, type K8sLeftovers, verifyK8s } from '../k8s/verify.ts';
import { connectionInputs, type MysqlTarget, parseConnection } from '../mysql/connection.ts';
import {
  type EnvironmentType,
  environmentTypes,
  type Leftovers,
  removeLeftovers,
} from '../mysql/environment.ts';
import { verifyMysql } from '../mysql/verify.ts';
import type { DecryptionKeys } from '../pipeline/encryption.ts';
import { formatDuration, type Logger } from '../pipeline/progress.ts';
import { parseUserChecks, type UserCheck } from '../verify/checks.ts';
import { lockCheck } from '../verify/lock.ts';
import {
  newReport,
  reportSummary,
  type VerifyOutcome,
  type VerifyReport,
  verificationRecord,
} from '../verify/report.ts';
import {
  backupUri,
  type CommonOptions,
  decryptionInputs,
  parseDecryption,
  parseProgress,
  parseSet,
  parseStorage,
  parseTimeout,
  progressInput,
  setInput,
  storageInput,
  timeoutInput,
} from './common.ts';
import { parseDatabaseList } from './dump-mysql.ts';

interface Options extends CommonOptions {
  set: string;
  backup: string;
  randomWithinSeconds?: number;
  environment: EnvironmentType;
  external?: MysqlTarget;
  workDir: string;
  image?: string;
  zone?: string;
  pollIntervalMs: number;
  kubeconfig?: string;
  context?: string;
  waitReadySeconds?: number | null;
  databases: string[] | 'all';
  parallel: number;
  checks: UserCheck[];
  postRestoreCommand?: string;
  maxAgeSeconds: number | null;
  maxRestoreSeconds: number | null;
  keys: DecryptionKeys;
  reportFile?: string;
  record: boolean;
  requireLock: boolean;
}

const optionalDuration = (name: string, value: string | undefined) =>
  value?.trim() ? parseDuration(name, value) : null;

export const verifyRestoreCommand = defineCommand<Options>({
  name: 'verify-restore',
  description:
    'Restore a backup into a throwaway environment and check it (mysql: sha256, row counts, objects, your SQL checks and migrations; ebs: a volume from each snapshot; k8s: throwaway namespaces), and report RTO and RPO.',
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
      name: 'environment',
      description:
        "Where to restore: local (a throwaway mariadbd/mysqld from PATH on a temp datadir, always removed), docker (a throwaway mariadb or mysql container of the dumped server's version), or external (the server given by host/port/mysql-url, under fresh database names dropped afterwards).",
      default: 'local',
    },
    {
      name: 'work-dir',
      description:
        'local: the folder the throwaway datadir goes in (default: RUNNER_TEMP or the system temp folder).',
    },
    {
      name: 'zone',
      description:
        "ebs backups: the availability zone to create the test volumes in (default: each snapshot's source zone).",
    },
    {
      name: 'poll-interval',
      description: 'ebs backups: how often to ask EC2 whether the volumes are available.',
      default: '5s',
    },
    {
      name: 'kubeconfig',
      description:
        'k8s backups: the kubeconfig of the cluster to verify in (default: KUBECONFIG, ~/.kube/config, in-cluster).',
    },
    { name: 'context', description: 'k8s backups: the kubeconfig context.' },
    {
      name: 'wait-ready',
      description:
        'k8s backups: wait this long for restored Deployments and StatefulSets to become ready, e.g. 5m (a check per workload); default: do not wait.',
    },
    {
      name: 'docker-image',
      description:
        'docker: the image to run (default: mariadb:<major.minor> or mysql:<major.minor> of the server the backup was dumped from).',
    },
    ...connectionInputs('environment external: the server to restore into'),
    {
      name: 'databases',
      description: 'all, or the databases of the backup to restore and check, comma or newline separated.',
      default: 'all',
    },
    { name: 'parallel', description: 'Connections that load in parallel.', default: '2' },
    {
      name: 'checks',
      description:
        'Your checks, a YAML list of {name, sql, expect[, database]}: the first value the SQL returns must meet expect (>= 1000, == 0, != 0, or a value).',
    },
    {
      name: 'post-restore-command',
      description:
        "A shell command run against the restored server before your checks (e.g. the pull request's migrations); its exit status is a check. It finds DATABASE_URL, MYSQL_HOST, MYSQL_TCP_PORT, MYSQL_USER, MYSQL_PWD and MYSQL_DATABASE.",
    },
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
    { name: 'result', description: 'The report, as JSON.' },
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
      environment: c.field(() =>
        parseChoice('environment', read('environment'), [...environmentTypes], 'local'),
      ),
      external: c.field(() => parseConnection(read)),
      workDir: read('work-dir')?.trim() || process.env.RUNNER_TEMP || os.tmpdir(),
      image: read('docker-image')?.trim() || undefined,
      zone: read('zone')?.trim() || undefined,
      kubeconfig: read('kubeconfig')?.trim() || undefined,
      context: read('context')?.trim() || undefined,
      waitReadySeconds: c.field(() => optionalDuration('wait-ready', read('wait-ready'))),
      pollIntervalMs: c.field(() => parseDuration('poll-interval', read('poll-interval'), '5s') * 1000),
      databases: c.field(() => parseDatabaseList(read('databases'))),
      parallel: c.field(() => parseInteger('parallel', read('parallel'), { min: 1, max: 32 }) ?? 2),
      checks: c.field(() => parseUserChecks(read('checks'))),
      postRestoreCommand: read('post-restore-command')?.trim() || undefined,
      maxAgeSeconds: c.field(() => optionalDuration('max-age', read('max-age'))),
      maxRestoreSeconds: c.field(() => optionalDuration('max-restore-time', read('max-restore-time'))),
      keys: c.field(() => parseDecryption(read)),
      reportFile: read('report-file')?.trim() || undefined,
      record: c.field(() => parseBoolean('record', read('record'), true)),
      requireLock: c.field(() => parseBoolean('require-lock', read('require-lock'), false)),
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
    const outcome = await verifyByKind(options, manifest, uri, { logger, signal, leftovers });
    const lockRow = await lockCheck(options.storage, manifest, options.requireLock);
    if (lockRow) outcome.checks.push(lockRow);
    const limits = { maxAgeSeconds: options.maxAgeSeconds, maxRestoreSeconds: options.maxRestoreSeconds };
    const { stopped, ...found } = outcome;
    const report = newReport(manifest, uri, { ...found, limits }, new Date());
    return finish(options, catalog, manifest, report, logger, stopped);
  },
  async cleanup(state, read, logger) {
    if ((state as K8sLeftovers).type === 'namespaces') {
      const client = await KubeClient.open(
        read('kubeconfig')?.trim() || undefined,
        read('context')?.trim() || undefined,
      );
      const left = await deleteNamespaces(client, (state as K8sLeftovers).namespaces, logger);
      logger.info(`deleted the throwaway namespaces${left.length ? ` but ${left.join(', ')}` : ''}`);
      return;
    }
    if ((state as EbsLeftovers).type === 'volumes') return removeEbsLeftovers(state as EbsLeftovers, logger);
    const leftovers = state as Leftovers;
    const external = leftovers.type === 'databases' ? parseConnection(read) : undefined;
    await removeLeftovers(leftovers, external, logger);
  },
});

/** Runs the verification of the backup's kind: its engine's checks, environment and timings. */
async function verifyByKind(
  options: Options,
  manifest: Manifest,
  uri: string,
  { logger, signal, leftovers }: CommandContext,
): Promise<VerifyOutcome & { stopped?: Error }> {
  const onLeftovers = (state: unknown) => leftovers?.(state);
  switch (manifest.kind) {
    case 'ebs':
      logger.info(`verifying ${uri} (ebs, taken ${manifest.startedAt}): a volume from each snapshot`);
      return verifyEbs({
        manifest,
        zone: options.zone,
        pollIntervalMs: options.pollIntervalMs,
        onLeftovers,
        logger,
        signal,
      });
    case 'k8s': {
      logger.info(`verifying ${uri} (k8s, taken ${manifest.startedAt}): restored into throwaway namespaces`);
      return verifyK8s({
        storage: options.storage,
        manifest,
        keys: options.keys,
        client: await KubeClient.open(options.kubeconfig, options.context),
        readyTimeoutMs: (options.waitReadySeconds ?? 0) * 1000,
        pollIntervalMs: options.pollIntervalMs,
        onLeftovers,
        logger,
        signal,
        progressIntervalMs: options.progressIntervalMs,
      });
    }
    case 'mysql': {
      logger.info(
        `verifying ${uri} (mysql, taken ${manifest.startedAt}) in a ${options.environment} environment`,
      );
      const outcome = await verifyMysql({
        storage: options.storage,
        manifest,
        keys: options.keys,
        environment: options.environment,
        external: options.environment === 'external' ? options.external : undefined,
        workDir: options.workDir,
        image: options.image,
        databases: options.databases,
        parallel: options.parallel,
        checks: options.checks,
        postRestoreCommand: options.postRestoreCommand,
        onLeftovers,
        logger,
        signal,
        progressIntervalMs: options.progressIntervalMs,
      });
      return { ...outcome, counted: { tables: outcome.tables, rows: outcome.rows } };
    }
    default:
      throw new UserError(
        `backup: '${manifest.id}' is a ${manifest.kind} backup; verify-restore is built for mysql, ebs and k8s backups only in this version`,
      );
  }
}

/**
 * Writes the report file and the catalog record, logs each check, and fails on a failed check.
 * A run that was stopped (`stopped`: the timeout, an interrupt) still writes its report, then
 * throws the reason, recording nothing in the catalog (it proved nothing either way).
 */
async function finish(
  options: Options,
  catalog: Catalog,
  manifest: Manifest,
  report: VerifyReport,
  logger: Logger,
  stopped?: Error,
): Promise<CommandResult> {
  const reportFile = path.resolve(
    options.reportFile ?? path.join(options.workDir, `lifeboat-verify-${manifest.set}-${manifest.id}.json`),
  );
  await fs.mkdir(path.dirname(reportFile), { recursive: true });
  await fs.writeFile(reportFile, `${JSON.stringify(report, null, 2)}\n`);
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
  return {
    outputs: {
      'backup-id': manifest.id,
      uri: report.uri,
      passed: String(report.passed),
      report: reportFile,
      'rto-seconds': report.restoreSeconds === null ? '' : report.restoreSeconds.toFixed(1),
      'rpo-seconds': String(report.ageSeconds),
      result: JSON.stringify(report),
    },
    summary: reportSummary(report),
    failed: report.passed
      ? undefined
      : failures.length
        ? failures.map((c) => `verify-restore: check '${c.name}' failed: ${c.detail}`)
        : ['verify-restore: no check passed'],
  };
}

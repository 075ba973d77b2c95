import { existsSync } from 'node:fs';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import {
  InputCollector,
  parseAutoBoolean,
  parseBoolean,
  parseChoice,
  parseDuration,
  parseInteger,
  requireInput,
} from '../action/inputs.ts';
import type { CommandContext, CommandResult } from '../action/spec.ts';
import { defineCommand } from '../action/spec.ts';
import { Catalog } from '../catalog/catalog.ts';
import { validateBackupRef } from '../catalog/ids.ts';
import type { Manifest } from '../catalog/manifest.ts';
import { type EbsRestoreOptions, restoreEbs } from '../ebs/restore.ts';
import { UserError } from '../errors.ts';
import { type FilesLeftovers, removeFilesLeftovers, restoreFiles } from '../files/restore.ts';
import { KubeClient } from '../k8s/client.ts';
import { type ExistingPolicy, type K8sRestoreOptions, restoreK8s, veleroBackupName } from '../k8s/restore.ts';
import { connectionInputs, describeTarget, type MysqlTarget, parseConnection } from '../mysql/connection.ts';
import {
  type IfExists,
  removeStagingLeftovers,
  restoreMysql,
  type StagingLeftovers,
} from '../mysql/restore.ts';
import type { DecryptionKeys } from '../pipeline/encryption.ts';
import { splitList } from '../pipeline/encryption.ts';
import type { Logger } from '../pipeline/progress.ts';
import { formatBytes } from '../pipeline/progress.ts';
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
  target?: string;
  overwrite: boolean;
  preserveOwner: boolean;
  dryRun: boolean;
  keys: DecryptionKeys;
  mysql: MysqlTarget;
  databases: string[] | 'all';
  rename: Map<string, string>;
  ifExists: IfExists;
  parallel: number;
  ebs: Omit<EbsRestoreOptions, 'manifest' | 'dryRun' | 'logger' | 'signal'>;
  k8s: Omit<
    K8sRestoreOptions,
    'storage' | 'manifest' | 'keys' | 'client' | 'dryRun' | 'logger' | 'signal'
  > & {
    kubeconfig?: string;
    context?: string;
    reportFile?: string;
  };
}

const existingPolicies: ExistingPolicy[] = ['skip', 'update', 'recreate'];

/** `prod=prod-restore-test, web=web2` into a map of namespaces. */
function parseNamespaceMapping(value: string | undefined): Map<string, string> {
  const map = new Map<string, string>();
  for (const pair of splitList(value)) {
    const m = /^([a-z0-9-]+)=([a-z0-9-]+)$/.exec(pair.trim());
    if (!m) {
      throw new UserError(
        `namespace-mapping: '${pair}' is not accepted; accepted: source=target namespace pairs, e.g. prod=prod-restore-test`,
      );
    }
    map.set(m[1]!, m[2]!);
  }
  return map;
}

const ifExistsModes: IfExists[] = ['fail', 'replace', 'skip'];

/** `shop=shop_restored, crm=crm_copy` into a map from source to target name. */
export function parseRename(value: string | undefined): Map<string, string> {
  const map = new Map<string, string>();
  for (const pair of splitList(value)) {
    const match = /^([^=]+)=([^=]+)$/.exec(pair);
    const from = match?.[1]?.trim();
    const to = match?.[2]?.trim();
    if (!from || !to) {
      throw new UserError(
        `rename: '${pair}' is not accepted; accepted: source=target pairs, e.g. shop=shop_restored`,
      );
    }
    if ([...to].length > 64)
      throw new UserError(`rename: '${to}' is longer than 64 characters, the MySQL limit`);
    if (map.has(from)) throw new UserError(`rename: '${from}' is renamed twice`);
    map.set(from, to);
  }
  return map;
}

export const restoreCommand = defineCommand<Options>({
  name: 'restore',
  description:
    "Restore a backup for real: checks every artifact's sha256 and never leaves a half-restored target.",
  inputs: [
    storageInput,
    {
      ...setInput,
      required: false,
      description: `${setInput.description} Required, except with velero-backup.`,
    },
    {
      name: 'backup',
      description: 'The backup id, or latest (the newest committed backup of the set).',
      default: 'latest',
    },
    {
      name: 'target',
      description: 'files backups: the folder to restore into (new or empty unless overwrite).',
    },
    {
      name: 'overwrite',
      description: 'Replace a non-empty target, only once the restore has fully succeeded.',
      default: 'false',
    },
    {
      name: 'preserve-owner',
      description:
        "files backups: restore the archive's owners (when running as root) and setuid, setgid and sticky bits; by default files belong to whoever restores and get no setuid or setgid bit.",
      default: 'false',
    },
    {
      name: 'dry-run',
      description: 'Download, check, decrypt and read everything; write nothing.',
      default: 'false',
    },
    ...decryptionInputs,
    ...connectionInputs('mysql backups: the server to restore into'),
    {
      name: 'databases',
      description: 'mysql backups: all, or the databases to restore, comma or newline separated.',
      default: 'all',
    },
    {
      name: 'rename',
      description:
        'mysql backups: restore databases under other names, e.g. shop=shop_restored (comma separated pairs).',
    },
    {
      name: 'if-exists',
      description:
        'mysql backups: when a target database exists and is not empty: fail, replace (dropped only after the new copy is fully loaded) or skip.',
      default: 'fail',
    },
    {
      name: 'parallel',
      description: 'mysql backups: connections that load in parallel.',
      default: '2',
    },
    {
      name: 'instance-id',
      description:
        "ebs backups: the instance whose zone the volumes go in and, with swap, that gets them (default: the backup's source instance).",
    },
    {
      name: 'zone',
      description: "ebs backups: the availability zone for the new volumes (default: the instance's).",
    },
    {
      name: 'volume-type',
      description: "ebs backups: the type of the new volumes (gp3, io2, …; default: EC2's).",
    },
    { name: 'iops', description: 'ebs backups: provisioned IOPS of the new volumes.' },
    { name: 'throughput', description: 'ebs backups: throughput (MiB/s) of new gp3 volumes.' },
    { name: 'kms-key-id', description: 'ebs backups: encrypt the new volumes with this KMS key.' },
    {
      name: 'swap',
      description:
        "ebs backups: detach the instance's volumes and attach the new ones at the same device names (rolled back if an attach fails); false only creates the volumes.",
      default: 'false',
    },
    {
      name: 'stop-instance',
      description:
        'ebs backups, with swap: stop the instance first and start it again afterwards (needed for the root volume).',
      default: 'false',
    },
    {
      name: 'delete-old-volumes',
      description:
        'ebs backups, with swap: delete the replaced volumes (by default they are kept and tagged).',
      default: 'false',
    },
    {
      name: 'poll-interval',
      description: 'ebs backups: how often to ask EC2 about volume states.',
      default: '5s',
    },
    {
      name: 'kubeconfig',
      description:
        'k8s backups: the kubeconfig of the cluster to restore into (default: KUBECONFIG, ~/.kube/config, in-cluster).',
    },
    { name: 'context', description: 'k8s backups: the kubeconfig context.' },
    {
      name: 'namespace-mapping',
      description:
        'k8s backups: restore namespaces under other names, e.g. prod=prod-restore-test (comma separated).',
    },
    {
      name: 'include-namespaces',
      description: 'k8s backups: namespaces to restore, globs (default: all in the backup).',
    },
    { name: 'exclude-namespaces', description: 'k8s backups: namespaces not to restore, globs.' },
    {
      name: 'include-resources',
      description: 'k8s backups: resource types to restore, e.g. deployments.apps (default: all).',
    },
    { name: 'exclude-resources', description: 'k8s backups: resource types not to restore.' },
    {
      name: 'existing',
      description:
        "k8s backups: when an object exists: skip, update (replace it with the backup's) or recreate (delete, then create).",
      default: 'skip',
    },
    {
      name: 'include-cluster-resources',
      description:
        'k8s backups: cluster-scoped objects. auto: all when no namespace filter is given, else only the CRDs and PVs the restored objects need; true: all; false: none.',
      default: 'auto',
    },
    {
      name: 'preserve-node-ports',
      description:
        'k8s backups: keep every node port of a Service (by default only those set explicitly are kept; the others are allocated anew).',
      default: 'false',
    },
    {
      name: 'recreate-crds',
      description:
        'k8s backups: with existing: recreate, also delete and re-create existing CRDs (which deletes every object of them in the whole cluster).',
      default: 'false',
    },
    {
      name: 'restore-pvs-without-snapshot',
      description:
        'k8s backups: restore PVs with reclaim policy Delete that have no snapshot (by default their PVCs get new volumes, so that the cluster never deletes the disk they name).',
      default: 'false',
    },
    {
      name: 'report-file',
      description:
        'k8s backups: where to write the JSON report with a result per object (default: in RUNNER_TEMP).',
    },
    {
      name: 'velero-backup',
      description:
        "Restore a backup written by Velero instead: the path of its tarball (<name>.tar.gz, from the bucket's backups/<name>/ folder), with the k8s inputs above.",
    },
    timeoutInput('6h'),
    progressInput,
  ],
  outputs: [
    { name: 'backup-id', description: 'The id of the restored backup.' },
    { name: 'uri', description: 'The URL of the restored backup folder.' },
    { name: 'target', description: 'Where it was restored.' },
    { name: 'bytes', description: 'Bytes of content restored.' },
    { name: 'duration-seconds', description: 'How long the restore took.' },
    { name: 'result', description: 'What was restored, as JSON.' },
    { name: 'report', description: 'k8s backups: the path of the JSON report with a result per object.' },
  ],
  parse(read) {
    const c = new InputCollector();
    const options: Options = {
      storage: c.field(() => parseStorage(read)),
      set: read('velero-backup') ? read('set')?.trim() || '' : c.field(() => parseSet(read)),
      backup: c.field(() => validateBackupRef(read('backup') || 'latest')),
      target: read('target')?.trim() || undefined,
      overwrite: c.field(() => parseBoolean('overwrite', read('overwrite'), false)),
      preserveOwner: c.field(() => parseBoolean('preserve-owner', read('preserve-owner'), false)),
      dryRun: c.field(() => parseBoolean('dry-run', read('dry-run'), false)),
      keys: c.field(() => parseDecryption(read)),
      mysql: c.field(() => parseConnection(read)),
      databases: c.field(() => parseDatabaseList(read('databases'))),
      rename: c.field(() => parseRename(read('rename'))),
      ifExists: c.field(() => parseChoice('if-exists', read('if-exists'), ifExistsModes, 'fail')),
      parallel: c.field(() => parseInteger('parallel', read('parallel'), { min: 1, max: 32 }) ?? 2),
      ebs: {
        instanceId: read('instance-id')?.trim() || undefined,
        zone: read('zone')?.trim() || undefined,
        volumeType: read('volume-type')?.trim() || undefined,
        iops: c.field(() => parseInteger('iops', read('iops'), { min: 100, max: 256_000 })),
        throughput: c.field(() => parseInteger('throughput', read('throughput'), { min: 125, max: 2000 })),
        kmsKeyId: read('kms-key-id')?.trim() || undefined,
        swap: c.field(() => parseBoolean('swap', read('swap'), false)),
        stopInstance: c.field(() => parseBoolean('stop-instance', read('stop-instance'), false)),
        deleteOldVolumes: c.field(() =>
          parseBoolean('delete-old-volumes', read('delete-old-volumes'), false),
        ),
        pollIntervalMs: c.field(() => parseDuration('poll-interval', read('poll-interval'), '5s') * 1000),
      },
      k8s: {
        kubeconfig: read('kubeconfig')?.trim() || undefined,
        context: read('context')?.trim() || undefined,
        namespaceMapping: c.field(() => parseNamespaceMapping(read('namespace-mapping'))),
        includeNamespaces: splitList(read('include-namespaces')),
        excludeNamespaces: splitList(read('exclude-namespaces')),
        includeResources: splitList(read('include-resources')),
        excludeResources: splitList(read('exclude-resources')),
        existing: c.field(() => parseChoice('existing', read('existing'), existingPolicies, 'skip')),
        includeClusterResources: c.field(() =>
          parseAutoBoolean('include-cluster-resources', read('include-cluster-resources')),
        ),
        preserveNodePorts: c.field(() =>
          parseBoolean('preserve-node-ports', read('preserve-node-ports'), false),
        ),
        recreateCrds: c.field(() => parseBoolean('recreate-crds', read('recreate-crds'), false)),
        restorePvsWithoutSnapshot: c.field(() =>
          parseBoolean('restore-pvs-without-snapshot', read('restore-pvs-without-snapshot'), false),
        ),
        reportFile: read('report-file')?.trim() || undefined,
        veleroFile: c.field(() => {
          const file = read('velero-backup')?.trim();
          if (file && !existsSync(file))
            throw new UserError(
              `velero-backup: '${file}' does not exist; give the path of a Velero backup tarball (<name>.tar.gz)`,
            );
          return file || undefined;
        }),
      },
      timeoutSeconds: c.field(() => parseTimeout(read, '6h')),
      progressIntervalMs: c.field(() => parseProgress(read)),
    };
    c.finish();
    return options;
  },
  async execute(options, { logger, signal, leftovers }) {
    const started = Date.now();
    if (options.k8s.veleroFile) {
      logger.info(
        `${options.dryRun ? 'dry run: checking' : 'restoring'} the Velero backup ${options.k8s.veleroFile}`,
      );
      return restoreK8sBackup(
        options,
        undefined,
        `file://${path.resolve(options.k8s.veleroFile)}`,
        started,
        logger,
        signal,
      );
    }
    await options.storage.check('read');
    const manifest = await new Catalog(options.storage).resolve(options.set, options.backup);
    const uri = backupUri(options.storage, manifest.set, manifest.id);
    logger.info(
      `${options.dryRun ? 'dry run: checking' : 'restoring'} ${uri} (${manifest.kind}, finished ${manifest.finishedAt})`,
    );
    if (manifest.kind === 'mysql')
      return restoreMysqlBackup(options, manifest, uri, started, { logger, signal, leftovers });
    if (manifest.kind === 'ebs') return restoreEbsBackup(options, manifest, uri, started, logger, signal);
    if (manifest.kind === 'k8s') return restoreK8sBackup(options, manifest, uri, started, logger, signal);
    if (manifest.kind !== 'files') {
      throw new UserError(
        `backup: '${manifest.id}' is a ${manifest.kind} backup; restoring ${manifest.kind} backups is not built yet (only files, mysql, ebs and k8s)`,
      );
    }
    const target = requireInput('target', options.target, 'the folder to restore the files into');
    const result = await restoreFiles({
      ...options,
      manifest,
      target,
      logger,
      signal,
      onLeftovers: (state) => leftovers?.(state),
    });
    const seconds = (Date.now() - started) / 1000;
    const verb = options.dryRun ? 'checked (dry run, nothing written)' : `restored into ${result.target}`;
    logger.info(`${verb}: ${result.facts.files} files, ${formatBytes(result.facts.bytes)}, sha256 verified`);
    return {
      outputs: {
        'backup-id': manifest.id,
        uri,
        target: result.target,
        bytes: String(result.facts.bytes),
        'duration-seconds': seconds.toFixed(1),
        result: JSON.stringify({ backupId: manifest.id, set: manifest.set, kind: manifest.kind, ...result }),
      },
      summary: {
        heading: `${options.dryRun ? 'Dry-run restore' : 'Restore'} of ${manifest.set}/${manifest.id}`,
        table: [
          ['', ''],
          ['Backup', manifest.id],
          ['From', uri],
          ['Target', options.dryRun ? `${result.target} (dry run: nothing written)` : result.target],
          [
            'Restored',
            `${result.facts.files} files, ${result.facts.directories} folders, ${result.facts.symlinks} symlinks`,
          ],
          ['Content', formatBytes(result.facts.bytes)],
          ['Integrity', 'sha256 and counts match the manifest'],
          ['Duration', `${seconds.toFixed(1)} s`],
        ],
      },
    };
  },
  /**
   * The `post:` step of a killed restore: a files restore's staging folder is removed (or a
   * swap it was killed in finished or undone); a MySQL restore's staging databases dropped.
   */
  async cleanup(state, read, logger) {
    const left = state as FilesLeftovers | StagingLeftovers;
    if (left.type === 'files-staging') return removeFilesLeftovers(left, logger);
    if (left.type === 'mysql-staging') return removeStagingLeftovers(left, parseConnection(read), logger);
    throw new UserError(
      `post: the main step left state this version does not know: ${JSON.stringify(state)}`,
    );
  },
});

async function restoreMysqlBackup(
  options: Options,
  manifest: Manifest,
  uri: string,
  started: number,
  { logger, signal, leftovers }: CommandContext,
): Promise<CommandResult> {
  const result = await restoreMysql({
    storage: options.storage,
    manifest,
    target: options.mysql,
    databases: options.databases,
    rename: options.rename,
    ifExists: options.ifExists,
    parallel: options.parallel,
    dryRun: options.dryRun,
    keys: options.keys,
    logger,
    signal,
    progressIntervalMs: options.progressIntervalMs,
    onLeftovers: (state) => leftovers?.(state),
  });
  const seconds = (Date.now() - started) / 1000;
  const server = describeTarget(options.mysql);
  const target = options.dryRun ? 'none (dry run)' : server;
  const restored = result.databases.filter((d) => d.status !== 'skipped');
  logger.info(
    `${options.dryRun ? 'checked (dry run, nothing written)' : `restored into ${server}`}: ${restored.length} database(s), ${result.tables} tables, ${result.rows} rows, sha256 and row counts verified`,
  );
  return {
    outputs: {
      'backup-id': manifest.id,
      uri,
      target,
      bytes: String(result.bytes),
      'duration-seconds': seconds.toFixed(1),
      result: JSON.stringify({
        backupId: manifest.id,
        set: manifest.set,
        kind: manifest.kind,
        dryRun: options.dryRun,
        ...result,
      }),
    },
    summary: {
      heading: `${options.dryRun ? 'Dry-run restore' : 'Restore'} of ${manifest.set}/${manifest.id}`,
      table: [
        ['Database', 'Restored as', 'Result', 'Tables', 'Rows'],
        ...result.databases.map((d) => [d.source, d.target, d.status, String(d.tables), String(d.rows)]),
      ],
      notes: [
        `From ${uri} into ${target}; sha256 and row counts match the manifest; ${seconds.toFixed(1)} s.`,
      ],
    },
  };
}

async function restoreEbsBackup(
  options: Options,
  manifest: Manifest,
  uri: string,
  started: number,
  logger: Logger,
  signal: AbortSignal,
): Promise<CommandResult> {
  const result = await restoreEbs({ ...options.ebs, manifest, dryRun: options.dryRun, logger, signal });
  const seconds = (Date.now() - started) / 1000;
  const where = `${result.zone}${result.instanceId ? ` for ${result.instanceId}` : ''}`;
  logger.info(
    options.dryRun
      ? `dry run: ${result.volumes.length} volume(s) would be created in ${where}; nothing was changed`
      : `${result.volumes.length} volume(s) created in ${where}${result.swapped ? ', swapped in' : ''}`,
  );
  return {
    outputs: {
      'backup-id': manifest.id,
      uri,
      target: result.volumes.map((v) => v.volumeId).join(','),
      bytes: '0',
      'duration-seconds': seconds.toFixed(1),
      result: JSON.stringify({ backupId: manifest.id, set: manifest.set, kind: manifest.kind, ...result }),
    },
    summary: {
      heading: `${options.dryRun ? 'Dry-run restore' : 'Restore'} of ${manifest.set}/${manifest.id}`,
      table: [
        ['Device', 'Snapshot', 'New volume', 'Replaced'],
        ...result.volumes.map((v) => [
          v.device || '-',
          v.snapshotId,
          v.volumeId || '(dry run)',
          v.replaced ?? '-',
        ]),
      ],
      notes: [
        `In ${where}; ${result.swapped ? `swapped in; the replaced volumes were ${result.oldVolumesDeleted ? 'deleted' : 'kept and tagged lifeboat:replaced-by'}` : 'not attached (swap: false)'}; ${seconds.toFixed(1)} s.`,
      ],
    },
  };
}

async function restoreK8sBackup(
  options: Options,
  manifest: Manifest | undefined,
  uri: string,
  started: number,
  logger: Logger,
  signal: AbortSignal,
): Promise<CommandResult> {
  const { kubeconfig, context, reportFile, ...k8s } = options.k8s;
  const client = await KubeClient.open(kubeconfig, context);
  const result = await restoreK8s({
    ...k8s,
    ...(manifest ? { storage: options.storage, manifest, keys: options.keys } : {}),
    client,
    dryRun: options.dryRun,
    logger,
    signal,
    progressIntervalMs: options.progressIntervalMs,
  });
  const seconds = (Date.now() - started) / 1000;
  const id = manifest?.id ?? veleroBackupName(options.k8s.veleroFile!);
  const set = manifest?.set ?? 'velero';
  const report = path.resolve(
    reportFile ?? path.join(process.env.RUNNER_TEMP || os.tmpdir(), `lifeboat-restore-${set}-${id}.json`),
  );
  await fs.mkdir(path.dirname(report), { recursive: true });
  await fs.writeFile(
    report,
    `${JSON.stringify({ backupId: id, set, server: client.server, dryRun: options.dryRun, ...result }, null, 2)}\n`,
  );
  const c = result.counts;
  const line = `${c.created} created, ${c.updated} updated, ${c.recreated} recreated, ${c.skipped} skipped, ${c.failed} failed${c.unvalidated ? `, ${c.unvalidated} not validated (dry run: their namespace or CRD does not exist yet)` : ''}`;
  logger.info(`${options.dryRun ? 'dry run (nothing stored): ' : ''}${line}; report ${report}`);
  const failures = result.objects.filter((o) => o.outcome === 'failed');
  return {
    outputs: {
      'backup-id': id,
      uri,
      target: client.server,
      bytes: '0',
      'duration-seconds': seconds.toFixed(1),
      result: JSON.stringify({
        backupId: id,
        set,
        kind: 'k8s',
        dryRun: options.dryRun,
        counts: c,
        byResource: result.byResource,
      }),
      report,
    },
    summary: {
      heading: `${options.dryRun ? 'Dry-run restore' : 'Restore'} of ${manifest ? `${set}/${id}` : `the Velero backup ${id}`}`,
      table: [
        ['Resource', 'Restored'],
        ...Object.entries(result.byResource).map(([r, n]) => [r, String(n)]),
        ...failures
          .slice(0, 20)
          .map((f) => [
            `${f.resource} ${f.namespace ? `${f.namespace}/` : ''}${f.name}`,
            `FAILED: ${f.reason}`,
          ]),
      ],
      notes: [`Into ${client.server}: ${line}; ${seconds.toFixed(1)} s. A result per object: ${report}.`],
    },
    failed: failures.length
      ? [
          `restore: ${failures.length} object(s) failed (first: ${failures[0]!.resource} ${failures[0]!.name}: ${failures[0]!.reason}); see ${report}`,
        ]
      : undefined,
  };
}

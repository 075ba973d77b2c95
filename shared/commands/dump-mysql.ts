import { InputCollector, parseBoolean, parseChoice } from '../action/inputs.ts';
import { defineCommand } from '../action/spec.ts';
import type { AnomalyOptions } from '../anomaly/run.ts';
import { totalBytes } from '../catalog/manifest.ts';
import { UserError } from '../errors.ts';
import { connectionInputs, parseConnection } from '../kinds/mysql/connection.ts';
import { mysqlMetrics } from '../kinds/mysql/metrics.ts';
import { describeTarget } from '../mysql/connection.ts';
import { type BinlogMode, dumpMysql, type MysqlDumpOptions } from '../mysql/dump.ts';
import type { MysqlFacts } from '../mysql/facts.ts';
import { splitList } from '../pipeline/encryption.ts';
import { formatBytes } from '../pipeline/progress.ts';
import {
  anomalyInputs,
  anomalyOutputSpecs,
  artifactInputs,
  backupOutputs,
  backupUri,
  type CommonOptions,
  gateBackup,
  lockInputs,
  lockRows,
  minRowsInput,
  parseAnomalyOptions,
  parseArtifactOptions,
  parseBackupStorage,
  parseProgress,
  parseSet,
  parseTimeout,
  progressInput,
  setInput,
  storageInput,
  timeoutInput,
} from './common.ts';

type Options = CommonOptions &
  Omit<MysqlDumpOptions, 'logger' | 'signal' | 'storage' | 'progressIntervalMs'> & {
    anomaly: AnomalyOptions;
  };

const binlogModes: BinlogMode[] = ['auto', 'required', 'off'];

/** `all`, or database names separated by commas or newlines. */
export function parseDatabaseList(value: string | undefined): string[] | 'all' {
  const names = splitList(value);
  if (names.length === 0 || (names.length === 1 && names[0]!.toLowerCase() === 'all')) return 'all';
  if (names.some((n) => n.toLowerCase() === 'all')) {
    throw new UserError('databases: give either all or a list of names, not both');
  }
  for (const n of names) {
    if ([...n].length > 64)
      throw new UserError(`databases: '${n}' is longer than 64 characters, the MySQL limit`);
  }
  return names;
}

export const dumpMysqlCommand = defineCommand<Options>({
  name: 'dump-mysql',
  description:
    'Back up MySQL or MariaDB databases in one consistent snapshot (routines, triggers, events, binary data, the binary log position), streamed as one SQL artifact, compressed and optionally encrypted; the manifest records exact row counts per table.',
  inputs: [
    storageInput,
    setInput,
    ...connectionInputs('server to back up'),
    {
      name: 'databases',
      description:
        'all (every database but mysql, sys and the schema views), or names, comma or newline separated.',
      default: 'all',
    },
    {
      name: 'include-system-databases',
      description: 'With databases: all, also back up the mysql and sys databases (users, grants).',
      default: 'false',
    },
    {
      name: 'exclude-tables',
      description:
        'Tables to leave out as database.table, comma or newline separated; * and ? are wildcards (shop.sessions, shop.tmp_*).',
    },
    {
      name: 'binlog-position',
      description:
        'Record the binary log file, position and GTID: auto (when the binary log is on and the user has RELOAD), required (fail otherwise) or off.',
      default: 'auto',
    },
    ...artifactInputs,
    ...lockInputs,
    {
      name: 'pre-command',
      description:
        'A bash command run before the dump (e.g. quiesce the application); the dump does not start if it fails.',
    },
    {
      name: 'post-command',
      description: 'A bash command run after the dump, also when the dump or the pre-command failed.',
    },
    ...anomalyInputs,
    minRowsInput,
    timeoutInput('6h'),
    progressInput,
  ],
  outputs: [
    ...backupOutputs('dump', 'The manifest, as JSON (row counts per table, binary log position).'),
    ...anomalyOutputSpecs,
  ],
  parse(read) {
    const c = new InputCollector();
    const options: Options = {
      storage: parseBackupStorage(read, c),
      set: c.field(() => parseSet(read)),
      target: c.field(() => parseConnection(read)),
      databases: c.field(() => parseDatabaseList(read('databases'))),
      includeSystemDatabases: c.field(() =>
        parseBoolean('include-system-databases', read('include-system-databases'), false),
      ),
      excludeTables: splitList(read('exclude-tables')),
      binlogPosition: c.field(() =>
        parseChoice('binlog-position', read('binlog-position'), binlogModes, 'auto'),
      ),
      ...parseArtifactOptions(read, c),
      preCommand: read('pre-command')?.trim() || undefined,
      postCommand: read('post-command')?.trim() || undefined,
      anomaly: parseAnomalyOptions(read, c, { minRows: true }),
      timeoutSeconds: c.field(() => parseTimeout(read, '6h')),
      progressIntervalMs: c.field(() => parseProgress(read)),
    };
    c.finish();
    return options;
  },
  async execute(options, { logger, signal }) {
    const started = Date.now();
    const manifest = await dumpMysql({ ...options, logger, signal });
    const seconds = (Date.now() - started) / 1000;
    const artifact = manifest.artifacts[0]!;
    const facts = manifest.facts as unknown as MysqlFacts;
    const t = facts.totals;
    const uri = backupUri(options.storage, manifest.set, manifest.id);
    logger.info(
      `committed ${uri}: ${t.databases} database(s), ${t.tables} tables, ${t.rows} rows (${formatBytes(totalBytes(manifest))} stored)`,
    );
    return gateBackup(
      options.anomaly,
      { storage: options.storage, manifest, metrics: mysqlMetrics, logger },
      {
        outputs: {
          'backup-id': manifest.id,
          uri,
          bytes: String(totalBytes(manifest)),
          sha256: artifact.sha256,
          'duration-seconds': seconds.toFixed(1),
          result: JSON.stringify(manifest),
        },
        summary: {
          heading: `MySQL backup ${manifest.set}/${manifest.id}`,
          table: [
            ['', ''],
            ['Backup', manifest.id],
            ['Stored at', uri],
            ['Server', `${describeTarget(options.target)} (${facts.server.flavour} ${facts.server.version})`],
            ['Databases', facts.databases.map((d) => d.name).join(', ')],
            ['Tables', `${t.tables} tables, ${t.rows} rows`],
            [
              'Objects',
              `${t.views} views, ${t.routines} routines, ${t.triggers} triggers, ${t.events} events`,
            ],
            [
              'Binary log',
              facts.binlog
                ? `${facts.binlog.file}:${facts.binlog.position}${facts.binlog.gtid ? ` (GTID ${facts.binlog.gtid})` : ''}`
                : 'not recorded',
            ],
            ['SQL', formatBytes(artifact.contentBytes)],
            [
              'Stored',
              `${formatBytes(artifact.bytes)} (${artifact.compression}${artifact.encryption ? ', age-encrypted' : ', not encrypted'})`,
            ],
            ['sha256', artifact.sha256],
            ...lockRows(manifest),
            ['Duration', `${seconds.toFixed(1)} s`],
          ],
          notes: manifest.contents.excluded.length
            ? [`Left out: ${manifest.contents.excluded.join('; ')}`]
            : undefined,
        },
      },
    );
  },
});

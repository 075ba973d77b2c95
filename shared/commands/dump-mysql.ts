import { InputCollector, parseBoolean, parseInteger } from '../action/inputs.ts';
import { defineCommand } from '../action/spec.ts';
import { totalBytes } from '../catalog/manifest.ts';
import { UserError } from '../errors.ts';
import { connectionInputs, describeTarget, parseConnection } from '../mysql/connection.ts';
import { type BinlogMode, dumpMysql, type MysqlDumpOptions } from '../mysql/dump.ts';
import type { MysqlFacts } from '../mysql/facts.ts';
import { parseCompression } from '../pipeline/compression.ts';
import { splitList } from '../pipeline/encryption.ts';
import { formatBytes } from '../pipeline/progress.ts';
import {
  backupUri,
  type CommonOptions,
  parseEncryption,
  parseProgress,
  parseSet,
  parseStorage,
  parseTimeout,
  passphraseInput,
  progressInput,
  setInput,
  storageInput,
  timeoutInput,
} from './common.ts';

type Options = CommonOptions & Omit<MysqlDumpOptions, 'logger' | 'signal' | 'storage' | 'progressIntervalMs'>;

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
    { name: 'compression', description: 'zstd, gzip or none.', default: 'zstd' },
    {
      name: 'compression-level',
      description: 'The compression level (zstd 1-19, gzip 1-9); default zstd 3, gzip 6.',
    },
    {
      name: 'age-recipients',
      description: 'age public keys (age1…) to encrypt to, comma or newline separated.',
    },
    passphraseInput,
    { name: 'tags', description: 'Labels recorded in the manifest, comma separated.' },
    {
      name: 'pre-command',
      description:
        'A bash command run before the dump (e.g. quiesce the application); the dump does not start if it fails.',
    },
    {
      name: 'post-command',
      description: 'A bash command run after the dump, also when the dump or the pre-command failed.',
    },
    timeoutInput('6h'),
    progressInput,
  ],
  outputs: [
    { name: 'backup-id', description: 'The id of the committed backup.' },
    { name: 'uri', description: 'The URL of the backup folder.' },
    { name: 'bytes', description: 'Bytes stored.' },
    { name: 'sha256', description: 'sha256 of the stored dump.' },
    { name: 'duration-seconds', description: 'How long the backup took.' },
    { name: 'result', description: 'The manifest, as JSON (row counts per table, binary log position).' },
  ],
  parse(read) {
    const c = new InputCollector();
    const compression = c.field(() => parseCompression(read('compression') || 'zstd'));
    const binlog = (read('binlog-position')?.trim().toLowerCase() || 'auto') as BinlogMode;
    const options: Options = {
      storage: c.field(() => parseStorage(read)),
      set: c.field(() => parseSet(read)),
      target: c.field(() => parseConnection(read)),
      databases: c.field(() => parseDatabaseList(read('databases'))),
      includeSystemDatabases: c.field(() =>
        parseBoolean('include-system-databases', read('include-system-databases'), false),
      ),
      excludeTables: splitList(read('exclude-tables')),
      binlogPosition: c.field(() => {
        if (!binlogModes.includes(binlog)) {
          throw new UserError(
            `binlog-position: '${read('binlog-position')}' is not accepted; accepted: auto, required or off`,
          );
        }
        return binlog;
      }),
      compression,
      compressionLevel: c.field(() =>
        parseInteger(
          'compression-level',
          read('compression-level'),
          compression === 'gzip' ? { min: 1, max: 9 } : { min: 1, max: 19 },
        ),
      ),
      encryption: c.field(() => parseEncryption(read)),
      tags: splitList(read('tags')),
      preCommand: read('pre-command')?.trim() || undefined,
      postCommand: read('post-command')?.trim() || undefined,
      timeoutSeconds: c.field(() => parseTimeout(read, '6h')),
      progressIntervalMs: c.field(() => parseProgress(read)),
    };
    c.finish();
    return options;
  },
  async execute(options, { logger, signal }) {
    const started = Date.now();
    if (!options.encryption) logger.info('not encrypted: give age-recipients to encrypt the backup');
    const manifest = await dumpMysql({ ...options, logger, signal });
    const seconds = (Date.now() - started) / 1000;
    const artifact = manifest.artifacts[0]!;
    const facts = manifest.facts as unknown as MysqlFacts;
    const t = facts.totals;
    const uri = backupUri(options.storage, manifest.set, manifest.id);
    logger.info(
      `committed ${uri}: ${t.databases} database(s), ${t.tables} tables, ${t.rows} rows (${formatBytes(totalBytes(manifest))} stored)`,
    );
    return {
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
          ['Objects', `${t.views} views, ${t.routines} routines, ${t.triggers} triggers, ${t.events} events`],
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
          ['Duration', `${seconds.toFixed(1)} s`],
        ],
        notes: manifest.contents.excluded.length
          ? [`Left out: ${manifest.contents.excluded.join('; ')}`]
          : undefined,
      },
    };
  },
});

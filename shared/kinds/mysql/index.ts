import { parseChoice, parseInteger } from '../../action/inputs.ts';
import { parseDatabaseList } from '../../commands/dump-mysql.ts';
import { UserError } from '../../errors.ts';
import { describeTarget } from '../../mysql/connection.ts';
import { environmentTypes, type Leftovers, removeLeftovers } from '../../mysql/environment.ts';
import {
  type IfExists,
  removeStagingLeftovers,
  restoreMysql,
  type StagingLeftovers,
} from '../../mysql/restore.ts';
import { verifyMysql } from '../../mysql/verify.ts';
import { splitList } from '../../pipeline/encryption.ts';
import { parseUserChecks } from '../../verify/checks.ts';
import { defineKind, restoreOutputs } from '../kind.ts';
import { connectionInputs, parseConnection } from './connection.ts';
import { mysqlMetrics } from './metrics.ts';

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

const parallelInput = (description: string) => ({ name: 'parallel', description, default: '2' });
const parseParallel = (read: (name: string) => string | undefined) =>
  parseInteger('parallel', read('parallel'), { min: 1, max: 32 }) ?? 2;

export const mysqlKind = defineKind({
  name: 'mysql',
  metrics: mysqlMetrics,
  restore: {
    inputs: [
      ...connectionInputs('server to restore into'),
      {
        name: 'databases',
        description: 'all, or the databases to restore, comma or newline separated.',
        default: 'all',
      },
      {
        name: 'rename',
        description: 'restore databases under other names, e.g. shop=shop_restored (comma separated pairs).',
      },
      {
        name: 'if-exists',
        description:
          'when a target database exists and is not empty: fail, replace (dropped only after the new copy is fully loaded) or skip.',
        default: 'fail',
      },
      parallelInput('connections that load in parallel.'),
    ],
    parse: (read, c) => ({
      target: c.field(() => parseConnection(read)),
      databases: c.field(() => parseDatabaseList(read('databases'))),
      rename: c.field(() => parseRename(read('rename'))),
      ifExists: c.field(() => parseChoice('if-exists', read('if-exists'), ifExistsModes, 'fail')),
      parallel: c.field(() => parseParallel(read)),
    }),
    async run(options, manifest, context) {
      const { logger, signal, leftovers, uri, dryRun, ...common } = context;
      const result = await restoreMysql({
        storage: common.storage,
        manifest,
        ...options,
        dryRun,
        keys: common.keys,
        logger,
        signal,
        progressIntervalMs: common.progressIntervalMs,
        onLeftovers: (state) => leftovers?.(state),
      });
      const server = describeTarget(options.target);
      const target = dryRun ? 'none (dry run)' : server;
      const restored = result.databases.filter((d) => d.status !== 'skipped');
      logger.info(
        `${dryRun ? 'checked (dry run, nothing written)' : `restored into ${server}`}: ${restored.length} database(s), ${result.tables} tables, ${result.rows} rows, sha256 and row counts verified`,
      );
      const { seconds, outputs, heading } = restoreOutputs(manifest, context, target, result.bytes, {
        dryRun,
        ...result,
      });
      return {
        outputs,
        summary: {
          heading,
          table: [
            ['Database', 'Restored as', 'Result', 'Tables', 'Rows'],
            ...result.databases.map((d) => [d.source, d.target, d.status, String(d.tables), String(d.rows)]),
          ],
          notes: [
            `From ${uri} into ${target}; sha256 and row counts match the manifest; ${seconds.toFixed(1)} s.`,
          ],
        },
      };
    },
    leftovers: {
      types: ['mysql-staging'],
      remove: (state, read, logger) =>
        removeStagingLeftovers(state as StagingLeftovers, parseConnection(read), logger),
    },
  },
  verify: {
    checks: 'sha256, row counts, objects, your SQL checks and migrations',
    inputs: [
      {
        name: 'environment',
        description:
          "Where to restore: local (a throwaway mariadbd/mysqld from PATH on a temp datadir, always removed), docker (a throwaway mariadb or mysql container of the dumped server's version), or external (the server given by host/port/mysql-url, under fresh database names dropped afterwards).",
        default: 'local',
      },
      {
        name: 'docker-image',
        description:
          'docker: the image to run (default: mariadb:<major.minor> or mysql:<major.minor> of the server the backup was dumped from).',
      },
      ...connectionInputs('server to restore into with environment external'),
      {
        name: 'databases',
        description: 'all, or the databases of the backup to restore and check, comma or newline separated.',
        default: 'all',
      },
      parallelInput('Connections that load in parallel.'),
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
    ],
    parse: (read, c) => ({
      environment: c.field(() =>
        parseChoice('environment', read('environment'), [...environmentTypes], 'local'),
      ),
      external: c.field(() => parseConnection(read)),
      image: read('docker-image')?.trim() || undefined,
      databases: c.field(() => parseDatabaseList(read('databases'))),
      parallel: c.field(() => parseParallel(read)),
      checks: c.field(() => parseUserChecks(read('checks'))),
      postRestoreCommand: read('post-restore-command')?.trim() || undefined,
    }),
    async run(options, manifest, { logger, signal, leftovers, uri, ...common }) {
      logger.info(
        `verifying ${uri} (mysql, taken ${manifest.startedAt}) in a ${options.environment} environment`,
      );
      const outcome = await verifyMysql({
        ...common,
        ...options,
        manifest,
        external: options.environment === 'external' ? options.external : undefined,
        onLeftovers: (state) => leftovers?.(state),
        logger,
        signal,
      });
      return { ...outcome, counted: { tables: outcome.tables, rows: outcome.rows } };
    },
    leftovers: {
      types: ['mysqld', 'databases', 'container'],
      async remove(state, read, logger) {
        const left = state as Leftovers;
        await removeLeftovers(left, left.type === 'databases' ? parseConnection(read) : undefined, logger);
      },
    },
  },
});

import { type ChildProcess, spawn } from 'node:child_process';
import { Transform, type TransformCallback } from 'node:stream';
import type { Connection } from 'mysql2/promise';
import { Catalog } from '../catalog/catalog.ts';
import { type Manifest, manifestFormat } from '../catalog/manifest.ts';
import { childEnvironment } from '../child-env.ts';
import { UserError } from '../errors.ts';
import { globRegex } from '../glob.ts';
import { runHook } from '../hooks.ts';
import { artifactName, writeArtifact } from '../pipeline/artifact.ts';
import { chunkBytes } from '../pipeline/buffers.ts';
import type { Compression } from '../pipeline/compression.ts';
import type { EncryptionKeys } from '../pipeline/encryption.ts';
import type { Logger } from '../pipeline/progress.ts';
import type { Storage } from '../storage/storage.ts';
import { version } from '../version.ts';
import {
  type ClientPrograms,
  clientPrograms,
  connect,
  connectionError,
  describeTarget,
  type MysqlTarget,
  writeOptionFile,
} from './connection.ts';
import { DumpFacts, type MysqlFacts } from './facts.ts';
import { DumpReader } from './sql-stream.ts';

export const systemDatabases = ['mysql', 'sys', 'information_schema', 'performance_schema'];
/** Schemas that are views of the server's state: never dumped. */
const virtualDatabases = ['information_schema', 'performance_schema'];

export type BinlogMode = 'auto' | 'required' | 'off';

export interface MysqlDumpOptions {
  storage: Storage;
  set: string;
  target: MysqlTarget;
  /** Database names, or 'all' (every database but the system ones). */
  databases: string[] | 'all';
  includeSystemDatabases: boolean;
  /** `db.table` patterns; `*` and `?` match in either part. */
  excludeTables: string[];
  binlogPosition: BinlogMode;
  compression: Compression;
  compressionLevel?: number;
  encryption?: EncryptionKeys;
  tags: string[];
  preCommand?: string;
  postCommand?: string;
  logger: Logger;
  signal?: AbortSignal;
  progressIntervalMs?: number;
  now?: () => Date;
}

interface ServerInfo {
  flavour: 'mariadb' | 'mysql';
  version: string;
  binaryLog: boolean;
}

interface DumpPlan {
  server: ServerInfo;
  databases: string[];
  ignoreTables: string[];
  recordPosition: boolean;
}

/**
 * Backs up MySQL / MariaDB databases in one consistent snapshot (a single transaction across
 * every selected database) with routines, triggers, events and binary data, streamed as one
 * SQL artifact (`dump.sql.zst[.age]`, the dumper's own output, restorable by hand) into the
 * catalog. The manifest records exact row counts per table, counted in the dump itself.
 */
export async function dumpMysql(options: MysqlDumpOptions): Promise<Manifest> {
  const { logger } = options;
  const now = options.now ?? (() => new Date());
  const plan = await planDump(options);
  await options.storage.check();
  const programs = await clientPrograms(plan.server.flavour);

  const catalog = new Catalog(options.storage);
  const started = now();
  const pending = await catalog.begin(options.set, 'full', started);
  logger.info(
    `backup ${options.set}/${pending.id}: ${plan.databases.length} database(s) from ${describeTarget(options.target)} (${plan.server.flavour} ${plan.server.version}) → ${options.storage.url}`,
  );
  let postFailure: Error | undefined;
  let committed = false;
  try {
    let dumped: Awaited<ReturnType<typeof streamDump>>;
    try {
      if (options.preCommand) await runHook('pre-command', options.preCommand, options);
      dumped = await streamDump(options, plan, programs, (name) => pending.key(name));
    } finally {
      if (options.postCommand) {
        await runHook('post-command', options.postCommand, { ...options, signal: undefined }).catch(
          (error: Error) => {
            postFailure = error;
          },
        );
      }
    }
    const manifest = mysqlManifest(options, plan, programs, dumped, {
      id: pending.id,
      started,
      finished: now(),
    });
    await catalog.commit(pending, manifest);
    committed = true;
    if (postFailure) {
      throw new UserError(
        `post-command: failed after the backup was committed (${postFailure.message}); the backup ${pending.id} is complete`,
      );
    }
    return manifest;
  } catch (error) {
    if (!committed) await catalog.abandon(pending).catch(() => {});
    throw error;
  }
}

/** The manifest of a finished dump: what was dumped, and the facts verify-restore checks. */
function mysqlManifest(
  options: MysqlDumpOptions,
  plan: DumpPlan,
  programs: ClientPrograms,
  dumped: { facts: DumpFacts; artifact: Manifest['artifacts'][number] },
  at: { id: string; started: Date; finished: Date },
): Manifest {
  const { facts } = dumped;
  const mysql: MysqlFacts = {
    server: { flavour: plan.server.flavour, version: plan.server.version },
    dumper: programs.dumpVersion,
    binlog: facts.binlog,
    databases: facts.databases,
    totals: facts.totals(),
  };
  const nonTransactional = facts.databases.flatMap((d) => d.nonTransactional.map((t) => `${d.name}.${t}`));
  if (nonTransactional.length) {
    options.logger.warn(
      `not in the consistent snapshot (no transactions in their engine): ${nonTransactional.join(', ')}`,
    );
  }
  return {
    format: manifestFormat,
    id: at.id,
    set: options.set,
    kind: 'mysql',
    mode: 'full',
    startedAt: at.started.toISOString(),
    finishedAt: at.finished.toISOString(),
    tool: { name: 'lifeboat', version },
    source: {
      server: describeTarget(options.target),
      flavour: plan.server.flavour,
      version: plan.server.version,
      databases: plan.databases,
    },
    artifacts: [dumped.artifact],
    contents: {
      included: plan.databases.map((d) => `database ${d}`),
      excluded: [
        ...plan.ignoreTables.map((t) => `table ${t}`),
        ...(options.includeSystemDatabases || options.databases !== 'all'
          ? []
          : ['system databases (mysql, sys, information_schema, performance_schema)']),
        ...nonTransactional.map((t) => `${t}: backed up, but outside the consistent snapshot`),
      ],
    },
    facts: mysql as unknown as Record<string, unknown>,
    tags: options.tags,
  };
}

/** Connects, learns the server, and resolves databases and excluded tables — before writing anything. */
async function planDump(options: MysqlDumpOptions): Promise<DumpPlan> {
  const conn = await connect(options.target);
  try {
    const server = await serverInfo(conn);
    const [rows] = await conn.query<Row[]>('SHOW DATABASES');
    const present = rows.map((r) => String(Object.values(r)[0]));
    const where = describeTarget(options.target);
    let databases: string[];
    if (options.databases === 'all') {
      databases = present.filter(
        (d) =>
          !virtualDatabases.includes(d) && (options.includeSystemDatabases || !systemDatabases.includes(d)),
      );
      if (databases.length === 0) {
        throw new UserError(
          `databases: 'all' found no databases to back up on ${where} (system databases are left out)`,
        );
      }
    } else {
      const missing = options.databases.filter((d) => !present.includes(d));
      if (missing.length) {
        throw new UserError(
          `databases: ${missing.map((d) => `'${d}'`).join(', ')} not found on ${where} (or the user may not see ${missing.length > 1 ? 'them' : 'it'}); present: ${present.filter((d) => !virtualDatabases.includes(d)).join(', ') || 'none'}`,
        );
      }
      const virtual = options.databases.filter((d) => virtualDatabases.includes(d));
      if (virtual.length)
        throw new UserError(
          `databases: ${virtual.join(', ')} cannot be backed up (a view of the server's state)`,
        );
      databases = [...new Set(options.databases)];
    }
    const ignoreTables = await resolveExcludes(conn, databases, options);
    const recordPosition = await positionPlan(conn, server, options);
    return { server, databases, ignoreTables, recordPosition };
  } catch (error) {
    throw error instanceof UserError ? error : connectionError(error, options.target);
  } finally {
    await conn.end().catch(() => {});
  }
}

type Row = import('mysql2/promise').RowDataPacket;

async function serverInfo(conn: Connection): Promise<ServerInfo> {
  const [rows] = await conn.query<Row[]>('SELECT VERSION() AS v, @@version_comment AS c, @@log_bin AS b');
  const row = rows[0]!;
  const text = `${row.v} ${row.c}`;
  return {
    flavour: /mariadb/i.test(text) ? 'mariadb' : 'mysql',
    version: String(row.v),
    binaryLog: Number(row.b) === 1,
  };
}

async function resolveExcludes(
  conn: Connection,
  databases: string[],
  options: MysqlDumpOptions,
): Promise<string[]> {
  if (options.excludeTables.length === 0) return [];
  const patterns = options.excludeTables.map((entry) => {
    const dot = entry.indexOf('.');
    if (dot <= 0 || dot === entry.length - 1) {
      throw new UserError(
        `exclude-tables: '${entry}' is not accepted; accepted: database.table, with * or ? as wildcards (e.g. shop.sessions, shop.tmp_*)`,
      );
    }
    return { entry, db: globRegex(entry.slice(0, dot)), table: globRegex(entry.slice(dot + 1)), used: false };
  });
  const [rows] = await conn.query<Row[]>(
    'SELECT TABLE_SCHEMA AS s, TABLE_NAME AS t FROM information_schema.TABLES WHERE TABLE_SCHEMA IN (?)',
    [databases],
  );
  const ignored: string[] = [];
  for (const row of rows) {
    const db = String(row.s);
    const table = String(row.t);
    for (const p of patterns) {
      if (p.db.test(db) && p.table.test(table)) {
        p.used = true;
        ignored.push(`${db}.${table}`);
        break;
      }
    }
  }
  for (const p of patterns.filter((q) => !q.used)) {
    options.logger.warn(`exclude-tables: '${p.entry}' matches no table in the selected databases`);
  }
  return ignored;
}

/** Whether to record the binary log position (which needs RELOAD for a brief global lock). */
async function positionPlan(
  conn: Connection,
  server: ServerInfo,
  options: MysqlDumpOptions,
): Promise<boolean> {
  if (options.binlogPosition === 'off') return false;
  const say = (why: string) => {
    if (options.binlogPosition === 'required') throw new UserError(`binlog-position: required, but ${why}`);
    options.logger.info(`binlog position not recorded: ${why}`);
    return false;
  };
  if (!server.binaryLog) return say('the binary log is off on the server');
  const [rows] = await conn.query<Row[]>(
    'SELECT PRIVILEGE_TYPE AS p FROM information_schema.USER_PRIVILEGES',
  );
  const privileges = new Set(rows.map((r) => String(r.p)));
  if (!privileges.has('RELOAD')) {
    return say(
      'the user lacks the RELOAD privilege (needed to read the position consistently); grant it or set binlog-position: off',
    );
  }
  return true;
}

function dumpArguments(plan: DumpPlan, programs: ClientPrograms): string[] {
  const args = [
    '--single-transaction',
    '--quick',
    '--routines',
    '--triggers',
    '--events',
    '--hex-blob',
    '--skip-add-locks',
    '--no-tablespaces',
    '--default-character-set=utf8mb4',
    '--max-allowed-packet=1G',
  ];
  const mysqlClient = programs.flavour === 'mysql';
  const clientVersion = /Ver (?:\S+ )?(?:Distrib )?(\d+)\.(\d+)\.(\d+)/
    .exec(programs.dumpVersion)
    ?.slice(1)
    .map(Number) ?? [0, 0, 0];
  const atLeast = (a: number, b: number, c: number) =>
    clientVersion[0]! * 1e6 + clientVersion[1]! * 1e3 + clientVersion[2]! >= a * 1e6 + b * 1e3 + c;
  if (mysqlClient) {
    // Oracle's mysqldump: GTID_PURGED as a comment (a SET would break restores into servers
    // with GTIDs), and no column statistics (absent on MariaDB and older servers).
    args.push(atLeast(8, 0, 32) ? '--set-gtid-purged=COMMENTED' : '--set-gtid-purged=OFF');
    if (plan.server.flavour === 'mariadb' || atLeast(8, 0, 0)) args.push('--column-statistics=0');
  }
  if (plan.recordPosition) {
    if (mysqlClient) args.push(atLeast(8, 0, 26) ? '--source-data=2' : '--master-data=2');
    else args.push('--master-data=2', ...(plan.server.flavour === 'mariadb' ? ['--gtid'] : []));
  }
  for (const table of plan.ignoreTables) args.push(`--ignore-table=${table}`);
  args.push('--databases', ...plan.databases);
  return args;
}

async function streamDump(
  options: MysqlDumpOptions,
  plan: DumpPlan,
  programs: ClientPrograms,
  keyOf: (name: string) => string,
): Promise<{ facts: DumpFacts; artifact: Manifest['artifacts'][number] }> {
  const optionFile = await writeOptionFile(options.target, programs.flavour);
  const facts = new DumpFacts();
  const reader = new DumpReader(facts);
  try {
    const child = spawn(programs.dump, [...optionFile.args, ...dumpArguments(plan, programs)], {
      stdio: ['ignore', 'pipe', 'pipe', optionFile.fd],
      env: childEnvironment(),
    });
    const exited = childExit(child, programs.dump, options.logger);
    const observe = new Transform({
      highWaterMark: chunkBytes,
      transform(chunk: Buffer, _encoding, callback: TransformCallback) {
        reader.push(chunk).then(() => callback(null, chunk), callback);
      },
      flush(callback) {
        reader.end().then(() => callback(), callback);
      },
    });
    child.stdout!.pipe(observe);
    child.stdout!.once('error', (error) => observe.destroy(error));
    // A dumper that fails ends its output early: fail the stream so no artifact completes.
    exited.catch((error) => observe.destroy(error));
    const abort = () => child.kill('SIGTERM');
    options.signal?.addEventListener('abort', abort, { once: true });
    const name = artifactName('dump.sql', options.compression, Boolean(options.encryption));
    try {
      // Both settle before anything is cleaned up: an upload still in flight when the dumper
      // failed would otherwise write its object after the pending backup was abandoned.
      const [written, dumper] = await Promise.allSettled([
        writeArtifact(
          {
            storage: options.storage,
            key: keyOf(name),
            format: 'sql',
            source: observe,
            compression: options.compression,
            compressionLevel: options.compressionLevel,
            encryption: options.encryption,
            logger: options.logger,
            label: 'dumped',
            progressIntervalMs: options.progressIntervalMs,
            signal: options.signal,
          },
          name,
        ).catch((error) => {
          child.kill('SIGTERM');
          throw error;
        }),
        exited,
      ]);
      if (dumper.status === 'rejected') throw dumper.reason;
      if (written.status === 'rejected') throw written.reason;
      const artifact = written.value;
      if (!facts.completed) {
        throw new UserError(`${programs.dump} ended without its closing line: the dump is incomplete`);
      }
      return { facts, artifact };
    } finally {
      options.signal?.removeEventListener('abort', abort);
    }
  } finally {
    await optionFile.dispose();
  }
}

/** Resolves when the program exits 0; otherwise fails with its last error lines. */
function childExit(child: ChildProcess, program: string, logger: Logger): Promise<void> {
  let errors = '';
  child.stderr!.on('data', (data: Buffer) => {
    errors = (errors + data.toString()).slice(-4000);
  });
  const name = program.split('/').pop();
  return new Promise((resolve, reject) => {
    child.once('error', (error) => reject(new UserError(`${name}: could not run (${error.message})`)));
    child.once('close', (code, signal) => {
      const lines = errors.trim().split('\n').filter(Boolean);
      const warnings = lines.filter((l) => /warning/i.test(l));
      for (const w of warnings) logger.warn(w.replace(/^\S+: /, `${name}: `));
      if (code === 0) return resolve();
      const problem = lines.filter((l) => !/warning/i.test(l)).pop() ?? '';
      reject(
        new UserError(
          `${name} failed (${signal ? `killed by ${signal}` : `exit status ${code}`}): ${problem.replace(/^\S+: /, '') || 'no message'}`,
        ),
      );
    });
  });
}

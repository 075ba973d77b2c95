import { randomBytes } from 'node:crypto';
import type { Connection } from 'mysql2/promise';
import type { Manifest } from '../catalog/manifest.ts';
import { UserError } from '../errors.ts';
import { readArtifact } from '../pipeline/artifact.ts';
import type { DecryptionKeys } from '../pipeline/encryption.ts';
import type { Logger } from '../pipeline/progress.ts';
import type { Storage } from '../storage/storage.ts';
import {
  type ClientOptionFile,
  clientPrograms,
  connect,
  connectionError,
  describeTarget,
  type MysqlTarget,
  writeOptionFile,
} from './connection.ts';
import { type DatabaseFacts, DumpFacts, mysqlFacts } from './facts.ts';
import { type ClientCommand, Loader } from './loader.ts';
import { UnsafeDumpError } from './sql-lexer.ts';
import {
  DumpFormatError,
  DumpReader,
  quoteIdentifier,
  readIdentifier,
  type StatementHandler,
  type StatementInfo,
  type StatementKind,
  useDatabase,
} from './sql-stream.ts';
import { plainText } from './statements.ts';

export type IfExists = 'fail' | 'replace' | 'skip';

export interface MysqlRestoreOptions {
  storage: Storage;
  manifest: Manifest;
  /** The server to restore into; not needed for a dry run. */
  target?: MysqlTarget;
  databases: string[] | 'all';
  /** source name → target name */
  rename: Map<string, string>;
  ifExists: IfExists;
  /** Connections that load in parallel. */
  parallel: number;
  dryRun: boolean;
  keys?: DecryptionKeys;
  logger: Logger;
  signal?: AbortSignal;
  progressIntervalMs?: number;
}

export interface RestoredDatabase {
  source: string;
  target: string;
  status: 'restored' | 'skipped' | 'checked';
  tables: number;
  rows: number;
}

export interface MysqlRestoreResult {
  databases: RestoredDatabase[];
  tables: number;
  rows: number;
  /** Bytes of SQL read. */
  bytes: number;
}

interface Planned {
  facts: DatabaseFacts;
  target: string;
  stage: string;
  /** Whether a database of the target name is there (to be replaced). */
  exists: boolean;
}

/**
 * Restores a MySQL backup. Each database loads into a staging database in parallel
 * connections while its artifact streams in; only when the whole artifact has passed its
 * sha256 check and every table holds the rows the manifest records are the tables renamed
 * into the target names, and views, routines, triggers and events created there. A
 * damaged, truncated or wrongly-keyed artifact leaves the target as it was.
 */
export async function restoreMysql(options: MysqlRestoreOptions): Promise<MysqlRestoreResult> {
  const { manifest, logger } = options;
  const facts = mysqlFacts(manifest);
  const selected = selectDatabases(facts.databases, options);
  if (options.dryRun) return dryRun(options, selected);
  const target =
    options.target ??
    (() => {
      throw new UserError('host: give the server to restore into');
    })();
  const conn = await connect(target).catch((error) => {
    throw connectionError(error, target);
  });
  const planned: Planned[] = [];
  const skipped: RestoredDatabase[] = [];
  let optionFile: ClientOptionFile | undefined;
  let staged = false;
  let swapping = false;
  const replaced: string[] = [];
  try {
    const suffix = randomBytes(3).toString('hex');
    for (const [i, db] of selected.entries()) {
      const targetName = options.rename.get(db.name) ?? db.name;
      const content = await databaseContent(conn, targetName);
      if (content !== undefined && content > 0) {
        if (options.ifExists === 'skip') {
          logger.info(
            `skipped ${db.name}: the target database ${targetName} exists and is not empty (if-exists: skip)`,
          );
          skipped.push({ source: db.name, target: targetName, status: 'skipped', tables: 0, rows: 0 });
          continue;
        }
        if (options.ifExists === 'fail') {
          throw new UserError(
            `if-exists: the target database '${targetName}' on ${describeTarget(target)} exists and holds ${content} object(s); set if-exists: replace (or skip), or restore under another name with rename: ${db.name}=${db.name}_restored`,
          );
        }
      }
      planned.push({
        facts: db,
        target: targetName,
        stage: `lbstage_${suffix}_${i}`,
        exists: content !== undefined,
      });
    }
    if (planned.length === 0) return summarize([], skipped, 0);
    const [serverRow] = (await conn.query('SELECT VERSION() AS v'))[0] as { v: string }[];
    const serverFlavour = /mariadb/i.test(String(serverRow?.v)) ? 'mariadb' : 'mysql';
    if (serverFlavour !== facts.server.flavour) {
      logger.warn(
        `restoring a ${facts.server.flavour} ${facts.server.version} backup into ${serverFlavour} ${serverRow?.v}`,
      );
    }
    const programs = await clientPrograms(serverFlavour);
    optionFile = await writeOptionFile(target, programs.flavour);
    staged = true;
    for (const p of planned) {
      await conn.query(`CREATE DATABASE ${quoteIdentifier(p.stage)} ${safeOptions(p.facts.options)}`);
    }
    const client: ClientCommand = {
      program: programs.client,
      args: [...optionFile.args, ...programs.sandboxArgs],
      optionFd: optionFile.fd,
    };
    const loaded = await load(options, planned, client);
    checkCounts(
      planned.map((p) => p.facts),
      loaded.counted,
    );
    swapping = true;
    const objects = await swap(conn, planned, client, loaded.objectScript, logger, replaced);
    staged = false;
    const restored = planned.map((p) => ({
      source: p.facts.name,
      target: p.target,
      status: 'restored' as const,
      tables: Object.keys(p.facts.tables).length,
      rows: Object.values(p.facts.tables).reduce((a, b) => a + b, 0),
    }));
    logger.info(`created ${objects} view(s), routine(s), trigger(s) and event(s)`);
    return summarize(restored, skipped, loaded.bytes);
  } catch (error) {
    if (staged) {
      for (const p of planned)
        await conn.query(`DROP DATABASE IF EXISTS ${quoteIdentifier(p.stage)}`).catch(() => {});
      logger.info(
        !swapping
          ? 'the target databases were not changed: the staging databases are dropped'
          : `the restore failed while swapping databases in (${replaced.length ? `already replaced: ${replaced.join(', ')}` : 'none replaced yet'}); the staging databases are dropped`,
      );
    }
    throw error;
  } finally {
    await optionFile?.dispose();
    await conn.end().catch(() => {});
  }
}

function summarize(
  restored: RestoredDatabase[],
  skipped: RestoredDatabase[],
  bytes: number,
): MysqlRestoreResult {
  const all = [...restored, ...skipped];
  return {
    databases: all,
    tables: restored.reduce((n, d) => n + d.tables, 0),
    rows: restored.reduce((n, d) => n + d.rows, 0),
    bytes,
  };
}

/** The databases of the backup to restore, checked against it and against the renames. */
export function selectDatabases(
  all: DatabaseFacts[],
  options: Pick<MysqlRestoreOptions, 'databases' | 'rename' | 'manifest'>,
): DatabaseFacts[] {
  const names = all.map((d) => d.name);
  const selected =
    options.databases === 'all' ? all : options.databases.map((n) => all.find((d) => d.name === n));
  const missing = options.databases === 'all' ? [] : options.databases.filter((_, i) => !selected[i]);
  if (missing.length) {
    throw new UserError(
      `databases: ${missing.map((m) => `'${m}'`).join(', ')} not in backup ${options.manifest.id}; it holds: ${names.join(', ')}`,
    );
  }
  const chosen = selected as DatabaseFacts[];
  for (const source of options.rename.keys()) {
    if (!chosen.some((d) => d.name === source)) {
      throw new UserError(
        `rename: '${source}' is not a database being restored; restoring: ${chosen.map((d) => d.name).join(', ')}`,
      );
    }
  }
  const targets = chosen.map((d) => options.rename.get(d.name) ?? d.name);
  const twice = targets.find((t, i) => targets.indexOf(t) !== i);
  if (twice) throw new UserError(`rename: two databases would be restored as '${twice}'`);
  return chosen;
}

/** Tables, views and routines in a database; undefined when it does not exist. */
async function databaseContent(conn: Connection, name: string): Promise<number | undefined> {
  const [schemas] = await conn.query('SELECT 1 FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?', [
    name,
  ]);
  if ((schemas as unknown[]).length === 0) return undefined;
  const [rows] = await conn.query(
    `SELECT (SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = ?)
          + (SELECT COUNT(*) FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = ?)
          + (SELECT COUNT(*) FROM information_schema.EVENTS WHERE EVENT_SCHEMA = ?) AS n`,
    [name, name, name],
  );
  return Number((rows as { n: number }[])[0]!.n);
}

/** The CHARACTER SET / COLLATE clause of a CREATE DATABASE, and nothing else. */
function safeOptions(options: string): string {
  const clause = /^(DEFAULT )?(CHARACTER SET|CHARSET) \w+( COLLATE \w+)?$/i.exec(options.trim());
  return clause ? options.trim() : '';
}

interface Loaded {
  /** What the artifact holds, counted as it streamed. */
  counted: DumpFacts;
  /** Statements that create views, routines, triggers and events, with USE of the targets. */
  objectScript: string[];
  bytes: number;
}

/** Streams the artifact into the staging databases over `parallel` connections. */
async function load(
  options: MysqlRestoreOptions,
  planned: Planned[],
  client: ClientCommand,
): Promise<Loaded> {
  const loaders = Array.from(
    { length: Math.max(1, options.parallel) },
    (_, i) => new Loader(client, `loader ${i + 1}`),
  );
  const byName = new Map(planned.map((p) => [p.facts.name, p]));
  const objectScript: string[] = [];
  let current: Planned | undefined;
  let dataLoader: Loader | undefined;
  let next = 0;
  let ddlPending = false;
  let delimiter = ';';

  const useOn = async (loader: Loader, stage: string) => {
    if (loader.database !== stage) {
      loader.database = stage;
      await loader.write(`USE ${quoteIdentifier(stage)};\n`);
    }
  };
  const barrier = () => Promise.all(loaders.map((l) => l.sync()));
  const pickLoader = () => {
    for (let i = 0; i < loaders.length; i++) {
      const loader = loaders[(next + i) % loaders.length]!;
      if (loader.ready) {
        next = (next + i + 1) % loaders.length;
        return loader;
      }
    }
    const loader = loaders[next]!;
    next = (next + 1) % loaders.length;
    return loader;
  };

  const handler = {
    async statement(text: string, kind: StatementKind, info?: StatementInfo) {
      if (kind === 'comment') return;
      if (kind === 'command') {
        for (const l of loaders) await l.write(text);
        objectScript.push(text);
        return;
      }
      if (kind === 'delimiter') {
        delimiter = text.slice('DELIMITER '.length).trim();
        objectScript.push(text);
        return;
      }
      switch (info!.role) {
        case 'session': {
          // The loaders read with the ; delimiter whatever the dump's DELIMITER is.
          const plain = delimiter === ';' ? text : `${text.trimEnd().slice(0, -delimiter.length)};\n`;
          for (const l of loaders) await l.write(plain);
          objectScript.push(text);
          return;
        }
        case 'database': {
          const use = useDatabase(text);
          if (use !== undefined) {
            current = byName.get(use);
            if (current) objectScript.push(`USE ${quoteIdentifier(current.target)};\n`);
          } else if (current && /^ALTER (DATABASE|SCHEMA)/i.test(plainText(text))) {
            objectScript.push(renameAlterDatabase(text, current.target));
          }
          return;
        }
        case 'lock':
          return;
        case 'table':
          if (!current) return;
          if (!ddlPending) {
            await barrier();
            ddlPending = true;
          }
          await useOn(loaders[0]!, current.stage);
          await loaders[0]!.write(text);
          return;
        case 'object':
          if (current) objectScript.push(text);
          return;
      }
    },
    async dataStart() {
      if (!current) {
        dataLoader = undefined;
        return;
      }
      if (ddlPending) {
        await loaders[0]!.sync();
        ddlPending = false;
      }
      dataLoader = pickLoader();
      await useOn(dataLoader, current.stage);
    },
    async dataPiece(piece: Buffer) {
      if (dataLoader) await dataLoader.write(piece);
    },
  };

  try {
    const read = await readDump(options, 'restored', handler);
    await barrier();
    await Promise.all(loaders.map((l) => l.end()));
    return { ...read, objectScript };
  } catch (error) {
    // A loader's own failure (an SQL error) explains more than what it caused upstream.
    const failed = loaders.find((l) => l.failed)?.failed;
    for (const l of loaders) l.kill();
    await Promise.all(loaders.map((l) => l.gone()));
    throw failed && !(error instanceof Error && error.name === 'IntegrityError')
      ? restoreFailure(failed)
      : error;
  }
}

type DumpHandler = Pick<StatementHandler, 'statement' | 'dataStart' | 'dataPiece'>;

/**
 * Streams the backup's SQL (sha256 checked, decrypted, decompressed) through a handler,
 * counting what it holds on the way: the databases, tables and rows of the dump itself.
 */
async function readDump(
  options: MysqlRestoreOptions,
  label: string,
  handler?: DumpHandler,
): Promise<{ counted: DumpFacts; bytes: number }> {
  const counted = new DumpFacts();
  const inBackup = new Set(mysqlFacts(options.manifest).databases.map((d) => d.name));
  const reader = new DumpReader({
    async statement(text, kind, info) {
      const use = info?.role === 'database' ? useDatabase(text) : undefined;
      if (use !== undefined && !inBackup.has(use)) {
        throw new UnsafeDumpError(
          info!.line,
          `USE of the database '${use}', which the backup's manifest does not list (it lists: ${[...inBackup].join(', ')})`,
        );
      }
      counted.statement(text, kind);
      await handler?.statement(text, kind, info);
    },
    async dataStart(table) {
      counted.dataStart(table);
      await handler?.dataStart(table);
    },
    dataPiece: (piece) => handler?.dataPiece(piece),
    dataEnd: (rows) => counted.dataEnd(rows),
  });
  const { manifest } = options;
  const artifact = manifest.artifacts[0]!;
  const plain = await readArtifact({
    storage: options.storage,
    key: `${manifest.set}/${manifest.id}/${artifact.name}`,
    artifact,
    keys: options.keys,
    logger: options.logger,
    label,
    progressIntervalMs: options.progressIntervalMs,
    signal: options.signal,
  });
  for await (const chunk of plain) await reader.push(chunk as Buffer);
  await reader.end();
  if (!counted.completed) {
    throw new DumpFormatError(
      `the SQL of ${artifact.name} lacks the dumper's closing "-- Dump completed" line: the dump is incomplete`,
    );
  }
  return { counted, bytes: reader.offset };
}

function restoreFailure(error: Error): Error {
  return new UserError(`restore failed on the target server: ${error.message}`);
}

/** `ALTER DATABASE `src` …` (mysqldump around routines) made to name the target instead. */
function renameAlterDatabase(text: string, target: string): string {
  const match = /^(\s*(?:\/\*!\d+\s*)?ALTER\s+(?:DATABASE|SCHEMA)\s+)(.*)$/is.exec(text);
  if (!match) return text;
  const id = readIdentifier(match[2]!);
  return id ? `${match[1]}${quoteIdentifier(target)}${id.rest}` : text;
}

/** A table whose rows in the backup's data differ from the manifest's record (or that is missing). */
export interface CountMismatch {
  database: string;
  table: string;
  /** Rows found in the backup's data; null when the table is not there at all. */
  counted: number | null;
  recorded: number;
}

/** The backup's data does not hold what its manifest records: nothing was swapped in. */
export class CountMismatchError extends UserError {
  override name = 'CountMismatchError';
  readonly mismatches: CountMismatch[];
  constructor(mismatches: CountMismatch[]) {
    const first = mismatches[0]!;
    const more = mismatches.length > 1 ? ` (and ${mismatches.length - 1} more table(s))` : '';
    super(`${describeMismatch(first)}${more}: the backup does not match its manifest; nothing was restored`);
    this.mismatches = mismatches;
  }
}

export function describeMismatch(m: CountMismatch): string {
  return m.counted === null
    ? `the table ${m.database}.${m.table} (${m.recorded} rows in the manifest) is missing from the backup's data`
    : `the backup's data for ${m.database}.${m.table} holds ${m.counted} rows, but its manifest records ${m.recorded}`;
}

/** Every table of the backup is there and holds exactly the rows the manifest records: else nothing is swapped in. */
function checkCounts(selected: DatabaseFacts[], counted: DumpFacts): void {
  const mismatches: CountMismatch[] = [];
  for (const db of selected) {
    const tables = counted.databases.find((d) => d.name === db.name)?.tables ?? {};
    for (const [table, recorded] of Object.entries(db.tables)) {
      const got = Object.hasOwn(tables, table) ? tables[table]! : null;
      if (got !== recorded) mismatches.push({ database: db.name, table, counted: got, recorded });
    }
  }
  if (mismatches.length) throw new CountMismatchError(mismatches);
}

/**
 * Swaps the staged databases in: (re)creates each target, moves every staged table into it
 * in one RENAME TABLE, then creates views, routines, triggers and events from the dump.
 */
async function swap(
  conn: Connection,
  planned: Planned[],
  client: ClientCommand,
  objectScript: string[],
  logger: Logger,
  replaced: string[],
): Promise<number> {
  for (const p of planned) {
    const [tables] = await conn.query(
      `SELECT TABLE_NAME AS t FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_TYPE = 'BASE TABLE'`,
      [p.stage],
    );
    const names = (tables as { t: string }[]).map((r) => String(r.t));
    if (p.exists) {
      logger.info(`replacing the database ${p.target}`);
      await conn.query(`DROP DATABASE ${quoteIdentifier(p.target)}`);
    }
    await conn.query(`CREATE DATABASE ${quoteIdentifier(p.target)} ${safeOptions(p.facts.options)}`);
    if (names.length) {
      const moves = names.map(
        (t) =>
          `${quoteIdentifier(p.stage)}.${quoteIdentifier(t)} TO ${quoteIdentifier(p.target)}.${quoteIdentifier(t)}`,
      );
      await conn.query(`RENAME TABLE ${moves.join(', ')}`);
    }
    await conn.query(`DROP DATABASE ${quoteIdentifier(p.stage)}`);
    replaced.push(p.target);
    logger.info(
      `restored ${p.facts.name}${p.target !== p.facts.name ? ` as ${p.target}` : ''}: ${names.length} tables`,
    );
  }
  const objects = planned.reduce(
    (n, p) =>
      n +
      p.facts.views.length +
      p.facts.procedures.length +
      p.facts.functions.length +
      p.facts.triggers.length +
      p.facts.events.length,
    0,
  );
  if (objects) {
    const loader = new Loader(client, 'objects');
    try {
      for (const statement of objectScript) await loader.write(statement);
      await loader.end();
    } catch (error) {
      loader.kill();
      throw new UserError(
        `the tables are restored, but creating views, routines, triggers or events failed: ${(error as Error).message}`,
      );
    }
  }
  return objects;
}

/** Reads and checks everything (sha256, decryption, the SQL, row counts) and writes nothing. */
async function dryRun(options: MysqlRestoreOptions, selected: DatabaseFacts[]): Promise<MysqlRestoreResult> {
  const { counted, bytes } = await readDump(options, 'checked');
  checkCounts(selected, counted);
  return summarize(
    selected.map((db) => ({
      source: db.name,
      target: options.rename.get(db.name) ?? db.name,
      status: 'checked' as const,
      tables: Object.keys(db.tables).length,
      rows: Object.values(db.tables).reduce((a, b) => a + b, 0),
    })),
    [],
    bytes,
  );
}

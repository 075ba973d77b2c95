import { randomBytes } from 'node:crypto';
import type { Connection } from 'mysql2/promise';
import type { Manifest } from '../catalog/manifest.ts';
import { messageOf, UserError } from '../errors.ts';
import { IntegrityError, openArtifact, UndecodableArtifactError } from '../pipeline/artifact.ts';
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
import { type ClientCommand, ClientStalledError, Loader } from './loader.ts';
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
  /**
   * Told the staging databases before any is created, and undefined once none is left: what
   * the action's `post:` step drops should this process be killed first.
   */
  onLeftovers?: (leftovers: StagingLeftovers | undefined) => void;
}

/** Staging databases a restore made on the target server, for the `post:` step of a killed one. */
export interface StagingLeftovers {
  type: 'mysql-staging';
  /** Each staging database, the target it becomes, and whether it replaces an existing database. */
  databases: { stage: string; target: string; replaces: boolean }[];
  /** Set once the swap began: a replaced target may be dropped already, its new tables still staged. */
  swapping?: boolean;
}

/** Names restore gives its staging databases (nothing else is ever dropped as one). */
export const stagingName = /^lbstage_[0-9a-f]{6}_\d+$/;

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
  options.signal?.throwIfAborted();
  const conn = await connect(target).catch((error) => {
    throw connectionError(error, target);
  });
  const admin = new Admin(conn, target, options.signal);
  const planned: Planned[] = [];
  const skipped: RestoredDatabase[] = [];
  let optionFile: ClientOptionFile | undefined;
  let staged = false;
  const swap: SwapState = { started: false, replaced: [] };
  /** Every stored byte was read and matched the manifest: a failure from here on is not the backup's. */
  let readToEnd = false;
  const record = (databases: Planned[]) =>
    options.onLeftovers?.(
      databases.length
        ? {
            type: 'mysql-staging',
            databases: databases.map((p) => ({ stage: p.stage, target: p.target, replaces: p.exists })),
            ...(swap.started ? { swapping: true } : {}),
          }
        : undefined,
    );
  try {
    const suffix = randomBytes(3).toString('hex');
    for (const [i, db] of selected.entries()) {
      const targetName = options.rename.get(db.name) ?? db.name;
      const content = await databaseContent(admin, targetName);
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
    const [serverRow] = (await admin.query('SELECT VERSION() AS v'))[0] as { v: string }[];
    const serverFlavour = /mariadb/i.test(String(serverRow?.v)) ? 'mariadb' : 'mysql';
    if (serverFlavour !== facts.server.flavour) {
      logger.warn(
        `restoring a ${facts.server.flavour} ${facts.server.version} backup into ${serverFlavour} ${serverRow?.v}`,
      );
    }
    const programs = await clientPrograms(serverFlavour);
    optionFile = await writeOptionFile(target, programs.flavour);
    // Recorded before the first exists, so that a killed step's post: finds every one.
    record(planned);
    staged = true;
    for (const p of planned) {
      await admin.query(`CREATE DATABASE ${quoteIdentifier(p.stage)} ${safeOptions(p.facts.options)}`);
    }
    const client: ClientCommand = {
      program: programs.client,
      args: [...optionFile.args, ...programs.sandboxArgs],
      optionFd: optionFile.fd,
    };
    const loaded = await load(options, planned, client, admin);
    readToEnd = true;
    checkCounts(
      planned.map((p) => p.facts),
      loaded.counted,
    );
    // The last point where a timeout stops the restore: the swap, a few quick statements
    // on data already proven, runs to its end.
    options.signal?.throwIfAborted();
    swap.started = true;
    record(planned);
    const objects = await swapIn(conn, planned, client, loaded.objectScript, logger, swap);
    staged = false;
    record([]);
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
    if (readToEnd && error instanceof Error) markIntact(error);
    if (staged) {
      // A target dropped for the swap whose new tables are not in it yet keeps its stage: it
      // holds the only copy now.
      const keep = swap.halfway;
      const drop = planned.filter((p) => p !== keep);
      const left = await dropStaging(admin, drop, logger);
      record(planned.filter((p) => left.includes(p.stage)));
      const notDropped = left.length
        ? `; could not drop ${left.join(', ')} (the post: step of the action retries, or DROP DATABASE them by hand)`
        : '';
      if (!swap.started) {
        logger.info(`the target databases were not changed: the staging databases are dropped${notDropped}`);
      } else {
        logger.info(
          `the restore failed while swapping databases in (${swap.replaced.length ? `already replaced: ${swap.replaced.join(', ')}` : 'none replaced yet'}); the staging databases are dropped${notDropped}`,
        );
      }
      if (keep) {
        throw markIntact(
          new UserError(
            `the restore failed while swapping ${keep.target} in, after the old ${keep.target} was dropped: its restored tables are kept in the staging database ${keep.stage} on ${describeTarget(target)} (move them with RENAME TABLE ${quoteIdentifier(keep.stage)}.<table> TO ${quoteIdentifier(keep.target)}.<table>, or restore again); the failure: ${messageOf(error)}`,
          ),
        );
      }
    }
    throw error;
  } finally {
    await optionFile?.dispose();
    await admin.close();
  }
}

/** Where the swap is: what it replaced, and a target it dropped whose new tables are not moved in yet. */
interface SwapState {
  started: boolean;
  replaced: string[];
  halfway?: Planned;
}

/** How long one statement of the cleanup may wait (a lock, say) before it is given up. */
const cleanupStatementMs = 15_000;

/**
 * Drops the staging databases that exist, each statement bounded in time (a lock held by
 * someone else does not hold the cleanup); returns those that are still there.
 */
async function dropStaging(admin: Admin, planned: Planned[], logger: Logger): Promise<string[]> {
  if (!planned.length) return [];
  let existing: Set<string>;
  try {
    const [rows] = await admin.bounded(
      `SELECT SCHEMA_NAME AS s FROM information_schema.SCHEMATA WHERE SCHEMA_NAME IN (${planned.map(() => '?').join(', ')})`,
      cleanupStatementMs,
      planned.map((p) => p.stage),
    );
    existing = new Set((rows as { s: string }[]).map((r) => String(r.s)));
  } catch (error) {
    logger.warn(`could not list the staging databases: ${messageOf(error)}`);
    existing = new Set(planned.map((p) => p.stage));
  }
  const left: string[] = [];
  for (const p of planned.filter((x) => existing.has(x.stage))) {
    try {
      await admin.bounded(`DROP DATABASE IF EXISTS ${quoteIdentifier(p.stage)}`, cleanupStatementMs);
    } catch (error) {
      logger.warn(`could not drop the staging database ${p.stage}: ${messageOf(error)}`);
      left.push(p.stage);
    }
  }
  return left;
}

/**
 * The restore's own connection to the server. Its statements stop when the signal aborts
 * (the server is told to KILL them, so that none runs on after the restore gave up), and
 * it stops the loaders' connections on the server.
 */
class Admin {
  readonly conn: Connection;
  readonly target: MysqlTarget;
  readonly signal: AbortSignal | undefined;

  constructor(conn: Connection, target: MysqlTarget, signal?: AbortSignal) {
    this.conn = conn;
    this.target = target;
    this.signal = signal;
  }

  /** A statement that the signal stops. */
  query(sql: string, values?: unknown[]): Promise<[unknown, unknown]> {
    return this.run(sql, values, this.signal, undefined);
  }

  /** A statement of the cleanup: it runs after the signal aborted, but for at most `ms`. */
  bounded(sql: string, ms: number, values?: unknown[]): Promise<[unknown, unknown]> {
    return this.run(sql, values, undefined, ms);
  }

  private async run(
    sql: string,
    values: unknown[] | undefined,
    signal: AbortSignal | undefined,
    ms: number | undefined,
  ): Promise<[unknown, unknown]> {
    signal?.throwIfAborted();
    const running = this.conn.query(sql, values) as Promise<[unknown, unknown]>;
    running.catch(() => {});
    let stop: (error: Error) => void = () => {};
    const stopped = new Promise<never>((_, reject) => {
      stop = reject;
    });
    const onAbort = () => stop(signal?.reason instanceof Error ? signal.reason : new Error('aborted'));
    signal?.addEventListener('abort', onAbort, { once: true });
    const timer =
      ms === undefined
        ? undefined
        : setTimeout(() => stop(new UserError(`the server did not answer within ${ms / 1000} s`)), ms);
    try {
      return await Promise.race([running, stopped]);
    } catch (error) {
      if (!(await settled(running, 0))) {
        await this.kill([this.conn.threadId], 'QUERY');
        if (!(await settled(running, 5_000))) this.conn.destroy();
      }
      throw error;
    } finally {
      signal?.removeEventListener('abort', onAbort);
      clearTimeout(timer);
    }
  }

  /** KILLs statements (QUERY) or connections on the server, from a connection of its own. */
  async kill(ids: (number | undefined)[], what: 'QUERY' | 'CONNECTION'): Promise<void> {
    const known = ids.filter((id): id is number => typeof id === 'number');
    if (!known.length) return;
    const side = await within(connect(this.target), 15_000).catch(() => undefined);
    if (!side) return;
    try {
      for (const id of known) await within(side.query(`KILL ${what} ${id}`), 5_000).catch(() => {});
    } finally {
      await within(side.end(), 5_000).catch(() => side.destroy());
    }
  }

  async close(): Promise<void> {
    await within(this.conn.end(), 5_000).catch(() => this.conn.destroy());
  }
}

/** A promise, or a failure once `ms` have passed. */
function within<T>(promise: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    promise,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`no answer within ${ms / 1000} s`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

/** Whether a promise settles (either way) within `ms`. */
function settled(promise: Promise<unknown>, ms: number): Promise<boolean> {
  return within(
    promise.then(
      () => true,
      () => true,
    ),
    ms,
  ).catch(() => false);
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
async function databaseContent(conn: Admin, name: string): Promise<number | undefined> {
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
  admin: Admin,
): Promise<Loaded> {
  const loaders = Array.from(
    { length: Math.max(1, options.parallel) },
    (_, i) => new Loader(client, `loader ${i + 1}`, { signal: options.signal }),
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

  let stopped: Promise<void> | undefined;
  /** Stops every loader, here and on the server (a statement there does not stop with its client). */
  const stop = () => {
    stopped ??= (async () => {
      const ids = loaders.map((l) => l.connectionId);
      for (const l of loaders) l.kill();
      await admin.kill(ids, 'CONNECTION');
      await settled(Promise.all(loaders.map((l) => l.gone())), 10_000);
    })();
    return stopped;
  };
  let read: { counted: DumpFacts; bytes: number };
  try {
    read = await readDump(options, 'restored', handler, {
      failure: () => loaders.find((l) => l.failed)?.failed,
      stop,
    });
  } catch (error) {
    await stop();
    throw options.signal?.aborted ? (options.signal.reason ?? error) : error;
  }
  try {
    await barrier();
    await Promise.all(loaders.map((l) => l.end()));
  } catch (error) {
    const failed = loaders.find((l) => l.failed)?.failed;
    await stop();
    if (options.signal?.aborted) throw options.signal.reason ?? error;
    // Every stored byte was read and matched: what failed now is the server's.
    throw markIntact(restoreFailure(failed ?? (error as Error)));
  }
  return { ...read, objectScript };
}

type DumpHandler = Pick<StatementHandler, 'statement' | 'dataStart' | 'dataPiece'>;

/**
 * Streams the backup's SQL (sha256 checked, decrypted, decompressed) through a handler,
 * counting what it holds on the way: the databases, tables and rows of the dump itself.
 * Whatever stops the read before the stored bytes were all checked (the SQL refused, a
 * server error, a client that stalled), the rest of the stored bytes is read to finish the
 * sha256 first: damaged bytes are then what the failure says, whatever they decoded to.
 */
async function readDump(
  options: MysqlRestoreOptions,
  label: string,
  handler?: DumpHandler,
  loading?: {
    /** The loaders' own failure, which explains more than what it caused upstream. */
    failure: () => Error | undefined;
    /** Stops the loaders, before the rest of the stored bytes is read. */
    stop: () => Promise<void>;
  },
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
  const key = `${manifest.set}/${manifest.id}/${artifact.name}`;
  const read = await openArtifact({
    storage: options.storage,
    key,
    artifact,
    keys: options.keys,
    logger: options.logger,
    label,
    progressIntervalMs: options.progressIntervalMs,
    signal: options.signal,
  });
  try {
    for await (const chunk of read.stream) await reader.push(chunk as Buffer);
    await reader.end();
  } catch (error) {
    const loaderFailure = loading?.failure();
    const failure = (loaderFailure ?? error) as Error;
    if (
      options.signal?.aborted ||
      error instanceof IntegrityError ||
      error instanceof UndecodableArtifactError ||
      isDecryptionRefusal(error)
    ) {
      read.close();
      throw error;
    }
    await loading?.stop();
    options.logger.info(
      `${key}: the restore stopped (${messageOf(failure)}); reading the rest of the stored artifact to finish its sha256 before saying why`,
    );
    const said = loaderFailure ? restoreFailure(loaderFailure) : failure;
    const damage = await read.verdict().catch((unread) => {
      if (options.signal?.aborted) throw unread;
      throw new UserError(
        `${messageOf(said)}; and the rest of ${key} could not be read to check its sha256: ${messageOf(unread)}`,
      );
    });
    if (damage) throw new IntegrityError(`${damage.message}; ${whatDamageCaused(failure)}`);
    throw markIntact(said);
  }
  if (!counted.completed) {
    throw markIntact(
      new DumpFormatError(
        `the SQL of ${artifact.name} lacks the dumper's closing "-- Dump completed" line: the dump is incomplete`,
      ),
    );
  }
  return { counted, bytes: reader.offset };
}

/** Failures thrown after the stored bytes were read to the end and matched the manifest. */
const checkedIntact = new WeakSet<Error>();

function markIntact<E extends Error>(error: E): E {
  checkedIntact.add(error);
  return error;
}

/**
 * Whether the restore read every stored byte and found them to match the manifest before it
 * failed with this error (the report's sha256 row then passed).
 */
export function storedBytesMatched(error: unknown): boolean {
  return error instanceof Error && checkedIntact.has(error);
}

/** A refusal to decrypt (no key, the wrong key): nothing about the stored bytes is known. */
function isDecryptionRefusal(error: unknown): boolean {
  return (
    error instanceof UserError &&
    (/^age-identity:/.test(error.message) || error.name === 'UnencryptedArtifactError')
  );
}

/** What damaged bytes made fail first, said without blaming what failed. */
function whatDamageCaused(failure: unknown): string {
  const message = messageOf(failure);
  if (failure instanceof ClientStalledError)
    return `the SQL it decoded to left the client stalled first (${message})`;
  if (failure instanceof DumpFormatError) return `the SQL it decoded to was refused first (${message})`;
  if (failure instanceof UserError) return `the SQL it decoded to failed first on the server (${message})`;
  return `reading it failed first (${message})`;
}

function restoreFailure(error: Error): Error {
  if (error instanceof ClientStalledError || error.message.startsWith('restore failed')) return error;
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
 * `state.halfway` names a database whose old target is dropped and whose new tables are not
 * in it yet: should a statement fail then, its staging database holds the only copy.
 */
async function swapIn(
  conn: Connection,
  planned: Planned[],
  client: ClientCommand,
  objectScript: string[],
  logger: Logger,
  state: SwapState,
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
      state.halfway = p;
    }
    await conn.query(`CREATE DATABASE ${quoteIdentifier(p.target)} ${safeOptions(p.facts.options)}`);
    if (names.length) {
      const moves = names.map(
        (t) =>
          `${quoteIdentifier(p.stage)}.${quoteIdentifier(t)} TO ${quoteIdentifier(p.target)}.${quoteIdentifier(t)}`,
      );
      await conn.query(`RENAME TABLE ${moves.join(', ')}`);
    }
    state.halfway = undefined;
    await conn.query(`DROP DATABASE ${quoteIdentifier(p.stage)}`);
    state.replaced.push(p.target);
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

/**
 * The `post:` step of a killed restore: drops the staging databases it made, except one
 * whose target the swap had already dropped: that one holds the only copy of the restored
 * tables, so it is kept and the step fails, naming it.
 */
export async function removeStagingLeftovers(
  leftovers: StagingLeftovers,
  target: MysqlTarget,
  logger: Logger,
): Promise<void> {
  const conn = await connect(target);
  const kept: string[] = [];
  const tables = async (db: string): Promise<number | undefined> => {
    const [schemas] = await conn.query('SELECT 1 FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?', [
      db,
    ]);
    if ((schemas as unknown[]).length === 0) return undefined;
    const [rows] = await conn.query(
      'SELECT COUNT(*) AS n FROM information_schema.TABLES WHERE TABLE_SCHEMA = ?',
      [db],
    );
    return Number((rows as { n: number }[])[0]!.n);
  };
  try {
    for (const { stage, target: name, replaces } of leftovers.databases) {
      if (!stagingName.test(stage)) {
        logger.warn(`post: '${stage}' is not a name restore gives a staging database; left alone`);
        continue;
      }
      const staged = await tables(stage);
      if (staged === undefined) continue;
      if (leftovers.swapping && replaces && staged > 0 && !(await tables(name))) {
        kept.push(
          `${stage} (the restored tables of ${name}, which the swap had dropped: move them with RENAME TABLE ${quoteIdentifier(stage)}.<table> TO ${quoteIdentifier(name)}.<table>, or restore again)`,
        );
        continue;
      }
      await conn.query(`DROP DATABASE IF EXISTS ${quoteIdentifier(stage)}`);
      logger.info(`dropped the staging database ${stage} on ${describeTarget(target)}`);
    }
  } finally {
    await within(conn.end(), 5_000).catch(() => conn.destroy());
  }
  if (kept.length) {
    throw new UserError(
      `the restore was killed during its swap; kept on ${describeTarget(target)}: ${kept.join('; ')}`,
    );
  }
}

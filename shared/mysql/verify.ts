import type { Connection } from 'mysql2/promise';
import type { Manifest } from '../catalog/manifest.ts';
import { messageOf, UserError } from '../errors.ts';
import { runHook } from '../hooks.ts';
import { AgeDecryptError } from '../pipeline/age-stream.ts';
import { IntegrityError, UndecodableArtifactError, UnencryptedArtifactError } from '../pipeline/artifact.ts';
import type { DecryptionKeys } from '../pipeline/encryption.ts';
import type { Logger } from '../pipeline/progress.ts';
import { formatBytes } from '../pipeline/progress.ts';
import type { Storage } from '../storage/storage.ts';
import { type CheckRow, failed, meets, passed, skipped, type UserCheck } from '../verify/checks.ts';
import { connect, type MysqlTarget } from './connection.ts';
import {
  checkDiskSpace,
  type EnvironmentType,
  incompatibility,
  type Leftovers,
  type MysqlEnvironment,
  openEnvironment,
} from './environment.ts';
import { type DatabaseFacts, mysqlFacts } from './facts.ts';
import {
  CountMismatchError,
  describeMismatch,
  type MysqlRestoreResult,
  restoreMysql,
  selectDatabases,
  storedBytesMatched,
} from './restore.ts';
import { DumpFormatError, quoteIdentifier } from './sql-stream.ts';

export interface MysqlVerifyOptions {
  storage: Storage;
  manifest: Manifest;
  keys?: DecryptionKeys;
  environment: EnvironmentType;
  /** environment external: the server to restore into (under fresh database names). */
  external?: MysqlTarget;
  /** environment local: where the throwaway datadir goes. */
  workDir: string;
  /** environment docker: the image (default: the dumped server's flavour and major.minor). */
  image?: string;
  databases: string[] | 'all';
  parallel: number;
  checks: UserCheck[];
  postRestoreCommand?: string;
  /** Told what to remove should this process die before its teardown, and undefined once it is gone. */
  onLeftovers?: (leftovers: Leftovers | undefined) => void;
  logger: Logger;
  signal?: AbortSignal;
  progressIntervalMs?: number;
}

export interface MysqlVerifyOutcome {
  checks: CheckRow[];
  restoreSeconds: number | null;
  environment: Record<string, unknown> & { type: string; removed: boolean };
  timings: Record<string, number>;
  tables: number;
  rows: number;
  /** Why the run was stopped before its end (the timeout, an interrupt); its checks say how far it got. */
  stopped?: Error;
}

/**
 * Restores a MySQL backup into a throwaway environment and checks it: the artifact's sha256,
 * decryption and SQL, every table's row count and every object against the manifest, the
 * `post-restore-command` (e.g. migrations), then the user's SQL checks. The environment is
 * removed afterwards whatever happened; each check is a row of the outcome.
 */
export async function verifyMysql(options: MysqlVerifyOptions): Promise<MysqlVerifyOutcome> {
  const { manifest, logger } = options;
  const facts = mysqlFacts(manifest);
  const selected = selectDatabases(facts.databases, { ...options, rename: new Map() });
  const contentBytes = manifest.artifacts.reduce((n, a) => n + a.contentBytes, 0);
  if (options.environment === 'local') await checkDiskSpace(options.workDir, contentBytes);

  const timings: Record<string, number> = {};
  const clock = () => {
    const started = performance.now();
    return () => (performance.now() - started) / 1000;
  };
  let elapsed = clock();
  logger.info(`starting the ${options.environment} environment`);
  let env: MysqlEnvironment;
  try {
    env = await openEnvironment({
      type: options.environment,
      databases: selected.map((d) => d.name),
      external: options.external,
      workDir: options.workDir,
      image: options.image,
      backupServer: facts.server,
      onLeftovers: options.onLeftovers,
      logger,
      signal: options.signal,
    });
  } catch (error) {
    if (!options.signal?.aborted) throw error;
    // Stopped while it started: what had started is removed by the start itself.
    const stopped = options.signal.reason instanceof Error ? options.signal.reason : (error as Error);
    timings.environment = elapsed();
    return {
      checks: [
        failed('stopped', messageOf(stopped)),
        skipped('restore', 'not run: the run was stopped while the environment started'),
      ],
      restoreSeconds: null,
      environment: { type: options.environment, removed: true },
      timings,
      tables: selected.reduce((n, d) => n + Object.keys(d.tables).length, 0),
      rows: selected.reduce((n, d) => n + Object.values(d.tables).reduce((a, b) => a + b, 0), 0),
      stopped,
    };
  }
  timings.environment = elapsed();
  logger.info(`environment ready in ${timings.environment.toFixed(1)} s: ${env.type}, ${env.server}`);
  const checks: CheckRow[] = [];
  let restoreSeconds: number | null = null;
  let stopped: Error | undefined;
  try {
    const refusal = incompatibility(facts.server, env.server);
    if (refusal) throw new UserError(`environment: ${refusal}`);
    elapsed = clock();
    const restored = await restoreInto(options, env, selected, checks);
    timings.restore = elapsed();
    restoreSeconds = restored ? timings.restore : null;
    elapsed = clock();
    if (restored) await checkRestored(options, env, selected, checks);
    else for (const name of laterChecks(options)) checks.push(skipped(name, 'not run: the restore failed'));
    timings.checks = elapsed();
  } catch (error) {
    // Stopped (the timeout, an interrupt): the environment still goes, and the report says
    // how far the run got.
    if (!options.signal?.aborted) throw error;
    stopped = options.signal.reason instanceof Error ? options.signal.reason : (error as Error);
    restoreSeconds = null;
    const done = new Set(checks.map((c) => c.name));
    checks.push(failed('stopped', messageOf(stopped)));
    for (const name of [
      'restore',
      ...selected.flatMap((d) => [`rows: ${d.name}`, `objects: ${d.name}`]),
      ...laterChecks(options),
    ]) {
      if (!done.has(name)) checks.push(skipped(name, 'not run: the run was stopped'));
    }
  } finally {
    elapsed = clock();
    await env
      .teardown()
      .catch((error) => logger.warn(`removing the environment failed: ${messageOf(error)}`));
    timings.teardown = elapsed();
  }
  const removed = await env.gone().catch(() => false);
  if (removed) options.onLeftovers?.(undefined);
  else logger.warn(`the ${env.type} environment was not fully removed: ${JSON.stringify(env.details)}`);
  return {
    checks,
    restoreSeconds,
    environment: { type: env.type, server: env.server, ...env.details, removed },
    timings,
    tables: selected.reduce((n, d) => n + Object.keys(d.tables).length, 0),
    rows: selected.reduce((n, d) => n + Object.values(d.tables).reduce((a, b) => a + b, 0), 0),
    ...(stopped ? { stopped } : {}),
  };
}

/** Names of the checks that run after a restore, for the rows that say they did not run. */
function laterChecks(options: MysqlVerifyOptions): string[] {
  return [
    ...(options.postRestoreCommand ? ['post-restore-command'] : []),
    ...options.checks.map((c) => `check: ${c.name}`),
  ];
}

/**
 * Restores and turns what happened into the artifact rows (sha256, decryption, parse) and
 * the row-count rows the restore itself checks before it swaps anything in.
 */
async function restoreInto(
  options: MysqlVerifyOptions,
  env: MysqlEnvironment,
  selected: DatabaseFacts[],
  checks: CheckRow[],
): Promise<MysqlRestoreResult | undefined> {
  const artifact = options.manifest.artifacts[0]!;
  const sha = `sha256: ${artifact.name}`;
  const decrypt = `decrypt: ${artifact.name}`;
  const parse = `parse: ${artifact.name}`;
  const encrypted = Boolean(artifact.encryption);
  try {
    const result = await restoreMysql({
      storage: options.storage,
      manifest: options.manifest,
      target: env.target,
      databases: selected.map((d) => d.name),
      rename: env.names,
      ifExists: 'fail',
      parallel: options.parallel,
      dryRun: false,
      keys: options.keys,
      logger: options.logger,
      signal: options.signal,
      progressIntervalMs: options.progressIntervalMs,
      // On a server of the user's, the staging databases are left behind too if the step dies.
      onLeftovers:
        env.leftovers.type === 'databases'
          ? (staging) => {
              const base = env.leftovers as Extract<Leftovers, { type: 'databases' }>;
              options.onLeftovers?.({
                type: 'databases',
                databases: [...base.databases, ...(staging?.databases.map((d) => d.stage) ?? [])],
              });
            }
          : undefined,
    });
    checks.push(
      passed(
        sha,
        `${formatBytes(artifact.bytes)} match the manifest's size and sha256 ${artifact.sha256.slice(0, 12)}…`,
      ),
    );
    if (encrypted) checks.push(passed(decrypt, 'age: decrypted and authenticated to the last chunk'));
    checks.push(
      passed(
        parse,
        `${formatBytes(result.bytes)} of SQL read to the dumper's closing line: ${result.tables} tables, ${result.rows} rows`,
      ),
    );
    checks.push(
      passed(
        'restore',
        `into ${env.type} ${env.server}: ${result.databases.length} database(s), staged then swapped in`,
      ),
    );
    return result;
  } catch (error) {
    if (options.signal?.aborted) throw error;
    const why = messageOf(error);
    const notRead = 'not read to the end: the read stopped at an earlier failure';
    // The restore reads the rest of the stored bytes before it fails for anything else.
    const matched = storedBytesMatched(error) || error instanceof UndecodableArtifactError;
    const shaRow = () =>
      matched
        ? passed(sha, `${formatBytes(artifact.bytes)} match the manifest's size and sha256`)
        : skipped(sha, notRead);
    if (error instanceof IntegrityError) {
      checks.push(failed(sha, why));
      if (encrypted) checks.push(skipped(decrypt, 'not trusted: the stored bytes are damaged'));
      checks.push(skipped(parse, 'not trusted: the stored bytes are damaged'));
    } else if (
      error instanceof AgeDecryptError ||
      error instanceof UnencryptedArtifactError ||
      /^age-identity:/.test(why)
    ) {
      checks.push(skipped(sha, notRead));
      checks.push(failed(decrypt, why));
      checks.push(skipped(parse, 'not run: nothing could be decrypted'));
    } else if (error instanceof CountMismatchError) {
      checks.push(passed(sha, `${formatBytes(artifact.bytes)} match the manifest's size and sha256`));
      if (encrypted) checks.push(passed(decrypt, 'age: decrypted and authenticated to the last chunk'));
      checks.push(passed(parse, "read to the dumper's closing line"));
      for (const db of selected) {
        const wrong = error.mismatches.filter((m) => m.database === db.name);
        checks.push(
          wrong.length
            ? failed(`rows: ${db.name}`, wrong.map(describeMismatch).join('; '))
            : skipped(`rows: ${db.name}`, 'counted right in the backup, not loaded: the restore stopped'),
        );
      }
      checks.push(
        skipped('restore', 'stopped before anything was swapped in: the data does not match the manifest'),
      );
      return undefined;
    } else if (error instanceof UndecodableArtifactError) {
      checks.push(shaRow());
      if (encrypted) checks.push(failed(decrypt, why));
      checks.push(encrypted ? skipped(parse, 'not run: nothing could be decoded') : failed(parse, why));
    } else if (error instanceof DumpFormatError) {
      checks.push(shaRow());
      if (encrypted) checks.push(matched ? passed(decrypt, 'age: decrypted') : skipped(decrypt, notRead));
      checks.push(failed(parse, why));
    } else if (error instanceof UserError) {
      checks.push(shaRow());
      checks.push(failed('restore', why));
    } else {
      throw error;
    }
    for (const db of selected) checks.push(skipped(`rows: ${db.name}`, 'not run: the restore failed'));
    for (const db of selected) checks.push(skipped(`objects: ${db.name}`, 'not run: the restore failed'));
    return undefined;
  }
}

/** Checks on the restored server: row counts, objects, the post-restore command, user checks. */
async function checkRestored(
  options: MysqlVerifyOptions,
  env: MysqlEnvironment,
  selected: DatabaseFacts[],
  checks: CheckRow[],
): Promise<void> {
  const conn = await connect(env.target);
  try {
    for (const db of selected) checks.push(await countRows(conn, db, env.names.get(db.name)!));
    for (const db of selected) checks.push(await countObjects(conn, db, env.names.get(db.name)!));
  } finally {
    await conn.end().catch(() => {});
  }
  const first = env.names.get(selected[0]!.name)!;
  if (options.postRestoreCommand) {
    try {
      await runHook('post-restore-command', options.postRestoreCommand, {
        logger: options.logger,
        signal: options.signal,
        env: commandEnvironment(env, first),
      });
      checks.push(passed('post-restore-command', 'exit status 0'));
    } catch (error) {
      if (options.signal?.aborted) throw error;
      checks.push(failed('post-restore-command', messageOf(error).replace(/^post-restore-command: /, '')));
    }
  }
  for (const check of options.checks) checks.push(await runUserCheck(env, check, first));
}

/** Every table of the manifest is on the server with exactly the recorded rows, and no other. */
async function countRows(conn: Connection, db: DatabaseFacts, name: string): Promise<CheckRow> {
  const [list] = await conn.query(
    `SELECT TABLE_NAME AS t FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_TYPE = 'BASE TABLE'`,
    [name],
  );
  const present = new Set((list as { t: string }[]).map((r) => String(r.t)));
  const problems: string[] = [];
  let rows = 0;
  for (const [table, recorded] of Object.entries(db.tables)) {
    if (!present.delete(table)) {
      problems.push(`${table} is missing`);
      continue;
    }
    const [result] = await conn.query(
      `SELECT COUNT(*) AS n FROM ${quoteIdentifier(name)}.${quoteIdentifier(table)}`,
    );
    const counted = Number((result as { n: string }[])[0]!.n);
    rows += counted;
    if (counted !== recorded)
      problems.push(`${table} holds ${counted} rows, the manifest records ${recorded}`);
  }
  for (const extra of present) problems.push(`${extra} is not in the manifest`);
  const tables = Object.keys(db.tables).length;
  const label = `rows: ${db.name}`;
  return problems.length
    ? failed(
        label,
        problems.slice(0, 5).join('; ') + (problems.length > 5 ? `; and ${problems.length - 5} more` : ''),
      )
    : passed(label, `${tables} tables, ${rows} rows: each table's COUNT(*) equals the manifest`);
}

/** Views, procedures, functions, triggers and events on the server are the manifest's. */
async function countObjects(conn: Connection, db: DatabaseFacts, name: string): Promise<CheckRow> {
  const names = async (sql: string) => {
    const [rows] = await conn.query(sql, [name]);
    return (rows as { n: string }[]).map((r) => String(r.n));
  };
  const found: Record<string, string[]> = {
    views: await names('SELECT TABLE_NAME AS n FROM information_schema.VIEWS WHERE TABLE_SCHEMA = ?'),
    procedures: await names(
      `SELECT ROUTINE_NAME AS n FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = ? AND ROUTINE_TYPE = 'PROCEDURE'`,
    ),
    functions: await names(
      `SELECT ROUTINE_NAME AS n FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = ? AND ROUTINE_TYPE = 'FUNCTION'`,
    ),
    triggers: await names(
      'SELECT TRIGGER_NAME AS n FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = ?',
    ),
    events: await names('SELECT EVENT_NAME AS n FROM information_schema.EVENTS WHERE EVENT_SCHEMA = ?'),
  };
  const problems: string[] = [];
  const counts: string[] = [];
  for (const [kind, have] of Object.entries(found)) {
    const want = db[kind as 'views'];
    const missing = want.filter((n) => !have.includes(n));
    const extra = have.filter((n) => !want.includes(n));
    if (missing.length) problems.push(`${kind} missing: ${missing.join(', ')}`);
    if (extra.length) problems.push(`${kind} not in the manifest: ${extra.join(', ')}`);
    counts.push(`${kind} ${want.length}`);
  }
  const label = `objects: ${db.name}`;
  return problems.length
    ? failed(label, problems.join('; '))
    : passed(label, `${counts.join(', ')}: as the manifest records`);
}

/** What the post-restore command finds in its environment: where the restored server is. */
function commandEnvironment(env: MysqlEnvironment, database: string): Record<string, string> {
  const { host = '127.0.0.1', port = 3306, user, password = '' } = env.target;
  const auth = `${encodeURIComponent(user)}${password ? `:${encodeURIComponent(password)}` : ''}`;
  return {
    DATABASE_URL: `mysql://${auth}@${host}:${port}/${encodeURIComponent(database)}`,
    MYSQL_HOST: host,
    MYSQL_TCP_PORT: String(port),
    MYSQL_PORT: String(port),
    MYSQL_USER: user,
    MYSQL_PWD: password,
    MYSQL_DATABASE: database,
    LIFEBOAT_RESTORED_DATABASES: JSON.stringify(Object.fromEntries(env.names)),
  };
}

/** Runs one user check: its SQL's first value against what it expects. */
async function runUserCheck(env: MysqlEnvironment, check: UserCheck, fallback: string): Promise<CheckRow> {
  const label = `check: ${check.name}`;
  const database = check.database === undefined ? fallback : env.names.get(check.database);
  if (database === undefined) {
    return failed(
      label,
      `database: '${check.database}' is not restored here; restored: ${[...env.names.keys()].join(', ')}`,
    );
  }
  let conn: Connection | undefined;
  try {
    conn = await connect(env.target, database);
    const [rows] = await conn.query({ sql: check.sql, rowsAsArray: true });
    const first = Array.isArray(rows) ? (rows[0] as unknown[] | undefined) : undefined;
    const raw = first?.[0];
    const value =
      raw === null || raw === undefined ? null : Buffer.isBuffer(raw) ? raw.toString('utf8') : String(raw);
    const shown = first === undefined ? 'no rows' : value === null ? 'NULL' : `'${value}'`;
    return meets(value, check.expect)
      ? passed(label, `${shown}, expected ${check.expect.text}`)
      : failed(label, `got ${shown}, expected ${check.expect.text}`);
  } catch (error) {
    return failed(label, `the SQL failed: ${messageOf(error)}`);
  } finally {
    await conn?.end().catch(() => {});
  }
}

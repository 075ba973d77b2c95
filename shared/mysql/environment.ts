import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import { promisify } from 'node:util';
import { childEnvironment } from '../child-env.ts';
import { UserError } from '../errors.ts';
import type { Logger } from '../pipeline/progress.ts';
import { formatBytes } from '../pipeline/progress.ts';
import { connect, describeTarget, type MysqlTarget } from './connection.ts';
import { systemDatabases } from './dump.ts';
import { isAlive, startEphemeralServer } from './ephemeral.ts';
import { findProgram } from './programs.ts';
import { quoteIdentifier } from './sql-stream.ts';

const run = promisify(execFile);

export const environmentTypes = ['local', 'external', 'docker'] as const;
export type EnvironmentType = (typeof environmentTypes)[number];

/**
 * What a later step must remove if this process dies before its own teardown (a killed
 * step): the action's `post:` step reads it back and calls `removeLeftovers`.
 */
export type Leftovers =
  | { type: 'mysqld'; pid: number; dataDir: string }
  | { type: 'databases'; databases: string[] }
  | { type: 'container'; name: string };

/** A server to restore a backup into for a check, and how to take it away again. */
export interface MysqlEnvironment {
  type: EnvironmentType;
  target: MysqlTarget;
  /** The server's VERSION(). */
  server: string;
  /** The name each backed-up database is restored as. */
  names: Map<string, string>;
  /** For the report: where it ran (port, datadir, the fresh database names, …). */
  details: Record<string, unknown>;
  leftovers: Leftovers;
  /** Removes the environment (stops the server and deletes its datadir, or drops the databases). */
  teardown(): Promise<void>;
  /** Whether nothing of it is left (checked after teardown, for the report). */
  gone(): Promise<boolean>;
}

export interface EnvironmentOptions {
  type: EnvironmentType;
  /** The databases that will be restored. */
  databases: string[];
  /** external: the server to use. */
  external?: MysqlTarget;
  /** local: the folder the datadir goes in. */
  workDir: string;
  /** docker: the image (default: mariadb:<major.minor> or mysql:<major.minor> of the dumped server). */
  image?: string;
  /** The server the backup was dumped from, for the docker image. */
  backupServer: { flavour: 'mariadb' | 'mysql'; version: string };
  /** Told what to remove as soon as there is something (before a container is even pulled). */
  onLeftovers?: (leftovers: Leftovers) => void;
  logger: Logger;
  signal?: AbortSignal;
}

/** Starts (local) or prepares (external) the environment a backup is restored into. */
export async function openEnvironment(options: EnvironmentOptions): Promise<MysqlEnvironment> {
  if (options.type === 'docker') return openDocker(options);
  return options.type === 'local' ? openLocal(options) : openExternal(options);
}

async function openLocal(options: EnvironmentOptions): Promise<MysqlEnvironment> {
  const server = await startEphemeralServer({
    parent: options.workDir,
    // Restored events must not run and change the data before it is checked.
    options: ['--max-allowed-packet=1G', '--event-scheduler=OFF'],
    signal: options.signal,
  });
  const leftovers: Leftovers = { type: 'mysqld', pid: server.pid, dataDir: server.dataDir };
  options.onLeftovers?.(leftovers);
  const target: MysqlTarget = {
    host: '127.0.0.1',
    port: server.port,
    user: 'root',
    ssl: { mode: 'disabled' },
  };
  try {
    const version = await serverVersion(target);
    const names = throwawayNames(options.databases);
    return {
      type: 'local',
      target,
      server: version,
      names,
      details: { port: server.port, socket: server.socket, dataDir: server.dataDir, pid: server.pid },
      leftovers,
      teardown: () => server.stop(),
      gone: async () => !(await exists(server.dataDir)) && !isAlive(server.pid),
    };
  } catch (error) {
    await server.stop();
    throw error;
  }
}

/**
 * Names in a server of its own: the databases' own, but a backup of the system databases
 * cannot replace the new server's, so those go under other names.
 */
function throwawayNames(databases: string[]): Map<string, string> {
  return new Map(databases.map((d) => [d, systemDatabases.includes(d) ? `lbverify_${d}` : d]));
}

async function openExternal(options: EnvironmentOptions): Promise<MysqlEnvironment> {
  const target =
    options.external ??
    (() => {
      throw new UserError('environment: external needs the server: give host and port, socket or mysql-url');
    })();
  const version = await serverVersion(target);
  const suffix = randomBytes(3).toString('hex');
  const names = new Map(options.databases.map((d) => [d, `lbverify_${suffix}_${d}`.slice(0, 64)]));
  const fresh = [...names.values()];
  const leftovers: Leftovers = { type: 'databases', databases: fresh };
  options.onLeftovers?.(leftovers);
  return {
    type: 'external',
    target,
    server: version,
    names,
    details: { server: describeTarget(target), databases: Object.fromEntries(names) },
    leftovers,
    teardown: () => dropDatabases(target, fresh),
    gone: async () => (await existingDatabases(target, fresh)).length === 0,
  };
}

/** The image of the dumped server's flavour and major.minor version, e.g. mariadb:10.11. */
export function imageFor(server: { flavour: 'mariadb' | 'mysql'; version: string }): string {
  const [, major = '8', minor = '0'] = /(\d+)\.(\d+)/.exec(server.version) ?? [];
  return `${server.flavour}:${major}.${minor}`;
}

const docker = async (args: string[], signal?: AbortSignal) => {
  const program =
    (await findProgram(['docker'])) ??
    (() => {
      throw new UserError(
        'environment: docker needs the docker program on PATH (GitHub-hosted Ubuntu runners have it)',
      );
    })();
  try {
    const { stdout } = await run(program, args, {
      signal,
      maxBuffer: 16 * 1024 * 1024,
      env: childEnvironment(),
    });
    return stdout.trim();
  } catch (error) {
    if (signal?.aborted) throw error;
    const stderr = String((error as { stderr?: string }).stderr ?? (error as Error).message).trim();
    const said = stderr
      .split('\n')
      .map((line) => line.trim())
      .filter((line) => line && !line.startsWith("Run 'docker"));
    throw new UserError(`environment: docker ${args[0]} failed: ${said.slice(-2).join(' ')}`);
  }
};

/**
 * A throwaway container of the dumped server's flavour and version (or `image`), root
 * without a password, published on a free 127.0.0.1 port; removed with its volumes.
 */
async function openDocker(options: EnvironmentOptions): Promise<MysqlEnvironment> {
  const image = options.image ?? imageFor(options.backupServer);
  const name = `lifeboat-verify-${randomBytes(4).toString('hex')}`;
  const leftovers: Leftovers = { type: 'container', name };
  options.onLeftovers?.(leftovers);
  options.logger.info(`starting a ${image} container (${name}); the image is pulled if it is not here`);
  await docker(
    [
      'run',
      '--detach',
      '--name',
      name,
      '--label',
      'lifeboat=verify-restore',
      '--env',
      'MARIADB_ALLOW_EMPTY_ROOT_PASSWORD=1',
      '--env',
      'MYSQL_ALLOW_EMPTY_PASSWORD=yes',
      '--publish',
      '127.0.0.1::3306',
      image,
      '--max-allowed-packet=1G',
      '--event-scheduler=OFF',
      '--character-set-server=utf8mb4',
    ],
    options.signal,
  );
  const remove = () => docker(['rm', '--force', '--volumes', name]).then(() => undefined);
  try {
    const published = await docker(['port', name, '3306/tcp'], options.signal);
    const port = Number(/127\.0\.0\.1:(\d+)/.exec(published)?.[1]);
    if (!port)
      throw new UserError(`environment: docker port ${name} printed no 127.0.0.1 port: ${published}`);
    const target: MysqlTarget = { host: '127.0.0.1', port, user: 'root', ssl: { mode: 'disabled' } };
    const version = await waitForServer(target, name, options.signal);
    const names = throwawayNames(options.databases);
    return {
      type: 'docker',
      target,
      server: version,
      names,
      details: { image, container: name, port },
      leftovers,
      teardown: remove,
      gone: async () => (await docker(['ps', '--all', '--quiet', '--filter', `name=^${name}$`])) === '',
    };
  } catch (error) {
    await remove().catch(() => {});
    throw error;
  }
}

/** Polls until the container's server answers over TCP (its entrypoint restarts it once while initialising). */
async function waitForServer(target: MysqlTarget, name: string, signal?: AbortSignal): Promise<string> {
  const deadline = Date.now() + 180_000;
  let last = '';
  while (Date.now() < deadline) {
    signal?.throwIfAborted();
    try {
      return await serverVersion(target);
    } catch (error) {
      last = (error as Error).message;
    }
    await new Promise((resolve) => setTimeout(resolve, 500));
  }
  throw new UserError(
    `environment: the server in container ${name} did not accept connections within 3 minutes (${last})`,
  );
}

async function serverVersion(target: MysqlTarget): Promise<string> {
  const conn = await connect(target);
  try {
    const [rows] = await conn.query('SELECT VERSION() AS v');
    return String((rows as { v: string }[])[0]!.v);
  } finally {
    await conn.end().catch(() => {});
  }
}

async function dropDatabases(target: MysqlTarget, databases: string[]): Promise<void> {
  const conn = await connect(target);
  try {
    for (const db of databases) await conn.query(`DROP DATABASE IF EXISTS ${quoteIdentifier(db)}`);
  } finally {
    await conn.end().catch(() => {});
  }
}

async function existingDatabases(target: MysqlTarget, databases: string[]): Promise<string[]> {
  const conn = await connect(target);
  try {
    const [rows] = await conn.query('SELECT SCHEMA_NAME AS s FROM information_schema.SCHEMATA');
    const all = new Set((rows as { s: string }[]).map((r) => String(r.s)));
    return databases.filter((d) => all.has(d));
  } finally {
    await conn.end().catch(() => {});
  }
}

/**
 * Removes what a killed verification left (the `post:` step): kills the throwaway server if
 * that process still runs the same datadir, deletes the datadir, or drops the databases.
 */
export async function removeLeftovers(
  leftovers: Leftovers,
  external: MysqlTarget | undefined,
  logger: Logger,
): Promise<void> {
  if (leftovers.type === 'mysqld') {
    const cmdline = await fs.readFile(`/proc/${leftovers.pid}/cmdline`, 'utf8').catch(() => '');
    if (cmdline.includes(leftovers.dataDir)) {
      process.kill(leftovers.pid, 'SIGKILL');
      logger.info(`stopped the throwaway server left running (pid ${leftovers.pid})`);
    }
    await fs.rm(leftovers.dataDir, { recursive: true, force: true });
    logger.info(`removed ${leftovers.dataDir}`);
    return;
  }
  if (leftovers.type === 'container') {
    await docker(['rm', '--force', '--volumes', leftovers.name]);
    logger.info(`removed the container ${leftovers.name}`);
    return;
  }
  if (!external) throw new UserError('environment: cannot drop the verification databases: no server given');
  await dropDatabases(external, leftovers.databases);
  logger.info(`dropped ${leftovers.databases.join(', ')} on ${describeTarget(external)}`);
}

async function exists(file: string): Promise<boolean> {
  return fs.access(file).then(
    () => true,
    () => false,
  );
}

interface Version {
  flavour: 'mariadb' | 'mysql';
  major: number;
  minor: number;
  text: string;
}

function readVersion(text: string, flavour?: 'mariadb' | 'mysql'): Version {
  const [, major = '0', minor = '0'] = /(\d+)\.(\d+)/.exec(text) ?? [];
  return {
    flavour: flavour ?? (/mariadb/i.test(text) ? 'mariadb' : 'mysql'),
    major: Number(major),
    minor: Number(minor),
    text: text.replace(/-.*$/, ''),
  };
}

/**
 * Why a server cannot hold a backup, or undefined when it can: a MySQL 8 dump into MariaDB
 * (utf8mb4_0900 collations, syntax MariaDB does not read), a MariaDB dump into MySQL, or a
 * server older than the one that was dumped.
 */
export function incompatibility(backup: { flavour: 'mariadb' | 'mysql'; version: string }, server: string) {
  const from = readVersion(backup.version, backup.flavour);
  const into = readVersion(server);
  const name = (v: Version) => `${v.flavour === 'mariadb' ? 'MariaDB' : 'MySQL'} ${v.text}`;
  if (from.flavour === 'mysql' && into.flavour === 'mariadb' && from.major >= 8) {
    return `a ${name(from)} backup cannot be restored into ${name(into)}: MySQL 8 dumps use collations (utf8mb4_0900_*) and syntax MariaDB does not read; verify on MySQL ${from.major}.${from.minor} or newer`;
  }
  if (from.flavour === 'mariadb' && into.flavour === 'mysql') {
    return `a ${name(from)} backup cannot be restored into ${name(into)}: MySQL does not read MariaDB's dumps (sandbox line, sequences, MariaDB-only types and collations); verify on MariaDB ${from.major}.${from.minor} or newer`;
  }
  if (
    from.flavour === into.flavour &&
    (into.major < from.major || (into.major === from.major && into.minor < from.minor))
  ) {
    return `a ${name(from)} backup cannot be restored into the older ${name(into)}: an older server may not read a newer server's SQL; verify on ${from.major}.${from.minor} or newer`;
  }
  return undefined;
}

/**
 * Disk a restore of `contentBytes` of SQL is estimated to need: the data as InnoDB stores it
 * (about the SQL's size, a quarter more for indexes and page slack) plus the server's own
 * files (redo log, system tablespace).
 */
export function diskNeeded(contentBytes: number): number {
  return Math.ceil(contentBytes * 1.25) + 512 * 1024 * 1024;
}

/** Refuses a work folder without room for the restore, before anything starts. */
export async function checkDiskSpace(workDir: string, contentBytes: number): Promise<void> {
  const stats = await fs.statfs(workDir);
  const free = stats.bavail * stats.bsize;
  const needed = diskNeeded(contentBytes);
  if (free < needed) {
    throw new UserError(
      `environment: ${workDir} has ${formatBytes(free)} free, but restoring this backup (${formatBytes(contentBytes)} of SQL) needs about ${formatBytes(needed)}; free some space, point work-dir at a bigger disk, or use environment: external`,
    );
  }
}

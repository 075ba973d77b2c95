import { execFile } from 'node:child_process';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import type { Connection, ConnectionOptions } from 'mysql2/promise';
import { UserError } from '../errors.ts';
import { findProgram } from './programs.ts';

/** Where a MySQL or MariaDB server is and who to log in as. The password is a secret. */
export interface MysqlTarget {
  host?: string;
  port?: number;
  socket?: string;
  user: string;
  password?: string;
  ssl: SslOptions;
}

export const sslModes = ['disabled', 'preferred', 'required', 'verify-ca', 'verify-identity'] as const;
export type SslMode = (typeof sslModes)[number];
export interface SslOptions {
  mode: SslMode;
  ca?: string;
}

/** Parses mysql://user:password@host:port (or mariadb://…); messages never repeat the URL. */
export function parseMysqlUrl(text: string): Omit<MysqlTarget, 'ssl'> {
  // The message never repeats the URL: it may hold a password.
  const bad = (why: string) =>
    new UserError(`mysql-url: ${why}; accepted: mysql://user:password@host:port (or mariadb://…)`);
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw bad('not a URL');
  }
  if (url.protocol !== 'mysql:' && url.protocol !== 'mariadb:')
    throw bad(`the scheme ${url.protocol} is not accepted`);
  if (!url.hostname) throw bad('no host');
  if (url.pathname && url.pathname !== '/')
    throw bad('give databases in the databases input, not in the URL');
  if (url.search || url.hash || /[?#]/.test(text))
    throw bad(
      'options in the URL (?… or #…) are not read: use the ssl-mode and ssl-ca inputs (a ? or # in the password is written %3F or %23)',
    );
  const port = url.port ? Number(url.port) : 3306;
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw bad('the port is not from 1 to 65535');
  const decode = (part: string, which: string) => {
    try {
      return decodeURIComponent(part);
    } catch {
      throw bad(`the ${which} has a malformed % escape (write a % itself as %25)`);
    }
  };
  return {
    host: url.hostname.replace(/^\[|\]$/g, ''),
    port,
    user: decode(url.username, 'user') || 'root',
    password: url.password ? decode(url.password, 'password') : undefined,
  };
}

/** Names the server for messages and manifests, never with the password. */
export function describeTarget(target: MysqlTarget): string {
  return target.socket ? `${target.user}@${target.socket}` : `${target.user}@${target.host}:${target.port}`;
}

/** A control connection (mysql2), with failures turned into one clear line. */
export async function connect(target: MysqlTarget, database?: string): Promise<Connection> {
  const { createConnection } = await import('mysql2/promise');
  const options: ConnectionOptions = {
    user: target.user,
    password: target.password ?? '',
    database,
    charset: 'utf8mb4_unicode_ci',
    multipleStatements: false,
    connectTimeout: 15_000,
    supportBigNumbers: true,
    bigNumberStrings: true,
    dateStrings: true,
    ...(target.socket ? { socketPath: target.socket } : { host: target.host, port: target.port }),
  };
  const ssl = await sslFor(target.ssl);
  if (ssl) options.ssl = ssl;
  try {
    return await createConnection(options);
  } catch (error) {
    throw connectionError(error, target);
  }
}

async function sslFor(ssl: SslOptions): Promise<ConnectionOptions['ssl'] | undefined> {
  switch (ssl.mode) {
    case 'disabled':
    case 'preferred':
      // The control connection (metadata queries only) goes without TLS; the client
      // programs that carry the data use TLS when the server offers it.
      return undefined;
    case 'required':
      return { rejectUnauthorized: false };
    default: {
      const ca = ssl.ca ? await readCa(ssl.ca) : undefined;
      return {
        ca,
        rejectUnauthorized: true,
        ...(ssl.mode === 'verify-ca' ? { checkServerIdentity: () => undefined } : {}),
      };
    }
  }
}

async function readCa(file: string): Promise<string> {
  try {
    return await fs.readFile(file, 'utf8');
  } catch (error) {
    throw new UserError(`ssl-ca: cannot read '${file}' (${(error as NodeJS.ErrnoException).code})`);
  }
}

/** One line for a failed connection or query, naming the input to fix. */
export function connectionError(error: unknown, target: MysqlTarget): Error {
  const e = error as { code?: string; errno?: number; sqlMessage?: string; message?: string };
  const where = describeTarget(target);
  switch (e.code) {
    case 'ECONNREFUSED':
      return new UserError(
        `${target.socket ? 'socket' : 'host'}: cannot connect to ${where}: connection refused; is the server running and the port right?`,
      );
    case 'ENOENT':
      return new UserError(`socket: ${target.socket} does not exist; accepted: the server's Unix socket`);
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      return new UserError(`host: cannot resolve '${target.host}'; accepted: a host name or IP address`);
    case 'ETIMEDOUT':
      return new UserError(`host: no answer from ${where} within 15 s; check the address and firewalls`);
    case 'ER_ACCESS_DENIED_ERROR':
    case 'ER_ACCESS_DENIED_NO_PASSWORD_ERROR':
      return new UserError(`password: access denied for ${where}: ${e.sqlMessage ?? e.message}`);
    case 'HANDSHAKE_NO_SSL_SUPPORT':
      return new UserError(`ssl-mode: ${where} does not offer TLS; use ssl-mode preferred or disabled`);
    default:
      if (e.sqlMessage) return new UserError(`${where}: ${e.sqlMessage} (error ${e.errno})`);
      return error instanceof Error ? error : new Error(String(error));
  }
}

/**
 * A private option file for the client programs (mariadb-dump, mariadb, mysqldump, mysql):
 * the password goes into a file that has no name (O_TMPFILE; where the file system cannot,
 * a 0600 file removed the moment it is open), handed to each child as its fd 3 and read as
 * `--defaults-extra-file=/dev/fd/3`. Nothing named holds the password, even after kill -9,
 * and it is never on a command line. Pass `args` first on the program's command line and
 * `fd` as the child's fourth stdio entry; `dispose` closes it.
 */
export interface ClientOptionFile {
  args: string[];
  fd: number;
  dispose(): Promise<void>;
}

export async function writeOptionFile(
  target: MysqlTarget,
  flavour: ClientFlavour,
): Promise<ClientOptionFile> {
  const lines = ['[client]', `user=${optionValue(target.user)}`];
  if (target.password !== undefined) lines.push(`password=${optionValue(target.password)}`);
  if (target.socket) lines.push(`socket=${optionValue(target.socket)}`, 'protocol=SOCKET');
  else
    lines.push(
      `host=${optionValue(target.host ?? '127.0.0.1')}`,
      `port=${target.port ?? 3306}`,
      'protocol=TCP',
    );
  lines.push(...sslOptionLines(target.ssl, flavour));
  const file = await anonymousFile();
  try {
    await file.writeFile(`${lines.join('\n')}\n`);
  } catch (error) {
    await file.close();
    throw error;
  }
  return {
    args: ['--defaults-extra-file=/dev/fd/3'],
    fd: file.fd,
    dispose: () => file.close().catch(() => {}),
  };
}

/** O_TMPFILE: a file in the temporary folder that never has a name (Linux). */
const tmpfile = 0o20000000 | fs.constants.O_DIRECTORY;

async function anonymousFile(): Promise<fs.FileHandle> {
  try {
    return await fs.open(os.tmpdir(), tmpfile | fs.constants.O_RDWR, 0o600);
  } catch {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'lifeboat-my-'));
    const name = path.join(dir, 'client.cnf');
    try {
      return await fs.open(name, 'wx+', 0o600);
    } finally {
      await fs.rm(dir, { recursive: true, force: true });
    }
  }
}

/** An option-file value, quoted with the escapes both MySQL and MariaDB read. */
function optionValue(value: string): string {
  if (/[\n\r]/.test(value))
    throw new UserError('password: a line break cannot be given to the MySQL client programs');
  return `"${value.replaceAll('\\', '\\\\').replaceAll('"', '\\"')}"`;
}

function sslOptionLines(ssl: SslOptions, flavour: ClientFlavour): string[] {
  const ca = ssl.ca ? [`ssl-ca=${optionValue(ssl.ca)}`] : [];
  if (flavour === 'mysql') {
    const mode = { disabled: 'DISABLED', preferred: 'PREFERRED', required: 'REQUIRED' } as Record<
      string,
      string
    >;
    return [`ssl-mode=${mode[ssl.mode] ?? ssl.mode.toUpperCase().replace('-', '_')}`, ...ca];
  }
  switch (ssl.mode) {
    case 'disabled':
      return ['skip-ssl'];
    case 'preferred':
      return [];
    case 'required':
      return ['ssl'];
    default:
      return ['ssl', 'ssl-verify-server-cert', ...ca];
  }
}

export type ClientFlavour = 'mariadb' | 'mysql';

export interface ClientPrograms {
  flavour: ClientFlavour;
  /** mariadb-dump or mysqldump */
  dump: string;
  /** mariadb or mysql */
  client: string;
  /** The dumper's own version line, for the manifest. */
  dumpVersion: string;
  /** The client's arguments that refuse shell and file commands (`--sandbox`), where it has them. */
  sandboxArgs: string[];
}

const run = promisify(execFile);

/** `--sandbox` when the client lists it in its own help (MariaDB 10.5.25, 10.6.18, 10.11.8 and later). */
async function sandboxArgs(client: string): Promise<string[]> {
  const { stdout } = await run(client, ['--no-defaults', '--help'], { maxBuffer: 4 * 1024 * 1024 }).catch(
    () => ({
      stdout: '',
    }),
  );
  return /^\s*--sandbox\b/m.test(stdout) ? ['--sandbox'] : [];
}

/**
 * The client programs that suit a server: MariaDB's for MariaDB, Oracle's for MySQL (each
 * dumps its own server best), falling back to whichever is installed.
 */
export async function clientPrograms(server: ClientFlavour): Promise<ClientPrograms> {
  const mariadb = { dump: ['mariadb-dump'], client: ['mariadb'] };
  const mysql = { dump: ['mysqldump'], client: ['mysql'] };
  const order = server === 'mariadb' ? [mariadb, mysql] : [mysql, mariadb];
  for (const names of order) {
    const dump = await findProgram(names.dump);
    const client = await findProgram(names.client);
    if (!dump || !client) continue;
    const { stdout } = await run(dump, ['--version']);
    const flavour: ClientFlavour = /mariadb/i.test(stdout) ? 'mariadb' : 'mysql';
    return { flavour, dump, client, dumpVersion: stdout.trim(), sandboxArgs: await sandboxArgs(client) };
  }
  throw new UserError(
    'the MySQL client programs (mariadb-dump and mariadb, or mysqldump and mysql) are not on PATH; install them (apt-get install mariadb-client or mysql-client)',
  );
}

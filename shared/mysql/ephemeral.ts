import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import fs from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { childEnvironment } from '../child-env.ts';
import { UserError } from '../errors.ts';
import { findProgram } from './programs.ts';

const run = promisify(execFile);

/** A throwaway MariaDB or MySQL server on a temporary datadir, 127.0.0.1 and a private socket. */
export interface EphemeralServer {
  host: '127.0.0.1';
  port: number;
  socket: string;
  /** `root`, without a password, reachable over TCP and the socket. */
  user: 'root';
  dataDir: string;
  /** The server's process id. */
  pid: number;
  /** mariadb or mysql: the server program that runs. */
  flavour: 'mariadb' | 'mysql';
  /** Stops the server and removes its datadir; safe to call twice. */
  stop(): Promise<void>;
}

export interface EphemeralOptions {
  /** Turn the binary log on (for tests of the recorded position). */
  binaryLog?: boolean;
  /** Extra server options, e.g. `--max-allowed-packet=256M`. */
  options?: string[];
  /** Where the datadir goes (default: the system temp folder). */
  parent?: string;
  signal?: AbortSignal;
}

/** Servers running, with their processes, for the exit hook. */
const running = new Map<EphemeralServer, ChildProcess>();
let exitHookInstalled = false;

/**
 * Starts a server from the binaries on PATH (`mariadbd`, else `mysqld`) on a free port, ready
 * in about a second. The caller stops it; if the process exits first, a hook kills it.
 */
export async function startEphemeralServer(options: EphemeralOptions = {}): Promise<EphemeralServer> {
  const daemon = (await findProgram(['mariadbd', 'mysqld'])) ?? missingServer();
  const flavour = (await isMariaDb(daemon)) ? 'mariadb' : 'mysql';
  const dataDir = await fs.mkdtemp(path.join(options.parent ?? os.tmpdir(), 'lifeboat-mysqld-'));
  const socket = path.join(dataDir, 'sock');
  // Its own tmpdir: a starting server (and the bootstrap that makes a datadir) deletes every
  // `#sql*` file in its tmpdir, which in a shared /tmp are the live temporary tables of the
  // other servers running beside it.
  const tmpDir = path.join(dataDir, 'tmp');
  await fs.mkdir(tmpDir);
  const asRoot = process.getuid?.() === 0 ? ['--user=root'] : [];
  try {
    if (flavour === 'mariadb') {
      const installer = (await findProgram(['mariadb-install-db', 'mysql_install_db'])) ?? missingServer();
      await run(
        installer,
        [
          '--no-defaults',
          `--datadir=${dataDir}/data`,
          ...asRoot,
          '--auth-root-authentication-method=normal',
          '--skip-test-db',
          '--skip-name-resolve',
          `--tmpdir=${tmpDir}`,
        ],
        { env: childEnvironment() },
      );
    } else {
      await run(
        daemon,
        [
          '--no-defaults',
          '--initialize-insecure',
          `--datadir=${dataDir}/data`,
          `--tmpdir=${tmpDir}`,
          ...asRoot,
        ],
        { env: childEnvironment() },
      );
    }
  } catch (error) {
    await fs.rm(dataDir, { recursive: true, force: true });
    throw new Error(
      `could not create a datadir for ${daemon}: ${(error as { stderr?: string }).stderr ?? error}`,
    );
  }
  for (let attempt = 1; ; attempt++) {
    const port = await freePort();
    const args = [
      '--no-defaults',
      `--datadir=${dataDir}/data`,
      `--socket=${socket}`,
      `--port=${port}`,
      '--bind-address=127.0.0.1',
      `--pid-file=${dataDir}/pid`,
      `--tmpdir=${tmpDir}`,
      ...asRoot,
      ...(options.binaryLog
        ? [`--log-bin=${dataDir}/data/binlog`, '--server-id=1']
        : [flavour === 'mariadb' ? '--skip-log-bin' : '--disable-log-bin']),
      '--character-set-server=utf8mb4',
      '--collation-server=utf8mb4_unicode_ci',
      '--innodb-buffer-pool-size=256M',
      '--innodb-log-file-size=256M',
      '--innodb-flush-log-at-trx-commit=2',
      '--skip-name-resolve',
      ...(flavour === 'mysql' ? ['--mysqlx=OFF'] : []),
      ...(options.options ?? []),
    ];
    const child = spawn(daemon, args, { stdio: ['ignore', 'ignore', 'pipe'], env: childEnvironment() });
    let log = '';
    child.stderr?.on('data', (data: Buffer) => {
      log = (log + data.toString()).slice(-8000);
    });
    const ready = await waitReady(child, socket, options.signal);
    if (ready === true) return makeServer(child, { port, socket, dataDir, flavour });
    child.kill('SIGKILL');
    if (attempt < 3 && /address already in use/i.test(log)) continue;
    await fs.rm(dataDir, { recursive: true, force: true });
    throw new Error(
      `${path.basename(daemon)} did not start: ${ready} ${log.trim().split('\n').slice(-5).join(' | ')}`,
    );
  }
}

function makeServer(
  child: ChildProcess,
  at: { port: number; socket: string; dataDir: string; flavour: 'mariadb' | 'mysql' },
): EphemeralServer {
  let stopping: Promise<void> | undefined;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const server: EphemeralServer = {
    host: '127.0.0.1',
    user: 'root',
    pid: child.pid!,
    ...at,
    stop() {
      stopping ??= (async () => {
        running.delete(server);
        if (child.exitCode === null && child.signalCode === null) {
          child.kill('SIGTERM');
          const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
          await exited;
          clearTimeout(timer);
        }
        await fs.rm(at.dataDir, { recursive: true, force: true });
      })();
      return stopping;
    },
  };
  running.set(server, child);
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    // A process that exits without stopping its servers (a crash, a killed step) still
    // takes them down: nothing keeps running after Lifeboat.
    process.once('exit', () => {
      for (const process of running.values()) process.kill('SIGKILL');
    });
  }
  return server;
}

async function waitReady(child: ChildProcess, socket: string, signal?: AbortSignal): Promise<true | string> {
  const deadline = Date.now() + 60_000;
  while (Date.now() < deadline) {
    if (child.exitCode !== null || child.signalCode !== null) return 'the server exited:';
    if (signal?.aborted) return 'aborted';
    if (await canConnect(socket)) return true;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return 'not ready after 60 s:';
}

/** Whether the socket accepts a connection and the server greets (not just the file existing). */
function canConnect(socket: string): Promise<boolean> {
  return new Promise((resolve) => {
    const conn = net.connect(socket);
    conn.once('data', () => {
      conn.destroy();
      resolve(true);
    });
    conn.once('error', () => resolve(false));
    conn.setTimeout(1000, () => {
      conn.destroy();
      resolve(false);
    });
  });
}

/** Whether a process runs (a zombie, killed but not yet reaped, does not). */
export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return true;
  }
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

async function isMariaDb(daemon: string): Promise<boolean> {
  if (path.basename(daemon).startsWith('mariadb')) return true;
  const { stdout } = await run(daemon, ['--version']);
  return /mariadb/i.test(stdout);
}

function missingServer(): never {
  throw new UserError(
    'environment: no MySQL or MariaDB server program (mariadbd or mysqld) on PATH; install one (apt-get install mariadb-server) or use another environment',
  );
}

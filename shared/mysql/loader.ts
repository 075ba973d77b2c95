import { type ChildProcess, spawn } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import readline from 'node:readline';
import { childEnvironment } from '../child-env.ts';
import { UserError } from '../errors.ts';

/** A client program and how to run it: its arguments (option file first) and the option file's fd. */
export interface ClientCommand {
  program: string;
  args: string[];
  /** The option file, given to the child as its fd 3 (see writeOptionFile). */
  optionFd: number;
}

/**
 * The first statement of every loading connection: a server whose default sql_mode holds
 * NO_BACKSLASH_ESCAPES would read the dump's strings otherwise than the dump reader does.
 * The second tells the connection's id, so that its statement can be stopped on the server.
 */
const sessionSetup =
  "SET SESSION sql_mode = TRIM(BOTH ',' FROM REPLACE(CONCAT(',', @@SESSION.sql_mode, ','), ',NO_BACKSLASH_ESCAPES,', ','));\n" +
  "SELECT CONCAT('lifeboat-connection-', CONNECTION_ID());\n";

/**
 * The client holds a sync marker as part of a statement it has not seen the end of (an
 * unterminated string or comment): what was sent did not run, and never will.
 */
export class ClientStalledError extends UserError {
  override name = 'ClientStalledError';
}

/** How often a loader with a marker outstanding looks at whether its client still works. */
const watchIntervalMs = 250;
/** Looks in a row that find the client idle on its input, with the marker unanswered, before it counts as stalled. */
const stalledAfter = 4;

/** The `read` system call's number, where /proc/<pid>/syscall tells it. */
const readSyscall: Partial<Record<NodeJS.Architecture, number>> = { x64: 0, arm64: 63, riscv64: 63 };

/**
 * Whether a process is blocked reading its standard input (fd 0), from /proc/<pid>/syscall;
 * undefined where the system does not tell (not Linux, or not allowed).
 */
async function waitingForInput(pid: number): Promise<boolean | undefined> {
  const nr = readSyscall[process.arch];
  if (nr === undefined) return undefined;
  const text = await readFile(`/proc/${pid}/syscall`, 'utf8').catch(() => undefined);
  if (text === undefined || text.trim() === '') return undefined;
  const [call, fd] = text.trim().split(' ');
  if (call === 'running') return false;
  return Number(call) === nr && fd === '0x0';
}

export interface LoaderOptions {
  /** Stops every wait: a write, a sync or the end fails with the signal's reason. */
  signal?: AbortSignal;
}

/**
 * One connection that loads SQL: the `mariadb` / `mysql` client reading statements from a
 * pipe, as a user would restore a dump by hand. `sync()` resolves once everything written
 * before it has run (a marker query echoes back); the first SQL error fails every waiter.
 * No wait is unbounded: each ends when the client fails or exits, when the signal aborts,
 * or (where Linux tells) when the client sits idle on its input with a marker unanswered —
 * it took the marker into a statement that never ends, as damaged SQL can make it do.
 */
export class Loader {
  readonly name: string;
  /** The database this connection is in (after a USE written to it). */
  database: string | undefined;
  /** The server's id of this connection, once the client said it (for KILL). */
  connectionId: number | undefined;
  private readonly child: ChildProcess;
  private readonly waiters = new Map<string, { resolve: () => void; reject: (e: Error) => void }>();
  private sequence = 0;
  private failure: Error | undefined;
  private errors = '';
  private readonly exited: Promise<void>;
  private readonly failing: Promise<void>;
  private announceFailure!: () => void;
  private watch: NodeJS.Timeout | undefined;
  private idleLooks = 0;
  private lines = 0;
  private readonly signal: AbortSignal | undefined;
  private readonly onAbort = () => {
    this.fail(
      this.signal?.reason instanceof Error ? this.signal.reason : new UserError('the restore was stopped'),
    );
    this.kill();
  };

  constructor(command: ClientCommand, name: string, options: LoaderOptions = {}) {
    const { program, args } = command;
    this.name = name;
    this.signal = options.signal;
    this.failing = new Promise((resolve) => {
      this.announceFailure = resolve;
    });
    this.child = spawn(
      program,
      [
        ...args,
        '--batch',
        '--unbuffered',
        '--skip-column-names',
        '--default-character-set=utf8mb4',
        '--max-allowed-packet=1G',
      ],
      { stdio: ['pipe', 'pipe', 'pipe', command.optionFd], env: childEnvironment() },
    );
    this.child.stdin!.on('error', () => {}); // reported through the exit
    this.child.stdin!.write(sessionSetup);
    readline.createInterface({ input: this.child.stdout! }).on('line', (line) => {
      this.lines++;
      const id = /^lifeboat-connection-(\d+)$/.exec(line);
      if (id && this.connectionId === undefined) this.connectionId = Number(id[1]);
      const waiter = this.waiters.get(line);
      if (waiter) {
        this.waiters.delete(line);
        waiter.resolve();
        if (this.waiters.size === 0) this.stopWatching();
      }
    });
    this.child.stderr!.on('data', (data: Buffer) => {
      this.errors = (this.errors + data.toString()).slice(-4000);
    });
    this.exited = new Promise((resolve) => {
      this.child.once('error', (error) => {
        this.fail(new UserError(`${program}: could not run (${error.message})`));
        resolve();
      });
      this.child.once('close', (code, signal) => {
        if (code !== 0) {
          const line =
            this.errors
              .trim()
              .split('\n')
              .filter((l) => !/warning/i.test(l))
              .pop() ?? '';
          this.fail(
            new UserError(
              line ? line.replace(/^ERROR /, 'error ') : `the client exited (${signal ?? `status ${code}`})`,
            ),
          );
        } else if (this.waiters.size) this.fail(new Error('the client ended before it ran everything'));
        this.signal?.removeEventListener('abort', this.onAbort);
        resolve();
      });
    });
    if (this.signal?.aborted) this.onAbort();
    else this.signal?.addEventListener('abort', this.onAbort, { once: true });
  }

  private fail(error: Error) {
    this.failure ??= error;
    for (const waiter of this.waiters.values()) waiter.reject(this.failure);
    this.waiters.clear();
    this.stopWatching();
    this.announceFailure();
  }

  /** Whether the pipe takes more bytes now (the client is reading). */
  get ready(): boolean {
    return !this.child.stdin!.writableNeedDrain;
  }

  /** Writes SQL; resolves when the pipe can take more. */
  write(data: Buffer | string): Promise<void> | undefined {
    if (this.failure) throw this.failure;
    if (this.child.stdin!.write(data)) return undefined;
    return new Promise((resolve, reject) => {
      const check = () => {
        this.child.stdin!.off('drain', check);
        if (this.failure) reject(this.failure);
        else resolve();
      };
      this.child.stdin!.once('drain', check);
      this.failing.then(check);
    });
  }

  /** Resolves once every statement written so far has run. */
  async sync(): Promise<void> {
    if (this.failure) throw this.failure;
    const marker = `lifeboat-sync-${++this.sequence}`;
    const done = new Promise<void>((resolve, reject) => this.waiters.set(marker, { resolve, reject }));
    done.catch(() => {});
    this.startWatching();
    await this.write(`SELECT '${marker}';\n`);
    return done;
  }

  /**
   * While a marker is unanswered: a client blocked reading its input, with every byte handed
   * to it and no line printed since the last look, has read the marker and not run it.
   */
  private startWatching() {
    if (this.watch) return;
    this.idleLooks = 0;
    let lines = this.lines;
    let looking = false;
    this.watch = setInterval(() => {
      if (looking || this.failure || this.child.pid === undefined) return;
      looking = true;
      const pending = this.child.stdin!.writableLength > 0;
      const seen = this.lines;
      waitingForInput(this.child.pid)
        .then((idle) => {
          if (!this.watch) return;
          if (idle && !pending && seen === lines && this.child.stdin!.writableLength === 0) this.idleLooks++;
          else this.idleLooks = 0;
          lines = seen;
          if (this.idleLooks >= stalledAfter) {
            this.fail(
              new ClientStalledError(
                `the ${this.name} client read the statements sent to it but never ran the last of them: it is still inside an unfinished statement (an unterminated string or comment)`,
              ),
            );
            this.kill();
          }
        })
        .finally(() => {
          looking = false;
        });
    }, watchIntervalMs);
    this.watch.unref();
  }

  private stopWatching() {
    clearInterval(this.watch);
    this.watch = undefined;
  }

  /** Ends the input and waits for the client to finish; fails if any statement failed. */
  async end(): Promise<void> {
    if (!this.failure) this.child.stdin!.end();
    await Promise.race([this.exited, this.failing]);
    if (this.failure) throw this.failure;
  }

  kill(): void {
    this.stopWatching();
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGKILL');
  }

  /** Resolves when the process is gone. */
  gone(): Promise<void> {
    return this.exited;
  }

  /** Fails with the loader's error once it has one (for racing against other work). */
  get failed(): Error | undefined {
    return this.failure;
  }
}

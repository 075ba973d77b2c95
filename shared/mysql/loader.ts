import { type ChildProcess, spawn } from 'node:child_process';
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
 */
const sessionSetup =
  "SET SESSION sql_mode = TRIM(BOTH ',' FROM REPLACE(CONCAT(',', @@SESSION.sql_mode, ','), ',NO_BACKSLASH_ESCAPES,', ','));\n";

/**
 * One connection that loads SQL: the `mariadb` / `mysql` client reading statements from a
 * pipe, as a user would restore a dump by hand. `sync()` resolves once everything written
 * before it has run (a marker query echoes back); the first SQL error fails every waiter.
 */
export class Loader {
  readonly name: string;
  /** The database this connection is in (after a USE written to it). */
  database: string | undefined;
  private readonly child: ChildProcess;
  private readonly waiters = new Map<string, { resolve: () => void; reject: (e: Error) => void }>();
  private sequence = 0;
  private failure: Error | undefined;
  private errors = '';
  private readonly exited: Promise<void>;

  constructor(command: ClientCommand, name: string) {
    const { program, args } = command;
    this.name = name;
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
      const waiter = this.waiters.get(line);
      if (waiter) {
        this.waiters.delete(line);
        waiter.resolve();
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
        resolve();
      });
    });
  }

  private fail(error: Error) {
    this.failure ??= error;
    for (const waiter of this.waiters.values()) waiter.reject(this.failure);
    this.waiters.clear();
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
      const check = () => (this.failure ? reject(this.failure) : resolve());
      this.child.stdin!.once('drain', check);
      this.exited.then(check);
    });
  }

  /** Resolves once every statement written so far has run. */
  async sync(): Promise<void> {
    if (this.failure) throw this.failure;
    const marker = `lifeboat-sync-${++this.sequence}`;
    const done = new Promise<void>((resolve, reject) => this.waiters.set(marker, { resolve, reject }));
    done.catch(() => {});
    await this.write(`SELECT '${marker}';\n`);
    return done;
  }

  /** Ends the input and waits for the client to finish; fails if any statement failed. */
  async end(): Promise<void> {
    if (!this.failure) this.child.stdin!.end();
    await this.exited;
    if (this.failure) throw this.failure;
  }

  kill(): void {
    this.child.kill('SIGKILL');
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

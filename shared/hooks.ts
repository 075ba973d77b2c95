import { spawn } from 'node:child_process';
import readline from 'node:readline';
import { childEnvironment } from './child-env.ts';
import { UserError } from './errors.ts';
import type { Logger } from './pipeline/progress.ts';

/**
 * Runs a user's shell command (pre-command, post-command, post-restore-command) with bash,
 * its output passed on line by line, and fails with one line naming the input when it
 * exits non-zero. `env` adds variables to the
 * scrubbed environment every child gets (no secrets, no credentials: see child-env.ts).
 */
export async function runHook(
  input: string,
  command: string,
  options: { logger: Logger; signal?: AbortSignal; env?: Record<string, string> },
): Promise<void> {
  const { logger } = options;
  logger.info(`${input}: running`);
  const child = spawn('bash', ['-c', command], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: childEnvironment(options.env),
    signal: options.signal,
  });
  const lines = (stream: NodeJS.ReadableStream) =>
    readline.createInterface({ input: stream }).on('line', (line) => logger.info(`${input}: ${line}`));
  lines(child.stdout!);
  lines(child.stderr!);
  const status = await new Promise<{ code: number | null; signal: string | null; error?: Error }>(
    (resolve) => {
      child.once('error', (error) => resolve({ code: null, signal: null, error }));
      child.once('close', (code, signal) => resolve({ code, signal }));
    },
  );
  if (status.error) {
    if (options.signal?.aborted) throw options.signal.reason ?? status.error;
    throw new UserError(`${input}: could not run (${status.error.message})`);
  }
  if (status.code !== 0) {
    throw new UserError(
      `${input}: failed (${status.signal ? `killed by ${status.signal}` : `exit status ${status.code}`})`,
    );
  }
}

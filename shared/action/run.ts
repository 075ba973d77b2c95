import { commands, notBuilt } from '../commands/index.ts';
import { messageOf, UserError } from '../errors.ts';
import { IntegrityError } from '../pipeline/artifact.ts';
import type { Logger } from '../pipeline/progress.ts';
import { formatDuration } from '../pipeline/progress.ts';
import { StorageError } from '../storage/storage.ts';
import { InputErrors } from './inputs.ts';
import type { Command, CommandContext, CommandResult, InputReader, InputSpec } from './spec.ts';

const names = () => commands.map((c) => c.name).join(', ');

/** The command a name picks; an unknown or unbuilt one is a clear error. */
export function findCommand(name: string | undefined): Command<never> {
  const wanted = name?.trim();
  if (!wanted) throw new UserError(`command: required; accepted: ${names()}`);
  const command = commands.find((c) => c.name === wanted);
  if (command) return command;
  if (notBuilt[wanted]) {
    throw new UserError(
      `command: '${wanted}' (${notBuilt[wanted]}) is not built yet in this version of Lifeboat; built: ${names()}`,
    );
  }
  throw new UserError(`command: '${wanted}' is not a Lifeboat command; accepted: ${names()}`);
}

/** A reader that only answers for inputs the command declares, from a raw source. */
export function makeReader(
  command: Command<never>,
  source: (spec: InputSpec) => string | undefined,
): InputReader {
  return (name) => {
    const spec = command.inputs.find((i) => i.name === name);
    if (!spec) throw new Error(`${command.name} reads input '${name}', which its spec does not declare`);
    const value = source(spec);
    return value === undefined || value === '' ? undefined : value;
  };
}

/** How long a command may take to clean up after its timeout before it is abandoned. */
const cleanupGraceMs = 60_000;

/**
 * Parses inputs, then runs the command under its `timeout`. When time is up the command's
 * signal is aborted and its own cleanup (aborting uploads, removing staging folders and
 * unfinished backups) gets up to a minute to finish before the timeout error is reported.
 */
export async function runCommand(
  command: Command<never>,
  read: InputReader,
  logger: Logger,
  extra: Pick<CommandContext, 'leftovers'> = {},
): Promise<CommandResult> {
  const options = command.parse(read) as { timeoutSeconds?: number };
  const seconds = options.timeoutSeconds ?? 6 * 3600;
  const controller = new AbortController();
  const timeout = new UserError(
    `timeout: ${command.name} did not finish within ${formatDuration(seconds)}; it was stopped and what it wrote was removed (raise the timeout input)`,
  );
  let graceTimer: NodeJS.Timeout | undefined;
  const abandoned = new Promise<never>((_, reject) => {
    controller.signal.addEventListener('abort', () => {
      graceTimer = setTimeout(() => reject(timeout), cleanupGraceMs);
    });
  });
  const timer = setTimeout(() => controller.abort(timeout), seconds * 1000);
  // A cancelled step or Ctrl-C (SIGINT, then SIGTERM) stops the work the same way, so that
  // throwaway servers, staging databases and unfinished uploads are removed.
  let interrupted: UserError | undefined;
  const interrupt = (signal: NodeJS.Signals) => {
    // A second Ctrl-C does not wait for the cleanup.
    if (interrupted) process.exit(130);
    interrupted = new UserError(
      `${command.name} was interrupted (${signal}); it was stopped and what it wrote was removed`,
    );
    controller.abort(interrupted);
  };
  process.on('SIGINT', interrupt);
  process.on('SIGTERM', interrupt);
  try {
    return await Promise.race([
      command.execute(options as never, { logger, signal: controller.signal, ...extra }),
      abandoned,
    ]);
  } catch (error) {
    throw controller.signal.aborted ? (interrupted ?? timeout) : error;
  } finally {
    clearTimeout(timer);
    clearTimeout(graceTimer);
    process.off('SIGINT', interrupt);
    process.off('SIGTERM', interrupt);
  }
}

export interface Failure {
  /** One line per problem, each naming the input or the thing at fault. */
  lines: string[];
  /** False for a bug or an outage: not something the user's inputs caused. */
  expected: boolean;
}

/** Sorts a failure into the user's to fix (bad input, storage, damaged backup) or unexpected. */
export function describeFailure(error: unknown): Failure {
  if (error instanceof InputErrors) return { lines: error.lines, expected: true };
  if (error instanceof UserError || error instanceof StorageError || error instanceof IntegrityError) {
    return { lines: [messageOf(error)], expected: true };
  }
  return {
    lines: [`unexpected failure (a bug or an outage, not your inputs): ${messageOf(error)}`],
    expected: false,
  };
}

/** Exit status: 1 for a failure the user can act on, 2 for an unexpected one. */
export function exitCodeOf(failure: Failure): number {
  return failure.expected ? 1 : 2;
}

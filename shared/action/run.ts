import path from 'node:path';
import { backupCommandNames, inputChecks } from '../commands/common.ts';
import { commands, notBuilt } from '../commands/index.ts';
import { fileSystemError, messageOf, UserError } from '../errors.ts';
import { IntegrityError } from '../pipeline/artifact.ts';
import type { Logger } from '../pipeline/progress.ts';
import { formatDuration } from '../pipeline/progress.ts';
import { StorageError } from '../storage/storage.ts';
import { InputErrors, notesOf, parseCollecting, refuseInput, warnInput } from './inputs.ts';
import {
  type Command,
  type CommandContext,
  type CommandResult,
  type InputReader,
  type InputSpec,
  notGiven,
} from './spec.ts';

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

const storageAccepted =
  'a folder path, file:///abs/path, s3://bucket/prefix, gs://bucket/prefix or azblob://container/prefix';

/**
 * A reader that only answers for inputs the command declares, from a raw source: undefined
 * (or the marker `notGiven`) when the input is not given, '' when it is given empty, else its
 * value. An input not given, or given empty, reads as the command's own default: the same
 * value whether it came through the command's action, the umbrella action (which declares no
 * default where commands differ) or the CLI. Except `storage`: given empty (an unset
 * `${{ vars.X }}`) it is refused, never the default; not given to a backup command it is a
 * warning, and on a GitHub-hosted runner (`RUNNER_ENVIRONMENT`, from `env`) an error, since
 * ./backups there is deleted with the job. Checks by input name (commands/common.ts
 * inputChecks) are made here too; their problems and warnings go to notesOf(reader).
 */
export function makeReader(
  command: Command<never>,
  source: (spec: InputSpec) => string | undefined,
  env: NodeJS.ProcessEnv = process.env,
): InputReader {
  const read: InputReader = (name) => {
    const spec = command.inputs.find((i) => i.name === name);
    if (!spec) throw new Error(`${command.name} reads input '${name}', which its spec does not declare`);
    const raw = source(spec);
    if (raw !== undefined && raw.trim() !== '' && raw.trim() !== notGiven) {
      const problem = inputChecks[name]?.(raw);
      if (problem) refuseInput(read, problem);
      return raw;
    }
    if (name === 'storage') storageNotGiven(command, read, raw, env);
    return spec.default;
  };
  return read;
}

function storageNotGiven(
  command: Command<never>,
  read: InputReader,
  raw: string | undefined,
  env: NodeJS.ProcessEnv,
): void {
  if (raw !== undefined && raw.trim() === '') {
    refuseInput(
      read,
      `storage: given but empty (an unset variable, such as \${{ vars.BACKUP_STORAGE }}?); accepted: ${storageAccepted}`,
    );
    return;
  }
  if (!backupCommandNames.includes(command.name)) return;
  if (env.RUNNER_ENVIRONMENT === 'github-hosted') {
    refuseInput(
      read,
      'storage: not given, so the backup would go into ./backups on this GitHub-hosted runner, which is deleted when the job ends; give storage (s3://bucket/prefix, gs://bucket/prefix, azblob://container/prefix; or a folder path, to keep it on the runner on purpose)',
    );
  } else {
    warnInput(
      read,
      `storage: not given; the backup goes into ./backups (${path.resolve('backups')}) on this machine; give storage to keep backups elsewhere`,
    );
  }
}

/** How long a command may take to clean up after its timeout before it is abandoned. */
const cleanupGraceMs = 60_000;

/** Stopped by a signal (a cancelled step, Ctrl-C): exit status 130, as a shell reports SIGINT. */
export class Interrupted extends UserError {
  override name = 'Interrupted';
}

/** Thrown by runCommand when the inputs are refused: no work was started. */
export class InputsRefused extends InputErrors {
  override name = 'InputsRefused';
}

/** What a failed run wrote or left, for the job summary: set by runCommand on what it throws. */
const writtenNotes = new WeakMap<object, string>();

/**
 * One sentence on what a failure wrote, kept and removed. runCommand notes it on everything
 * its command's work throws; a failure without a note came before any work started.
 */
export function writtenOf(error: unknown): string {
  const note = typeof error === 'object' && error !== null ? writtenNotes.get(error) : undefined;
  if (note) return note;
  return error instanceof UserError
    ? 'Nothing was written: the inputs were refused before any work started.'
    : 'Nothing was written: the step failed before any work started.';
}

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
  const options = parseInputs(command, read) as { timeoutSeconds?: number };
  for (const line of notesOf(read).warnings) logger.warn(line);
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
  // A cancelled step or Ctrl-C stops the work the same way, so that throwaway servers,
  // staging databases and unfinished uploads are removed. GitHub cancels a step with SIGINT
  // and, 7.5 s later, SIGTERM: the SIGTERM lets the cleanup go on. Only a second SIGINT (a
  // person pressing Ctrl-C again) exits at once, without waiting for the cleanup.
  let interrupted: Interrupted | undefined;
  let firstSignal: NodeJS.Signals | undefined;
  const interrupt = (signal: NodeJS.Signals) => {
    if (interrupted) {
      // Two signals sent together may arrive in either order: only SIGINT after SIGINT is a person.
      if (signal === 'SIGINT' && firstSignal === 'SIGINT') {
        logger.warn('a second SIGINT: exiting without waiting for the cleanup');
        process.exit(130);
      }
      logger.warn(`${signal} received: still removing what ${command.name} wrote`);
      return;
    }
    firstSignal = signal;
    interrupted = new Interrupted(
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
    const thrown = controller.signal.aborted ? (interrupted ?? timeout) : error;
    if (typeof thrown === 'object' && thrown !== null)
      writtenNotes.set(thrown, afterFailure(command, options as FailedOptions));
    throw thrown;
  } finally {
    clearTimeout(timer);
    clearTimeout(graceTimer);
    process.off('SIGINT', interrupt);
    process.off('SIGTERM', interrupt);
  }
}

/**
 * The command's parse, with the problems found where inputs are read (see makeReader) refused
 * together with the parser's own: one InputsRefused, one line each.
 */
function parseInputs(command: Command<never>, read: InputReader): unknown {
  const { options, lines } = parseCollecting(() => command.parse(read));
  const problems = [...notesOf(read).problems, ...lines.filter((l) => !notesOf(read).problems.includes(l))];
  if (problems.length) throw new InputsRefused(problems);
  return options;
}

interface FailedOptions {
  dryRun?: boolean;
}

/** What a command that failed once its work had started wrote, kept and removed. */
function afterFailure(command: Command<never>, options: FailedOptions): string {
  if (options.dryRun) return 'Dry run: nothing was written or deleted.';
  if (backupCommandNames.includes(command.name))
    return 'No backup was committed: a backup counts only once its manifest is written, which comes last. What this run uploaded is removed on failure (but for artifacts a retention lock (lock-for) protects, which stay until their date and which prune-retention removes then); should the storage have failed that too, an unfinished folder without a manifest is left, which list leaves out and prune-retention removes after orphan-grace.';
  switch (command.name) {
    case 'snapshot-ebs':
      return 'No backup was committed: the snapshots this run made are deleted on failure (a warning above names any that could not be), and no manifest was written.';
    case 'restore':
      return 'Nothing half-restored was swapped in: files and MySQL restore into staging first, which a failure removes; EBS volumes are swapped in last and rolled back if an attach fails. A Kubernetes restore applies objects one by one: those applied before the failure stay.';
    case 'verify-restore':
      return 'No verification record was written; the throwaway server, namespaces or volumes are removed on failure (by the post: step, should this step have been killed).';
    case 'list':
      return 'Nothing was written: list only reads.';
    case 'prune-retention':
      return 'Deletion may have stopped part-way: manifests are deleted first, so every backup is either whole or an unfinished folder, which the next run removes.';
    default:
      return 'See the log for what was done before the failure.';
  }
}

export interface Failure {
  /** One line per problem, each naming the input or the thing at fault. */
  lines: string[];
  /** False for a bug or an outage: not something the user's inputs caused. */
  expected: boolean;
  /** Set when the exit status is neither 1 nor 2: 130 for an interrupt. */
  exitCode?: number;
}

/** Sorts a failure into the user's to fix (bad input, storage, damaged backup) or unexpected. */
export function describeFailure(error: unknown): Failure {
  if (error instanceof InputErrors) return { lines: error.lines, expected: true };
  if (error instanceof Interrupted) return { lines: [messageOf(error)], expected: true, exitCode: 130 };
  if (error instanceof UserError || error instanceof StorageError || error instanceof IntegrityError) {
    return { lines: [messageOf(error)], expected: true };
  }
  // A full, read-only or forbidden file system (a restore target, a work-dir) is the user's to fix.
  const fileSystem = fileSystemError(error, 'file system');
  if (fileSystem) return { lines: [messageOf(fileSystem)], expected: true };
  return {
    lines: [`unexpected failure (a bug or an outage, not your inputs): ${messageOf(error)}`],
    expected: false,
  };
}

/** Exit status: 1 for a failure the user can act on, 2 for an unexpected one, 130 for an interrupt. */
export function exitCodeOf(failure: Failure): number {
  return failure.exitCode ?? (failure.expected ? 1 : 2);
}

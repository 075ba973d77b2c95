import type { Logger } from '../pipeline/progress.ts';

/** One input of a command: the same definition makes action.yml, the CLI flag and the parser. */
export interface InputSpec {
  name: string;
  description: string;
  required?: boolean;
  default?: string;
  /** A secret: masked, never accepted as a CLI flag, read from this variable instead. */
  secretEnv?: string;
}

export interface OutputSpec {
  name: string;
  description: string;
}

/** What a command reports: outputs for the step, and a table for the job summary. */
export interface CommandResult {
  outputs: Record<string, string>;
  summary: { heading: string; table: string[][]; notes?: string[] };
  /**
   * Set when the command ran to the end but what it found fails the step (a verification
   * check that failed): one line each. Outputs and summary are still written.
   */
  failed?: string[];
}

export interface CommandContext {
  logger: Logger;
  signal: AbortSignal;
  /**
   * Records what must be removed should this process be killed before its own cleanup
   * (the action's `post:` step hands it to `cleanup`); undefined once nothing is left.
   */
  leftovers?: (state: unknown) => void;
}

/**
 * Reads one input by name (its default when not given); only names the command's spec
 * declares may be read.
 */
export type InputReader = (name: string) => string | undefined;

/**
 * What an action.yml declares as the default of `storage`, in every action: a marker, so that
 * an input left out (the marker) and one given empty (an unset `${{ vars.X }}`, which must be
 * an error) differ. The GitHub runner fills in a default only when `with:` leaves the key out.
 */
export const notGiven = '(not given)';

/** The default an action.yml declares for an input (the spec's, but for storage's marker). */
export function actionDefault(spec: InputSpec): string | undefined {
  return spec.name === 'storage' ? notGiven : spec.default;
}

export interface Command<Options = unknown> {
  name: string;
  description: string;
  inputs: InputSpec[];
  outputs: OutputSpec[];
  /** Turns raw inputs into typed options; every problem becomes one line of an InputErrors. */
  parse(read: InputReader): Options;
  execute(options: Options, context: CommandContext): Promise<CommandResult>;
  /** Removes what a killed run left behind (see CommandContext.leftovers); run by the `post:` step. */
  cleanup?(state: unknown, read: InputReader, logger: Logger): Promise<void>;
}

export function defineCommand<Options>(command: Command<Options>): Command<Options> {
  return command;
}

/**
 * The `check-commands` of a verification: shell commands run against the restored data (a
 * files backup's folder), each a check that passes when it exits 0. They run with the same
 * scrubbed environment as every other child (no secrets), plus what names the restored data.
 */
import { messageOf, UserError } from '../errors.ts';
import { runHook } from '../hooks.ts';
import type { Logger } from '../pipeline/progress.ts';
import { type CheckRow, failed, parseNamedList, passed } from './checks.ts';

export interface CommandCheck {
  name: string;
  run: string;
}

export function parseCommandChecks(value: string | undefined): CommandCheck[] {
  return parseNamedList('check-commands', value, ['name', 'run'], 'name and run').map(
    ({ where, name, fields }) => {
      const run = typeof fields.run === 'string' ? fields.run.trim() : '';
      if (!run) throw new UserError(`${where} (${name}): 'run' is missing (a shell command)`);
      return { name, run };
    },
  );
}

/** Runs one check command; its exit status is the check. */
export async function runCommandCheck(
  check: CommandCheck,
  options: { logger: Logger; signal?: AbortSignal; env: Record<string, string> },
): Promise<CheckRow> {
  const label = `check: ${check.name}`;
  try {
    await runHook(label, check.run, options);
    return passed(label, 'exit status 0');
  } catch (error) {
    if (options.signal?.aborted) throw error;
    // runHook says "<label>: failed (exit status 1)": the row names the check already.
    return failed(
      label,
      messageOf(error)
        .replace(`${label}: `, '')
        .replace(/^failed \((.*)\)$/, '$1'),
    );
  }
}

import * as core from '@actions/core';
import { describeFailure, exitCodeOf, findCommand, makeReader, runCommand } from './run.ts';
import type { CommandResult } from './spec.ts';

/**
 * Runs a command as a GitHub Action step: inputs from `INPUT_*`, secrets masked before use,
 * outputs to `GITHUB_OUTPUT`, a table to the job summary, `::error::` lines on failure.
 * With no name (the umbrella action) the `command` input picks the command.
 */
export async function runAction(name?: string): Promise<number> {
  let code = 0;
  try {
    const command = findCommand(name ?? core.getInput('command'));
    const read = makeReader(command, (spec) => {
      const value =
        core.getInput(spec.name) || (spec.secretEnv ? process.env[spec.secretEnv] : undefined) || '';
      if (spec.secretEnv && value)
        for (const line of value.split(/\r?\n/)) if (line.trim()) core.setSecret(line.trim());
      return value;
    });
    const result = await runCommand(command, read, {
      info: (m) => core.info(m),
      warn: (m) => core.warning(m),
    });
    for (const [key, value] of Object.entries(result.outputs)) core.setOutput(key, value);
    await writeSummary(result);
  } catch (error) {
    const failure = describeFailure(error);
    for (const line of failure.lines) core.error(line);
    if (!failure.expected && error instanceof Error && error.stack) core.debug(error.stack);
    code = exitCodeOf(failure);
  }
  return code;
}

async function writeSummary(result: CommandResult): Promise<void> {
  if (!process.env.GITHUB_STEP_SUMMARY) return;
  const [header, ...rows] = result.summary.table;
  const summary = core.summary.addHeading(result.summary.heading, 3);
  summary.addTable([(header ?? []).map((data) => ({ data, header: true })), ...rows]);
  for (const note of result.summary.notes ?? []) summary.addRaw(`\n${note}\n`, true);
  await summary.write();
}

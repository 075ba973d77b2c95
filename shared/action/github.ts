import * as core from '@actions/core';
import { messageOf } from '../errors.ts';
import type { Logger } from '../pipeline/progress.ts';
import { setInputOf, statusLine } from '../signals/status-line.ts';
import { describeFailure, exitCodeOf, findCommand, makeReader, runCommand, writtenOf } from './run.ts';
import type { Command, CommandResult, InputReader } from './spec.ts';

/**
 * Runs a command as a GitHub Action step: inputs from `INPUT_*`, secrets masked before use,
 * outputs to `GITHUB_OUTPUT`, a table to the job summary, `::error::` lines on failure.
 * With no name (the umbrella action) the `command` input picks the command.
 */
export async function runAction(name?: string): Promise<number> {
  let code = 0;
  let commandName = name;
  let leftBehind = false;
  let set = '';
  try {
    const command = findCommand(name ?? core.getInput('command'));
    commandName = command.name;
    const read = actionReader(command);
    set = setInputOf(command, read);
    const result = await runCommand(command, read, logger, {
      leftovers: (state) => {
        leftBehind = state !== undefined;
        core.saveState(leftoversKey, state === undefined ? '' : JSON.stringify(state));
      },
    });
    for (const [key, value] of Object.entries(result.outputs)) core.setOutput(key, value);
    await writeSummary(
      result,
      statusLine([{ command: command.name, set, outputs: result.outputs, failed: result.failed }]),
    );
    for (const line of result.failed ?? []) core.error(line);
    if (result.failed?.length) code = 1;
  } catch (error) {
    const failure = describeFailure(error);
    for (const line of failure.lines) core.error(line);
    if (!failure.expected && error instanceof Error && error.stack) core.debug(error.stack);
    code = exitCodeOf(failure);
    const status = statusLine([{ command: commandName ?? 'lifeboat', set, failed: failure.lines }]);
    await writeSummary(
      failureSummary(commandName, failure.lines, writtenOf(error), leftBehind),
      status,
    ).catch((e) => core.warning(`the job summary could not be written: ${messageOf(e)}`));
  }
  return code;
}

/** The job summary of a failed step: the error, one row per line, and what was (not) written. */
export function failureSummary(
  command: string | undefined,
  lines: string[],
  written: string,
  leftBehind = false,
): CommandResult {
  return {
    outputs: {},
    summary: {
      heading: `${command ?? 'Lifeboat'} failed`,
      table: [
        ['', ''],
        ...lines.map((line, i) => [i === 0 ? 'Error' : '', line]),
        ['Written', written],
        ...(leftBehind
          ? [
              [
                'Left behind',
                'What this step could not remove yet is recorded for its post: step, which removes it.',
              ],
            ]
          : []),
      ],
    },
  };
}

const logger: Logger = { info: (m) => core.info(m), warn: (m) => core.warning(m) };

/** The state the main step leaves for the `post:` step: what to remove if it was killed. */
const leftoversKey = 'leftovers';

/**
 * Inputs from `INPUT_*` (or a secret's variable), each secret masked before it is used. The
 * runner sets `INPUT_<NAME>` for every input the action.yml declares: to the `with:` value
 * when given (also when empty), else to the declared default, else ''.
 */
export function actionReader(command: Command<never>, env: NodeJS.ProcessEnv = process.env): InputReader {
  return makeReader(
    command,
    (spec) => {
      const input = (env[`INPUT_${spec.name.replace(/ /g, '_').toUpperCase()}`] ?? '').trim();
      const value = input || (spec.secretEnv ? env[spec.secretEnv] : undefined) || '';
      if (spec.secretEnv && value)
        for (const line of value.split(/\r?\n/)) if (line.trim()) core.setSecret(line.trim());
      return value;
    },
    env,
  );
}

/**
 * The `post:` step (it runs also when the main step failed, timed out or was cancelled):
 * removes what the main step recorded as left behind. Nothing recorded, nothing to do.
 */
export async function runPost(name?: string): Promise<number> {
  const state = core.getState(leftoversKey);
  if (!state) return 0;
  try {
    const command = findCommand(name ?? core.getInput('command'));
    if (!command.cleanup) return 0;
    core.info(`${command.name}: removing what the main step left behind`);
    await command.cleanup(JSON.parse(state), actionReader(command), logger);
    return 0;
  } catch (error) {
    core.error(`post: could not remove what the main step left behind: ${messageOf(error)}`);
    return 1;
  }
}

/**
 * Writes the job summary: the status line, a heading, a table, then the notes as paragraphs. Every string of it
 * may hold text from a backup or a database (check names and results, object names, manifest
 * fields), so each goes through `escapeSummaryText`: plain text only, nothing of it becomes
 * HTML or Markdown structure. (`core.summary` escapes nothing itself.)
 */
export async function writeSummary(result: CommandResult, status?: string): Promise<void> {
  if (!process.env.GITHUB_STEP_SUMMARY) return;
  const [header, ...rows] = result.summary.table;
  // The status line first (status-line.ts), bold, as plain text like the rest.
  if (status) core.summary.addRaw(`\n<p><strong>${escapeSummaryText(status)}</strong></p>\n`, true);
  const summary = core.summary.addHeading(escapeSummaryText(result.summary.heading), 3);
  summary.addTable([
    (header ?? []).map((cell) => ({ data: escapeSummaryText(cell), header: true })),
    ...rows.map((row) => row.map((cell) => escapeSummaryText(cell))),
  ]);
  for (const note of result.summary.notes ?? []) summary.addRaw(`\n${escapeSummaryText(note)}\n`, true);
  await summary.write();
}

/**
 * Characters that are HTML, or Markdown wherever they stand in a line, as character
 * references. GitHub renders the summary as Markdown with HTML blocks (the heading and the
 * table) and paragraphs (the notes); a character reference is decoded to its character in
 * both and is never Markdown syntax (CommonMark), so one escaping serves cells, heading and
 * notes alike, and the text still reads the same.
 */
const references: Record<string, string> = {
  '&': '&amp;',
  '<': '&lt;',
  '>': '&gt;',
  '"': '&quot;',
  "'": '&#39;',
  '\\': '&#92;',
  '`': '&#96;',
  '*': '&#42;',
  _: '&#95;',
  '~': '&#126;',
  '[': '&#91;',
  ']': '&#93;',
  '!': '&#33;',
  '|': '&#124;',
  '#': '&#35;',
  $: '&#36;',
};

/**
 * Text for the job summary, shown as it is: HTML and Markdown characters as character
 * references, line breaks as `<br>` (a line break could end the HTML block of the table or
 * start a Markdown line), and what is Markdown only at the start of a line (indentation,
 * `-`, `+`, `=`, `1.`, `1)`) escaped there.
 */
export function escapeSummaryText(text: string): string {
  return String(text)
    .replace(/[&<>"'\\`*_~[\]!|#$]/g, (c) => references[c]!)
    .replace(/\r\n|\r|\n/g, '<br>')
    .replace(/^[ \t]+/, (space) => space.replace(/ /g, '&#32;').replace(/\t/g, '&#9;'))
    .replace(/^[-+=]/, (c) => `&#${c.charCodeAt(0)};`)
    .replace(/^(\d{1,9})([.)])/, (_, number: string, c: string) => `${number}&#${c.charCodeAt(0)};`);
}

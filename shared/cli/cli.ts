import { InputErrors } from '../action/inputs.ts';
import {
  describeFailure,
  exitCodeOf,
  findCommand,
  makeReader,
  runCommand,
  writtenOf,
} from '../action/run.ts';
import type { Command, CommandResult, InputSpec } from '../action/spec.ts';
import { commands, notBuilt } from '../commands/index.ts';
import { setInputOf, statusLine } from '../signals/status-line.ts';
import { version } from '../version.ts';

export interface CliIo {
  out: (text: string) => void;
  err: (text: string) => void;
  env: NodeJS.ProcessEnv;
}

/** The variable an input can also come from: LIFEBOAT_ and the name in upper snake case. */
export function envName(spec: InputSpec): string {
  return spec.secretEnv ?? `LIFEBOAT_${spec.name.toUpperCase().replace(/-/g, '_')}`;
}

/**
 * The inputs that take auto, true or false: like the booleans, a bare flag means true. (A
 * test checks this list against what each command's parser accepts.)
 */
export const triStateInputs: readonly string[] = ['dry-run', 'include-cluster-resources'];

/** An input that may stand alone as a flag, meaning true: a boolean or a tri-state one. */
export const isBooleanInput = (spec: InputSpec) =>
  spec.default === 'true' || spec.default === 'false' || triStateInputs.includes(spec.name);

/**
 * `lifeboat <command> --input value …`: the same commands and inputs as the actions. Inputs
 * also come from LIFEBOAT_* variables; secrets only from variables or files, never flags
 * (the process list shows flags to every user of the machine). Returns the exit status.
 */
export async function runCli(argv: string[], io: CliIo): Promise<number> {
  const [first, ...rest] = argv;
  if (!first || first === '--help' || first === '-h' || first === 'help') {
    io.out(usage());
    return first ? 0 : 1;
  }
  if (first === '--version') {
    io.out(`lifeboat ${version}\n`);
    return 0;
  }
  let json = false;
  let commandName: string | undefined;
  let set = '';
  try {
    const command = findCommand(first);
    if (rest.includes('--help') || rest.includes('-h')) {
      io.out(commandHelp(command));
      return 0;
    }
    json = rest.includes('--json');
    const flags = parseFlags(
      command,
      rest.filter((a) => a !== '--json'),
    );
    const read = makeReader(
      command,
      (spec) => (flags.has(spec.name) ? flags.get(spec.name) : io.env[envName(spec)]),
      io.env,
    );
    const logger = {
      info: (m: string) => io.err(`${m}\n`),
      warn: (m: string) => io.err(`warning: ${m}\n`),
    };
    commandName = command.name;
    set = setInputOf(command, read);
    const result = await runCommand(command, read, logger);
    const status = statusLine([
      { command: command.name, set, outputs: result.outputs, failed: result.failed },
    ]);
    io.out(json ? `${JSON.stringify(jsonOutputs(result), null, 2)}\n` : renderSummary(result, status));
    for (const line of result.failed ?? []) io.err(`error: ${line}\n`);
    return result.failed?.length ? 1 : 0;
  } catch (error) {
    const failure = describeFailure(error);
    for (const line of failure.lines) io.err(`error: ${line}\n`);
    if (!failure.expected && error instanceof Error && error.stack && io.env.LIFEBOAT_DEBUG)
      io.err(`${error.stack}\n`);
    if (json)
      io.out(
        `${JSON.stringify({ error: failure.lines, expected: failure.expected, written: writtenOf(error) })}\n`,
      );
    else if (commandName) io.out(`${statusLine([{ command: commandName, set, failed: failure.lines }])}\n`);
    return exitCodeOf(failure);
  }
}

/**
 * `--name value` or `--name=value`, each input once. A boolean or tri-state input may stand
 * alone (true); any other flag needs a value, and the next argument is not taken as one when
 * it is a flag itself (write `--name=--value` for a value that starts with --). Every problem
 * is one line, all at once.
 */
function parseFlags(command: Command<never>, args: string[]): Map<string, string> {
  const flags = new Map<string, string>();
  const problems: string[] = [];
  const accepted = command.inputs.filter((i) => !i.secretEnv).map((i) => `--${i.name}`);
  const isFlag = (arg: string | undefined) =>
    arg !== undefined && /^--[a-z0-9-]+(?:=|$)/s.test(arg) && arg !== '--';
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    const match = /^--([a-z0-9-]+)(?:=(.*))?$/s.exec(arg);
    if (!match) {
      problems.push(
        `'${arg}' is not a flag; ${command.name} takes ${accepted.join(' ')} (each with a value)`,
      );
      continue;
    }
    const name = match[1]!;
    const spec = command.inputs.find((s) => s.name === name);
    if (!spec) {
      problems.push(
        `--${name}: not an input of ${command.name}; accepted: ${accepted.join(' ')}, --json, --help`,
      );
      if (match[2] === undefined && args[i + 1] !== undefined && !isFlag(args[i + 1])) i++;
      continue;
    }
    if (spec.secretEnv) {
      problems.push(
        `--${name}: secrets are not accepted as flags (other users can read process arguments); set ${spec.secretEnv} instead`,
      );
      if (match[2] === undefined && args[i + 1] !== undefined && !isFlag(args[i + 1])) i++;
      continue;
    }
    let value = match[2];
    if (value === undefined) {
      const next = args[i + 1];
      if (isBooleanInput(spec) && (next === undefined || isFlag(next))) value = 'true';
      else if (next === undefined || isFlag(next)) {
        problems.push(
          `--${name}: needs a value${next === undefined ? '' : ` (the next argument, ${next.split('=')[0]}, is a flag; write --${name}=VALUE for a value starting with --)`}`,
        );
        continue;
      } else value = args[++i]!;
    }
    if (flags.has(name)) {
      problems.push(`--${name}: given more than once; give each flag once`);
      continue;
    }
    // An empty storage is refused where inputs are read (run.ts), from flags and variables alike.
    if (!value.trim() && name !== 'storage') {
      problems.push(
        `--${name}: given empty (an unset variable?); give a value, or leave the flag out${spec.default !== undefined ? ` for the default, ${spec.default}` : ''}`,
      );
    }
    flags.set(name, value);
  }
  if (problems.length) throw new InputErrors([...new Set(problems)]);
  return flags;
}

/** Outputs that are numbers (bytes, seconds, counts): numbers in --json, null when empty. */
const numericOutputs = new Set([
  'bytes',
  'bytes-freed',
  'duration-seconds',
  'rto-seconds',
  'rpo-seconds',
  'count',
  'deleted',
  'throughput',
]);
/** Outputs that are true or false: booleans in --json. */
const booleanOutputs = new Set(['passed']);

export function jsonOutputs(result: CommandResult): Record<string, unknown> {
  const outputs: Record<string, unknown> = { ...result.outputs };
  for (const [name, value] of Object.entries(result.outputs)) {
    if (numericOutputs.has(name)) {
      const n = Number(value);
      outputs[name] = value.trim() === '' ? null : Number.isFinite(n) ? n : value;
    } else if (booleanOutputs.has(name) && (value === 'true' || value === 'false'))
      outputs[name] = value === 'true';
  }
  if (result.failed?.length) outputs.failed = result.failed;
  if (typeof outputs.result === 'string') {
    try {
      outputs.result = JSON.parse(outputs.result);
    } catch {}
  }
  return outputs;
}

/** The summary as an aligned text table, after the status line (status-line.ts) when given. */
export function renderSummary(result: CommandResult, status?: string): string {
  const { heading, table, notes } = result.summary;
  const rows = table[0]?.every((c) => c === '') ? table.slice(1) : table;
  // Every column's width over every row (a shorter row must not drop the widths after it).
  const widths: number[] = [];
  for (const row of rows) {
    for (const [i, cell] of row.entries()) widths[i] = Math.max(widths[i] ?? 0, cell.length);
  }
  const lines = [
    ...(status ? [status, ''] : []),
    heading,
    ...rows.map((row) =>
      row
        .map((cell, i) => cell.padEnd(widths[i] ?? 0))
        .join('  ')
        .trimEnd(),
    ),
  ];
  return `${[...lines, ...(notes ?? [])].join('\n')}\n`;
}

function usage(): string {
  const width = Math.max(...commands.map((c) => c.name.length));
  return [
    `lifeboat ${version}: backups that are proven to restore`,
    '',
    'Usage: lifeboat <command> [--input value ...] [--json]   (lifeboat <command> --help for its inputs)',
    '',
    'Commands:',
    ...commands.map((c) => `  ${c.name.padEnd(width)}  ${c.description}`),
    '',
    ...(Object.keys(notBuilt).length ? [`Not built yet: ${Object.keys(notBuilt).join(', ')}.`, ''] : []),
  ].join('\n');
}

function commandHelp(command: Command<never>): string {
  const lines = [
    `lifeboat ${command.name}: ${command.description}`,
    '',
    'Inputs (flag, or the variable in brackets):',
  ];
  for (const spec of command.inputs) {
    const flag = spec.secretEnv ? `(secret) ${spec.secretEnv}` : `--${spec.name} [${envName(spec)}]`;
    const extra = spec.required
      ? ' Required.'
      : spec.default !== undefined
        ? ` Default: ${spec.default}.`
        : '';
    lines.push(`  ${flag}`, `      ${spec.description}${extra}`);
  }
  lines.push(
    '',
    'Outputs (--json prints them as one JSON object):',
    ...command.outputs.map((o) => `  ${o.name}: ${o.description}`),
    '',
  );
  return lines.join('\n');
}

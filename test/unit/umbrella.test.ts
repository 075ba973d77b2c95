/**
 * Every command behaves the same through the umbrella action (`command: <name>`) as through
 * its own action: for every command and every input, the value the command reads and the
 * options it parses, with the inputs left out as a workflow leaves them, run as the GitHub
 * runner runs an action (INPUT_<NAME> set to the `with:` value, else the action.yml default,
 * else '').
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { parse } from 'yaml';
import { makeReader } from '../../shared/action/run.ts';
import type { Command } from '../../shared/action/spec.ts';
import { commands } from '../../shared/commands/index.ts';

const root = path.resolve(import.meta.dirname, '../..');

/** The inputs a workflow gives (the required ones); everything else is left out. */
const given: Record<string, string> = {
  set: 'demo',
  source: '.',
  'keep-last': '3',
  'instance-id': 'i-0123456789abcdef0',
  region: 'eu-west-1',
  datasets: 'tank/db',
  'max-age': '26h',
};

type ActionYml = { inputs: Record<string, { default?: string }> };
const load = (file: string): ActionYml => parse(fs.readFileSync(path.join(root, file), 'utf8'));

/** INPUT_* as the runner sets them for `with:` = `inputs`. */
function runnerInputs(action: ActionYml, inputs: Record<string, string>): Map<string, string> {
  const env = new Map<string, string>();
  for (const [name, spec] of Object.entries(action.inputs))
    env.set(name, (inputs[name] ?? spec.default ?? '').trim());
  return env;
}

function readerFor(command: Command<never>, env: Map<string, string>) {
  return makeReader(command, (spec) => env.get(spec.name) ?? '');
}

/** Options as comparable data: a storage by its URL. */
function comparable(options: unknown): string {
  return JSON.stringify(options, (_key, value) =>
    value && typeof value === 'object' && typeof value.check === 'function' && 'url' in value
      ? `storage ${value.url}`
      : value,
  );
}

let cwd: string;
const saved = { event: process.env.GITHUB_EVENT_NAME, cwd: process.cwd() };
before(() => {
  // In a pull request, where prune-retention's dry-run auto means a dry run.
  process.env.GITHUB_EVENT_NAME = 'pull_request';
  cwd = fs.mkdtempSync(path.join(os.tmpdir(), 'lifeboat-umbrella-'));
  process.chdir(cwd);
});
after(() => {
  if (saved.event === undefined) delete process.env.GITHUB_EVENT_NAME;
  else process.env.GITHUB_EVENT_NAME = saved.event;
  process.chdir(saved.cwd);
  fs.rmSync(cwd, { recursive: true, force: true });
});

test('every input of every command reads the same through the umbrella as through its own action', () => {
  const umbrella = load('action.yml');
  const differ: string[] = [];
  for (const command of commands) {
    const own = readerFor(command, runnerInputs(load(`actions/${command.name}/action.yml`), given));
    const through = readerFor(
      command,
      runnerInputs(umbrella, { ...pick(given, command), command: command.name }),
    );
    for (const input of command.inputs) {
      const a = own(input.name);
      const b = through(input.name);
      if (a !== b) differ.push(`${command.name} ${input.name}: own action ${a}, umbrella ${b}`);
      // And that value is the command's documented default (or the given value).
      const expected = given[input.name] ?? input.default;
      if (a !== expected)
        differ.push(`${command.name} ${input.name}: reads ${a}, its default is ${expected}`);
    }
  }
  assert.deepEqual(differ, []);
});

test('every command parses the same options through the umbrella as through its own action', () => {
  const umbrella = load('action.yml');
  for (const command of commands) {
    const own = command.parse(
      readerFor(command, runnerInputs(load(`actions/${command.name}/action.yml`), given)),
    );
    const through = command.parse(
      readerFor(command, runnerInputs(umbrella, { ...pick(given, command), command: command.name })),
    );
    assert.equal(comparable(through), comparable(own), command.name);
  }
});

test('in a pull request, prune-retention through the umbrella is a dry run, as through its own action', () => {
  const command = commands.find((c) => c.name === 'prune-retention')!;
  const umbrella = runnerInputs(load('action.yml'), {
    command: 'prune-retention',
    set: 'demo',
    'keep-last': '1',
  });
  assert.equal((command.parse(readerFor(command, umbrella)) as { dryRun: boolean }).dryRun, true);
});

test('snapshot-ebs through the umbrella writes no catalog entry unless storage is given, as through its own action', () => {
  const command = commands.find((c) => c.name === 'snapshot-ebs')!;
  const umbrella = runnerInputs(load('action.yml'), { ...pick(given, command), command: 'snapshot-ebs' });
  assert.equal((command.parse(readerFor(command, umbrella)) as { storage?: unknown }).storage, undefined);
});

/** The given inputs the command declares (the umbrella refuses none, but keep it exact). */
function pick(inputs: Record<string, string>, command: Command<never>): Record<string, string> {
  return Object.fromEntries(
    Object.entries(inputs).filter(([name]) => command.inputs.some((i) => i.name === name)),
  );
}

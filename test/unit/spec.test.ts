/** One definition of each command's inputs feeds action.yml, the CLI and the parser: check they agree. */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { parse } from 'yaml';
import { expectedFiles } from '../../scripts/actions.ts';
import { actionReader } from '../../shared/action/github.ts';
import { InputErrors, notesOf } from '../../shared/action/inputs.ts';
import { makeReader } from '../../shared/action/run.ts';
import { type Command, notGiven } from '../../shared/action/spec.ts';
import { isBooleanInput } from '../../shared/cli/cli.ts';
import { backupCommandNames } from '../../shared/commands/common.ts';
import { commands } from '../../shared/commands/index.ts';
import { UserError } from '../../shared/errors.ts';
import { version } from '../../shared/version.ts';

const root = path.resolve(import.meta.dirname, '../..');

test('every committed action file is what the specs generate', () => {
  for (const [file, content] of expectedFiles()) {
    assert.equal(
      fs.readFileSync(path.join(root, file), 'utf8'),
      content,
      `${file} is stale: run node scripts/actions.ts`,
    );
  }
});

test('each action.yml declares exactly its command inputs and runs on node24', () => {
  for (const command of commands) {
    const action = parse(fs.readFileSync(path.join(root, 'actions', command.name, 'action.yml'), 'utf8'));
    assert.deepEqual(
      Object.keys(action.inputs),
      command.inputs.map((i) => i.name),
    );
    assert.deepEqual(
      Object.keys(action.outputs),
      command.outputs.map((o) => o.name),
    );
    assert.equal(action.runs.using, 'node24');
  }
  const umbrella = parse(fs.readFileSync(path.join(root, 'action.yml'), 'utf8'));
  for (const command of commands)
    for (const i of command.inputs) assert.ok(umbrella.inputs[i.name], `umbrella lacks ${i.name}`);
});

test('each parser reads every input its spec declares, and nothing else', () => {
  for (const command of commands) {
    const read = new Set<string>();
    const reader = makeReader(command, (spec) => {
      read.add(spec.name);
      const given: Record<string, string> = {
        set: 'demo',
        source: '.',
        'keep-last': '3',
        'instance-id': 'i-0123456789abcdef0',
        region: 'eu-west-1',
        datasets: 'tank/db',
        'max-age': '26h',
      };
      return spec.default ?? given[spec.name];
    });
    command.parse(reader);
    assert.deepEqual([...read].sort(), command.inputs.map((i) => i.name).sort(), command.name);
  }
});

test('the manifest version is the package version', () => {
  assert.equal(version, JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')).version);
});

test('the umbrella declares no default where commands differ, and names each command’s own', () => {
  const umbrella = parse(fs.readFileSync(path.join(root, 'action.yml'), 'utf8'));
  for (const name of ['timeout', 'poll-interval', 'dry-run']) {
    assert.equal(umbrella.inputs[name].default, undefined, name);
    assert.match(umbrella.inputs[name].description, /Default: each command's own: /, name);
  }
  assert.match(
    umbrella.inputs['dry-run'].description,
    /false \(snapshot-zfs, restore, copy\); auto \(prune-retention\)/,
  );
  // storage declares the marker everywhere, so that left out and given empty differ.
  assert.equal(umbrella.inputs.storage.default, notGiven);
  for (const command of commands) {
    const action = parse(fs.readFileSync(path.join(root, 'actions', command.name, 'action.yml'), 'utf8'));
    assert.equal(action.inputs.storage.default, notGiven, command.name);
  }
});

test('the action reader reads INPUT_* as the runner sets them: the marker is not given, empty storage is refused', () => {
  const backup = commands.find((c) => c.name === 'backup-files')!;
  const base = { INPUT_SET: 'demo', INPUT_SOURCE: '.', INPUT_TIMEOUT: ' 90m ' };
  const left = actionReader(backup, { ...base, INPUT_STORAGE: notGiven });
  assert.equal(left('storage'), './backups');
  assert.equal(left('timeout'), '90m');
  assert.deepEqual(notesOf(left).problems, []);
  assert.match(notesOf(left).warnings[0]!, /^storage: not given; the backup goes into \.\/backups/);
  const hosted = actionReader(backup, {
    ...base,
    INPUT_STORAGE: notGiven,
    RUNNER_ENVIRONMENT: 'github-hosted',
  });
  hosted('storage');
  assert.match(
    notesOf(hosted).problems[0]!,
    /^storage: not given, so the backup would go into \.\/backups on this GitHub-hosted runner/,
  );
  const empty = actionReader(backup, { ...base, INPUT_STORAGE: '' });
  empty('storage');
  assert.match(notesOf(empty).problems[0]!, /^storage: given but empty \(an unset variable/);
  // Not a backup command: storage left out reads ./backups without a word; empty is still refused.
  const list = commands.find((c) => c.name === 'list')!;
  const listing = actionReader(list, { INPUT_STORAGE: notGiven, RUNNER_ENVIRONMENT: 'github-hosted' });
  assert.equal(listing('storage'), './backups');
  assert.deepEqual(notesOf(listing), { problems: [], warnings: [] });
});

test('the commands that write a backup into storage are the ones refused without storage on a hosted runner', () => {
  const writers = commands
    .filter((c) => c.outputs.some((o) => o.name === 'sha256') && c.inputs.some((i) => i.name === 'storage'))
    .map((c) => c.name);
  assert.deepEqual(writers, [...backupCommandNames]);
});

/** The lines about `name` when the command parses `value` for it (and the required inputs). */
function problemsWith(command: Command<never>, name: string, value: string): string[] {
  const given: Record<string, string> = {
    set: 'demo',
    source: '.',
    'keep-last': '3',
    'instance-id': 'i-0123456789abcdef0',
    region: 'eu-west-1',
  };
  const read = makeReader(command, (spec) => (spec.name === name ? value : given[spec.name]), {});
  let lines: string[] = [];
  try {
    command.parse(read);
  } catch (error) {
    if (!(error instanceof UserError)) throw error;
    lines = error instanceof InputErrors ? error.lines : [error.message];
  }
  return [...lines, ...notesOf(read).problems].filter((l) => l.startsWith(`${name}:`));
}

test('a CLI flag may stand alone exactly for the inputs whose parser takes true and false (and refuses other words)', () => {
  const standAlone: string[] = [];
  const booleans: string[] = [];
  for (const command of commands) {
    for (const spec of command.inputs.filter((i) => !i.secretEnv)) {
      const takes = (v: string) => problemsWith(command, spec.name, v).length === 0;
      if (takes('true') && takes('false') && !takes('maybe')) booleans.push(`${command.name} ${spec.name}`);
      if (isBooleanInput(spec)) standAlone.push(`${command.name} ${spec.name}`);
    }
  }
  assert.deepEqual(standAlone, booleans);
  assert.ok(standAlone.includes('prune-retention dry-run'));
  assert.ok(standAlone.includes('backup-k8s include-cluster-resources'));
});

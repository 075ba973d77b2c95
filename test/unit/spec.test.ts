/** One definition of each command's inputs feeds action.yml, the CLI and the parser: check they agree. */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { parse } from 'yaml';
import { expectedFiles } from '../../scripts/actions.ts';
import { makeReader } from '../../shared/action/run.ts';
import { commands } from '../../shared/commands/index.ts';
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

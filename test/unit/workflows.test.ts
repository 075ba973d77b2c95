/** The workflows users copy: valid YAML, and every Lifeboat step uses an existing action with inputs it declares. */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { parse } from 'yaml';
import { commands } from '../../shared/commands/index.ts';

const root = path.resolve(import.meta.dirname, '../..');
const dirs = ['.github/workflows', '.github/workflows/examples'];

for (const dir of dirs) {
  for (const file of fs.readdirSync(path.join(root, dir)).filter((f) => f.endsWith('.yml'))) {
    test(`${dir}/${file}`, () => {
      const workflow = parse(fs.readFileSync(path.join(root, dir, file), 'utf8'));
      assert.ok(workflow.name && workflow.on && workflow.jobs, 'name, on and jobs');
      for (const [jobName, job] of Object.entries(
        workflow.jobs as Record<string, { steps: Record<string, unknown>[] }>,
      )) {
        assert.ok(Array.isArray(job.steps) && job.steps.length > 0, `${jobName} has steps`);
        for (const step of job.steps) {
          assert.ok(step.uses || step.run, `${jobName}: a step needs uses or run`);
          const uses = /\/lifeboat\/actions\/([a-z-]+)@/.exec(String(step.uses ?? ''));
          if (!uses) continue;
          const command = commands.find((c) => c.name === uses[1]);
          assert.ok(command, `${uses[1]} is a built action`);
          for (const input of Object.keys((step.with as object) ?? {})) {
            assert.ok(
              command.inputs.some((i) => i.name === input),
              `${uses[1]} declares input ${input}`,
            );
          }
          for (const required of command.inputs.filter((i) => i.required)) {
            assert.ok(
              (step.with as Record<string, unknown>)?.[required.name] !== undefined,
              `${uses[1]} needs ${required.name}`,
            );
          }
        }
      }
    });
  }
}

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

interface Job {
  if?: string;
  environment?: string | { name: string };
  permissions?: unknown;
  steps: { uses?: string; run?: string; with?: Record<string, unknown> }[];
}
interface Workflow {
  on: string | string[] | Record<string, unknown>;
  permissions?: unknown;
  jobs: Record<string, Job>;
}

function load(file: string): Workflow {
  return parse(fs.readFileSync(path.join(root, file), 'utf8'));
}

const forkGuard = 'github.event.pull_request.head.repo.full_name == github.repository';
const expression = (value: unknown) =>
  String(value ?? '')
    .replace(/^\s*\$\{\{\s*|\s*\}\}\s*$/g, '')
    .trim();
const triggersOf = (workflow: Workflow) =>
  typeof workflow.on === 'string'
    ? [workflow.on]
    : Array.isArray(workflow.on)
      ? workflow.on
      : Object.keys(workflow.on);
const environmentOf = (job: Job) =>
  typeof job.environment === 'string' ? job.environment : job.environment?.name;

// A pull request's code must never meet production secrets unasked: an example that runs on
// pull requests and uses a secret does so only for this repository's branches, behind an
// environment (whose required reviewers approve first), and pull_request_target never.
for (const file of fs
  .readdirSync(path.join(root, '.github/workflows/examples'))
  .filter((f) => f.endsWith('.yml'))) {
  test(`.github/workflows/examples/${file}: a pull request gets secrets only behind an approval`, () => {
    const text = fs.readFileSync(path.join(root, '.github/workflows/examples', file), 'utf8');
    const workflow = parse(text) as Workflow;
    const triggers = triggersOf(workflow);
    assert.ok(!triggers.includes('pull_request_target'), 'pull_request_target runs with secrets for forks');
    if (!triggers.includes('pull_request') || !/\bsecrets\./.test(text)) return;
    for (const [jobName, job] of Object.entries(workflow.jobs)) {
      assert.equal(expression(job.if), forkGuard, `${jobName}: not for pull requests from forks`);
      assert.ok(environmentOf(job), `${jobName}: a protected environment`);
    }
  });
}

test('the pull-request migration rehearsal: same repository, approved, minimal token, no credentials left', () => {
  const workflow = load('.github/workflows/examples/mysql-pr-migration-rehearsal.yml');
  assert.deepEqual(triggersOf(workflow), ['pull_request']);
  assert.deepEqual(workflow.permissions, { contents: 'read', 'id-token': 'write' });
  const job = workflow.jobs.rehearse!;
  assert.ok(job, 'the rehearse job');
  assert.equal(expression(job.if), forkGuard, 'only pull requests from this repository');
  assert.equal(environmentOf(job), 'migration-rehearsal', 'required reviewers approve before the secrets');
  assert.equal(job.permissions, undefined, 'no job widens the permissions');
  const checkouts = job.steps.filter((s) => /^actions\/checkout@/.test(s.uses ?? ''));
  assert.equal(checkouts.length, 1, 'one checkout');
  for (const step of checkouts)
    assert.equal(step.with?.['persist-credentials'], false, 'the token is not left in .git/config');
  for (const step of job.steps.filter((s) => s.uses))
    assert.match(step.uses!, /@(v\d+|[0-9a-f]{40})$/, `${step.uses} pinned like the other examples`);
  for (const step of job.steps.filter((s) => s.run))
    assert.doesNotMatch(step.run!, /secrets\.|GITHUB_TOKEN/, 'no secret handed to a run: step');
  const verify = job.steps.find((s) => /\/lifeboat\/actions\/verify-restore@/.test(s.uses ?? ''));
  assert.ok(verify?.with?.['post-restore-command'], 'it runs the migrations');
  assert.equal(verify.with?.record, 'false', 'nothing written to storage: the role is read-only');
  const aws = job.steps.find((s) => /^aws-actions\/configure-aws-credentials@/.test(s.uses ?? ''));
  assert.ok(aws?.with?.['role-to-assume'], 'storage through an OIDC role, no long-lived keys');
  assert.ok(!('aws-secret-access-key' in (aws.with ?? {})), 'no access keys');
});

test('CI and release install what the tests need on a runner that is not root', () => {
  for (const file of ['ci.yml', 'release.yml']) {
    const text = fs.readFileSync(path.join(root, '.github/workflows', file), 'utf8');
    assert.match(
      text,
      /sudo .*apt-get install [^\n]*mariadb-server mariadb-client/,
      `${file} installs MariaDB with sudo`,
    );
    assert.match(text, /apt-get install [^\n]*\bage\b[^\n]*\bzstd\b/, `${file} installs age and zstd`);
    assert.match(text, /npm test/, `${file} runs the tests`);
  }
});

test('the release checks its version, never moves a version tag, and runs one at a time', () => {
  const text = fs.readFileSync(path.join(root, '.github/workflows/release.yml'), 'utf8');
  const workflow = parse(text);
  assert.equal(workflow.concurrency?.group, 'release');
  assert.ok(workflow.on.workflow_dispatch?.inputs?.version?.required, 'the version is asked for');
  assert.match(text, /shared\/version\.ts/, 'checked against the version manifests record');
  assert.match(text, /package\.json/);
  assert.match(text, /the tag v\$VERSION exists already/, 'an existing version tag is refused');
  assert.doesNotMatch(
    text,
    /git tag -f "v\$VERSION"|push --force[^\n]*v\$VERSION/,
    'the version tag is never forced',
  );
  assert.match(text, /gh release create "v\$VERSION"/, 'a GitHub Release is made');
  // The version check runs before anything is built or pushed.
  const names = (workflow.jobs.release.steps as { name?: string; run?: string }[]).map(
    (s) => s.name ?? s.run ?? '',
  );
  assert.ok(
    names.findIndex((n) => /Check the version/.test(n)) < names.findIndex((n) => /Commit the bundle/.test(n)),
  );
});

/**
 * verify-restore through the built bundle: the nightly drill as a runner runs it (dump, then
 * verify with checks, job summary and outputs), a failing check through the CLI, and a step
 * killed mid-verification whose post: step removes the throwaway server it left.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { isAlive } from '../../shared/mysql/ephemeral.ts';
import { connectionInputs, type EphemeralServer, sampleShop, sql, startMysql } from '../harness/mysql.ts';
import { errorLines, runAction, runCli } from '../harness/runner.ts';
import { tempDir } from '../harness/servers.ts';

let work: string;
let storage: string;
let source: EphemeralServer;

before(async () => {
  work = await tempDir('verify-e2e');
  storage = path.join(work, 'backups');
  source = await startMysql();
  await sql(source, sampleShop);
  const dump = await runAction('dump-mysql', { storage, set: 'nightly', ...connectionInputs(source) }, {});
  assert.equal(dump.code, 0, dump.stdout);
});

after(async () => {
  await source?.stop();
  await fs.rm(work, { recursive: true, force: true });
});

test('the nightly verification as a runner runs it: checks, summary, outputs, report', async () => {
  const workDir = await tempDir('verify-e2e-work');
  const run = await runAction(
    'verify-restore',
    {
      storage,
      set: 'nightly',
      'work-dir': workDir,
      'max-age': '26h',
      'max-restore-time': '15m',
      checks: '- name: orders\n  sql: SELECT COUNT(*) FROM orders\n  expect: ">= 2000"\n',
    },
    { RUNNER_TEMP: workDir },
  );
  assert.equal(run.code, 0, run.stdout);
  assert.equal(run.outputs.passed, 'true');
  assert.ok(Number(run.outputs['rto-seconds']) > 0);
  assert.match(run.outputs['backup-id']!, /^\d{4}-\d{2}-\d{2}-\d{4}-backup-full$/);
  const report = JSON.parse(await fs.readFile(run.outputs.report!, 'utf8'));
  assert.equal(report.passed, true);
  assert.equal(path.dirname(run.outputs.report!), workDir);
  for (const text of [
    'PASSED',
    'sha256: dump.sql.zst',
    'rows: shop',
    'check: orders',
    'RPO: max-age 26h00m',
    'RTO (restore time)',
  ])
    assert.ok(run.summary.includes(text), `summary has ${text}: ${run.summary}`);
  assert.equal(run.state.leftovers, '', 'nothing left for the post step');
  assert.deepEqual(
    (await fs.readdir(workDir)).filter((f) => f.startsWith('lifeboat-mysqld')),
    [],
  );
});

test('a failing check fails the CLI run with the check named, after printing the report', async () => {
  const workDir = await tempDir('verify-e2e-work');
  const run = await runCli(
    [
      'verify-restore',
      '--storage',
      storage,
      '--set',
      'nightly',
      '--work-dir',
      workDir,
      '--checks',
      '- name: no orders\n  sql: SELECT COUNT(*) FROM orders\n  expect: == 0',
    ],
    {},
  );
  assert.equal(run.code, 1, run.stderr);
  assert.match(
    run.stderr,
    /error: verify-restore: check 'check: no orders' failed: got '2000', expected == 0/,
  );
  assert.match(run.stdout, /Restore verification of nightly\/.*: FAILED/);
  assert.match(run.stdout, /check: no orders\s+❌ FAIL/);
  assert.deepEqual(
    (await fs.readdir(workDir)).filter((f) => f.startsWith('lifeboat-mysqld')),
    [],
  );
});

test('a step killed mid-verification leaves its server to the post: step, which removes it', async () => {
  const workDir = await tempDir('verify-e2e-work');
  const inputs = { storage, set: 'nightly', 'work-dir': workDir, 'post-restore-command': 'kill -9 $PPID' };
  const killed = await runAction('verify-restore', inputs, {});
  assert.notEqual(killed.code, 0);
  const leftovers = JSON.parse(killed.state.leftovers!) as { type: string; pid: number; dataDir: string };
  assert.equal(leftovers.type, 'mysqld');
  assert.ok(isAlive(leftovers.pid), 'the server outlived the killed step');
  const post = await runAction(
    'verify-restore',
    inputs,
    {},
    { post: { leftovers: killed.state.leftovers! } },
  );
  assert.equal(post.code, 0, post.stdout);
  assert.match(post.stdout, /stopped the throwaway server left running/);
  await new Promise((resolve) => setTimeout(resolve, 300));
  assert.equal(isAlive(leftovers.pid), false);
  await assert.rejects(fs.access(leftovers.dataDir));
  assert.equal(errorLines(post).length, 0);
});

test('bad verify-restore inputs get one line each, naming the input', async () => {
  const run = await runAction(
    'verify-restore',
    {
      storage,
      set: 'nightly',
      environment: 'vm',
      'max-age': 'yesterday',
      checks: '- name: x\n  sql: SELECT 1\n  expect: ">= lots"\n',
    },
    {},
  );
  assert.equal(run.code, 1);
  const lines = errorLines(run).join('\n');
  assert.match(lines, /environment: 'vm' is not accepted; accepted: local, external or docker/);
  assert.match(lines, /max-age: 'yesterday' is not accepted/);
  assert.match(lines, /checks: item 1 \(x\): 'expect: >= lots' compares with >= but 'lots' is not a number/);
  const docker = await runAction('verify-restore', { storage, set: 'nightly', environment: 'docker' }, {});
  assert.equal(docker.code, 1);
  // This machine has the docker command but no engine; another may have neither.
  assert.match(
    errorLines(docker)[0]!,
    /environment: docker (needs the docker program on PATH|run failed: .*Cannot connect to the Docker daemon)/,
  );
});

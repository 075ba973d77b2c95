/**
 * Cancellation through the built bundle, with real signals. GitHub cancels a step with
 * SIGINT and, 7.5 s later, SIGTERM: the SIGTERM must not cut the cleanup short (only a second
 * SIGINT, a person pressing Ctrl-C again, exits at once: test/unit/signals.test.ts). An
 * interrupt exits 130.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { parse } from 'yaml';
import { baseEnv, repoRoot } from '../harness/runner.ts';
import { tempDir } from '../harness/servers.ts';

let work: string;
let source: string;
before(async () => {
  work = await tempDir('cancel');
  source = path.join(work, 'src');
  await fs.mkdir(source);
  // Random bytes at gzip level 9: seconds of work, long enough to be interrupted.
  const file = await fs.open(path.join(source, 'data.bin'), 'w');
  for (let i = 0; i < 96; i++) await file.write(randomBytes(1024 * 1024));
  await file.close();
});
after(() => fs.rm(work, { recursive: true, force: true }));

interface Started {
  child: ChildProcess;
  stdout: () => string;
  done: Promise<number | null>;
  summary: string;
}

/** Starts actions/backup-files as the runner does (INPUT_* with the action.yml defaults). */
async function startBackup(storage: string): Promise<Started> {
  const action = parse(await fs.readFile(path.join(repoRoot, 'actions/backup-files/action.yml'), 'utf8'));
  const inputs: Record<string, string> = {
    storage,
    set: 'big',
    source,
    compression: 'gzip',
    'compression-level': '9',
    'progress-interval': '100ms',
  };
  const env: Record<string, string> = {};
  for (const [name, spec] of Object.entries(action.inputs as Record<string, { default?: string }>))
    env[`INPUT_${name.toUpperCase()}`] = inputs[name] ?? spec.default ?? '';
  const files = await tempDir('cancel-runner');
  const summary = path.join(files, 'summary');
  for (const f of ['output', 'summary', 'state']) await fs.writeFile(path.join(files, f), '');
  const child = spawn(process.execPath, [path.join(repoRoot, 'actions/backup-files/main.js')], {
    env: {
      ...baseEnv(),
      ...env,
      GITHUB_ACTIONS: 'true',
      GITHUB_OUTPUT: path.join(files, 'output'),
      GITHUB_STATE: path.join(files, 'state'),
      GITHUB_STEP_SUMMARY: summary,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout!.setEncoding('utf8').on('data', (d) => (out += d));
  child.stderr!.setEncoding('utf8').on('data', (d) => (out += d));
  const done = new Promise<number | null>((resolve) => child.once('close', (code) => resolve(code)));
  return { child, stdout: () => out, done, summary };
}

/** Waits until the backup is streaming (a progress line), so that it has written something. */
async function streaming(run: Started): Promise<void> {
  const deadline = Date.now() + 30_000;
  while (!/archived: /.test(run.stdout())) {
    if (Date.now() > deadline) throw new Error(`the backup did not start: ${run.stdout()}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Every file under a folder, relative to it. */
async function filesUnder(dir: string): Promise<string[]> {
  const entries = await fs.readdir(dir, { recursive: true, withFileTypes: true }).catch(() => []);
  return entries.filter((e) => e.isFile()).map((e) => path.relative(dir, path.join(e.parentPath, e.name)));
}

const errorLines = (text: string) => text.split('\n').filter((l) => l.startsWith('::error::'));

test("GitHub's cancel (SIGINT, then SIGTERM) lets the cleanup finish: exit 130, nothing left in storage", async () => {
  const storage = path.join(work, 'cancelled');
  const run = await startBackup(storage);
  await streaming(run);
  assert.deepEqual(
    (await filesUnder(storage)).some((f) => f.endsWith('in-progress.json')),
    true,
    'the backup had started writing',
  );
  run.child.kill('SIGINT');
  // SIGTERM while the cleanup is under way (GitHub's comes 7.5 s later; sooner is the harder
  // case). A moment apart, so that they arrive in GitHub's order.
  await new Promise((r) => setTimeout(r, 50));
  run.child.kill('SIGTERM');
  const code = await run.done;
  assert.deepEqual(await filesUnder(storage), [], 'the cleanup ran to the end');
  assert.equal(code, 130, run.stdout());
  assert.deepEqual(errorLines(run.stdout()), [
    '::error::backup-files was interrupted (SIGINT); it was stopped and what it wrote was removed',
  ]);
  const summary = await fs.readFile(run.summary, 'utf8');
  assert.match(summary, /backup-files failed/);
  assert.match(summary, /interrupted \(SIGINT\)/);
  assert.match(summary, /No backup was committed/);
});

test('Ctrl-C once: the backup stops, cleans up and exits 130', async () => {
  const storage = path.join(work, 'ctrl-c');
  const run = await startBackup(storage);
  await streaming(run);
  run.child.kill('SIGINT');
  assert.equal(await run.done, 130, run.stdout());
  assert.deepEqual(await filesUnder(storage), []);
});

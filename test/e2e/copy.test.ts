/**
 * copy through the built bundle, as a runner runs the action (its own and the umbrella) and
 * as a user runs the CLI: a nightly copy of a folder's backups into a second storage (an
 * S3 service with its own LIFEBOAT_TO_* credentials), skipped when present, a dry run, a
 * damaged source artifact and a missing input.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { Catalog } from '../../shared/catalog/catalog.ts';
import { openStorage } from '../../shared/storage/open.ts';
import { errorLines, runAction, runCli } from '../harness/runner.ts';
import { startS3rver, type TestServer, tempDir } from '../harness/servers.ts';

let work: string;
let storage: string;
let s3: TestServer;
const ids: string[] = [];
/** The s3rver's variables, as the copy's target sees them. */
let toS3: Record<string, string>;

before(async () => {
  work = await tempDir('copy-e2e');
  storage = path.join(work, 'backups');
  await fs.mkdir(path.join(work, 'src'));
  await fs.writeFile(path.join(work, 'src', 'a.conf'), 'a = 1\n'.repeat(50_000));
  for (let i = 0; i < 2; i++) {
    const run = await runAction('backup-files', { storage, set: 'conf', source: path.join(work, 'src') }, {});
    assert.equal(run.code, 0, run.stdout);
    ids.push(run.outputs['backup-id']!);
  }
  s3 = await startS3rver();
  toS3 = Object.fromEntries(Object.entries(s3.env).map(([k, v]) => [`LIFEBOAT_TO_${k}`, v]));
});
after(async () => {
  await s3.stop();
  await fs.rm(work, { recursive: true, force: true });
});

const committedIn = async (url: string, env: Record<string, string> = {}) =>
  (await new Catalog(openStorage(url, env)).listBackups('conf')).filter((b) => b.committed).map((b) => b.id);

test('the action copies the latest backup into S3 with the target’s own credentials: outputs, progress and summary', async () => {
  const run = await runAction(
    'copy',
    { storage, 'to-storage': s3.url, set: 'conf', 'progress-interval': '1s' },
    toS3,
  );
  assert.equal(run.code, 0, run.stdout);
  assert.equal(run.outputs.copied, `conf/${ids[1]}`);
  assert.equal(run.outputs.count, '1');
  assert.ok(Number(run.outputs.bytes) > 0);
  assert.ok(Number(run.outputs.throughput) > 0);
  assert.match(run.outputs['duration-seconds']!, /^\d+\.\d$/);
  const result = JSON.parse(run.outputs.result!);
  assert.deepEqual(
    result.backups.map((b: { id: string; state: string }) => [b.id, b.state]),
    [[ids[1], 'copied']],
  );
  assert.match(run.stdout, new RegExp(`copied conf/${ids[1]}/files\\.tar\\.zst: .* of .* \\(100%\\)`));
  assert.match(run.stdout, new RegExp(`committed conf/${ids[1]} in ${s3.url}`));
  assert.match(run.summary, /Copy: .* → s3:\/\//);
  assert.match(run.summary, /copied in/);
  assert.match(run.summary, /Retention is per storage/);
  assert.deepEqual(await committedIn(s3.url, s3.env), [ids[1]]);
});

test('through the umbrella, all-missing copies the rest and skips what is present', async () => {
  const run = await runAction(
    undefined,
    { command: 'copy', storage, 'to-storage': s3.url, set: 'conf', backup: 'all-missing' },
    toS3,
  );
  assert.equal(run.code, 0, run.stdout);
  assert.equal(run.outputs.copied, `conf/${ids[0]}`);
  assert.match(run.summary, /already present \(same sha256s\)/);
  assert.deepEqual(await committedIn(s3.url, s3.env), [ids[1], ids[0]]);
});

test('the CLI: a dry run plans and writes nothing; --json prints numbers', async () => {
  const target = path.join(work, 'second');
  const run = await runCli(
    [
      'copy',
      '--storage',
      storage,
      '--to-storage',
      target,
      '--set',
      '*',
      '--backup',
      'all-missing',
      '--dry-run',
      '--json',
    ],
    {},
  );
  assert.equal(run.code, 0, run.stderr);
  const out = JSON.parse(run.stdout);
  assert.equal(out.count, 2);
  assert.equal(out.copied, `conf/${ids[1]},conf/${ids[0]}`);
  assert.equal(
    out.bytes,
    out.result.backups.reduce((sum: number, b: { bytes: number }) => sum + b.bytes, 0),
  );
  assert.ok(out.bytes > 0);
  assert.equal(out.result.dryRun, true);
  assert.match(run.stderr, /would copy/);
  await assert.rejects(fs.stat(target), { code: 'ENOENT' });
});

test('a damaged source artifact fails the step naming it and the backup; nothing is committed', async () => {
  const damaged = path.join(work, 'damaged');
  await fs.cp(storage, damaged, { recursive: true });
  const file = path.join(damaged, 'conf', ids[1]!, 'files.tar.zst');
  const bytes = await fs.readFile(file);
  bytes[10]! ^= 0xff;
  await fs.writeFile(file, bytes);
  const target = path.join(work, 'from-damaged');
  const run = await runAction('copy', { storage: damaged, 'to-storage': target, set: 'conf' }, {});
  assert.equal(run.code, 1, run.stdout);
  assert.deepEqual(errorLines(run).length, 1, run.stdout);
  assert.match(
    errorLines(run)[0]!,
    new RegExp(
      `the artifact files\\.tar\\.zst of backup conf/${ids[1]} in .* has sha256 [0-9a-f]{64}, its manifest records`,
    ),
  );
  assert.match(run.summary, /FAILED/);
  assert.deepEqual(await committedIn(target), []);
});

test('a missing to-storage is one error line naming it, and nothing runs', async () => {
  const run = await runAction('copy', { storage, set: 'conf' }, {});
  assert.equal(run.code, 1);
  assert.deepEqual(errorLines(run), [
    '::error::to-storage: required (not given, or given empty: an unset variable?); accepted: a folder path, file:///abs/path, s3://bucket/prefix, gs://bucket/prefix or azblob://container/prefix',
  ]);
});

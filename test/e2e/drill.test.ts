/**
 * Whole drills through the built bundle (dist/), as users run it: the actions as a GitHub
 * runner starts them, and the `lifeboat` CLI. A tree with odd names, symlinks, empty files,
 * modes and a 300 MB file is backed up, listed, restored and compared byte for byte.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { generateIdentity } from 'age-encryption';
import { recipientOf } from '../../shared/pipeline/encryption.ts';
import { errorLines, runAction, runCli } from '../harness/runner.ts';
import { startFauxqs, startGcs, type TestServer, tempDir } from '../harness/servers.ts';
import { diffTrees, makeHostileTree } from '../harness/tree.ts';

const bigFile = 300 * 1024 * 1024;
let work: string;
let source: string;

before(async () => {
  work = await tempDir('e2e');
  source = path.join(work, 'etc-nova');
  await makeHostileTree(source, bigFile);
});
after(() => fs.rm(work, { recursive: true, force: true }));

describe('as a GitHub Action, on S3 (fauxqs), encrypted', () => {
  let server: TestServer;
  let identity: string;
  before(async () => {
    server = await startFauxqs();
    identity = await generateIdentity();
  });
  after(() => server.stop());

  test('backup-files → list (umbrella) → restore, byte for byte', async () => {
    const backup = await runAction(
      'backup-files',
      {
        storage: server.url,
        set: 'etc-nova',
        source,
        'age-recipients': await recipientOf(identity),
        'progress-interval': '1s',
      },
      server.env,
    );
    assert.equal(backup.code, 0, backup.stdout + backup.stderr);
    const id = backup.outputs['backup-id']!;
    assert.match(id, /^\d{4}-\d{2}-\d{2}-\d{4}-backup-full$/);
    assert.equal(backup.outputs.uri, `${server.url}/etc-nova/${id}/`);
    assert.match(backup.outputs.sha256!, /^[0-9a-f]{64}$/);
    assert.ok(Number(backup.outputs.bytes) > bigFile, 'random data does not compress');
    const manifest = JSON.parse(backup.outputs.result!);
    assert.equal(manifest.artifacts[0].name, 'files.tar.zst.age');
    assert.match(backup.summary, /<table>/);
    assert.match(backup.summary, new RegExp(id));
    assert.match(backup.stdout, /archived: .* MiB\/s/, 'progress lines while archiving');

    const list = await runAction(undefined, { command: 'list', storage: server.url }, server.env);
    assert.equal(list.code, 0, list.stdout);
    const listing = JSON.parse(list.outputs.result!);
    assert.deepEqual(
      listing.backups.map((b: { set: string; id: string; kind: string }) => [b.set, b.id, b.kind]),
      [['etc-nova', id, 'files']],
    );
    assert.match(list.summary, /never/);

    const target = path.join(work, 'restored-action');
    const restore = await runAction(
      'restore',
      { storage: server.url, set: 'etc-nova', target, 'age-identity': identity },
      server.env,
    );
    assert.equal(restore.code, 0, restore.stdout + restore.stderr);
    assert.equal(restore.outputs['backup-id'], id);
    assert.ok(restore.stdout.includes(`::add-mask::${identity}`), 'the identity is masked before use');
    assert.ok(
      !restore.stdout.replace(`::add-mask::${identity}`, '').includes(identity),
      'the identity is never printed',
    );
    assert.deepEqual(await diffTrees(source, target), []);
  });
});

describe('as the lifeboat CLI', () => {
  let gcs: TestServer;
  before(async () => {
    gcs = await startGcs();
  });
  after(() => gcs.stop());

  test('on GCS: backup-files, list --json, restore, byte for byte', async () => {
    const backup = await runCli(
      ['backup-files', '--storage', gcs.url, '--set', 'etc-nova', '--source', source, '--json'],
      gcs.env,
    );
    assert.equal(backup.code, 0, backup.stderr);
    const outputs = JSON.parse(backup.stdout);
    assert.equal(outputs.result.kind, 'files');

    const list = await runCli(['list', '--storage', gcs.url, '--json'], gcs.env);
    assert.equal(list.code, 0, list.stderr);
    assert.deepEqual(
      JSON.parse(list.stdout).result.backups.map((b: { id: string }) => b.id),
      [outputs['backup-id']],
    );

    const target = path.join(work, 'restored-cli');
    const restore = await runCli(
      [
        'restore',
        '--storage',
        gcs.url,
        '--set',
        'etc-nova',
        '--backup',
        outputs['backup-id'],
        '--target',
        target,
      ],
      gcs.env,
    );
    assert.equal(restore.code, 0, restore.stderr);
    assert.match(restore.stdout, /Integrity\s+sha256 and counts match the manifest/);
    assert.deepEqual(await diffTrees(source, target), []);
  });

  test('on the default ./backups folder, from a working directory', async () => {
    const cwd = await tempDir('cwd');
    const small = path.join(cwd, 'conf');
    await fs.mkdir(small);
    await fs.writeFile(path.join(small, 'nova.conf'), '[DEFAULT]\ndebug = false\n');
    const backup = await runCli(['backup-files', '--set', 'conf', '--source', 'conf'], {}, { cwd });
    assert.equal(backup.code, 0, backup.stderr);
    assert.ok((await fs.readdir(path.join(cwd, 'backups', 'conf'))).length === 1);
    const restore = await runCli(['restore', '--set', 'conf', '--target', 'restored'], {}, { cwd });
    assert.equal(restore.code, 0, restore.stderr);
    assert.deepEqual(await diffTrees(small, path.join(cwd, 'restored')), []);
    assert.equal(errorLines(restore).length, 0);
    await fs.rm(cwd, { recursive: true, force: true });
  });
});

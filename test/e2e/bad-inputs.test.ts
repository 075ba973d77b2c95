/**
 * The bad-input table, through the built bundle: each case gives one clear `::error::` line
 * (or one `error:` line on the CLI), exit status 1, and nothing in storage that looks like
 * a committed backup.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { generateIdentity } from 'age-encryption';
import { Catalog } from '../../shared/catalog/catalog.ts';
import { recipientOf } from '../../shared/pipeline/encryption.ts';
import { openStorage } from '../../shared/storage/open.ts';
import { errorLines, type Run, runAction, runCli } from '../harness/runner.ts';
import { startFauxqs, type TestServer, tempDir } from '../harness/servers.ts';

let work: string;
let source: string;
let server: TestServer;
let identity: string;
let committedId: string;

async function committed(): Promise<string[]> {
  const catalog = new Catalog(openStorage(server.url, { ...process.env, ...server.env }));
  const ids: string[] = [];
  for (const set of await catalog.listSets())
    for (const b of await catalog.listBackups(set)) if (b.committed) ids.push(`${set}/${b.id}`);
  return ids;
}

function oneError(run: Run, pattern: RegExp): void {
  assert.equal(run.code, 1, `exit status: ${run.stdout}${run.stderr}`);
  const lines = errorLines(run);
  assert.equal(lines.length, 1, `one ::error:: line, got: ${run.stdout}`);
  assert.match(lines[0]!, pattern);
  assert.doesNotMatch(lines[0]!, /unexpected failure/);
}

before(async () => {
  work = await tempDir('bad');
  source = path.join(work, 'src');
  await fs.mkdir(source);
  await fs.writeFile(path.join(source, 'a.conf'), 'a = 1\n');
  server = await startFauxqs();
  identity = await generateIdentity();
  const first = await runAction(
    'backup-files',
    { storage: server.url, set: 'conf', source, 'age-recipients': await recipientOf(identity) },
    server.env,
  );
  assert.equal(first.code, 0, first.stdout);
  committedId = first.outputs['backup-id']!;
  // An unfinished backup: artifacts and the in-progress marker, no manifest.
  const storage = openStorage(server.url, { ...process.env, ...server.env });
  await storage.putBytes('conf/2020-01-01-0000-backup-full/in-progress.json', Buffer.from('{}'));
  await storage.putBytes('conf/2020-01-01-0000-backup-full/files.tar.zst.age', Buffer.from('partial'));
});
after(async () => {
  await server.stop();
  await fs.rm(work, { recursive: true, force: true });
});

describe('bad inputs: one clear line, exit 1, nothing committed', () => {
  test('unknown URL scheme', async () => {
    oneError(
      await runAction('backup-files', { storage: 'ftp://host/backups', set: 'conf', source }, server.env),
      /storage: unknown scheme 'ftp:\/\/'.*accepted: .*s3:\/\/bucket\/prefix/,
    );
  });

  test('a bucket that does not exist', async () => {
    oneError(
      await runAction(
        'backup-files',
        { storage: 's3://lb-missing-bucket/x', set: 'conf', source },
        server.env,
      ),
      /the bucket 'lb-missing-bucket' does not exist; create it first/,
    );
  });

  test('missing credentials', async () => {
    const noKeys = { ...server.env };
    delete noKeys.AWS_ACCESS_KEY_ID;
    delete noKeys.AWS_SECRET_ACCESS_KEY;
    oneError(
      await runAction('backup-files', { storage: server.url, set: 'conf', source }, noKeys),
      /no AWS credentials found; set AWS_ACCESS_KEY_ID/,
    );
  });

  test('a source folder the user cannot read', async () => {
    const locked = path.join(work, 'locked');
    await fs.mkdir(locked, { mode: 0o700 });
    await fs.writeFile(path.join(locked, 'x'), 'x');
    const storage = path.join(work, 'open-storage');
    await fs.mkdir(storage, { mode: 0o777 });
    await fs.chmod(storage, 0o777);
    await fs.chmod(work, 0o755);
    const run = await runAction(
      'backup-files',
      { storage, set: 'conf', source: locked },
      {},
      { uid: 65534, gid: 65534 },
    );
    oneError(run, /source: .*locked.* cannot be read \(EACCES\)/);
    assert.deepEqual(await fs.readdir(storage), []);
  });

  test('a source that does not exist', async () => {
    oneError(
      await runAction(
        'backup-files',
        { storage: server.url, set: 'conf', source: '/no/such/folder' },
        server.env,
      ),
      /source: '\/no\/such\/folder' does not exist/,
    );
  });

  test('a target that is not empty', async () => {
    const target = path.join(work, 'full');
    await fs.mkdir(target);
    await fs.writeFile(path.join(target, 'keep'), 'keep');
    oneError(
      await runAction(
        'restore',
        { storage: server.url, set: 'conf', target, 'age-identity': identity },
        server.env,
      ),
      /target: '.*full' is not empty; .*overwrite: true/,
    );
    assert.deepEqual(await fs.readdir(target), ['keep']);
  });

  test('the wrong age identity', async () => {
    const target = path.join(work, 'wrong-key');
    oneError(
      await runAction(
        'restore',
        { storage: server.url, set: 'conf', target, 'age-identity': await generateIdentity() },
        server.env,
      ),
      /age-identity: none of the given keys can decrypt this backup/,
    );
    await assert.rejects(fs.stat(target), { code: 'ENOENT' });
  });

  test('no identity for an encrypted backup', async () => {
    oneError(
      await runAction(
        'restore',
        { storage: server.url, set: 'conf', target: path.join(work, 'no-key') },
        server.env,
      ),
      /is encrypted; give the age identity/,
    );
  });

  test('a backup id that does not exist', async () => {
    oneError(
      await runAction(
        'restore',
        {
          storage: server.url,
          set: 'conf',
          backup: '2019-01-01-0000-backup-full',
          target: path.join(work, 'x'),
        },
        server.env,
      ),
      new RegExp(
        `backup: '2019-01-01-0000-backup-full' does not exist in set 'conf'.*newest: ${committedId}`,
      ),
    );
  });

  test('an uncommitted backup', async () => {
    oneError(
      await runAction(
        'restore',
        {
          storage: server.url,
          set: 'conf',
          backup: '2020-01-01-0000-backup-full',
          target: path.join(work, 'y'),
          'age-identity': identity,
        },
        server.env,
      ),
      /backup: '2020-01-01-0000-backup-full' in set 'conf' was never committed/,
    );
  });

  test('several bad inputs at once: one line each', async () => {
    const run = await runAction(
      'backup-files',
      { storage: server.url, set: 'Bad Set', source, compression: 'lz4', timeout: 'forever' },
      server.env,
    );
    assert.equal(run.code, 1);
    assert.deepEqual(
      errorLines(run)
        .map((l) => l.replace(/^::error::/, '').split(':')[0])
        .sort(),
      ['compression', 'set', 'timeout'],
    );
  });

  test('on the CLI too: one error line and exit 1', async () => {
    const run = await runCli(
      ['restore', '--storage', server.url, '--set', 'conf', '--backup', 'yesterday'],
      server.env,
    );
    assert.equal(run.code, 1);
    assert.equal(
      run.stderr,
      "error: backup: 'yesterday' is not a backup id; accepted: latest, or an id such as 2026-11-21-0315-backup-full (see lifeboat list)\n",
    );
  });

  test('after all of them, the only committed backup is the first one', async () => {
    assert.deepEqual(await committed(), [`conf/${committedId}`]);
  });
});

describe('timeout', () => {
  test('a backup that runs out of time stops, removes what it wrote and commits nothing', async () => {
    const big = path.join(work, 'big');
    await fs.mkdir(big);
    await fs.writeFile(path.join(big, 'data.bin'), Buffer.alloc(64 * 1024 * 1024, 7));
    const before = await committed();
    const run = await runAction(
      'backup-files',
      {
        storage: server.url,
        set: 'slow',
        source: big,
        timeout: '100ms',
        compression: 'gzip',
        'compression-level': '9',
      },
      server.env,
    );
    oneError(
      run,
      /timeout: backup-files did not finish within 100ms; it was stopped and what it wrote was removed/,
    );
    assert.deepEqual(await committed(), before);
    const storage = openStorage(server.url, { ...process.env, ...server.env });
    const left: string[] = [];
    for await (const o of storage.list('slow/')) left.push(o.key);
    assert.deepEqual(left, []);
  });
});

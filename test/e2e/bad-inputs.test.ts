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

/** Every object under `<set>/` in the test bucket: what a run wrote for that set. */
async function objectsOf(set: string): Promise<string[]> {
  const storage = openStorage(server.url, { ...process.env, ...server.env });
  const keys: string[] = [];
  for await (const o of storage.list(`${set}/`)) keys.push(o.key);
  return keys;
}

/** What a run shows in the log: its output but the ::add-mask:: commands, which the runner keeps. */
const printed = (run: Run) =>
  `${run.stdout}${run.stderr}`
    .split('\n')
    .filter((l) => !l.startsWith('::add-mask::'))
    .join('\n');

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

  test('an age recipient with a bad checksum: refused before any work, nothing written', async () => {
    const good = await recipientOf(identity);
    const bad = `${good.slice(0, -1)}${good.at(-1) === 'q' ? 'p' : 'q'}`;
    const run = await runAction(
      'backup-files',
      { storage: server.url, set: 'typo', source, 'age-recipients': bad },
      server.env,
    );
    oneError(
      run,
      /^::error::age-recipients: 'age1.{8}…' is not a valid age recipient \(its checksum or length is wrong/,
    );
    assert.deepEqual(await objectsOf('typo'), []);
  });

  test('a malformed % escape in mysql-url: one line, the URL not repeated', async () => {
    const run = await runAction(
      'dump-mysql',
      { storage: server.url, set: 'db', 'mysql-url': 'mysql://backup:s3cr%zz3t@db.internal' },
      server.env,
    );
    // The runner decodes %25 in a workflow command back to %.
    oneError(
      run,
      /^::error::mysql-url: the password has a malformed %25 escape \(write a %25 itself as %2525\)/,
    );
    assert.doesNotMatch(printed(run), /s3cr/);
    assert.deepEqual(await objectsOf('db'), []);
  });

  test('mysql-url together with host: refused, naming both', async () => {
    const run = await runAction(
      'dump-mysql',
      {
        storage: server.url,
        set: 'db',
        'mysql-url': 'mysql://backup:s3cret@db.internal',
        host: 'db2.internal',
      },
      server.env,
    );
    oneError(
      run,
      /^::error::mysql-url: give either mysql-url or host, port, socket, user, password, not both \(also given: host\)$/,
    );
    assert.doesNotMatch(printed(run), /s3cret/);
  });

  test('a work-dir that does not exist', async () => {
    const missing = path.join(work, 'no-such-work-dir');
    const run = await runAction(
      'verify-restore',
      { storage: server.url, set: 'conf', 'work-dir': missing, 'age-identity': identity },
      server.env,
    );
    oneError(run, /^::error::work-dir: '.*no-such-work-dir' does not exist; accepted: an existing folder/);
    await assert.rejects(fs.stat(missing), { code: 'ENOENT' });
  });

  test('credentials in the storage URL: refused, and never printed', async () => {
    const run = await runAction(
      'backup-files',
      { storage: 's3://AKIAIOSFODNN7EXAMPLE:wJalrXUtnFEMI/K7MDENG@lb-test/x', set: 'conf', source },
      server.env,
    );
    oneError(
      run,
      /^::error::storage: the s3:\/\/ URL has user info or a port \(not shown here: it may hold credentials\)/,
    );
    assert.doesNotMatch(run.stdout + run.stderr + run.summary, /AKIAIOSFODNN7EXAMPLE|wJalrXUtnFEMI|K7MDENG/);
  });

  test('a file:// URL with a query: refused, not read as the folder before it', async () => {
    const folder = path.join(work, 'file-query');
    const run = await runAction(
      'backup-files',
      { storage: `file://${folder}?versioning=on`, set: 'conf', source },
      server.env,
    );
    oneError(run, /^::error::storage: 'file:\/\/.*file-query\?…' has a query or fragment/);
    await assert.rejects(fs.stat(folder), { code: 'ENOENT' });
  });

  test('a timeout longer than a timer can hold (it would fire at once)', async () => {
    const run = await runAction(
      'backup-files',
      { storage: server.url, set: 'long', source, timeout: '30d' },
      server.env,
    );
    oneError(run, /^::error::timeout: '30d' is longer than a timer can wait; accepted: at most 24d20h31m$/);
    assert.deepEqual(await objectsOf('long'), []);
  });

  test('storage given empty (an unset workflow variable): an error, never ./backups', async () => {
    const cwd = path.join(work, 'empty-storage');
    await fs.mkdir(cwd);
    const run = await runAction('backup-files', { storage: '', set: 'conf', source }, {}, { cwd });
    oneError(
      run,
      /^::error::storage: given but empty \(an unset variable, such as \$\{\{ vars\.BACKUP_STORAGE \}\}\?\)/,
    );
    assert.deepEqual(await fs.readdir(cwd), []);
  });

  test('no storage on a GitHub-hosted runner: refused with why; elsewhere a ::warning:: and ./backups', async () => {
    const cwd = path.join(work, 'no-storage');
    await fs.mkdir(cwd);
    for (const umbrella of [false, true]) {
      const run = umbrella
        ? await runAction(
            undefined,
            { command: 'backup-files', set: 'conf', source },
            { RUNNER_ENVIRONMENT: 'github-hosted' },
            { cwd },
          )
        : await runAction(
            'backup-files',
            { set: 'conf', source },
            { RUNNER_ENVIRONMENT: 'github-hosted' },
            { cwd },
          );
      oneError(
        run,
        /^::error::storage: not given, so the backup would go into \.\/backups on this GitHub-hosted runner, which is deleted when the job ends; give storage/,
      );
      assert.deepEqual(await fs.readdir(cwd), []);
    }
    const run = await runAction(
      'backup-files',
      { set: 'conf', source },
      { RUNNER_ENVIRONMENT: 'self-hosted' },
      { cwd },
    );
    assert.equal(run.code, 0, run.stdout);
    const warnings = run.stdout.split('\n').filter((l) => l.startsWith('::warning::'));
    assert.match(warnings.join('\n'), /^::warning::storage: not given; the backup goes into \.\/backups/m);
    // Nor is a backup without encryption silent.
    assert.match(
      warnings.join('\n'),
      /^::warning::not encrypted: whoever can read the storage can read this backup/m,
    );
    assert.equal((await fs.readdir(path.join(cwd, 'backups', 'conf'))).length, 1);
  });

  test('a failed step writes a job summary: the error, and what was (not) written', async () => {
    const refused = await runAction(
      'backup-files',
      { storage: server.url, set: 'Bad Set', source, compression: 'lz4' },
      server.env,
    );
    assert.equal(refused.code, 1);
    assert.match(refused.summary, /backup-files failed/);
    assert.match(refused.summary, /compression: &#39;lz4&#39; is not accepted/);
    assert.match(refused.summary, /Nothing was written: the inputs were refused before any work started\./);
    const failed = await runAction(
      'backup-files',
      { storage: 's3://lb-missing-bucket/x', set: 'conf', source },
      server.env,
    );
    assert.equal(failed.code, 1);
    assert.match(failed.summary, /the bucket &#39;lb-missing-bucket&#39; does not exist/);
    assert.match(failed.summary, /No backup was committed/);
  });

  test('on the CLI, a flag given twice is one error line', async () => {
    const run = await runCli(
      ['list', '--storage', server.url, '--storage', path.join(work, 'other')],
      server.env,
    );
    assert.equal(run.code, 1);
    assert.equal(run.stderr, 'error: --storage: given more than once; give each flag once\n');
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

/**
 * A folder storage on a full disk, a read-only file system, a folder this user may not
 * write, and one that does not exist: each is a StorageError naming the path and the fix
 * (exit 1), and reading (list, restore) needs neither write access nor creates anything.
 * Real conditions, not mocks: a small tmpfs for ENOSPC and a read-only bind mount for EROFS
 * (both need root, which ignores file modes), and a child process as uid 65534 (nobody) for
 * EACCES.
 */
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { after, before, describe, test } from 'node:test';
import { pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import { describeFailure, exitCodeOf } from '../../shared/action/run.ts';
import { Catalog } from '../../shared/catalog/catalog.ts';
import { restoreFiles } from '../../shared/files/restore.ts';
import { silentLogger } from '../../shared/pipeline/progress.ts';
import { openStorage } from '../../shared/storage/open.ts';
import { StorageError } from '../../shared/storage/storage.ts';
import { backupFolder } from '../harness/catalog.ts';
import { generated } from '../harness/data.ts';
import { repoRoot } from '../harness/runner.ts';
import { tempDir } from '../harness/servers.ts';

/** The folder storage's temporary files (what a reader never sees). */
const partialPrefix = '.lifeboat-partial-';
const run = promisify(execFile);
const root = process.getuid?.() === 0;
const needsRoot = { skip: !root && 'needs root (mount)' };

async function expectStorageError(
  promise: Promise<unknown>,
  code: StorageError['code'],
): Promise<StorageError> {
  try {
    await promise;
  } catch (error) {
    assert.ok(error instanceof StorageError, `expected a StorageError, got ${error}`);
    assert.equal(error.code, code, error.message);
    assert.equal(exitCodeOf(describeFailure(error)), 1, 'a storage error exits 1');
    return error;
  }
  assert.fail(`expected a StorageError ${code}`);
}

async function partialsUnder(dir: string): Promise<string[]> {
  const entries = await fs.readdir(dir, { recursive: true });
  return entries.filter((e) => path.basename(e).startsWith(partialPrefix));
}

let work: string;
let source: string;
before(async () => {
  work = await tempDir('folder-errors');
  await fs.chmod(work, 0o755);
  source = path.join(work, 'source');
  await fs.mkdir(source);
  await pipeline(generated(8 << 20, 21), createWriteStream(path.join(source, 'data.bin')));
  await fs.writeFile(path.join(source, 'small.conf'), 'a = 1\n');
  await fs.chmod(path.join(source, 'data.bin'), 0o644);
});
after(() => fs.rm(work, { recursive: true, force: true }));

describe('a full disk (a 4 MiB tmpfs)', needsRoot, () => {
  let mount: string;
  before(async () => {
    mount = path.join(work, 'small-disk');
    await fs.mkdir(mount);
    await run('mount', ['-t', 'tmpfs', '-o', 'size=4m', 'tmpfs', mount]);
  });
  after(() => run('umount', [mount]));

  test('a backup that fills the disk exits 1 naming the path and the fix, and leaves no temporary file', async () => {
    const storage = openStorage(path.join(mount, 'backups'));
    const error = await expectStorageError(
      backupFolder({ storage, set: 'full-disk', source, compression: 'none' }),
      'full',
    );
    assert.match(
      error.message,
      new RegExp(`no space left on the device writing ${mount}/backups/full-disk/`),
    );
    assert.match(
      error.message,
      /\(ENOSPC\); free space on that disk \(prune-retention removes old backups\)/,
    );
    assert.deepEqual(await partialsUnder(mount), []);
  });
});

describe('a read-only file system (a read-only bind mount)', needsRoot, () => {
  let folder: string;
  let mount: string;
  before(async () => {
    folder = path.join(work, 'ro-source');
    await backupFolder({ storage: openStorage(folder), set: 'etc', source });
    mount = path.join(work, 'ro');
    await fs.mkdir(mount);
    await run('mount', ['--bind', folder, mount]);
    await run('mount', ['-o', 'remount,bind,ro', mount]);
  });
  after(() => run('umount', [mount]));

  test('check for reading passes and the backups can be listed and restored', async () => {
    const storage = openStorage(mount);
    await storage.check('read');
    const manifest = await new Catalog(storage).resolve('etc', 'latest');
    const target = path.join(work, 'restored-from-ro');
    await restoreFiles({ storage, manifest, target, overwrite: false, dryRun: false, logger: silentLogger });
    assert.deepEqual(await fs.readFile(path.join(target, 'small.conf'), 'utf8'), 'a = 1\n');
  });

  test('a backup into it exits 1 saying the file system is read-only', async () => {
    const storage = openStorage(mount);
    const error = await expectStorageError(storage.check(), 'read-only');
    assert.match(
      error.message,
      new RegExp(
        `the file system is read-only writing the folder ${mount} \\(EROFS\\); remount it read-write`,
      ),
    );
    await expectStorageError(backupFolder({ storage, set: 'etc', source }), 'read-only');
  });
});

/** Runs `code` (an ES module importing `lifeboat`: the repository's shared/) as uid 65534. */
function asNobody(code: string): Promise<{ code: number; stdout: string; stderr: string }> {
  const lifeboat = pathToFileURL(path.join(repoRoot, 'shared')).href;
  return new Promise((resolve, reject) => {
    const child = spawn(
      process.execPath,
      ['--input-type=module', '-e', code.replaceAll('lifeboat/', `${lifeboat}/`)],
      {
        uid: 65534,
        gid: 65534,
        cwd: work,
        env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: work },
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d) => (stderr += d));
    child.once('error', reject);
    child.once('close', (exit) => resolve({ code: exit ?? -1, stdout, stderr }));
  });
}

describe('a folder this user may not write (a child process as uid 65534)', {
  skip: !root && 'needs root (setuid)',
}, () => {
  let folder: string;
  before(async () => {
    // Owned by root, mode 0755: nobody may read it and not write it.
    folder = path.join(work, 'root-owned');
    await backupFolder({ storage: openStorage(folder), set: 'etc', source });
    await fs.chmod(folder, 0o755);
  });

  test('a backup exits 1 naming the folder and the fix; reading works', async () => {
    const result = await asNobody(`
      import { describeFailure, exitCodeOf } from 'lifeboat/action/run.ts';
      import { Catalog } from 'lifeboat/catalog/catalog.ts';
      import { backupFiles } from 'lifeboat/files/backup.ts';
      import { silentLogger } from 'lifeboat/pipeline/progress.ts';
      import { openStorage } from 'lifeboat/storage/open.ts';
      const storage = openStorage(${JSON.stringify(folder)});
      await storage.check('read');
      const listed = (await new Catalog(storage).listBackups('etc')).filter((b) => b.committed).length;
      const failure = await backupFiles({ storage, set: 'etc', source: ${JSON.stringify(source)}, include: [], exclude: [],
        compression: 'zstd', tags: [], logger: silentLogger }).then(() => undefined, (e) => e);
      console.log(JSON.stringify({ listed, name: failure?.name, code: failure?.code, message: failure?.message,
        exit: failure && exitCodeOf(describeFailure(failure)) }));
    `);
    assert.equal(result.code, 0, result.stderr);
    const out = JSON.parse(result.stdout);
    assert.equal(out.listed, 1);
    assert.equal(out.name, 'StorageError', out.message);
    assert.equal(out.code, 'denied');
    assert.equal(out.exit, 1);
    assert.match(
      out.message,
      new RegExp(
        `permission denied writing the folder ${folder} \\(EACCES\\); run Lifeboat as a user that may write there, or fix the owner and mode`,
      ),
    );
  });
});

describe('a storage folder that does not exist', () => {
  test('check for reading refuses it naming the path, and creates nothing; a backup may create it', async () => {
    const typo = path.join(work, 'typo', 'a', 'b');
    const storage = openStorage(typo);
    const error = await expectStorageError(storage.check('read'), 'no-bucket');
    assert.match(error.message, new RegExp(`the folder ${typo} does not exist; check the storage input`));
    await assert.rejects(fs.access(path.join(work, 'typo')), { code: 'ENOENT' });
    await storage.check();
    await fs.access(typo);
  });
});

/**
 * list and restore through the built bundle, as a runner runs them, on storage they may only
 * read: a folder owned by another user (the step runs as uid 65534, since root ignores file
 * modes) and a read-only bind mount (as root); and on a storage folder that does not exist,
 * which they must refuse, naming it, instead of creating it and listing "0 backups".
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fs from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { errorLines, runAction } from '../harness/runner.ts';
import { tempDir } from '../harness/servers.ts';

const run = promisify(execFile);
const root = process.getuid?.() === 0;
const nobody = { uid: 65534, gid: 65534 };

let work: string;
let storage: string;
before(async () => {
  work = await tempDir('ro-storage');
  await fs.chmod(work, 0o755);
  await fs.mkdir(path.join(work, 'src'));
  await fs.writeFile(path.join(work, 'src', 'a.conf'), 'a = 1\n');
  storage = path.join(work, 'backups');
  const backup = await runAction(
    'backup-files',
    { storage, set: 'conf', source: path.join(work, 'src') },
    {},
  );
  assert.equal(backup.code, 0, backup.stdout);
});
after(() => fs.rm(work, { recursive: true, force: true }));

test('list of a storage folder that does not exist exits 1 naming it, and creates nothing', async () => {
  const typo = path.join(work, 'typo', 'a', 'b');
  const list = await runAction('list', { storage: typo }, {});
  assert.equal(list.code, 1, list.stdout);
  assert.match(
    errorLines(list).join('\n'),
    new RegExp(`the folder ${typo} does not exist; check the storage input`),
  );
  await assert.rejects(fs.access(path.join(work, 'typo')), { code: 'ENOENT' });
  const restore = await runAction(
    'restore',
    { storage: typo, set: 'conf', target: path.join(work, 'never') },
    {},
  );
  assert.equal(restore.code, 1, restore.stdout);
  await assert.rejects(fs.access(path.join(work, 'typo')), { code: 'ENOENT' });
});

describe('storage this user may only read', {
  skip: !root && 'needs root (to run the step as uid 65534)',
}, () => {
  test('as another user (uid 65534): list and restore work on a folder it may not write', async (t) => {
    // The runner's step files must be writable by that user: no umask while they are made.
    const umask = process.umask(0);
    t.after(() => process.umask(umask));
    const list = await runAction('list', { storage }, {}, nobody);
    assert.equal(list.code, 0, list.stdout);
    assert.equal(list.outputs.count, '1');
    // The target's parent is the user's own (restore stages its files beside the target).
    const home = path.join(work, 'nobody-home');
    await fs.mkdir(home);
    await fs.chown(home, nobody.uid, nobody.gid);
    const target = path.join(home, 'restored');
    const restore = await runAction('restore', { storage, set: 'conf', target }, {}, nobody);
    assert.equal(restore.code, 0, restore.stdout);
    assert.equal(await fs.readFile(path.join(target, 'a.conf'), 'utf8'), 'a = 1\n');
  });

  test('as root: list and restore work on a read-only bind mount', async () => {
    const mount = path.join(work, 'ro');
    await fs.mkdir(mount);
    await run('mount', ['--bind', storage, mount]);
    try {
      await run('mount', ['-o', 'remount,bind,ro', mount]);
      const list = await runAction('list', { storage: mount }, {});
      assert.equal(list.code, 0, list.stdout);
      assert.equal(list.outputs.count, '1');
      const target = path.join(work, 'restored-from-ro');
      const restore = await runAction('restore', { storage: mount, set: 'conf', target }, {});
      assert.equal(restore.code, 0, restore.stdout);
      assert.equal(await fs.readFile(path.join(target, 'a.conf'), 'utf8'), 'a = 1\n');
      const backup = await runAction(
        'backup-files',
        { storage: mount, set: 'conf', source: path.join(work, 'src') },
        {},
      );
      assert.equal(backup.code, 1, backup.stdout);
      assert.match(
        errorLines(backup).join('\n'),
        /the file system is read-only .*\(EROFS\); remount it read-write/,
      );
    } finally {
      await run('umount', [mount]);
    }
  });
});

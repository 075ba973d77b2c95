/** The files engine and the commit protocol, end to end on real storage (a folder and Azurite). */
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { generateIdentity } from 'age-encryption';
import { makeReader, runCommand } from '../../shared/action/run.ts';
import type { Command } from '../../shared/action/spec.ts';
import { Catalog, inProgressName, manifestName } from '../../shared/catalog/catalog.ts';
import type { Manifest } from '../../shared/catalog/manifest.ts';
import { listCatalog } from '../../shared/commands/list.ts';
import { restoreCommand } from '../../shared/commands/restore.ts';
import { UserError } from '../../shared/errors.ts';
import { backupFiles, type FilesBackupOptions } from '../../shared/files/backup.ts';
import { restoreFiles } from '../../shared/files/restore.ts';
import { IntegrityError } from '../../shared/pipeline/artifact.ts';
import { recipientOf } from '../../shared/pipeline/encryption.ts';
import { type Logger, silentLogger } from '../../shared/pipeline/progress.ts';
import { openStorage } from '../../shared/storage/open.ts';
import type { Storage } from '../../shared/storage/storage.ts';
import { backupFolder, type CraftedEntry, writeCraftedBackup } from '../harness/catalog.ts';
import { startAzurite, type TestServer, tempDir } from '../harness/servers.ts';
import { diffTrees, makeHostileTree } from '../harness/tree.ts';

let work: string;
let source: string;
let storage: Storage;
let catalog: Catalog;

const backup = (overrides: Partial<FilesBackupOptions> = {}) =>
  backupFolder({ storage, set: 'etc-nova', source, ...overrides });

async function leftovers(dir: string): Promise<string[]> {
  return (await fs.readdir(dir)).filter((n) => n.includes('lifeboat-'));
}

async function committedIds(set = 'etc-nova', s = storage): Promise<string[]> {
  return (await new Catalog(s).listBackups(set)).filter((b) => b.committed).map((b) => b.id);
}

/** Replaces a stored object's bytes (the fs provider keeps objects as plain files). */
async function tamper(manifest: Manifest, change: (bytes: Buffer) => Buffer): Promise<void> {
  const file = path.join(work, 'backups', manifest.set, manifest.id, manifest.artifacts[0]!.name);
  await fs.writeFile(file, change(await fs.readFile(file)));
}

before(async () => {
  work = await tempDir('files');
  source = path.join(work, 'source');
  await makeHostileTree(source);
  storage = openStorage(path.join(work, 'backups'));
  catalog = new Catalog(storage);
});
after(() => fs.rm(work, { recursive: true, force: true }));

describe('backup and restore of a folder', () => {
  for (const compression of ['zstd', 'gzip', 'none'] as const) {
    test(`${compression}: every name, mode, owner, mtime, symlink and byte survives`, async () => {
      const manifest = await backup({ compression, set: `c-${compression}` });
      assert.equal(manifest.kind, 'files');
      assert.match(manifest.artifacts[0]!.name, /^files\.tar(\.zst|\.gz)?$/);
      const target = path.join(work, `restored-${compression}`);
      const result = await restoreFiles({
        storage,
        manifest,
        target,
        overwrite: false,
        dryRun: false,
        logger: silentLogger,
      });
      assert.deepEqual(result.facts, manifest.facts);
      assert.deepEqual(await diffTrees(source, target), []);
      assert.deepEqual(await leftovers(work), []);
    });
  }

  test('the manifest counts what was backed up, and says what was left out', async () => {
    const manifest = await backup({ set: 'counted', exclude: ['*.bin', 'level-3-*'] });
    const facts = manifest.facts as { files: number; symlinks: number; bytes: number; directories: number };
    assert.equal(facts.symlinks, 4);
    assert.equal(facts.directories, 6); // empty-dir, locked-dir, shared-dir, level-0..2 (level-3 excluded with all below)
    assert.deepEqual(manifest.contents.excluded, ['*.bin', 'level-3-*']);
    assert.ok(!JSON.stringify(await fs.readdir(source)).includes('lifeboat'));
  });

  test('two backups in the same minute get distinct ids', async () => {
    const now = () => new Date('2026-11-21T03:15:30Z');
    const first = await backup({ set: 'same-minute', now });
    const second = await backup({ set: 'same-minute', now });
    assert.equal(first.id, '2026-11-21-0315-backup-full');
    assert.equal(second.id, '2026-11-21-0315-backup-full-2');
    assert.equal((await catalog.resolve('same-minute', 'latest')).id, second.id);
  });

  test('dry run reads and checks everything and writes nothing', async () => {
    const manifest = await backup({ set: 'dry' });
    const target = path.join(work, 'dry-target');
    const result = await restoreFiles({
      storage,
      manifest,
      target,
      overwrite: false,
      dryRun: true,
      logger: silentLogger,
    });
    assert.deepEqual(result.facts, manifest.facts);
    await assert.rejects(fs.stat(target), { code: 'ENOENT' });
    assert.deepEqual(await leftovers(work), []);
  });
});

test('a file written in the last half millisecond of a second keeps its second, as tar(1) stores it', async () => {
  const folder = path.join(work, 'late-second');
  await fs.mkdir(folder);
  const file = path.join(folder, 'late.txt');
  await fs.writeFile(file, 'written at .9997\n');
  await fs.utimes(file, 1796246025.9997, 1796246025.9997);
  await fs.utimes(folder, 1796246000, 1796246000);
  const manifest = await backup({ source: folder, set: 'late-second' });
  const target = path.join(work, 'late-second-restored');
  await restoreFiles({ storage, manifest, target, overwrite: false, dryRun: false, logger: silentLogger });
  assert.equal((await fs.stat(path.join(target, 'late.txt'))).mtimeMs, 1796246025_000);
  assert.deepEqual(await diffTrees(folder, target), []);
});

describe('encryption', () => {
  let identity: string;
  before(async () => {
    identity = await generateIdentity();
  });

  test('to a recipient: restorable with the identity only', async () => {
    const manifest = await backup({ set: 'enc', encryption: { recipients: [await recipientOf(identity)] } });
    assert.equal(manifest.artifacts[0]!.name, 'files.tar.zst.age');
    assert.deepEqual(manifest.artifacts[0]!.encryption, { type: 'age', recipients: 1, passphrase: false });
    const target = path.join(work, 'enc-out');
    await assert.rejects(
      restoreFiles({ storage, manifest, target, overwrite: false, dryRun: false, logger: silentLogger }),
      (e: unknown) => e instanceof UserError && /is encrypted; give the age identity/.test(e.message),
    );
    await assert.rejects(
      restoreFiles({
        storage,
        manifest,
        target,
        overwrite: false,
        dryRun: false,
        logger: silentLogger,
        keys: { identities: [await generateIdentity()] },
      }),
      (e: unknown) => e instanceof UserError && /none of the given keys can decrypt/.test(e.message),
    );
    await assert.rejects(fs.stat(target), { code: 'ENOENT' });
    assert.deepEqual(await leftovers(work), []);
    await restoreFiles({
      storage,
      manifest,
      target,
      overwrite: false,
      dryRun: false,
      logger: silentLogger,
      keys: { identities: [identity] },
    });
    assert.deepEqual(await diffTrees(source, target), []);
  });

  test('with a passphrase', async () => {
    const manifest = await backup({
      set: 'pass',
      encryption: { passphrase: 'correct horse battery staple' },
    });
    const target = path.join(work, 'pass-out');
    await restoreFiles({
      storage,
      manifest,
      target,
      overwrite: false,
      dryRun: false,
      logger: silentLogger,
      keys: { identities: [], passphrase: 'correct horse battery staple' },
    });
    assert.deepEqual(await diffTrees(source, target), []);
  });
});

describe('a damaged backup never leaves a target looking restored', () => {
  let manifest: Manifest;
  before(async () => {
    manifest = await backup({ set: 'damaged', compression: 'zstd' });
  });

  const attempts: [string, (b: Buffer) => Buffer][] = [
    [
      'one byte flipped in the middle',
      (b) => {
        const c = Buffer.from(b);
        c[c.length >> 1]! ^= 0x01;
        return c;
      },
    ],
    ['truncated', (b) => b.subarray(0, b.length - 1000)],
    ['bytes appended', (b) => Buffer.concat([b, Buffer.from('trailing')])],
  ];
  for (const [what, change] of attempts) {
    test(what, async () => {
      const original = await fs.readFile(
        path.join(work, 'backups', manifest.set, manifest.id, manifest.artifacts[0]!.name),
      );
      await tamper(manifest, change);
      try {
        const target = path.join(work, 'damaged-out');
        await assert.rejects(
          restoreFiles({ storage, manifest, target, overwrite: false, dryRun: false, logger: silentLogger }),
          (e: unknown) => e instanceof IntegrityError && /damaged|truncated|does not match/.test(e.message),
        );
        await assert.rejects(fs.stat(target), { code: 'ENOENT' });
        assert.deepEqual(await leftovers(work), []);
      } finally {
        await tamper(manifest, () => original);
      }
    });
  }

  test('a manifest whose counts were edited is caught', async () => {
    const edited = { ...manifest, facts: { ...manifest.facts, files: (manifest.facts.files as number) + 1 } };
    await assert.rejects(
      restoreFiles({
        storage,
        manifest: edited,
        target: path.join(work, 'edited-out'),
        overwrite: false,
        dryRun: false,
        logger: silentLogger,
      }),
      /the archive holds \d+ files, the manifest records/,
    );
    assert.deepEqual(await leftovers(work), []);
  });

  test('a failed overwrite leaves the old target as it was', async () => {
    const target = path.join(work, 'keep-me');
    await fs.mkdir(target);
    await fs.writeFile(path.join(target, 'precious.txt'), 'do not lose me');
    const original = await fs.readFile(
      path.join(work, 'backups', manifest.set, manifest.id, manifest.artifacts[0]!.name),
    );
    await tamper(manifest, (b) => b.subarray(0, 100));
    try {
      await assert.rejects(
        restoreFiles({ storage, manifest, target, overwrite: true, dryRun: false, logger: silentLogger }),
        IntegrityError,
      );
    } finally {
      await tamper(manifest, () => original);
    }
    assert.deepEqual(await fs.readdir(target), ['precious.txt']);
    assert.deepEqual(await leftovers(work), []);
  });
});

describe('targets', () => {
  test('a non-empty target is refused; overwrite replaces it only after success', async () => {
    const manifest = await backup({ set: 'overwrite' });
    const target = path.join(work, 'occupied');
    await fs.mkdir(target);
    await fs.writeFile(path.join(target, 'old.txt'), 'old');
    await assert.rejects(
      restoreFiles({ storage, manifest, target, overwrite: false, dryRun: false, logger: silentLogger }),
      (e: unknown) =>
        e instanceof UserError && /target: '.*occupied' is not empty; .*overwrite: true/.test(e.message),
    );
    assert.deepEqual(await fs.readdir(target), ['old.txt']);
    await restoreFiles({ storage, manifest, target, overwrite: true, dryRun: false, logger: silentLogger });
    assert.deepEqual(await diffTrees(source, target), []);
    assert.deepEqual(await leftovers(work), []);
  });

  test('an empty existing folder is a fine target; a file is not', async () => {
    const manifest = await backup({ set: 'empty-target' });
    const target = path.join(work, 'empty-target');
    await fs.mkdir(target);
    await restoreFiles({ storage, manifest, target, overwrite: false, dryRun: false, logger: silentLogger });
    assert.deepEqual(await diffTrees(source, target), []);
    const file = path.join(work, 'a-file');
    await fs.writeFile(file, 'x');
    await assert.rejects(
      restoreFiles({ storage, manifest, target: file, overwrite: true, dryRun: false, logger: silentLogger }),
      /is not a folder/,
    );
  });
});

describe('a hostile archive writes nothing outside its target', () => {
  // Whoever can write the bucket writes these backups: the sha256, sizes and counts in their
  // manifests all match, so only the restore itself stands between them and the disk.
  let round = 0;
  let outside: string;
  let target: string;
  /** A new 'outside' folder holding a secret, and a target holding a precious file. */
  const fresh = async () => {
    round++;
    outside = path.join(work, `outside-${round}`);
    target = path.join(work, `hostile-${round}`);
    await fs.mkdir(outside);
    await fs.writeFile(path.join(outside, 'secret'), 'outside\n');
    await fs.mkdir(target);
    await fs.writeFile(path.join(target, 'precious.txt'), 'do not lose me');
  };

  const restore = (manifest: Manifest, more: { dryRun?: boolean; preserveOwner?: boolean } = {}) =>
    restoreFiles({
      storage,
      manifest,
      target,
      overwrite: true,
      dryRun: false,
      logger: silentLogger,
      ...more,
    });

  /** The restore is refused with exactly `message`; outside, the target and the parent are as they were. */
  async function assertRefused(entries: CraftedEntry[], message: (outside: string) => string) {
    const manifest = await writeCraftedBackup(storage, `hostile-${round}`, entries);
    await assert.rejects(
      restore(manifest),
      (e: unknown) => e instanceof UserError && e.message === message(outside),
    );
    assert.deepEqual(await fs.readdir(outside, { recursive: true }), ['secret']);
    assert.equal((await fs.stat(path.join(outside, 'secret'))).nlink, 1);
    assert.deepEqual(await fs.readdir(target), ['precious.txt']);
    assert.equal(await fs.readFile(path.join(target, 'precious.txt'), 'utf8'), 'do not lose me');
    assert.deepEqual(await leftovers(work), []);
    return manifest;
  }

  const through =
    "backup: the archive entry 'p/new/evil.sh' would be written through the symlink 'p'; nothing was restored";

  test('a file through a symlink of the archive is refused, in a dry run too', async () => {
    await fresh();
    const manifest = await assertRefused(
      [
        { name: 'p', type: 'symlink', linkname: outside },
        { name: 'p/new/evil.sh', content: 'echo owned\n', mode: 0o755 },
      ],
      () => through,
    );
    await assert.rejects(restore(manifest, { dryRun: true }), { message: through });
  });

  test('a symlink through a symlink of the archive is refused', async () => {
    await fresh();
    await assertRefused(
      [
        { name: 'p', type: 'symlink', linkname: outside },
        { name: 'p/new/evil.sh', type: 'symlink', linkname: '/bin/sh' },
      ],
      () => through,
    );
  });

  test('a folder through a symlink of the archive is refused', async () => {
    await fresh();
    await assertRefused(
      [
        { name: 'p', type: 'symlink', linkname: outside },
        { name: 'p/new/', type: 'directory' },
      ],
      () =>
        "backup: the archive entry 'p/new/' would be written through the symlink 'p'; nothing was restored",
    );
  });

  test('a symlink over a folder the archive already filled is refused', async () => {
    await fresh();
    await assertRefused(
      [
        { name: 'p/new/evil.sh', content: 'echo owned\n' },
        { name: 'p', type: 'symlink', linkname: outside },
      ],
      () =>
        "backup: the archive entry 'p' would replace what an earlier entry restored there; nothing was restored",
    );
  });

  test("'..' and absolute names are refused", async () => {
    await fresh();
    await assertRefused(
      [
        { name: 'ok.txt', content: 'fine' },
        { name: `../outside-${round}/escaped.txt`, content: 'evil' },
      ],
      () =>
        `backup: the archive entry '../outside-${round}/escaped.txt' points outside the restore folder; nothing was restored`,
    );
    await fresh();
    await assertRefused(
      [{ name: path.join(outside, 'absolute.txt'), content: 'evil' }],
      (o) =>
        `backup: the archive entry '${o}/absolute.txt' points outside the restore folder; nothing was restored`,
    );
  });

  test('a hard link to a file outside is refused', async () => {
    await fresh();
    await assertRefused(
      [{ name: 'h', type: 'link', linkname: path.join(outside, 'secret') }],
      (o) =>
        `backup: the archive entry 'h' is a hard link to '${o}/secret', which points outside the restore folder; nothing was restored`,
    );
    await fresh();
    await assertRefused(
      [{ name: 'h', type: 'link', linkname: `../outside-${round}/secret` }],
      () =>
        `backup: the archive entry 'h' is a hard link to '../outside-${round}/secret', which points outside the restore folder; nothing was restored`,
    );
  });

  test('a hard link through a symlink, or to one, is refused', async () => {
    await fresh();
    await assertRefused(
      [
        { name: 'p', type: 'symlink', linkname: outside },
        { name: 'h', type: 'link', linkname: 'p/secret' },
      ],
      () =>
        "backup: the archive entry 'h' is a hard link to 'p/secret', through the symlink 'p'; nothing was restored",
    );
    await fresh();
    await assertRefused(
      [
        { name: 's', type: 'symlink', linkname: path.join(outside, 'secret') },
        { name: 'h', type: 'link', linkname: 's' },
      ],
      () =>
        "backup: the archive entry 'h' is a hard link to 's', which is not a file restored before it; nothing was restored",
    );
  });

  test('a hard link to a file restored before it is restored', async () => {
    await fresh();
    const manifest = await writeCraftedBackup(storage, `hostile-${round}`, [
      { name: 'dir/', type: 'directory' },
      { name: 'dir/a.txt', content: 'shared\n' },
      { name: 'b.txt', type: 'link', linkname: 'dir/a.txt' },
    ]);
    await restore(manifest);
    const [a, b] = await Promise.all([
      fs.stat(path.join(target, 'dir', 'a.txt')),
      fs.stat(path.join(target, 'b.txt')),
    ]);
    assert.equal(a.ino, b.ino);
    assert.equal(a.nlink, 2);
  });

  test('devices and FIFOs are left out with a warning', async () => {
    await fresh();
    const manifest = await writeCraftedBackup(storage, `hostile-${round}`, [
      { name: 'fifo', type: 'fifo' },
      { name: 'null', type: 'character-device', devmajor: 1, devminor: 3 },
      { name: 'ok.txt', content: 'fine' },
    ]);
    const warnings: string[] = [];
    await restoreFiles({
      storage,
      manifest,
      target,
      overwrite: true,
      dryRun: false,
      logger: { info() {}, warn: (line) => warnings.push(line) },
    });
    assert.deepEqual(await fs.readdir(target), ['ok.txt']);
    assert.deepEqual(warnings, [
      'fifo: a fifo entry is not restored',
      'null: a character-device entry is not restored',
    ]);
  });

  test('setuid and setgid bits of files only with preserve-owner; folders keep setgid and sticky', async () => {
    await fresh();
    const manifest = await writeCraftedBackup(storage, `hostile-${round}`, [
      { name: 'shared/', type: 'directory', mode: 0o3775 },
      { name: 'su', content: '#!/bin/sh\n', mode: 0o4755 },
      { name: 'sg', content: '#!/bin/sh\n', mode: 0o2755 },
      { name: 'sticky', content: 'x', mode: 0o1644 },
    ]);
    const modes = async () =>
      Object.fromEntries(
        await Promise.all(
          ['shared', 'su', 'sg', 'sticky'].map(async (n) => [
            n,
            (await fs.stat(path.join(target, n))).mode & 0o7777,
          ]),
        ),
      );
    await restore(manifest);
    assert.deepEqual(await modes(), { shared: 0o3775, su: 0o755, sg: 0o755, sticky: 0o644 });
    await restore(manifest, { preserveOwner: true });
    assert.deepEqual(await modes(), { shared: 0o3775, su: 0o4755, sg: 0o2755, sticky: 0o1644 });
  });

  test('owners only with preserve-owner (as root), set on a symlink itself and never on what it points at', {
    skip: process.getuid?.() !== 0 && 'needs root',
  }, async () => {
    await fresh();
    const old = new Date('2001-02-03T04:05:06Z');
    const owned = { uid: 1234, gid: 1234, mtime: old };
    const manifest = await writeCraftedBackup(storage, `hostile-${round}`, [
      { name: 'dir/', type: 'directory', ...owned },
      { name: 'dir/file', content: 'x', ...owned },
      { name: 'link', type: 'symlink', linkname: path.join(outside, 'secret'), ...owned },
    ]);
    const secret = await fs.stat(path.join(outside, 'secret'));
    const owners = async () =>
      Promise.all(['dir', 'dir/file', 'link'].map(async (n) => (await fs.lstat(path.join(target, n))).uid));
    await restore(manifest);
    assert.deepEqual(await owners(), [0, 0, 0]);
    await restore(manifest, { preserveOwner: true });
    assert.deepEqual(await owners(), [1234, 1234, 1234]);
    assert.equal((await fs.lstat(path.join(target, 'link'))).mtimeMs, old.getTime());
    const after = await fs.stat(path.join(outside, 'secret'));
    assert.deepEqual([after.uid, after.gid, after.mtimeMs], [secret.uid, secret.gid, secret.mtimeMs]);
  });
});

describe('the commit protocol', () => {
  test('a backup without a manifest is not listed, not latest, and refused by id', async () => {
    const good = await backup({ set: 'protocol', now: () => new Date('2026-11-20T01:00:00Z') });
    const pending = await catalog.begin('protocol', 'full', new Date('2026-11-21T01:00:00Z'));
    await storage.putBytes(pending.key('files.tar.zst'), Buffer.from('half an upload'));
    assert.deepEqual(await committedIds('protocol'), [good.id]);
    assert.equal((await catalog.resolve('protocol', 'latest')).id, good.id);
    await assert.rejects(
      catalog.resolve('protocol', pending.id),
      (e: unknown) => e instanceof UserError && /was never committed/.test(e.message),
    );
    await assert.rejects(
      catalog.resolve('protocol', '2020-01-01-0000-backup-full'),
      /does not exist in set 'protocol'.*newest: /,
    );
    await assert.rejects(catalog.resolve('nothing-here', 'latest'), /has no committed backup/);
  });

  test('list shows size, age and the newest verification record of each backup', async () => {
    const older = await backup({ set: 'verified', now: () => new Date('2026-11-20T03:15:00Z') });
    const newer = await backup({ set: 'verified', now: () => new Date('2026-11-21T03:15:00Z') });
    const record = (at: string, passed: boolean) => ({
      format: 1 as const,
      backupId: older.id,
      set: 'verified',
      at,
      passed,
      checks: [{ name: 'sha256', passed }],
      tool: { name: 'lifeboat' as const, version: '0.1.0' },
    });
    await catalog.recordVerification(record('2026-11-20T04:00:00.000Z', false));
    await catalog.recordVerification(record('2026-11-20T05:00:00.000Z', true));
    const listing = await listCatalog(catalog, 'verified', new Date('2026-11-21T03:15:00Z'));
    assert.deepEqual(
      listing.backups.map((b) => [b.id, b.lastVerification]),
      [
        [newer.id, null],
        [older.id, { at: '2026-11-20T05:00:00.000Z', passed: true }],
      ],
    );
    assert.ok(listing.backups[1]!.ageSeconds > 86_000);
    assert.ok(listing.backups[0]!.bytes > 0);
  });

  test('a failed backup removes what it wrote and commits nothing', async () => {
    const controller = new AbortController();
    const logger: Logger = { info: () => controller.abort(new Error('stopped by the test')), warn() {} };
    await assert.rejects(
      backup({ set: 'aborted', logger, signal: controller.signal }),
      /stopped by the test|aborted/i,
    );
    assert.deepEqual(await committedIds('aborted'), []);
    const objects: string[] = [];
    for await (const o of storage.list('aborted/')) objects.push(o.key);
    assert.deepEqual(objects, []);
  });

  test('an unreadable or missing source fails before anything is written', async () => {
    await assert.rejects(
      backup({ set: 'nosource', source: path.join(work, 'nope') }),
      /source: '.*nope' does not exist/,
    );
    await assert.rejects(
      backup({ set: 'nosource', source: path.join(source, 'plain.txt') }),
      /is not a folder/,
    );
    assert.deepEqual(
      await storage.listDirs(''),
      (await storage.listDirs('')).filter((d) => d !== 'nosource/'),
    );
  });

  test('delete takes the manifest first, so a crash leaves an uncommitted folder', async () => {
    const manifest = await backup({ set: 'deleting' });
    const order: string[][] = [];
    const recording: Storage = Object.create(storage, {
      delete: {
        value: async (keys: string[]) => {
          order.push(keys);
          if (order.length === 1) return storage.delete(keys);
          throw new Error('crash');
        },
      },
    });
    const entry = (await new Catalog(recording).listBackups('deleting'))[0]!;
    await assert.rejects(new Catalog(recording).deleteBackups([entry]), /crash/);
    assert.deepEqual(order[0], [`deleting/${manifest.id}/${manifestName}`]);
    const after = (await catalog.listBackups('deleting'))[0]!;
    assert.equal(after.committed, false);
    assert.ok(after.objects.some((k) => k.endsWith(manifest.artifacts[0]!.name)));
    assert.ok(!after.objects.some((k) => k.endsWith(inProgressName)));
  });
});

describe('on a cloud provider (Azurite)', () => {
  let server: TestServer;
  before(async () => {
    server = await startAzurite();
  });
  after(() => server.stop());

  test('backup, list and restore, with a conditional manifest write', async () => {
    const cloud = openStorage(server.url, server.env);
    const manifest = await backupFiles({
      storage: cloud,
      set: 'etc-nova',
      source,
      include: [],
      exclude: [],
      compression: 'zstd',
      tags: ['nightly'],
      logger: silentLogger,
    });
    assert.deepEqual(await committedIds('etc-nova', cloud), [manifest.id]);
    await assert.rejects(
      new Catalog(cloud).commit(
        { set: 'etc-nova', id: manifest.id, key: (n) => `etc-nova/${manifest.id}/${n}` },
        manifest,
      ),
      /already exists/,
    );
    const target = path.join(work, 'from-azure');
    await restoreFiles({
      storage: cloud,
      manifest: await new Catalog(cloud).resolve('etc-nova', 'latest'),
      target,
      overwrite: false,
      dryRun: false,
      logger: silentLogger,
    });
    assert.deepEqual(await diffTrees(source, target), []);
  });
});

describe('a restore killed during its swap leaves a target the next run puts right', () => {
  // An overwrite swaps in two renames: the target to .<name>.lifeboat-previous-<suffix>, then
  // the staging folder .<name>.lifeboat-restore-<suffix> to the target. Each test lays out
  // what a SIGKILL at one point of that leaves, and runs the next restore (or the post: step).
  let manifest: Manifest;
  before(async () => {
    manifest = await backup({ set: 'swap' });
  });

  const collect = () => {
    const lines: string[] = [];
    const logger: Logger = { info: (m) => lines.push(m), warn: (m) => lines.push(m) };
    return { lines, logger };
  };
  /** A folder with one file, as a target's old contents or a half-written restored copy. */
  const folder = async (dir: string, file: string, text: string) => {
    await fs.mkdir(dir, { recursive: true });
    await fs.writeFile(path.join(dir, file), text);
  };
  /** The target, its previous contents and its staging folder, with one shared suffix. */
  const layout = async (name: string) => {
    const parent = path.join(work, `swap-${name}`);
    await fs.mkdir(parent);
    const target = path.join(parent, 'live');
    return {
      parent,
      target,
      previous: path.join(parent, '.live.lifeboat-previous-k1ll3d'),
      staging: path.join(parent, '.live.lifeboat-restore-k1ll3d'),
    };
  };
  const restore = (target: string, logger: Logger, extra: { overwrite?: boolean; dryRun?: boolean } = {}) =>
    restoreFiles({
      storage,
      manifest,
      target,
      overwrite: extra.overwrite ?? false,
      dryRun: extra.dryRun ?? false,
      logger,
    });

  test('killed between the two renames: the next restore first puts the previous contents back', async () => {
    const at = await layout('between');
    await folder(at.previous, 'precious.txt', 'old');
    await folder(at.staging, 'new.txt', 'restored');
    const { lines, logger } = collect();
    // Without overwrite the old contents, back in place, are not replaced.
    await assert.rejects(restore(at.target, logger), /target: '.*live' is not empty/);
    assert.equal(await fs.readFile(path.join(at.target, 'precious.txt'), 'utf8'), 'old');
    assert.deepEqual(await leftovers(at.parent), []);
    assert.ok(
      lines.some(
        (l) =>
          l.includes(
            `was stopped between the two renames of its swap (its previous contents were moved to ${at.previous}`,
          ) && l.includes(`the previous contents are put back at ${at.target} and ${at.staging} is removed`),
      ),
      lines.join('\n'),
    );
    await restore(at.target, logger, { overwrite: true });
    assert.deepEqual(await diffTrees(source, at.target), []);
    assert.deepEqual(await leftovers(at.parent), []);
  });

  test('killed after the second rename: the next run removes the previous contents; a dry run only says so', async () => {
    const at = await layout('after');
    await folder(at.target, 'new.txt', 'restored');
    await folder(at.previous, 'precious.txt', 'old');
    const dry = collect();
    await restore(at.target, dry.logger, { overwrite: true, dryRun: true });
    assert.ok(dry.lines.some((l) => l.includes(`dry run, nothing changed`) && l.includes(at.previous)));
    assert.deepEqual(await leftovers(at.parent), ['.live.lifeboat-previous-k1ll3d']);
    const { lines, logger } = collect();
    await restore(at.target, logger, { overwrite: true });
    assert.ok(
      lines.some((l) =>
        l.includes(`before it removed the previous contents at ${at.previous}: they are removed`),
      ),
    );
    assert.deepEqual(await leftovers(at.parent), []);
    assert.deepEqual(await diffTrees(source, at.target), []);
  });

  test('target, previous contents and staging folder all there: refused, naming them, nothing touched', async () => {
    const at = await layout('all-three');
    await folder(at.target, 'someone-else.txt', 'recreated');
    await folder(at.previous, 'precious.txt', 'old');
    await folder(at.staging, 'new.txt', 'restored');
    await assert.rejects(
      restore(at.target, silentLogger, { overwrite: true }),
      (e: unknown) =>
        e instanceof UserError &&
        e.message.includes(`target: ${at.target} is there, and so are ${at.previous}`) &&
        e.message.includes(`and ${at.staging} (a restored copy)`),
    );
    assert.deepEqual((await leftovers(at.parent)).sort(), [
      '.live.lifeboat-previous-k1ll3d',
      '.live.lifeboat-restore-k1ll3d',
    ]);
    assert.deepEqual(await fs.readdir(at.target), ['someone-else.txt']);
  });

  test('a staging folder alone (stopped before its swap) is reported, not removed', async () => {
    const at = await layout('staging-only');
    await folder(at.target, 'precious.txt', 'old');
    await folder(at.staging, 'half.txt', 'half');
    const { lines, logger } = collect();
    await restore(at.target, logger, { overwrite: true });
    assert.ok(lines.some((l) => l.includes(`${at.staging} is left from an earlier restore of ${at.target}`)));
    assert.deepEqual(await leftovers(at.parent), ['.live.lifeboat-restore-k1ll3d']);
    assert.deepEqual(await diffTrees(source, at.target), []);
  });

  test('an overwrite inside a folder whose own name looks like a staging folder', async () => {
    const parent = await tempDir('restore');
    assert.match(parent, /lifeboat-restore-/);
    try {
      const target = path.join(parent, 'live');
      await folder(target, 'old.txt', 'old');
      await restore(target, silentLogger, { overwrite: true });
      assert.deepEqual(await diffTrees(source, target), []);
      assert.deepEqual(await leftovers(parent), []);
    } finally {
      await fs.rm(parent, { recursive: true, force: true });
    }
  });

  test('the post: step of a killed restore: it puts a half-done swap right, or removes the staging folder', async () => {
    const command = restoreCommand as unknown as Command<never>;
    const read = makeReader(command, (spec) => spec.default);
    const between = await layout('post-between');
    await folder(between.previous, 'precious.txt', 'old');
    await folder(between.staging, 'new.txt', 'restored');
    const { lines, logger } = collect();
    await restoreCommand.cleanup!(
      { type: 'files-staging', target: between.target, staging: between.staging },
      read,
      logger,
    );
    assert.equal(await fs.readFile(path.join(between.target, 'precious.txt'), 'utf8'), 'old');
    assert.deepEqual(await leftovers(between.parent), []);
    assert.ok(lines.some((l) => l.includes(`put back at ${between.target}`)));

    const during = await layout('post-during');
    await folder(during.target, 'precious.txt', 'old');
    await folder(during.staging, 'half.txt', 'half');
    await restoreCommand.cleanup!(
      { type: 'files-staging', target: during.target, staging: during.staging },
      read,
      logger,
    );
    assert.deepEqual(await leftovers(during.parent), []);
    assert.deepEqual(await fs.readdir(during.target), ['precious.txt']);

    const elsewhere = path.join(work, 'not-a-staging-folder');
    await folder(elsewhere, 'keep.txt', 'keep');
    await assert.rejects(
      restoreCommand.cleanup!(
        { type: 'files-staging', target: during.target, staging: elsewhere },
        read,
        logger,
      ),
      /is not a staging folder of .*; left alone/,
    );
    assert.deepEqual(await fs.readdir(elsewhere), ['keep.txt']);
  });

  test('a restore records its staging folder for the post: step, and clears it when done', async () => {
    const parent = path.join(work, 'swap-record');
    await fs.mkdir(parent);
    const target = path.join(parent, 'live');
    const states: unknown[] = [];
    const inputs: Record<string, string> = {
      storage: path.join(work, 'backups'),
      set: manifest.set,
      backup: manifest.id,
      target,
      'progress-interval': '1h',
    };
    const command = restoreCommand as unknown as Command<never>;
    await runCommand(
      command,
      makeReader(command, (spec) => inputs[spec.name] ?? spec.default),
      silentLogger,
      { leftovers: (state) => states.push(state) },
    );
    const first = states[0] as { type: string; target: string; staging: string };
    assert.equal(first.type, 'files-staging');
    assert.equal(first.target, target);
    assert.match(path.basename(first.staging), /^\.live\.lifeboat-restore-/);
    assert.equal(states.at(-1), undefined);
    assert.deepEqual(await diffTrees(source, target), []);
  });
});

describe('a damaged uncompressed archive is named as damage, not as a broken archive', () => {
  test('a byte flipped in tar headers (name, size, checksum, magic) and at spread positions', async () => {
    const manifest = await backup({ set: 'plain-tar', compression: 'none' });
    const file = path.join(work, 'backups', manifest.set, manifest.id, manifest.artifacts[0]!.name);
    const original = await fs.readFile(file);
    const wrong: string[] = [];
    // The first entry's header: its name, size, checksum and magic fields; then bytes spread over the rest.
    const positions = [
      0,
      130,
      150,
      258,
      ...Array.from({ length: 8 }, (_, k) => Math.floor(((k + 0.5) / 8) * original.length)),
    ];
    try {
      for (const at of positions) {
        await tamper(manifest, (b) => {
          const c = Buffer.from(b);
          c[at]! ^= 0x20;
          return c;
        });
        const target = path.join(work, 'plain-tar-out');
        const error = await restoreFiles({
          storage,
          manifest,
          target,
          overwrite: false,
          dryRun: false,
          logger: silentLogger,
        }).then(
          () => undefined,
          (e: unknown) => e,
        );
        if (!(error instanceof IntegrityError) || !/sha256 [0-9a-f]{64} does not match/.test(error.message))
          wrong.push(
            `byte ${at}: ${error instanceof Error ? `${error.name}: ${error.message}` : 'restored'}`,
          );
        await fs.rm(target, { recursive: true, force: true });
        if ((await leftovers(work)).length) wrong.push(`byte ${at}: left ${await leftovers(work)}`);
      }
    } finally {
      await tamper(manifest, () => original);
    }
    assert.deepEqual(wrong, []);
  });
});

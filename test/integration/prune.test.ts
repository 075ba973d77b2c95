/** prune-retention against real storage: the kept backups stay listable and restorable, a crashed run is finished by the next. */
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Catalog } from '../../shared/catalog/catalog.ts';
import { restoreFiles } from '../../shared/files/restore.ts';
import { silentLogger } from '../../shared/pipeline/progress.ts';
import type { RetentionPolicy } from '../../shared/retention/plan.ts';
import { prune } from '../../shared/retention/prune.ts';
import { openStorage } from '../../shared/storage/open.ts';
import type { Storage } from '../../shared/storage/storage.ts';
import { backupFolder, testManifest } from '../harness/catalog.ts';
import { startAzurite, startFauxqs, startFolder, type TestServer, tempDir } from '../harness/servers.ts';
import { diffTrees } from '../harness/tree.ts';

const policy: RetentionPolicy = {
  daily: 3,
  weekly: 2,
  tags: [],
  timezone: 'UTC',
  keepVerified: 1,
  minKeep: 1,
  orphanGraceSeconds: 86_400,
};
/** Backups on 2026-11-01 … 11-10 at 03:15, plus a second one on 11-10 at 15:00. */
const times = [
  ...Array.from({ length: 10 }, (_, i) => new Date(Date.UTC(2026, 10, 1 + i, 3, 15))),
  new Date(Date.UTC(2026, 10, 10, 15, 0)),
];
// daily 3: 11-10 (15:00), 11-09, 11-08; weekly 2: ISO weeks 46 (11-10) and 45 (11-08). 11-01 is a
// Sunday, the end of week 44: both rules are used up, so the oldest is not kept.
const expectedKept = [
  '2026-11-10-1500-backup-full',
  '2026-11-09-0315-backup-full',
  '2026-11-08-0315-backup-full',
];
const later = () => new Date(Date.now() + 2 * 86_400_000); // past the orphan grace of what the test just wrote

let work: string;
let source: string;
before(async () => {
  work = await tempDir('prune');
  source = path.join(work, 'src');
  await fs.mkdir(source);
  await fs.writeFile(path.join(source, 'a.conf'), 'a = 1\n');
});
after(() => fs.rm(work, { recursive: true, force: true }));

async function history(storage: Storage, set: string): Promise<void> {
  for (const time of times) {
    await backupFolder({ storage, set, source, now: () => time });
  }
  // An unfinished backup from long ago (no manifest).
  const catalog = new Catalog(storage);
  const pending = await catalog.begin(set, 'full', new Date(Date.UTC(2026, 9, 1)));
  await storage.putBytes(pending.key('files.tar.zst'), Buffer.from('half'));
}

async function allKeys(storage: Storage, prefix: string): Promise<string[]> {
  const keys: string[] = [];
  for await (const o of storage.list(prefix)) keys.push(o.key);
  return keys.sort();
}

for (const [name, start] of [
  ['fs', startFolder],
  ['fauxqs', startFauxqs],
  ['azurite', startAzurite],
] as const) {
  describe(`prune on ${name}`, () => {
    let server: TestServer;
    let storage: Storage;
    before(async () => {
      server = await start();
      storage = openStorage(server.url, { ...process.env, ...server.env });
    });
    after(() => server.stop());

    test('a dry run deletes nothing; a real run leaves exactly the kept backups, each restorable', async () => {
      await history(storage, 'etc');
      const before = await allKeys(storage, 'etc/');
      const dry = await prune({
        storage,
        sets: ['etc'],
        policy,
        dryRun: true,
        logger: silentLogger,
        now: later,
      });
      assert.deepEqual(
        dry.sets[0]!.plan.backups.filter((b) => b.keep).map((b) => b.id),
        expectedKept,
      );
      assert.deepEqual(await allKeys(storage, 'etc/'), before);

      const report = await prune({
        storage,
        sets: ['etc'],
        policy,
        dryRun: false,
        logger: silentLogger,
        now: later,
      });
      assert.equal(report.sets[0]!.deletedBackups.length, 8);
      assert.deepEqual(report.sets[0]!.deletedOrphans, ['2026-10-01-0000-backup-full']);
      const catalog = new Catalog(storage);
      const left = await catalog.listBackups('etc');
      assert.deepEqual(
        left.map((b) => [b.id, b.committed]),
        expectedKept.map((id) => [id, true]),
      );
      for (const id of expectedKept) {
        const target = path.join(work, `${name}-${id}`);
        await restoreFiles({
          storage,
          manifest: await catalog.resolve('etc', id),
          target,
          overwrite: false,
          dryRun: false,
          logger: silentLogger,
        });
        assert.deepEqual(await diffTrees(source, target), []);
      }
      const again = await prune({
        storage,
        sets: ['etc'],
        policy,
        dryRun: false,
        logger: silentLogger,
        now: later,
      });
      assert.equal(again.sets[0]!.deletedBackups.length, 0, 'a second run deletes nothing more');
    });

    test('a run that dies after the manifests went is finished by the next', async () => {
      await history(storage, 'crash');
      let calls = 0;
      const dying: Storage = Object.create(storage, {
        delete: {
          value: async (keys: string[]) => {
            if (++calls > 1) throw new Error('killed');
            return storage.delete(keys);
          },
        },
      });
      await assert.rejects(
        prune({ storage: dying, sets: ['crash'], policy, dryRun: false, logger: silentLogger, now: later }),
        /killed/,
      );
      const catalog = new Catalog(storage);
      const visible = (await catalog.listBackups('crash')).filter((b) => b.committed).map((b) => b.id);
      assert.deepEqual(visible, expectedKept, 'the doomed backups stopped being visible all at once');
      const next = await prune({
        storage,
        sets: ['crash'],
        policy,
        dryRun: false,
        logger: silentLogger,
        now: later,
      });
      assert.equal(
        next.sets[0]!.deletedOrphans.length,
        9,
        'the 8 half-deleted backups and the old unfinished one',
      );
      const ids = new Set((await allKeys(storage, 'crash/')).map((k) => k.split('/')[1]));
      assert.deepEqual([...ids].sort(), [...expectedKept].sort());
    });

    test('keep-verified keeps the newest backup whose last verification passed', async () => {
      await history(storage, 'verified');
      const catalog = new Catalog(storage);
      const record = (backupId: string, at: string, passed: boolean) =>
        catalog.recordVerification({
          format: 1,
          backupId,
          set: 'verified',
          at,
          passed,
          checks: [],
          tool: { name: 'lifeboat', version: '0' },
        });
      await record('2026-11-04-0315-backup-full', '2026-11-05T00:00:00.000Z', true);
      await record('2026-11-06-0315-backup-full', '2026-11-07T00:00:00.000Z', true);
      await record('2026-11-06-0315-backup-full', '2026-11-08T00:00:00.000Z', false); // its last verification failed
      const report = await prune({
        storage,
        sets: ['verified'],
        policy: { ...policy, daily: 1, weekly: undefined },
        dryRun: false,
        logger: silentLogger,
        now: later,
      });
      const kept = report.sets[0]!.plan.backups.filter((b) => b.keep).map((b) => [
        b.id,
        b.reasons.sort().join('+'),
      ]);
      assert.deepEqual(kept, [
        ['2026-11-10-1500-backup-full', 'daily+min-keep+newest'],
        ['2026-11-04-0315-backup-full', 'verified'],
      ]);
      assert.deepEqual(
        (await catalog.listBackups('verified')).filter((b) => b.committed).map((b) => b.id),
        kept.map(([id]) => id),
      );
    });

    test("keep-tag keeps the backups that carry every tag of a list (restic's AND), read from their manifests", async () => {
      const set = 'tagged';
      const tagsOf = [['db', 'before-upgrade'], ['db'], ['before-upgrade'], [], ['audit']];
      for (const [i, tags] of tagsOf.entries())
        await backupFolder({
          storage,
          set,
          source,
          tags,
          now: () => new Date(Date.UTC(2026, 10, 1 + i, 3, 15)),
        });
      const report = await prune({
        storage,
        sets: [set],
        policy: {
          tags: [],
          tagLists: [['db', 'before-upgrade'], ['audit']],
          timezone: 'UTC',
          keepVerified: 0,
          minKeep: 1,
          orphanGraceSeconds: 86_400,
        },
        dryRun: false,
        logger: silentLogger,
        now: later,
      });
      const kept = report.sets[0]!.plan.backups.filter((b) => b.keep).map((b) => [
        b.id,
        b.reasons.sort().join('+'),
      ]);
      assert.deepEqual(kept, [
        ['2026-11-05-0315-backup-full', 'min-keep+newest+tagged'],
        ['2026-11-01-0315-backup-full', 'tagged'],
      ]);
      assert.deepEqual(
        (await new Catalog(storage).listBackups(set)).map((b) => b.id),
        kept.map(([id]) => id),
      );
    });

    test("set '*' prunes every set on its own", async () => {
      const all = await prune({
        storage,
        sets: '*',
        policy: { ...policy, daily: 1, weekly: undefined },
        dryRun: true,
        logger: silentLogger,
        now: later,
      });
      assert.deepEqual(all.sets.map((s) => s.set).sort(), ['crash', 'etc', 'tagged', 'verified']);
      const keptIn = Object.fromEntries(
        all.sets.map((s) => [s.set, s.plan.backups.filter((b) => b.keep).map((b) => b.id)]),
      );
      assert.deepEqual(keptIn, {
        crash: ['2026-11-10-1500-backup-full'],
        etc: ['2026-11-10-1500-backup-full'],
        tagged: ['2026-11-05-0315-backup-full'],
        verified: ['2026-11-10-1500-backup-full', '2026-11-04-0315-backup-full'],
      });
    });
  });
}

describe('retention locks (immutable files on a local folder)', () => {
  const canLock = process.getuid?.() === 0 && spawnSync('sh', ['-c', 'command -v chattr']).status === 0;
  test('a locked manifest keeps its backup whole; a locked artifact is reported and left', {
    skip: !canLock && 'needs root and chattr',
  }, async () => {
    const server = await startFolder();
    const storage = openStorage(server.url);
    const file = (id: string, name: string) => path.join(server.url, 'locks', id, name);
    const lockedWhole = '2026-11-05-0315-backup-full';
    const lockedPart = '2026-11-03-0315-backup-full';
    try {
      await history(storage, 'locks');
      execFileSync('chattr', ['+i', file(lockedWhole, 'manifest.json'), file(lockedPart, 'files.tar.zst')]);
      const report = await prune({
        storage,
        sets: ['locks'],
        policy,
        dryRun: false,
        logger: silentLogger,
        now: later,
      });
      const set = report.sets[0]!;
      assert.deepEqual(set.keptByLock, [lockedWhole]);
      assert.deepEqual(set.lockedObjects, [`locks/${lockedPart}/files.tar.zst`]);
      assert.deepEqual(set.plan.backups.find((b) => b.id === lockedWhole)?.reasons, ['locked']);
      assert.ok(set.deletedBackups.includes(lockedPart));
      // Bytes freed are what was removed: not the locked artifact, nor the backup kept whole.
      const lockedBytes = (await fs.stat(file(lockedPart, 'files.tar.zst'))).size;
      assert.equal(set.freedBytes, set.plan.freedBytes - lockedBytes);
      assert.equal(report.freedBytes, set.freedBytes);
      const catalog = new Catalog(storage);
      const committed = (await catalog.listBackups('locks')).filter((b) => b.committed).map((b) => b.id);
      assert.deepEqual(committed, [...expectedKept, lockedWhole].sort().reverse());
      const target = path.join(work, 'locked-restore');
      await restoreFiles({
        storage,
        manifest: await catalog.resolve('locks', lockedWhole),
        target,
        overwrite: false,
        dryRun: false,
        logger: silentLogger,
      });
      assert.deepEqual(await diffTrees(source, target), []);
    } finally {
      spawnSync('chattr', ['-i', file(lockedWhole, 'manifest.json'), file(lockedPart, 'files.tar.zst')]);
      await server.stop();
    }
  });
});

test('a zfs set is not pruned (its snapshots are pruned on the host): an error naming it, nothing deleted; with every set, a warning and the others pruned', async () => {
  const storage = openStorage(path.join(work, 'zfs-sets'));
  const catalog = new Catalog(storage);
  for (const day of [1, 2, 3]) {
    const at = new Date(Date.UTC(2026, 10, day, 3, 15));
    const pending = await catalog.begin('tank', 'full', at);
    await catalog.commit(
      pending,
      testManifest({ id: pending.id, set: 'tank', kind: 'zfs', startedAt: at.toISOString(), artifacts: [] }),
    );
  }
  await history(storage, 'etc');
  const before = await allKeys(storage, 'tank/');
  const keepOne: RetentionPolicy = {
    keepVerified: 0,
    tags: [],
    timezone: 'UTC',
    last: 1,
    minKeep: 1,
    orphanGraceSeconds: 86_400,
  };
  const run = (sets: string[] | '*', warn: (m: string) => void = () => {}) =>
    prune({ storage, sets, policy: keepOne, dryRun: false, logger: { info() {}, warn }, now: later });
  await assert.rejects(
    run(['tank']),
    /^UserError: set: tank\/.* is a zfs backup: prune-retention does not prune zfs sets/,
  );
  assert.deepEqual(await allKeys(storage, 'tank/'), before);
  const warnings: string[] = [];
  const report = await run('*', (m) => warnings.push(m));
  assert.ok(
    warnings.some((w) => /is a zfs backup/.test(w)),
    warnings.join('\n'),
  );
  assert.deepEqual(await allKeys(storage, 'tank/'), before);
  assert.ok((report.sets.find((s) => s.set === 'etc')?.deletedBackups.length ?? 0) > 0);
});

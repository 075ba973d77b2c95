/** prune-retention against real storage: the kept backups stay listable and restorable, a crashed run is finished by the next. */
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { makeReader, runCommand } from '../../shared/action/run.ts';
import type { Command } from '../../shared/action/spec.ts';
import { Catalog } from '../../shared/catalog/catalog.ts';
import type { Manifest } from '../../shared/catalog/manifest.ts';
import { pruneRetentionCommand } from '../../shared/commands/prune-retention.ts';
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

describe('incremental chains', () => {
  const day = 86_400_000;
  /** A minute `daysAgo` days before now: the command plans with the real clock. */
  const ago = (daysAgo: number) => new Date(Math.floor((Date.now() - daysAgo * day) / 60_000) * 60_000);
  /** A hand-made backup with one stored artifact; an incremental one names its parent. */
  async function craft(
    storage: Storage,
    set: string,
    daysAgo: number,
    mode: 'full' | 'incremental',
    parent?: string,
    fields: Partial<Manifest> = {},
  ): Promise<string> {
    const catalog = new Catalog(storage);
    const at = ago(daysAgo);
    const pending = await catalog.begin(set, mode, at);
    const artifact = fields.artifacts?.[0]?.name ?? 'files.tar.zst';
    await storage.putBytes(pending.key(artifact), Buffer.from(`${mode} ${daysAgo}`));
    await catalog.commit(
      pending,
      testManifest({
        id: pending.id,
        set,
        mode,
        startedAt: at.toISOString(),
        ...(parent ? { parent } : {}),
        ...fields,
      }),
    );
    return pending.id;
  }
  const keepLast1: RetentionPolicy = {
    last: 1,
    tags: [],
    timezone: 'UTC',
    keepVerified: 0,
    minKeep: 1,
    orphanGraceSeconds: 86_400,
  };
  const decisions = (report: Awaited<ReturnType<typeof prune>>) =>
    report.sets[0]!.plan.backups.map((b) => [b.id, b.keep ? b.reasons.join('+') : b.deleteReason]);

  test('keep-last 1 keeps the newest incremental and its chain, says why, and reads only the incrementals; a dry run and a real run agree', async () => {
    const storage = openStorage(path.join(work, 'chains'));
    const set = 'chain';
    const full1 = await craft(storage, set, 9, 'full');
    const inc1a = await craft(storage, set, 8, 'incremental', full1);
    const inc1b = await craft(storage, set, 7, 'incremental', inc1a);
    const full2 = await craft(storage, set, 6, 'full');
    const inc2a = await craft(storage, set, 5, 'incremental', full2);
    const inc2b = await craft(storage, set, 4, 'incremental', inc2a);
    const expected = [
      [inc2b, 'last+newest+min-keep'],
      [inc2a, `parent of ${inc2b}`],
      [full2, `parent of ${inc2a}`],
      [inc1b, 'policy'],
      [inc1a, 'policy'],
      [full1, 'policy'],
    ];
    const read: string[] = [];
    const counting: Storage = Object.create(storage, {
      get: {
        value: (key: string) => {
          if (key.endsWith('/manifest.json')) read.push(key.split('/')[1]!);
          return storage.get(key);
        },
      },
    });

    // The command's summary and JSON name the child each parent is kept for.
    const inputs: Record<string, string> = {
      storage: path.join(work, 'chains'),
      set,
      'keep-last': '1',
      'keep-verified': '0',
      'dry-run': 'true',
    };
    const command = pruneRetentionCommand as unknown as Command<never>;
    const result = await runCommand(
      command,
      makeReader(command, (spec) => inputs[spec.name] ?? spec.default),
      silentLogger,
    );
    const rows = Object.fromEntries(result.summary!.table!.slice(1).map((r) => [r[1], [r[2], r[3]]]));
    assert.deepEqual(rows[full2], ['keep', `parent of ${inc2a}`]);
    assert.deepEqual(rows[inc2a], ['keep', `parent of ${inc2b}`]);
    assert.deepEqual(rows[full1], ['would delete', 'policy']);
    assert.ok(
      result.summary!.notes!.includes(
        `${set}: kept only because a kept incremental backup applies on top of them (restoring it needs them): ${inc2a}, ${full2}.`,
      ),
      result.summary!.notes!.join('\n'),
    );
    const json = JSON.parse(result.outputs!.result!) as Awaited<ReturnType<typeof prune>>;
    assert.deepEqual(decisions(json), expected);

    const dry = await prune({
      storage: counting,
      sets: [set],
      policy: keepLast1,
      dryRun: true,
      logger: silentLogger,
    });
    assert.deepEqual(decisions(dry), expected);
    // The incrementals (for their parents) and the doomed backups (for locks); not the kept full.
    assert.deepEqual([...new Set(read)].sort(), [full1, inc1a, inc1b, inc2a, inc2b].sort());

    const before = await allKeys(storage, `${set}/`);
    const real = await prune({
      storage,
      sets: [set],
      policy: keepLast1,
      dryRun: false,
      logger: silentLogger,
    });
    assert.deepEqual(decisions(real), expected);
    assert.deepEqual(real.sets[0]!.deletedBackups.sort(), [full1, inc1a, inc1b].sort());
    assert.equal(real.sets[0]!.freedBytes, dry.sets[0]!.freedBytes);
    assert.deepEqual(
      await allKeys(storage, `${set}/`),
      before.filter((k) => ![full1, inc1a, inc1b].includes(k.split('/')[1]!)),
    );
    const again = await prune({
      storage,
      sets: [set],
      policy: keepLast1,
      dryRun: false,
      logger: silentLogger,
    });
    assert.deepEqual(again.sets[0]!.deletedBackups, [], 'a second run deletes nothing more');
    assert.deepEqual(decisions(again), expected.slice(0, 3));
  });

  test('a damaged incremental does not keep its parent; a missing parent is a warning', async () => {
    const storage = openStorage(path.join(work, 'damaged-chain'));
    const set = 'damaged';
    const full = await craft(storage, set, 9, 'full');
    const lost = await craft(storage, set, 8, 'incremental', '2026-01-01-0000-backup-full');
    const damaged = await craft(storage, set, 7, 'incremental', full);
    await storage.putBytes(`${set}/${damaged}/manifest.json`, Buffer.from('{ not json'));
    const warnings: string[] = [];
    const report = await prune({
      storage,
      sets: [set],
      policy: { ...keepLast1, last: 2 },
      dryRun: true,
      logger: { info() {}, warn: (m) => warnings.push(m) },
    });
    assert.deepEqual(decisions(report), [
      [damaged, 'last+newest+min-keep'],
      [lost, 'last'],
      [full, 'policy'],
    ]);
    assert.ok(
      warnings.some((w) => w.startsWith(`${set}/${damaged}: its manifest cannot be read`)),
      warnings.join('\n'),
    );
    assert.ok(
      warnings.some((w) => w.includes('2026-01-01-0000-backup-full, is not a committed backup')),
      warnings.join('\n'),
    );
  });

  test('zfs backups stored as send streams are pruned like any other, chain included; snapshot-only ones are still refused', async () => {
    const storage = openStorage(path.join(work, 'zfs-streams'));
    const set = 'pool';
    const stream = (mode: string) => ({
      kind: 'zfs' as const,
      artifacts: [
        {
          name: `${mode}.zfs.zst`,
          bytes: 1,
          sha256: '0'.repeat(64),
          contentBytes: 1,
          format: 'zfs-send',
          compression: 'zstd' as const,
          encryption: null,
        },
      ],
    });
    const full1 = await craft(storage, set, 5, 'full', undefined, stream('full'));
    const inc1 = await craft(storage, set, 4, 'incremental', full1, stream('incremental'));
    const full2 = await craft(storage, set, 3, 'full', undefined, stream('full'));
    const inc2 = await craft(storage, set, 2, 'incremental', full2, stream('incremental'));
    const report = await prune({
      storage,
      sets: [set],
      policy: keepLast1,
      dryRun: false,
      logger: silentLogger,
    });
    assert.deepEqual(decisions(report), [
      [inc2, 'last+newest+min-keep'],
      [full2, `parent of ${inc2}`],
      [inc1, 'policy'],
      [full1, 'policy'],
    ]);
    assert.deepEqual(
      (await new Catalog(storage).listBackups(set)).map((b) => b.id),
      [inc2, full2],
    );
    // A snapshot-only zfs backup among the doomed still stops the set.
    const catalog = new Catalog(storage);
    const at = ago(10);
    const pending = await catalog.begin(set, 'full', at);
    await catalog.commit(
      pending,
      testManifest({ id: pending.id, set, kind: 'zfs', startedAt: at.toISOString(), artifacts: [] }),
    );
    await assert.rejects(
      prune({ storage, sets: [set], policy: keepLast1, dryRun: true, logger: silentLogger }),
      /^UserError: set: pool\/.* is a zfs backup: prune-retention does not prune zfs sets/,
    );
  });
});

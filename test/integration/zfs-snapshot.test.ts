/**
 * snapshot-zfs (shared/zfs/snapshot.ts, local-retention.ts, shared/commands/snapshot-zfs.ts)
 * against real ZFS (zfs-fuse, pools on sparse files, test/harness/zfs.ts): snapshots and the
 * manifest, properties and holds, local retention across runs (time from `now`),
 * max-pool-usage, foreign snapshots untouched, a failure part-way leaving nothing. Prints
 * timings. Skipped, saying why, without root, /dev/fuse or zfs-fuse; name checks run anyway.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { snapshotZfsCommand } from '../../shared/commands/snapshot-zfs.ts';
import { UserError } from '../../shared/errors.ts';
import type { Logger } from '../../shared/pipeline/progress.ts';
import { openStorage } from '../../shared/storage/open.ts';
import { holdTag } from '../../shared/zfs/local-retention.ts';
import { snapshotZfs, type ZfsSnapshotOptions, type ZfsSnapshotResult } from '../../shared/zfs/snapshot.ts';
import { Zfs } from '../../shared/zfs/zfs.ts';
import {
  makePool,
  startZfs,
  type TestPool,
  type ZfsDaemon,
  zfsAvailable,
  zfsCommand,
  zfsPrograms,
} from '../harness/zfs.ts';

const available = zfsAvailable();
const skip = available.ok ? false : `no ZFS here: ${available.reason}`;
if (skip) console.log(`# zfs-snapshot: skipped, ${skip}`);

const MiB = 1024 * 1024;
const zfs = new Zfs({ zfs: zfsPrograms.zfs, zpool: zfsPrograms.zpool });
const timings: string[] = [];
const hour = 3600_000;
const t0 = Date.UTC(2026, 0, 5, 10, 0);

function recorder(): Logger & { lines: string[] } {
  const lines: string[] = [];
  return {
    lines,
    info: (line: string) => void lines.push(line),
    warn: (line: string) => void lines.push(`warn: ${line}`),
  };
}

async function writeRandom(file: string, bytes: number): Promise<void> {
  const handle = await fs.open(file, 'w');
  for (let done = 0; done < bytes; done += MiB) await handle.write(randomBytes(Math.min(MiB, bytes - done)));
  await handle.sync();
  await handle.close();
}

const snapshotNames = async (dataset: string) => (await zfs.snapshots(dataset)).map((s) => s.name);

/** Times a step and keeps the line for the summary. */
async function timed<T>(label: string, run: () => Promise<T>): Promise<T> {
  const started = performance.now();
  const result = await run();
  timings.push(`${label}: ${((performance.now() - started) / 1000).toFixed(2)} s`);
  return result;
}

describe('snapshot-zfs without ZFS', () => {
  test('bad dataset names are refused with one clear error before any zfs command', async () => {
    const none = new Zfs({ zfs: '/nonexistent/zfs', zpool: '/nonexistent/zpool' });
    await assert.rejects(
      snapshotZfs({
        set: 'x',
        datasets: ['tank/ok', 'tank/bad name', 'tank/x;rm -rf /', 'tank/snap@x'],
        recursive: true,
        hold: true,
        dryRun: false,
        logger: recorder(),
        zfs: none,
      }),
      (error: Error) => {
        assert.ok(error instanceof UserError, String(error));
        assert.match(
          error.message,
          /^datasets: 'tank\/bad name' .*'tank\/x;rm -rf \/' .*'tank\/snap@x' names a snapshot/,
        );
        assert.doesNotMatch(error.message, /tank\/ok/);
        return true;
      },
    );
    // Through the command's parse too: one line naming the input.
    const read = (inputs: Record<string, string>) => (name: string) => inputs[name];
    assert.throws(
      () => snapshotZfsCommand.parse(read({ set: 'x', datasets: 'tank/a,,-o', 'max-pool-usage': '70%' })),
      /datasets: '-o' must start with a pool name/,
    );
    const options = snapshotZfsCommand.parse(
      read({ set: 'x', datasets: 'tank/a, tank/b', 'max-pool-usage': '70%', 'keep-last': '3' }),
    ) as unknown as ZfsSnapshotOptions;
    assert.deepEqual(options.datasets, ['tank/a', 'tank/b']);
    assert.equal(options.maxPoolUsage, 70);
    assert.equal(options.policy?.last, 3);
    assert.equal(options.recursive, true);
    assert.equal(options.hold, true);
    assert.throws(
      () => snapshotZfsCommand.parse(read({ set: 'x', datasets: 'tank/a', 'max-pool-usage': '170%' })),
      /max-pool-usage: '170' is not accepted/,
    );
  });
});

describe('snapshot-zfs against zfs-fuse', { skip }, () => {
  let daemon: ZfsDaemon;
  let pool: TestPool;
  let catalogDir: string;

  before(async () => {
    daemon = await startZfs();
    pool = await timed('pool create (256 MiB sparse file)', () => makePool('zsnap', { sizeMiB: 256 }));
    catalogDir = await fs.mkdtemp(path.join(os.tmpdir(), 'lifeboat-zfs-catalog-'));
    for (const ds of ['app', 'app/db', 'app/logs', 'other', 'keep', 'fail', 'fail/x', 'cmd'])
      await zfsCommand('zfs', ['create', `${pool.pool}/${ds}`]);
  });

  after(async () => {
    await pool?.destroy();
    await daemon?.stop();
    if (catalogDir) await fs.rm(catalogDir, { recursive: true, force: true });
    console.log(`# zfs-snapshot timings:\n#   ${timings.join('\n#   ')}`);
  });

  const base = () => ({
    storage: openStorage(catalogDir),
    recursive: true,
    hold: true,
    dryRun: false,
    zfs,
  });

  test('snapshot + manifest, properties and holds; zfs destroy refused while held', async () => {
    const app = `${pool.pool}/app`;
    await writeRandom(path.join(pool.mountpoint, 'app', 'db', 'data'), 2 * MiB);
    const logger = recorder();
    const result = await timed('snapshot-zfs run (3 datasets, recursive, with manifest)', () =>
      snapshotZfs({ ...base(), set: 'app', datasets: [app], logger, now: () => new Date(t0) }),
    );
    assert.equal(result.id, '2026-01-05-1000-backup-full');
    const name = `lifeboat-${result.id}`;
    assert.deepEqual(
      result.facts.snapshots.map((s) => s.snapshot).sort(),
      [`${app}@${name}`, `${app}/db@${name}`, `${app}/logs@${name}`].sort(),
    );
    const manifest = JSON.parse(
      await fs.readFile(path.join(catalogDir, 'app', result.id, 'manifest.json'), 'utf8'),
    );
    assert.equal(manifest.kind, 'zfs');
    assert.deepEqual(manifest.artifacts, []);
    assert.deepEqual(manifest.facts.pools, [pool.pool]);
    const db = manifest.facts.snapshots.find((s: { dataset: string }) => s.dataset === `${app}/db`);
    const live = (await zfs.get(`${app}/db@${name}`))!;
    assert.equal(db.guid, live.guid);
    assert.match(db.guid, /^\d+$/);
    assert.ok(db.referenced >= 2 * MiB, `referenced ${db.referenced}`);
    assert.equal(typeof db.used, 'number');
    assert.ok(!Number.isNaN(Date.parse(db.creation)));
    await assert.rejects(fs.stat(path.join(catalogDir, 'app', result.id, 'in-progress.json')));
    for (const s of result.facts.snapshots) {
      const entry = (await zfs.get(s.snapshot))!;
      assert.equal(entry.properties['lifeboat:set'], 'app');
      assert.equal(entry.properties['lifeboat:backup-id'], result.id);
      assert.equal(entry.userrefs, 1, `${s.snapshot} held`);
    }
    assert.equal(result.retention.held.length, 3);
    await assert.rejects(zfsCommand('zfs', ['destroy', `${app}/db@${name}`]), /busy|hold/i);
    assert.ok((await zfs.get(`${app}/db@${name}`)) !== undefined);
  });

  test('local retention across runs: keeps per policy, releases and destroys the rest; foreign snapshots untouched', async () => {
    const ds = `${pool.pool}/keep`;
    // Foreign: no lifeboat property; another set's; and one of ours someone else holds.
    await zfsCommand('zfs', ['snapshot', `${ds}@manual`]);
    await zfsCommand('zfs', [
      'snapshot',
      '-o',
      'lifeboat:set=someone-else',
      '-o',
      'lifeboat:backup-id=2020-01-01-0000-backup-full',
      `${ds}@theirs`,
    ]);
    const runs: ZfsSnapshotResult[] = [];
    const started = performance.now();
    for (let i = 0; i < 5; i++) {
      await fs.writeFile(path.join(pool.mountpoint, 'keep', `f${i}`), randomBytes(64 * 1024));
      const result = await snapshotZfs({
        ...base(),
        set: 'keep',
        datasets: [ds],
        policy: { last: 2, tags: [], timezone: 'UTC', keepVerified: 0, minKeep: 1, orphanGraceSeconds: 0 },
        logger: recorder(),
        now: () => new Date(t0 + i * hour),
      });
      runs.push(result);
      if (i === 0) {
        // Someone else's hold on the first backup of the set.
        await zfsCommand('zfs', ['hold', 'backup-team', `${ds}@lifeboat-${result.id}`]);
      }
    }
    timings.push(`5 runs with keep-last 2: ${((performance.now() - started) / 1000).toFixed(2)} s`);
    const names = await snapshotNames(ds);
    const ours = (i: number) => `${ds}@lifeboat-${runs[i]!.id}`;
    assert.ok(names.includes(`${ds}@manual`), 'a snapshot without lifeboat properties stays');
    assert.ok(names.includes(`${ds}@theirs`), "another set's snapshot stays");
    assert.ok(names.includes(ours(0)), 'held by someone else: stays');
    assert.ok(!names.includes(ours(1)) && !names.includes(ours(2)), `dropped ones destroyed: ${names}`);
    assert.ok(names.includes(ours(3)) && names.includes(ours(4)));
    // Our hold on the kept ones, none left on the dropped one that stays but someone else's.
    assert.equal((await zfs.get(ours(3)))!.userrefs, 1);
    assert.equal((await zfs.get(ours(4)))!.userrefs, 1);
    assert.equal(await zfs.release(ours(0), 'backup-team'), 'released');
    assert.equal((await zfs.get(ours(0)))!.userrefs, 1, 'our hold went back on what stayed');
    assert.equal((await zfs.get(`${ds}@manual`))!.userrefs, 0);
    const last = runs[4]!.retention;
    assert.ok(
      last.warnings.some((w) => w.includes(ours(0)) && /held by someone else/.test(w)),
      String(last.warnings),
    );
    // The next run, without the other hold, destroys it.
    const next = await snapshotZfs({
      ...base(),
      set: 'keep',
      datasets: [ds],
      policy: { last: 2, tags: [], timezone: 'UTC', keepVerified: 0, minKeep: 1, orphanGraceSeconds: 0 },
      logger: recorder(),
      now: () => new Date(t0 + 5 * hour),
    });
    const after = await snapshotNames(ds);
    assert.deepEqual(
      after.filter((n) => n.includes('@lifeboat-')),
      [ours(4), `${ds}@lifeboat-${next.id}`],
    );
    assert.ok(after.includes(`${ds}@manual`) && after.includes(`${ds}@theirs`));
    assert.equal((await zfs.get(`${ds}@theirs`))!.properties['lifeboat:set'], 'someone-else');
    // A dry run plans but takes and destroys nothing.
    const logger = recorder();
    const dry = await snapshotZfs({
      ...base(),
      dryRun: true,
      set: 'keep',
      datasets: [ds],
      policy: { last: 1, tags: [], timezone: 'UTC', keepVerified: 0, minKeep: 1, orphanGraceSeconds: 0 },
      logger,
      now: () => new Date(t0 + 6 * hour),
    });
    assert.deepEqual(await snapshotNames(ds), after);
    assert.deepEqual(
      dry.retention.backups
        .filter((b) => !b.keep)
        .map((b) => b.id)
        .sort(),
      [runs[4]!.id, next.id].sort(),
    );
    assert.ok(logger.lines.some((l) => /dry run: would snapshot/.test(l)));
    assert.ok(logger.lines.some((l) => /would destroy/.test(l)));
    await assert.rejects(fs.stat(path.join(catalogDir, 'keep', dry.id)));
  });

  test('max-pool-usage destroys the oldest until below, never the newest or held/foreign ones', async () => {
    const small = await makePool('zcap', { sizeMiB: 256 });
    try {
      const ds = `${small.pool}/d`;
      await zfsCommand('zfs', ['create', ds]);
      const file = path.join(small.mountpoint, 'd', 'data');
      const ids: string[] = [];
      for (let i = 0; i < 4; i++) {
        await writeRandom(file, 24 * MiB); // each version pins its 24 MiB in the snapshot before
        const r = await snapshotZfs({
          ...base(),
          storage: undefined,
          set: 'cap',
          datasets: [ds],
          logger: recorder(),
          now: () => new Date(t0 + i * hour),
        });
        ids.push(r.id);
        if (i === 0) await zfsCommand('zfs', ['hold', 'other', `${ds}@lifeboat-${r.id}`]);
      }
      // A foreign snapshot pinning its own data, which max-pool-usage must not touch.
      await zfsCommand('zfs', ['snapshot', `${ds}@foreign`]);
      const before = (await zfs.capacity(small.pool, { settle: true })).capacity;
      const logger = recorder();
      const r = await timed('max-pool-usage run (settled capacity reads)', () =>
        snapshotZfs({
          ...base(),
          storage: undefined,
          set: 'cap',
          datasets: [ds],
          maxPoolUsage: 25,
          logger,
          now: () => new Date(t0 + 4 * hour),
        }),
      );
      const names = await snapshotNames(ds);
      const ours = (id: string) => `${ds}@lifeboat-${id}`;
      const pool = r.retention.pools[0]!;
      timings.push(`max-pool-usage: ${before}% → ${pool.capacity}% (limit 25%)`);
      assert.ok(before > 25, `the pool starts above the limit (${before}%)`);
      assert.ok(pool.met && pool.capacity <= 25, JSON.stringify(r.retention.pools));
      assert.ok(names.includes(ours(ids[0]!)), 'held by someone else: stays');
      assert.ok(names.includes(`${ds}@foreign`), 'foreign: stays');
      assert.ok(names.includes(ours(r.id)), 'the newest stays');
      assert.ok(!names.includes(ours(ids[1]!)), `the oldest unprotected went: ${names}`);
      assert.ok(
        r.retention.backups.filter((b) => b.deleteReason === 'pool-usage').every((b) => b.id !== r.id),
      );
      // A limit that cannot be met: a warning, not a failure; the newest stays.
      const unmet = recorder();
      const r2 = await snapshotZfs({
        ...base(),
        storage: undefined,
        set: 'cap',
        datasets: [ds],
        maxPoolUsage: 1,
        logger: unmet,
        now: () => new Date(t0 + 5 * hour),
      });
      assert.equal(r2.retention.pools[0]!.met, false);
      assert.ok(
        unmet.lines.some((l) => /^warn: .*above max-pool-usage 1%/.test(l)),
        unmet.lines.join('\n'),
      );
      const left = await snapshotNames(ds);
      assert.ok(left.includes(ours(r2.id)) && left.includes(ours(ids[0]!)) && left.includes(`${ds}@foreign`));
      await zfsCommand('zfs', ['release', 'other', ours(ids[0]!)]);
    } finally {
      await small.destroy();
    }
  });

  test('the command: parse, execute, outputs and summary (dry run, then a real run)', async () => {
    const ds = `${pool.pool}/cmd`;
    const read = (inputs: Record<string, string>) => (name: string) => inputs[name];
    const inputs = {
      storage: catalogDir,
      set: 'cmd',
      datasets: ds,
      'keep-last': '1',
      'max-pool-usage': '90%',
    };
    const context = { logger: recorder(), signal: new AbortController().signal };
    const dry = snapshotZfsCommand.parse(read({ ...inputs, 'dry-run': 'true' }));
    const dryResult = await snapshotZfsCommand.execute({ ...dry, zfs }, context);
    assert.equal(dryResult.outputs?.uri, '');
    assert.deepEqual(await snapshotNames(ds), []);
    const real = snapshotZfsCommand.parse(read(inputs));
    const result = await timed('snapshot-zfs command (parse + execute)', () =>
      snapshotZfsCommand.execute({ ...real, zfs }, context),
    );
    const id = result.outputs!['backup-id']!;
    assert.deepEqual(JSON.parse(result.outputs!.snapshots!), [`${ds}@lifeboat-${id}`]);
    assert.match(result.outputs!.uri!, new RegExp(`cmd/${id}`));
    assert.deepEqual(await snapshotNames(ds), [`${ds}@lifeboat-${id}`]);
    assert.match(JSON.stringify(result.summary), /90% \(max-pool-usage|max-pool-usage 90%/);
  });

  test('a failure part-way (a missing dataset among several) leaves no snapshots and no manifest', async () => {
    const fail = `${pool.pool}/fail`;
    const other = `${pool.pool}/other`;
    const logger = recorder();
    await assert.rejects(
      snapshotZfs({
        ...base(),
        set: 'fail',
        datasets: [fail, `${pool.pool}/nope`, other],
        logger,
        now: () => new Date(t0),
      }),
      (error: Error) =>
        error instanceof UserError && /datasets: '.*\/nope' does not exist/.test(error.message),
    );
    for (const ds of [fail, `${fail}/x`, other])
      assert.deepEqual(
        (await snapshotNames(ds)).filter((n) => n.includes('@lifeboat-')),
        [],
        `${ds} has no snapshot left`,
      );
    const entries = await fs.readdir(path.join(catalogDir, 'fail')).catch(() => []);
    for (const entry of entries)
      await assert.rejects(fs.stat(path.join(catalogDir, 'fail', entry, 'manifest.json')));
    assert.ok(
      logger.lines.some((l) => /made by this failed run/.test(l)),
      logger.lines.join('\n'),
    );
    assert.equal(holdTag, 'lifeboat');
  });
});

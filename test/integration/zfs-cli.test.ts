/**
 * shared/zfs/zfs.ts against real ZFS (zfs-fuse, test/harness/zfs.ts): a recursive snapshot
 * with user properties, listing, holds, destroy, full and incremental send | receive into
 * another pool, rollback, pool capacity. Prints the timings (daemon start, pool create,
 * snapshot, send/receive MB/s of a 64 MiB dataset). Skipped, saying why, without root,
 * /dev/fuse or zfs-fuse (apt-get install -y zfs-fuse). Without ZFS still: names refused
 * before any command runs, and the "dataset is busy" retry (a fake zfs).
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { pipeline, Readable, Transform } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import { snapshotNameProblem, Zfs, ZfsError, ZfsNameError } from '../../shared/zfs/zfs.ts';
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
if (skip) console.log(`# zfs-cli: skipped, ${skip}`);

const MiB = 1024 * 1024;
const zfs = new Zfs({ zfs: zfsPrograms.zfs, zpool: zfsPrograms.zpool });
const timings: string[] = [];
const seconds = (since: number) => (performance.now() - since) / 1000;

async function writeRandom(file: string, bytes: number): Promise<string> {
  const hash = createHash('sha256');
  const handle = await fs.open(file, 'w');
  for (let done = 0; done < bytes; done += MiB) {
    const chunk = randomBytes(Math.min(MiB, bytes - done));
    hash.update(chunk);
    await handle.write(chunk);
  }
  await handle.sync();
  await handle.close();
  return hash.digest('hex');
}

const sha256 = async (file: string) =>
  createHash('sha256')
    .update(await fs.readFile(file))
    .digest('hex');

/** `source` through `transform`; an error in either destroys both (unlike .pipe). */
const through = (source: Readable, transform: Transform) => pipeline(source, transform, () => {});

/** Counts the bytes passing through. */
function counter() {
  const counted = { bytes: 0 };
  const stream = new Transform({
    transform(chunk: Buffer, _encoding, done) {
      counted.bytes += chunk.length;
      done(null, chunk);
    },
  });
  return Object.assign(counted, { stream });
}

describe('shared/zfs/zfs.ts without ZFS', () => {
  test('bad names are refused before any command runs', async () => {
    // A wrapper whose programs do not exist: a name that got through would fail with 'no-zfs'.
    const none = new Zfs({ zfs: '/nonexistent/zfs', zpool: '/nonexistent/zpool' });
    const refused = (run: () => unknown) =>
      assert.rejects(async () => run(), ZfsNameError, `accepted: ${run.toString()}`);
    for (const name of [
      'pool/ds@x; rm -rf /',
      '-o',
      'pool/ds@bad name',
      'pool/ds@',
      'pool/ds@a@b',
      '@x',
      '-rf@x',
    ]) {
      await refused(() => none.snapshots(name));
      await refused(() => none.destroySnapshot(name));
      await refused(() => none.rollback(name));
      await refused(() => none.hold(name, 'lifeboat'));
      await refused(() => none.send(name));
      await refused(() => none.receive(name, Readable.from([])));
    }
    for (const name of [
      'pool/with space',
      'pool//x',
      'pool/../x',
      'mirror/x',
      '1pool/x',
      'pool/x\n',
      'a'.repeat(256),
    ])
      await refused(() => none.datasets(name));
    await refused(() => none.snapshot('pool/ds', 'x; reboot'));
    await refused(() => none.snapshot('pool/ds', 'ok', { properties: { 'LIFEBOAT:X': 'v' } }));
    await refused(() => none.snapshot('pool/ds', 'ok', { properties: { 'lifeboat:set': 'two\nlines' } }));
    await refused(() => none.snapshot('pool/ds', 'ok', { properties: { '-o': 'v' } }));
    await refused(() => none.hold('pool/ds@ok', '-r'));
    await refused(() => none.capacity('pool/ds'));
    await refused(() => none.send('pool/ds@b', { from: 'other/ds@a' }));
    await refused(() => none.snapshots('pool/ds', { properties: ['-H'] }));
    for (const name of ['tank/db@lifeboat-2026-12-01T03:00:00Z', 'my.pool/a-b_c.d:e/f@x', 'p@1'])
      assert.equal(snapshotNameProblem(name), undefined, name);
    // Well-formed names do reach the (missing) program.
    await assert.rejects(
      none.snapshots('tank/a-b_c.d:e'),
      (e: unknown) => e instanceof ZfsError && e.kind === 'no-zfs',
    );
  });
  test('"dataset is busy" is retried, then reported', async () => {
    // A fake zfs: busy twice, then fine; it logs each argv one argument per line.
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'lifeboat-zfs-fake-'));
    const fake = path.join(dir, 'zfs');
    await fs.writeFile(
      fake,
      `#!/bin/sh
n=$(cat "$0.count" 2>/dev/null || echo 0); echo $((n + 1)) > "$0.count"
printf '%s\\n' "$@" >> "$0.log"; echo -- >> "$0.log"
[ "$n" -lt 2 ] && { echo "cannot release 'keep' from 'p/d@s': dataset is busy" >&2; exit 1; }
exit 0
`,
      { mode: 0o755 },
    );
    try {
      assert.equal(await new Zfs({ zfs: fake, busyDelayMs: 10 }).release('p/d@s', 'keep'), 'released');
      assert.equal(await fs.readFile(`${fake}.log`, 'utf8'), 'release\nkeep\np/d@s\n--\n'.repeat(3));
      await fs.rm(`${fake}.count`);
      await assert.rejects(
        new Zfs({ zfs: fake, busyDelayMs: 10, busyRetries: 1 }).release('p/d@s', 'keep'),
        (e: unknown) => e instanceof ZfsError && e.kind === 'busy' && /dataset is busy/.test(e.message),
      );
    } finally {
      await fs.rm(dir, { recursive: true, force: true });
    }
  });
});

describe('zfs-fuse through shared/zfs/zfs.ts', { skip }, () => {
  let daemon: ZfsDaemon;
  let src: TestPool;
  let dst: TestPool;
  let data: string;
  let bigHash: string;

  before(async () => {
    let t0 = performance.now();
    daemon = await startZfs();
    timings.push(
      daemon.reused
        ? `daemon: reused (pid ${daemon.pid ?? 'not started by the harness'}), attach ${seconds(t0).toFixed(2)} s`
        : `daemon start ${daemon.startSeconds.toFixed(2)} s (pid ${daemon.pid})`,
    );
    src = await makePool('src');
    dst = await makePool('dst');
    timings.push(
      `pool create (512 MiB sparse) ${src.createSeconds.toFixed(2)} s, ${dst.createSeconds.toFixed(2)} s`,
    );
    data = `${src.pool}/data`;
    await zfsCommand('zfs', ['create', data]);
    await zfsCommand('zfs', ['create', `${data}/child`]);
    const dir = path.join(src.mountpoint, 'data');
    await fs.writeFile(path.join(dir, 'a.txt'), 'one\n');
    await fs.writeFile(path.join(dir, 'child', 'c.txt'), 'deep\n');
    t0 = performance.now();
    bigHash = await writeRandom(path.join(dir, 'big.bin'), 64 * MiB);
    timings.push(`write 64 MiB into the dataset ${(64 / seconds(t0)).toFixed(1)} MB/s`);
  });

  after(async () => {
    await src?.destroy();
    await dst?.destroy();
    const t0 = performance.now();
    const daemonState = await daemon?.stop();
    timings.push(`daemon stop: ${daemonState} (${seconds(t0).toFixed(2)} s)`);
    for (const line of timings) console.log(`# zfs timing: ${line}`);
  });

  test('a recursive snapshot with user properties, listed and parsed', async () => {
    const t0 = performance.now();
    const made = await zfs.snapshot(data, 'b1', {
      recursive: true,
      properties: { 'lifeboat:set': 'nightly', 'lifeboat:backup-id': '2026-12-01T03:00:00Z-ab12' },
    });
    timings.push(`recursive snapshot (2 datasets, 2 properties) ${seconds(t0).toFixed(3)} s`);
    assert.deepEqual(
      made.map((s) => s.name),
      [`${data}@b1`, `${data}/child@b1`],
    );
    const listed = await zfs.snapshots(src.pool);
    assert.deepEqual(
      listed.map((s) => s.name),
      made.map((s) => s.name),
    );
    const [top, child] = listed as [(typeof listed)[0], (typeof listed)[0]];
    assert.deepEqual(top.properties, {
      'lifeboat:set': 'nightly',
      'lifeboat:backup-id': '2026-12-01T03:00:00Z-ab12',
    });
    assert.deepEqual(child.properties, top.properties);
    assert.equal(top.type, 'snapshot');
    assert.equal(top.dataset, data);
    assert.equal(top.snapshot, 'b1');
    assert.match(top.guid, /^\d+$/);
    assert.notEqual(top.guid, child.guid);
    assert.equal(top.createtxg, child.createtxg, 'one transaction: atomic');
    assert.ok(Math.abs(top.creation - Date.now() / 1000) < 300, `creation ${top.creation}`);
    assert.ok(top.referenced > 64 * MiB && top.referenced < 66 * MiB, `referenced ${top.referenced}`);
    assert.equal(top.userrefs, 0);
    const datasets = await zfs.datasets(src.pool);
    assert.deepEqual(
      datasets.map((d) => [d.name, d.type]),
      [
        [src.pool, 'filesystem'],
        [data, 'filesystem'],
        [`${data}/child`, 'filesystem'],
      ],
    );
    assert.deepEqual(datasets[1]!.properties, {});
    assert.ok(datasets[1]!.used >= top.referenced);
    assert.deepEqual(
      (await zfs.snapshots(data, { recursive: false })).map((s) => s.name),
      [`${data}@b1`],
    );
    assert.equal(await zfs.get(`${data}@nope`), undefined);
    await assert.rejects(
      zfs.snapshot(data, 'b1'),
      (e: unknown) => e instanceof ZfsError && e.kind === 'exists',
    );
  });

  test('a hold prevents destroy; after release the snapshot is destroyed', async () => {
    await zfs.snapshot(data, 'h1', { recursive: true });
    const snapshot = `${data}@h1`;
    assert.equal(await zfs.hold(snapshot, 'lifeboat', { recursive: true }), 'held');
    assert.equal(await zfs.hold(snapshot, 'lifeboat', { recursive: true }), 'already-held');
    // Only the child held: `zfs hold -r` refuses as a whole, the parent is still held.
    await zfs.release(snapshot, 'lifeboat');
    assert.equal(await zfs.hold(snapshot, 'lifeboat', { recursive: true }), 'held');
    assert.equal(await zfs.hold(snapshot, 'other', { recursive: false }), 'held');
    assert.equal((await zfs.get(snapshot))!.userrefs, 2);
    assert.equal(await zfs.release(snapshot, 'other'), 'released');
    const holds = await zfs.holds(snapshot);
    assert.equal(holds.userrefs, 1);
    if (holds.tags) assert.deepEqual(holds.tags, ['lifeboat']); // OpenZFS; zfs-fuse has no `zfs holds`
    const refused = await zfs.destroySnapshot(snapshot, { recursive: true });
    assert.equal(refused.destroyed, false);
    assert.equal(!refused.destroyed && refused.reason, 'held');
    assert.deepEqual(refused.snapshots, [`${data}@h1`, `${data}/child@h1`]);
    assert.ok(await zfs.get(snapshot));
    await assert.rejects(zfsCommand('zfs', ['destroy', snapshot]), /dataset is busy/, 'ZFS itself refuses');
    // Only the child still held: the recursive destroy destroys nothing.
    assert.equal(await zfs.release(snapshot, 'lifeboat'), 'released');
    const partly = await zfs.destroySnapshot(snapshot, { recursive: true });
    assert.deepEqual(partly.destroyed ? [] : partly.snapshots, [`${data}/child@h1`]);
    assert.ok(await zfs.get(snapshot));
    // `zfs release -r` refuses as a whole when one lacks the tag: the child is still released.
    assert.equal(await zfs.release(snapshot, 'lifeboat', { recursive: true }), 'released');
    assert.equal(await zfs.release(snapshot, 'lifeboat', { recursive: true }), 'not-held');
    assert.equal((await zfs.get(`${data}/child@h1`))!.userrefs, 0);
    const done = await zfs.destroySnapshot(snapshot, { recursive: true });
    assert.deepEqual(done, { destroyed: true, snapshots: [`${data}@h1`, `${data}/child@h1`] });
    assert.equal(await zfs.get(snapshot), undefined);
    assert.equal((await zfs.destroySnapshot(snapshot)).destroyed, false);
  });

  test('a full send | receive into another pool has the same files and referenced bytes', async () => {
    const source = (await zfs.get(`${data}@b1`))!;
    let t0 = performance.now();
    const drained = counter();
    for await (const _ of through(zfs.send(`${data}@b1`), drained.stream));
    timings.push(`full send alone (drained) ${(drained.bytes / MiB / seconds(t0)).toFixed(1)} MiB/s`);
    t0 = performance.now();
    const count = counter();
    await zfs.receive(`${dst.pool}/copy`, through(zfs.send(`${data}@b1`), count.stream));
    const took = seconds(t0);
    timings.push(
      `full send | receive of ${(source.referenced / MiB).toFixed(1)} MiB: ${took.toFixed(2)} s, ` +
        `${(source.referenced / MiB / took).toFixed(1)} MiB/s (stream ${(count.bytes / MiB).toFixed(1)} MiB)`,
    );
    const copy = (await zfs.get(`${dst.pool}/copy@b1`))!;
    assert.equal(copy.referenced, source.referenced);
    assert.equal(copy.guid, source.guid, 'a received snapshot keeps its guid');
    const dir = path.join(dst.mountpoint, 'copy');
    assert.equal(await sha256(path.join(dir, 'big.bin')), bigHash);
    assert.equal(await fs.readFile(path.join(dir, 'a.txt'), 'utf8'), 'one\n');
    assert.deepEqual((await fs.readdir(dir)).sort(), ['a.txt', 'big.bin', 'child']); // an empty mount point
  });

  test('an incremental send carries only the change', async () => {
    const dir = path.join(src.mountpoint, 'data');
    await fs.writeFile(path.join(dir, 'b.txt'), 'two\n');
    await fs.rm(path.join(dir, 'a.txt'));
    await zfs.snapshot(data, 'b2');
    const count = counter();
    const t0 = performance.now();
    await zfs.receive(
      `${dst.pool}/copy`,
      through(zfs.send(`${data}@b2`, { from: `${data}@b1` }), count.stream),
      {
        force: true,
      },
    );
    timings.push(`incremental send | receive (small change): ${seconds(t0).toFixed(2)} s, ${count.bytes} B`);
    assert.ok(count.bytes < MiB, `incremental stream ${count.bytes} B`);
    const copyDir = path.join(dst.mountpoint, 'copy');
    assert.equal(await fs.readFile(path.join(copyDir, 'b.txt'), 'utf8'), 'two\n');
    await assert.rejects(fs.stat(path.join(copyDir, 'a.txt')), { code: 'ENOENT' });
    assert.equal(await sha256(path.join(copyDir, 'big.bin')), bigHash);
    assert.deepEqual(
      (await zfs.snapshots(`${dst.pool}/copy`)).map((s) => s.snapshot),
      ['b1', 'b2'],
    );
  });

  test('a replicated send (-R) of the whole pool onto another pool root (altroot)', async () => {
    await zfs.snapshot(src.pool, 'all', { recursive: true });
    const alt = await makePool('alt', { altroot: true, sizeMiB: 256 });
    try {
      const t0 = performance.now();
      await zfs.receive(alt.pool, zfs.send(`${src.pool}@all`, { replicate: true }), {
        force: true,
        stripPool: true,
      });
      timings.push(`replicated send | receive -F -d of the pool: ${seconds(t0).toFixed(2)} s`);
      // The same snapshots (in receive order: createtxg is the receiving pool's).
      const names = async (pool: string) =>
        (await zfs.snapshots(pool)).map((s) => s.name.slice(pool.length)).sort();
      assert.deepEqual(await names(alt.pool), await names(src.pool));
      // The source root's mountpoint came along (-R sends properties): below the altroot.
      const dir = path.join(alt.altroot!, src.mountpoint, 'data');
      assert.equal(await sha256(path.join(dir, 'big.bin')), bigHash);
      assert.equal(await fs.readFile(path.join(dir, 'child', 'c.txt'), 'utf8'), 'deep\n');
    } finally {
      await alt.destroy();
      const destroyed = await zfs.destroySnapshot(`${src.pool}@all`, { recursive: true });
      assert.ok(destroyed.destroyed, `${src.pool}@all: ${!destroyed.destroyed && destroyed.message}`);
    }
  });

  test('send and receive failures carry what zfs said', async () => {
    const missing = zfs.send(`${data}@nope`);
    await assert.rejects(
      async () => {
        for await (const _ of missing);
      },
      (e: unknown) => e instanceof ZfsError && e.kind === 'missing' && /does not exist/.test(e.message),
    );
    await assert.rejects(
      zfs.receive(`${dst.pool}/garbage`, Readable.from([Buffer.from('not a zfs stream\n')])),
      (e: unknown) => e instanceof ZfsError && /zfs receive/.test(e.message),
    );
    // A failing input (a real stream cut after 1 MiB) is the error reported, not zfs's
    // complaint about a truncated stream.
    let passed = 0;
    const cut = new Transform({
      transform(chunk: Buffer, _encoding, done) {
        passed += chunk.length;
        done(passed > MiB ? new Error('storage went away') : null, chunk);
      },
    });
    await assert.rejects(
      zfs.receive(`${dst.pool}/broken`, through(zfs.send(`${data}@b1`), cut)),
      /storage went away/,
    );
    assert.equal(await zfs.get(`${dst.pool}/garbage`), undefined);
    assert.equal(await zfs.get(`${dst.pool}/broken`), undefined);
  });

  test('rollback is refused while newer snapshots exist, unless asked to destroy them', async () => {
    const dir = path.join(src.mountpoint, 'data');
    await fs.writeFile(path.join(dir, 'b.txt'), 'changed\n');
    await assert.rejects(
      zfs.rollback(`${data}@b1`),
      (e: unknown) =>
        e instanceof ZfsError && e.kind === 'newer-snapshots' && e.snapshots[0] === `${data}@b2`,
    );
    assert.ok(await zfs.get(`${data}@b2`));
    assert.deepEqual(await zfs.rollback(`${data}@b2`), { destroyed: [] });
    assert.equal(await fs.readFile(path.join(dir, 'b.txt'), 'utf8'), 'two\n');
    await zfs.hold(`${data}@b2`, 'lifeboat');
    await assert.rejects(
      zfs.rollback(`${data}@b1`, { destroyNewer: true }),
      (e: unknown) => e instanceof ZfsError && e.kind === 'held',
    );
    await zfs.release(`${data}@b2`, 'lifeboat');
    const t0 = performance.now();
    assert.deepEqual(await zfs.rollback(`${data}@b1`, { destroyNewer: true }), { destroyed: [`${data}@b2`] });
    timings.push(`rollback -r ${seconds(t0).toFixed(2)} s`);
    assert.equal(await fs.readFile(path.join(dir, 'a.txt'), 'utf8'), 'one\n');
    await assert.rejects(fs.stat(path.join(dir, 'b.txt')), { code: 'ENOENT' });
    assert.equal(await zfs.get(`${data}@b2`), undefined);
  });

  test('pool capacity, and freed space seen at once with settle', async () => {
    const before = await zfs.capacity(src.pool);
    assert.ok(before.size > 400 * MiB && before.size <= 512 * MiB, `size ${before.size}`);
    assert.ok(before.allocated > 64 * MiB, `allocated ${before.allocated}`);
    assert.ok(before.free > 0 && before.free < before.size);
    assert.ok(Number.isInteger(before.capacity) && before.capacity >= 10 && before.capacity < 50);
    const fill = path.join(src.mountpoint, 'data', 'fill.bin');
    await writeRandom(fill, 200 * MiB);
    const full = await zfs.capacity(src.pool, { settle: true });
    assert.ok(full.capacity >= before.capacity + 30, `${before.capacity}% -> ${full.capacity}%`);
    await fs.rm(fill);
    const late = await zfs.capacity(src.pool);
    const t0 = performance.now();
    const settled = await zfs.capacity(src.pool, { settle: true });
    timings.push(
      `capacity ${before.capacity}% -> filled ${full.capacity}% -> rm: ${late.capacity}% plain, ` +
        `${settled.capacity}% with settle (${seconds(t0).toFixed(2)} s); exact sizes: ${settled.exact}`,
    );
    assert.ok(
      settled.capacity <= before.capacity + 2,
      `${settled.capacity}% after rm, ${before.capacity}% before`,
    );
    assert.deepEqual(await zfs.snapshots(src.pool, { recursive: false }), [], 'no settle snapshot left');
  });
});

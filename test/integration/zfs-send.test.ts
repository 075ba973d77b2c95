/**
 * ZFS off-site and back, on real ZFS (zfs-fuse, pools on sparse files): snapshot-zfs send-to
 * (full, then incremental from the last sent snapshot still on the host, through zstd and
 * age into a folder storage), restore by zfs receive of the chain, verify-restore into a
 * throwaway pool, rollback on the host, prune keeping what a kept incremental needs, and
 * crafted hostile backups (matching hashes): a replication stream, a stream of another
 * snapshot, a dataset outside the backup's, a broken chain. Prints timings. Skipped, saying
 * why, without root, /dev/fuse or zfs-fuse.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { buffer } from 'node:stream/consumers';
import { after, before, describe, test } from 'node:test';
import { makeReader, runCommand } from '../../shared/action/run.ts';
import type { Command, CommandResult } from '../../shared/action/spec.ts';
import type { Manifest } from '../../shared/catalog/manifest.ts';
import { copyCommand } from '../../shared/commands/copy.ts';
import { pruneRetentionCommand } from '../../shared/commands/prune-retention.ts';
import { restoreCommand } from '../../shared/commands/restore.ts';
import { snapshotZfsCommand } from '../../shared/commands/snapshot-zfs.ts';
import { verifyRestoreCommand } from '../../shared/commands/verify-restore.ts';
import { digestTree } from '../../shared/files/tree-digest.ts';
import { removeKindLeftovers } from '../../shared/kinds/index.ts';
import type { VerifyReport } from '../../shared/verify/report.ts';
import type { ZfsFacts } from '../../shared/zfs/snapshot.ts';
import { parseStreamBegin } from '../../shared/zfs/stream.ts';
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
if (skip) console.log(`# zfs-send: skipped, ${skip}`);

const MiB = 1024 * 1024;
const zfs = new Zfs({ zfs: zfsPrograms.zfs, zpool: zfsPrograms.zpool });
const passphrase = 'correct horse battery staple zfs';
const timings: string[] = [];
let daemon: ZfsDaemon;
let src: TestPool;
let dst: TestPool;
let work: string;
const logs: string[] = [];

async function run(command: unknown, inputs: Record<string, string>): Promise<CommandResult> {
  const c = command as Command<never>;
  return runCommand(
    c,
    makeReader(c, (spec) => inputs[spec.name] ?? spec.default, {}),
    {
      info: (m) => void logs.push(m),
      warn: (m) => void logs.push(`warning: ${m}`),
    },
  );
}

async function timed<T>(label: string, step: () => Promise<T>): Promise<T> {
  const started = performance.now();
  const result = await step();
  timings.push(`${label}: ${((performance.now() - started) / 1000).toFixed(2)} s`);
  return result;
}

async function writeRandom(file: string, bytes: number): Promise<void> {
  await fs.writeFile(file, randomBytes(bytes));
}

const storage = () => path.join(work, 'offsite');
const manifestFile = (set: string, id: string) => path.join(storage(), set, id, 'manifest.json');
const readManifest = async (set: string, id: string) =>
  JSON.parse(await fs.readFile(manifestFile(set, id), 'utf8')) as Manifest;
const sha256 = (data: Buffer) => createHash('sha256').update(data).digest('hex');

/** snapshot-zfs with send-to; `at` fixes the backup's time (ids are minutes). */
async function send(set: string, datasets: string, extra: Record<string, string> = {}) {
  return run(snapshotZfsCommand, {
    'send-to': storage(),
    set,
    datasets,
    'age-passphrase': passphrase,
    ...extra,
  });
}

const restoreInputs = (set: string, extra: Record<string, string>) => ({
  storage: storage(),
  set,
  'age-passphrase': passphrase,
  ...extra,
});

async function verify(set: string, backup: string, extra: Record<string, string> = {}) {
  const reportFile = path.join(work, `verify-${set}-${randomBytes(3).toString('hex')}.json`);
  const result = await run(verifyRestoreCommand, {
    storage: storage(),
    set,
    backup,
    'age-passphrase': passphrase,
    'work-dir': work,
    'report-file': reportFile,
    ...extra,
  });
  return { result, report: JSON.parse(await fs.readFile(reportFile, 'utf8')) as VerifyReport };
}

const verifyPools = async () =>
  (await zfsCommand('zpool', ['list', '-H', '-o', 'name']))
    .split('\n')
    .filter((p) => p.startsWith('lifeboat_verify_'));

/** Waits for the next minute so that two backups get ids of their own minutes (ids are minutes). */
async function nextId(): Promise<void> {
  await new Promise((resolve) => setTimeout(resolve, 1100));
}

describe('zfs send-to, restore and verify on real ZFS', { skip, timeout: 600_000 }, () => {
  const set = 'zsend';
  let full: string;
  let incremental: string;
  let data: string;
  before(async () => {
    daemon = await startZfs();
    src = await makePool('send', { sizeMiB: 512 });
    dst = await makePool('recv', { sizeMiB: 512 });
    work = await fs.mkdtemp(path.join(os.tmpdir(), 'lifeboat-zfs-send-'));
    data = `${src.pool}/data`;
    await zfsCommand('zfs', ['create', data]);
    const mount = path.join(src.mountpoint, 'data');
    await writeRandom(path.join(mount, 'big.bin'), 8 * MiB);
    await fs.mkdir(path.join(mount, 'conf'));
    await fs.writeFile(path.join(mount, 'conf', 'app.ini'), 'a=1\n');
    await fs.symlink('conf/app.ini', path.join(mount, 'link'));
    await fs.chmod(path.join(mount, 'conf', 'app.ini'), 0o640);
  });
  after(async () => {
    console.log(`# zfs-send timings:\n#   ${timings.join('\n#   ')}`);
    await src?.destroy();
    await dst?.destroy();
    await daemon?.stop();
    if (work) await fs.rm(work, { recursive: true, force: true });
  });

  test('the first send is full: one stream per dataset, indexed, encrypted; manifest last', async () => {
    const result = await timed('send-to full (8 MiB of random data)', () => send(set, data));
    full = result.outputs['backup-id']!;
    assert.match(full, /-backup-full$/);
    const manifest = await readManifest(set, full);
    assert.equal(manifest.kind, 'zfs');
    assert.equal(manifest.mode, 'full');
    assert.equal(manifest.parent, undefined);
    assert.equal(manifest.artifacts.length, 1);
    const [artifact] = manifest.artifacts;
    assert.match(artifact!.name, /^01-.*\.data\.zfs\.zst\.age$/);
    assert.deepEqual(artifact!.encryption, { type: 'age', recipients: 0, passphrase: true });
    const facts = manifest.facts as unknown as ZfsFacts;
    const fact = facts.snapshots[0]!;
    assert.equal(fact.stream?.artifact, artifact!.name);
    assert.equal(fact.stream?.from, undefined);
    assert.equal(fact.stream?.index?.files, 2);
    assert.equal(fact.stream?.index?.symlinks, 1);
    assert.equal(fact.stream?.index?.bytes, 8 * MiB + 4);
    assert.ok(Number(result.outputs['sent-bytes']) > 8 * MiB, 'random data does not compress');
    // The stored stream is what the artifact records, and no clone is left behind.
    const stored = await fs.readFile(path.join(storage(), set, full, artifact!.name));
    assert.equal(sha256(stored), artifact!.sha256);
    assert.deepEqual(
      (await zfs.datasets(src.pool)).map((d) => d.name).filter((n) => n.includes('index')),
      [],
    );
  });

  test('the next send is incremental from the last one sent; a new child dataset gets a full stream', async () => {
    await nextId();
    const mount = path.join(src.mountpoint, 'data');
    await fs.writeFile(path.join(mount, 'conf', 'app.ini'), 'a=2\n');
    await writeRandom(path.join(mount, 'new.bin'), 1 * MiB);
    await zfsCommand('zfs', ['create', `${data}/child`]);
    await fs.writeFile(path.join(mount, 'child', 'c.txt'), 'child\n');
    const result = await timed('send-to incremental (1 MiB changed, one new dataset)', () => send(set, data));
    incremental = result.outputs['backup-id']!;
    assert.match(incremental, /-backup-incremental$/);
    const manifest = await readManifest(set, incremental);
    assert.equal(manifest.mode, 'incremental');
    assert.equal(manifest.parent, full);
    const facts = manifest.facts as unknown as ZfsFacts;
    const parentFacts = (await readManifest(set, full)).facts as unknown as ZfsFacts;
    const top = facts.snapshots.find((s) => s.dataset === data)!;
    const child = facts.snapshots.find((s) => s.dataset === `${data}/child`)!;
    assert.deepEqual(top.stream?.from, {
      snapshot: parentFacts.snapshots[0]!.snapshot,
      guid: parentFacts.snapshots[0]!.guid,
    });
    assert.equal(child.stream?.from, undefined, 'a new dataset is sent full');
    const topArtifact = manifest.artifacts.find((a) => a.name === top.stream!.artifact)!;
    assert.ok(
      topArtifact.bytes < 3 * MiB,
      `the incremental stream holds the change only (${topArtifact.bytes} bytes)`,
    );
    timings.push(
      `incremental stream: ${(topArtifact.bytes / MiB).toFixed(2)} MiB stored vs full ${((await readManifest(set, full)).artifacts[0]!.bytes / MiB).toFixed(2)} MiB`,
    );
  });

  test('restore receives the chain (full, then incremental) into a new dataset: same files, same guids', async () => {
    const target = `${dst.pool}/restored`;
    const dry = await run(
      restoreCommand,
      restoreInputs(set, { backup: incremental, target, 'dry-run': 'true' }),
    );
    assert.match(dry.summary?.heading ?? '', /^Dry-run restore/);
    assert.equal(await zfs.get(target), undefined, 'a dry run receives nothing');
    const result = await timed('restore: receive full + incremental', () =>
      run(restoreCommand, restoreInputs(set, { backup: incremental, target })),
    );
    assert.equal(result.outputs.target, `${target},${target}/child`);
    const facts = (await readManifest(set, incremental)).facts as unknown as ZfsFacts;
    for (const fact of facts.snapshots) {
      const into = fact.dataset.replace(data, target);
      const received = await zfs.get(`${into}@${facts.snapshotName}`, { properties: [] });
      assert.equal(received?.guid, fact.guid, `${into} has the snapshot's guid`);
    }
    const restored = await digestTree(await zfs.mountpoint(target));
    const top = facts.snapshots.find((s) => s.dataset === data)!;
    assert.deepEqual(restored, top.stream!.index, "the restored files are the snapshot's, byte for byte");
    assert.equal(
      await fs.readFile(path.join(await zfs.mountpoint(`${target}/child`), 'c.txt'), 'utf8'),
      'child\n',
    );
    // Into an existing dataset: refused, nothing changed.
    await assert.rejects(
      run(restoreCommand, restoreInputs(set, { backup: incremental, target })),
      /target: '.*restored' exists; zfs receive goes into a new dataset/,
    );
  });

  test('restore refuses without a target, and a wrong passphrase before anything is received', async () => {
    await assert.rejects(
      run(restoreCommand, restoreInputs(set, { backup: full })),
      /target: required for a zfs backup .* or rollback: true/,
    );
    const target = `${dst.pool}/wrongkey`;
    await assert.rejects(
      run(restoreCommand, { storage: storage(), set, backup: full, target, 'age-passphrase': 'wrong' }),
      /passphrase|decrypt|identity/i,
    );
    assert.equal(await zfs.get(target), undefined, 'nothing is left of a failed receive');
  });

  test('verify-restore receives the chain into a throwaway pool and compares every file; the pool is gone', async () => {
    const { result, report } = await timed('verify-restore (throwaway pool, 2 datasets, 3 streams)', () =>
      verify(set, incremental),
    );
    assert.equal(report.passed, true, JSON.stringify(report.checks, null, 1));
    assert.equal(result.outputs.passed, 'true');
    const names = report.checks.map((c) => c.name);
    assert.deepEqual(names.slice(0, 5), [
      'chain',
      `receive ${data}`,
      `receive ${data}/child`,
      `files ${data}`,
      `files ${data}/child`,
    ]);
    assert.match(report.checks.find((c) => c.name === `files ${data}`)!.detail, /3 files.*as recorded/);
    assert.ok(report.restoreSeconds !== null && report.restoreSeconds > 0);
    assert.equal(report.environment.removed, true);
    assert.deepEqual(await verifyPools(), []);
    const left = (await fs.readdir(work)).filter((f) => f.startsWith('lifeboat-zfs-verify-'));
    assert.deepEqual(left, []);
    timings.push(`verify RTO (receive of 3 streams): ${report.restoreSeconds!.toFixed(2)} s`);
  });

  /** A copy of the set under another name whose manifests the test may rewrite. */
  async function copySet(name: string): Promise<void> {
    await fs.cp(path.join(storage(), set), path.join(storage(), name), { recursive: true });
    for (const id of await fs.readdir(path.join(storage(), name))) {
      const file = manifestFile(name, id);
      const manifest = JSON.parse(await fs.readFile(file, 'utf8')) as Manifest;
      manifest.set = name;
      await fs.writeFile(file, JSON.stringify(manifest));
    }
  }

  /** Replaces an artifact's bytes and records their size and sha256 (what a bucket writer can do). */
  async function replaceArtifact(name: string, id: string, index: number, bytes: Buffer): Promise<void> {
    const manifest = await readManifest(name, id);
    const artifact = manifest.artifacts[index]!;
    artifact.compression = 'none';
    artifact.encryption = null;
    artifact.bytes = bytes.length;
    artifact.contentBytes = bytes.length;
    artifact.sha256 = sha256(bytes);
    await fs.writeFile(path.join(storage(), name, id, artifact.name), bytes);
    await fs.writeFile(manifestFile(name, id), JSON.stringify(manifest));
  }

  test('hostile: a replication (-R) stream with matching hashes is refused before zfs sees it', async () => {
    await copySet('zhostile-r');
    // Any replication stream (this one of another dataset, which sets its own mountpoint).
    await zfsCommand('zfs', ['create', '-o', `mountpoint=${path.join(work, 'evil')}`, `${src.pool}/evil`]);
    await zfsCommand('zfs', ['snapshot', `${src.pool}/evil@x`]);
    const replicate = await buffer(zfs.send(`${src.pool}/evil@x`, { replicate: true }));
    assert.equal(parseStreamBegin(replicate)?.compound, true);
    await replaceArtifact('zhostile-r', full, 0, replicate);
    const target = `${dst.pool}/hostile_r`;
    await assert.rejects(
      run(restoreCommand, {
        storage: storage(),
        set: 'zhostile-r',
        backup: full,
        target,
        'allow-unencrypted': 'true',
      }),
      /the zfs stream .* is refused: it is a replication \(-R\) stream/,
    );
    assert.equal(await zfs.get(target), undefined);
    const { report } = await verify('zhostile-r', full, { 'allow-unencrypted': 'true' });
    assert.equal(report.passed, false);
    assert.match(
      report.checks.find((c) => c.name === `receive ${data}`)!.detail,
      /replication \(-R\) stream/,
    );
    assert.deepEqual(await verifyPools(), []);
  });

  test('hostile: a stream of another snapshot (guid differs) is refused', async () => {
    await copySet('zhostile-guid');
    await zfsCommand('zfs', ['snapshot', `${data}@other`]);
    const other = await buffer(zfs.send(`${data}@other`));
    await replaceArtifact('zhostile-guid', full, 0, other);
    await assert.rejects(
      run(restoreCommand, {
        storage: storage(),
        set: 'zhostile-guid',
        backup: full,
        target: `${dst.pool}/hostile_g`,
        'allow-unencrypted': 'true',
      }),
      /is refused: it is of the snapshot with guid \d+, the manifest records \d+/,
    );
    assert.equal(await zfs.get(`${dst.pool}/hostile_g`), undefined);
  });

  test("hostile: a snapshot fact outside the backup's datasets, or naming another snapshot, is refused", async () => {
    await copySet('zhostile-ds');
    const manifest = await readManifest('zhostile-ds', incremental);
    const facts = manifest.facts as unknown as ZfsFacts;
    facts.snapshots[1]!.dataset = `${src.pool}/elsewhere`;
    await fs.writeFile(manifestFile('zhostile-ds', incremental), JSON.stringify(manifest));
    await assert.rejects(
      run(
        restoreCommand,
        restoreInputs('zhostile-ds', { backup: incremental, target: `${dst.pool}/hostile_d` }),
      ),
      /is refused: snapshot .*: its dataset .*elsewhere is not .*data or below it/,
    );
    assert.equal(await zfs.get(`${dst.pool}/hostile_d`), undefined);
  });

  test("a broken chain (the parent deleted) is reported as the backup's damage, naming the link", async () => {
    await copySet('zbroken');
    await fs.rm(path.join(storage(), 'zbroken', full), { recursive: true });
    await assert.rejects(
      run(restoreCommand, restoreInputs('zbroken', { backup: incremental, target: `${dst.pool}/broken` })),
      new RegExp(
        `the chain of zbroken/${incremental} is broken at ${incremental}: its parent ${full} cannot be read`,
      ),
    );
    const { report } = await verify('zbroken', incremental);
    assert.equal(report.passed, false);
    assert.equal(report.checks[0]!.name, 'chain');
    assert.equal(report.checks[0]!.status, 'failed');
  });

  test('prune-retention keeps the full backup a kept incremental needs, and says why', async () => {
    const result = await run(pruneRetentionCommand, { storage: storage(), set, 'keep-last': '1' });
    const report = JSON.parse(result.outputs.result!) as {
      sets: { plan: { backups: { id: string; keep: boolean; reasons: string[] }[] } }[];
    };
    const planned = report.sets[0]!.plan.backups;
    assert.deepEqual(
      planned.map((b) => [b.id, b.keep]),
      [
        [incremental, true],
        [full, true],
      ],
    );
    assert.deepEqual(planned[1]!.reasons, [`parent of ${incremental}`]);
    assert.ok(await fs.stat(manifestFile(set, full)));
  });

  test('copy of the latest (incremental) backup brings the backups under it too; the copy restores', async () => {
    const copyTo = path.join(work, 'second-site');
    const result = await run(copyCommand, {
      storage: storage(),
      'to-storage': copyTo,
      set,
      backup: 'latest',
    });
    assert.equal(result.outputs.copied, `${set}/${full},${set}/${incremental}`);
    const target = `${dst.pool}/from_copy`;
    await run(restoreCommand, {
      storage: copyTo,
      set,
      backup: incremental,
      target,
      'age-passphrase': passphrase,
    });
    const facts = (await readManifest(set, incremental)).facts as unknown as ZfsFacts;
    assert.deepEqual(
      await digestTree(await zfs.mountpoint(target)),
      facts.snapshots.find((s) => s.dataset === data)!.stream!.index,
    );
  });

  test('rollback on the host: refused while newer snapshots exist, shown by a dry run, done with destroy-newer', async () => {
    const rset = 'zroll';
    const ds = `${src.pool}/roll`;
    await zfsCommand('zfs', ['create', ds]);
    const mount = path.join(src.mountpoint, 'roll');
    await fs.writeFile(path.join(mount, 'state'), 'before\n');
    const taken = await run(snapshotZfsCommand, { storage: storage(), set: rset, datasets: ds });
    const id = taken.outputs['backup-id']!;
    await fs.writeFile(path.join(mount, 'state'), 'after\n');
    await zfsCommand('zfs', ['snapshot', `${ds}@later`]);
    await assert.rejects(
      run(restoreCommand, { storage: storage(), set: rset, backup: id, rollback: 'true' }),
      /destroy-newer: rolling back would destroy newer snapshots: .*roll@later/,
    );
    const dry = await run(restoreCommand, {
      storage: storage(),
      set: rset,
      backup: id,
      rollback: 'true',
      'dry-run': 'true',
    });
    assert.match(JSON.stringify(dry.summary), /roll@later/);
    assert.equal(
      await fs.readFile(path.join(mount, 'state'), 'utf8'),
      'after\n',
      'a dry run changes nothing',
    );
    // A manifest that names the snapshot of another set (a bucket writer's edit) is refused.
    const manifest = await readManifest(rset, id);
    const forged = structuredClone(manifest);
    (forged.facts as unknown as ZfsFacts).snapshots[0]!.guid = '1';
    await fs.writeFile(manifestFile(rset, id), JSON.stringify(forged));
    await assert.rejects(
      run(restoreCommand, {
        storage: storage(),
        set: rset,
        backup: id,
        rollback: 'true',
        'destroy-newer': 'true',
      }),
      /is not the snapshot of zroll\/.* \(its lifeboat properties or guid differ\)/,
    );
    await fs.writeFile(manifestFile(rset, id), JSON.stringify(manifest));
    const done = await timed('restore: rollback with destroy-newer', () =>
      run(restoreCommand, {
        storage: storage(),
        set: rset,
        backup: id,
        rollback: 'true',
        'destroy-newer': 'true',
      }),
    );
    assert.match(JSON.stringify(done.summary), /roll@later/);
    assert.equal(await fs.readFile(path.join(mount, 'state'), 'utf8'), 'before\n');
    assert.equal(await zfs.get(`${ds}@later`), undefined);
    // A backup taken without send-to has no streams: receive and verify say how to restore it.
    await assert.rejects(
      run(restoreCommand, { storage: storage(), set: rset, backup: id, target: `${dst.pool}/nostreams` }),
      /has no zfs streams \(it was taken without send-to/,
    );
  });

  test('the post step removes what a killed verify (its pool) or restore (its datasets) left, and nothing else', async () => {
    const read = () => undefined;
    const dir = await fs.mkdtemp(path.join(work, 'lifeboat-zfs-verify-'));
    const pool = `lifeboat_verify_${randomBytes(6).toString('hex')}`;
    await fs.writeFile(path.join(dir, 'pool.img'), '');
    await fs.truncate(path.join(dir, 'pool.img'), 128 * MiB);
    await zfs.createPool(pool, path.join(dir, 'pool.img'), path.join(dir, 'mnt'));
    await removeKindLeftovers('verify', { type: 'zfs-pool', pool, dir }, read, { info() {}, warn() {} });
    assert.deepEqual(await verifyPools(), []);
    await assert.rejects(fs.stat(dir), { code: 'ENOENT' });
    await assert.rejects(
      removeKindLeftovers('verify', { type: 'zfs-pool', pool: src.pool, dir: work }, read, {
        info() {},
        warn() {},
      }),
      /is not a verify-restore pool; left alone/,
    );
    assert.ok(await zfs.get(src.pool), 'a pool the state wrongly names is left alone');
    await zfsCommand('zfs', ['create', `${dst.pool}/partial`]);
    await removeKindLeftovers('restore', { type: 'zfs-received', datasets: [`${dst.pool}/partial`] }, read, {
      info() {},
      warn() {},
    });
    assert.equal(await zfs.get(`${dst.pool}/partial`), undefined);
  });

  test('send-to and storage together, or lock-for without send-to, are refused naming the inputs', async () => {
    await assert.rejects(
      run(snapshotZfsCommand, { storage: storage(), 'send-to': storage(), set, datasets: data }),
      /send-to: given with storage; give one/,
    );
    await assert.rejects(
      run(snapshotZfsCommand, { storage: storage(), set, datasets: data, 'lock-for': '1d' }),
      /lock-for: needs send-to/,
    );
  });
});

/**
 * Retention locks written with the backup (lock-for, lock-mode), against servers that enforce
 * them: Ceph RGW (S3 Object Lock: governance, compliance, versioned deletes) and a local
 * folder (chattr +i, as root); and refused, in one line with nothing written, where they are
 * not built (GCS, Azure), cannot be set (a bucket without Object Lock, a folder as non-root)
 * or cannot mean what they say (compliance on a folder). Never fauxqs: it answers lock calls
 * with 200 and overwrites the object with the request (FIELD-NOTES).
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import * as s3 from '@aws-sdk/client-s3';
import { describeFailure, exitCodeOf, makeReader, runCommand } from '../../shared/action/run.ts';
import type { Command, CommandResult } from '../../shared/action/spec.ts';
import { Catalog } from '../../shared/catalog/catalog.ts';
import type { Manifest } from '../../shared/catalog/manifest.ts';
import { backupFilesCommand } from '../../shared/commands/backup-files.ts';
import { copyCommand } from '../../shared/commands/copy.ts';
import { dumpMysqlCommand } from '../../shared/commands/dump-mysql.ts';
import { listCommand } from '../../shared/commands/list.ts';
import { pruneRetentionCommand } from '../../shared/commands/prune-retention.ts';
import { snapshotEbsCommand } from '../../shared/commands/snapshot-ebs.ts';
import { verifyRestoreCommand } from '../../shared/commands/verify-restore.ts';
import { silentLogger } from '../../shared/pipeline/progress.ts';
import { openStorage } from '../../shared/storage/open.ts';
import type { Storage } from '../../shared/storage/storage.ts';
import type { VerifyReport } from '../../shared/verify/report.ts';
import { startFakeEc2 } from '../fakes/ec2.ts';
import { generated } from '../harness/data.ts';
import { connectionInputs, sampleShop, sql, startMysql } from '../harness/mysql.ts';
import {
  cephInstalled,
  newS3Bucket,
  s3ClientOf,
  startAzurite,
  startCeph,
  startGcs,
  type TestServer,
  tempDir,
} from '../harness/servers.ts';

const isRoot = process.getuid?.() === 0;
const hasChattr = spawnSync('sh', ['-c', 'command -v chattr']).status === 0;
const hasMariadb = spawnSync('sh', ['-c', 'command -v mariadbd']).status === 0;

/** Runs a command as the action and the CLI do: inputs by name, defaults from its spec. */
function run(command: unknown, inputs: Record<string, string>): Promise<CommandResult> {
  const cmd = command as Command<never>;
  return runCommand(
    cmd,
    makeReader(cmd, (spec) => inputs[spec.name] ?? spec.default),
    silentLogger,
  );
}

/** The one line a refused run prints; it must exit 1 (the user's to fix). */
async function refusal(command: unknown, inputs: Record<string, string>): Promise<string> {
  let failure: ReturnType<typeof describeFailure> | undefined;
  try {
    await run(command, inputs);
  } catch (error) {
    failure = describeFailure(error);
  }
  assert.ok(failure, 'the command was expected to fail');
  assert.equal(exitCodeOf(failure), 1, failure.lines.join('\n'));
  assert.equal(failure.lines.length, 1, failure.lines.join('\n'));
  return failure.lines[0]!;
}

async function keysOf(storage: Storage, prefix = ''): Promise<string[]> {
  const found: string[] = [];
  for await (const item of storage.list(prefix)) found.push(item.key);
  return found;
}

/** Sets variables for the rest of a suite (commands open storage with process.env), undone by the returned function. */
function useEnv(vars: Record<string, string>): () => void {
  const saved = Object.fromEntries(Object.keys(vars).map((k) => [k, process.env[k]]));
  Object.assign(process.env, vars);
  return () => {
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  };
}

const wait = (ms: number) => new Promise((r) => setTimeout(r, ms));
const manifestOf = (result: CommandResult) => JSON.parse(result.outputs.result!) as Manifest;
const plusSeconds = (iso: string, seconds: number) =>
  new Date(Date.parse(iso) + seconds * 1000).toISOString();

let work: string;
let source: string;
before(async () => {
  work = await tempDir('locks');
  source = path.join(work, 'src');
  await fs.mkdir(path.join(source, 'conf.d'), { recursive: true });
  await fs.writeFile(path.join(source, 'a.conf'), 'a = 1\n');
  await fs.writeFile(path.join(source, 'conf.d', 'b.conf'), 'b = 2\n');
});
after(async () => {
  if (isRoot && hasChattr) spawnSync('chattr', ['-R', '-i', work]);
  await fs.rm(work, { recursive: true, force: true });
});

describe('retention locks on Ceph RGW (S3 Object Lock)', {
  skip:
    !cephInstalled &&
    'radosgw is not installed (apt-get install -y --no-install-recommends ceph-mon ceph-osd radosgw ceph-common)',
}, () => {
  let server: TestServer;
  let url: string;
  let bucket: string;
  let client: s3.S3Client;
  let storage: Storage;
  let restoreEnv: () => void;
  let big: string;
  let governed: Manifest;
  const objectKey = (m: Manifest, name: string) => `backups/${m.set}/${m.id}/${name}`;
  const versionsUnder = async (prefix: string) => {
    const page = await client.send(new s3.ListObjectVersionsCommand({ Bucket: bucket, Prefix: prefix }));
    return { versions: page.Versions ?? [], markers: page.DeleteMarkers ?? [] };
  };
  const versionOf = async (key: string) => (await versionsUnder(key)).versions.find((v) => v.Key === key)!;

  before(async () => {
    server = await startCeph();
    url = await newS3Bucket(server, { objectLock: true });
    bucket = new URL(url).host;
    restoreEnv = useEnv(server.env);
    storage = openStorage(url, { ...process.env, ...server.env });
    client = await s3ClientOf(server.env);
    // Incompressible and over 8 MiB, so that the artifact goes up as a multipart upload.
    big = path.join(work, 'big');
    await fs.mkdir(big);
    await fs.writeFile(path.join(big, 'blob.bin'), await streamToBuffer(generated(10 * 1024 * 1024, 3)));
  });
  after(async () => {
    restoreEnv?.();
    client?.destroy();
    await server?.stop();
  });

  test('backup-files with lock-for: the manifest and the artifact are locked until start + lock-for; the marker never was', async () => {
    const result = await run(backupFilesCommand, {
      storage: url,
      set: 'etc',
      source: big,
      compression: 'none',
      'lock-for': '1d',
      'progress-interval': '1h',
    });
    governed = manifestOf(result);
    const until = plusSeconds(governed.startedAt, 86_400);
    assert.deepEqual(governed.lock, { mode: 'governance', until });
    assert.ok(governed.artifacts[0]!.bytes > 8 * 1024 * 1024, 'a multipart upload');
    assert.match(result.summary!.table!.map((r) => r.join(' ')).join('\n'), /Locked governance until/);
    for (const name of ['manifest.json', governed.artifacts[0]!.name]) {
      const { Retention } = await client.send(
        new s3.GetObjectRetentionCommand({ Bucket: bucket, Key: objectKey(governed, name) }),
      );
      assert.equal(Retention?.Mode, 'GOVERNANCE', name);
      assert.equal(Retention?.RetainUntilDate?.toISOString(), until, name);
      assert.deepEqual(await storage.lockOf(`etc/${governed.id}/${name}`), {
        mode: 'governance',
        until: new Date(until),
      });
    }
    // The in-progress marker: one version, never locked, and the delete marker commit left.
    const marker = await versionsUnder(objectKey(governed, 'in-progress.json'));
    assert.equal(marker.versions.length, 1);
    assert.equal(marker.markers.length, 1);
    await assert.rejects(
      client.send(
        new s3.GetObjectRetentionCommand({
          Bucket: bucket,
          Key: objectKey(governed, 'in-progress.json'),
          VersionId: marker.versions[0]!.VersionId,
        }),
      ),
      /ObjectLockConfigurationNotFound/,
    );
  });

  test('copy with lock-for: the copy is locked on the target from the backup’s own start; its manifest says so', async () => {
    const target = await newS3Bucket(server, { objectLock: true });
    const targetBucket = new URL(target).host;
    const result = await run(copyCommand, {
      storage: url,
      'to-storage': target,
      set: 'etc',
      backup: governed.id,
      'lock-for': '2d',
      'progress-interval': '1h',
    });
    assert.equal(result.outputs.copied, `etc/${governed.id}`);
    const until = plusSeconds(governed.startedAt, 2 * 86_400);
    const copied = await new Catalog(openStorage(target, { ...process.env, ...server.env })).readManifest(
      'etc',
      governed.id,
    );
    assert.deepEqual(copied.lock, { mode: 'governance', until });
    for (const name of ['manifest.json', governed.artifacts[0]!.name]) {
      const { Retention } = await client.send(
        new s3.GetObjectRetentionCommand({ Bucket: targetBucket, Key: `backups/etc/${governed.id}/${name}` }),
      );
      assert.equal(Retention?.Mode, 'GOVERNANCE', name);
      assert.equal(Retention?.RetainUntilDate?.toISOString(), until, name);
    }
    // The source's lock is its own: a day, not the copy's two.
    assert.equal(governed.lock?.until, plusSeconds(governed.startedAt, 86_400));
  });

  test('the same credentials cannot remove a locked version; a plain delete or a new write only hides it', async () => {
    const key = objectKey(governed, governed.artifacts[0]!.name);
    const version = await versionOf(key);
    await assert.rejects(
      client.send(new s3.DeleteObjectCommand({ Bucket: bucket, Key: key, VersionId: version.VersionId })),
      (error: Error) => error.name === 'AccessDenied' && /forbidden by object lock/.test(error.message),
    );
    const batch = await client.send(
      new s3.DeleteObjectsCommand({
        Bucket: bucket,
        Delete: { Objects: [{ Key: key, VersionId: version.VersionId }] },
      }),
    );
    assert.deepEqual(
      batch.Errors?.map((e) => [e.Code, e.Message]),
      [['AccessDenied', 'AccessDenied']],
    );
    // Lifeboat's own delete of every version reports it as locked (RGW says only AccessDenied).
    const viaLifeboat = await storage.delete([`etc/${governed.id}/${governed.artifacts[0]!.name}`], {
      allVersions: true,
    });
    assert.deepEqual(viaLifeboat.locked, [`etc/${governed.id}/${governed.artifacts[0]!.name}`]);
    assert.equal(viaLifeboat.freedBytes, 0);
    // A plain delete "succeeds" with a delete marker, an overwrite makes a new version: the locked one stays.
    const hidden = await client.send(new s3.DeleteObjectCommand({ Bucket: bucket, Key: key }));
    assert.equal(hidden.DeleteMarker, true);
    assert.deepEqual(await keysOf(storage, `etc/${governed.id}/${governed.artifacts[0]!.name}`), []);
    await client.send(new s3.PutObjectCommand({ Bucket: bucket, Key: key, Body: 'replaced' }));
    const original = await client.send(
      new s3.GetObjectCommand({ Bucket: bucket, Key: key, VersionId: version.VersionId }),
    );
    assert.equal(Number(original.ContentLength), governed.artifacts[0]!.bytes);
    await original.Body?.transformToByteArray();
    // Undone by removing the unlocked newer versions and the marker.
    for (const v of [...(await versionsUnder(key)).versions, ...(await versionsUnder(key)).markers]) {
      if (v.VersionId !== version.VersionId)
        await client.send(new s3.DeleteObjectCommand({ Bucket: bucket, Key: key, VersionId: v.VersionId }));
    }
    assert.equal(
      (await storage.head(`etc/${governed.id}/${governed.artifacts[0]!.name}`))?.size,
      version.Size,
    );
  });

  test('governance yields to an identity allowed to bypass it; compliance to no one', async () => {
    const compliance = manifestOf(
      await run(backupFilesCommand, {
        storage: url,
        set: 'etc-compliance',
        source,
        'lock-for': '1h',
        'lock-mode': 'compliance',
      }),
    );
    const loose = manifestOf(
      await run(backupFilesCommand, { storage: url, set: 'etc-bypass', source, 'lock-for': '1h' }),
    );
    assert.equal(compliance.lock?.mode, 'compliance');
    const bypass = async (m: Manifest) => {
      const key = objectKey(m, 'manifest.json');
      const { VersionId } = await versionOf(key);
      return client.send(
        new s3.DeleteObjectCommand({ Bucket: bucket, Key: key, VersionId, BypassGovernanceRetention: true }),
      );
    };
    await assert.rejects(bypass(compliance), /forbidden by object lock/);
    const { VersionId } = await versionOf(objectKey(compliance, 'manifest.json'));
    await assert.rejects(
      client.send(
        new s3.PutObjectRetentionCommand({
          Bucket: bucket,
          Key: objectKey(compliance, 'manifest.json'),
          VersionId,
          Retention: { Mode: 'COMPLIANCE', RetainUntilDate: new Date(Date.now() + 60_000) },
          BypassGovernanceRetention: true,
        }),
      ),
      /shortens an existing retention period/,
    );
    // The bucket owner on RGW may bypass governance: the backup role must not be allowed to.
    await bypass(loose);
    assert.equal(await storage.head(`etc-bypass/${loose.id}/manifest.json`), undefined);
  });

  test('a bucket without Object Lock: one clear line, exit 1, nothing written', async () => {
    const plain = server.url;
    const line = await refusal(backupFilesCommand, {
      storage: plain,
      set: 'etc',
      source,
      'lock-for': '30d',
    });
    assert.match(
      line,
      /lock-for \(governance\) needs S3 Object Lock on the bucket 'lb-[0-9a-f]+', which is not enabled; create the bucket with Object Lock enabled/,
    );
    const plainBucket = new URL(plain).host;
    const left = await client.send(new s3.ListObjectVersionsCommand({ Bucket: plainBucket }));
    assert.deepEqual([...(left.Versions ?? []), ...(left.DeleteMarkers ?? [])], []);
    const uploads = await client.send(new s3.ListMultipartUploadsCommand({ Bucket: plainBucket }));
    assert.deepEqual(uploads.Uploads ?? [], []);
  });

  test('list shows each backup with its lock', async () => {
    const result = await run(listCommand, { storage: url });
    const listing = JSON.parse(result.outputs.result!) as {
      backups: { set: string; lock: { mode: string; until: string } | null }[];
    };
    const locks = Object.fromEntries(listing.backups.map((b) => [b.set, b.lock?.mode]));
    assert.deepEqual(locks, { etc: 'governance', 'etc-compliance': 'compliance' });
    const table = result.summary!.table!;
    assert.equal(table[0]!.at(-1), 'Lock');
    assert.ok(table.some((row) => row.at(-1) === `governance until ${governed.lock!.until}`));
  });

  test('prune keeps a locked backup ("locked until"), then deletes every version once the lock has passed', async () => {
    const inputs = { storage: url, set: 'short', source, 'lock-for': '8s' };
    const older = manifestOf(await run(backupFilesCommand, inputs));
    const newer = manifestOf(await run(backupFilesCommand, inputs));
    // A key with two versions, as a record written twice would leave.
    for (const body of ['first', 'second, longer']) {
      await openStorage(url).putBytes(`short/${older.id}/verifications/extra.json`, Buffer.from(body));
    }
    const prune = { storage: url, set: 'short', 'keep-last': '1', 'dry-run': 'false' };
    const early = await run(pruneRetentionCommand, prune);
    const plan = JSON.parse(early.outputs.result!).sets[0].plan.backups as {
      id: string;
      keep: boolean;
      reasons: string[];
      lockedUntil?: string;
    }[];
    assert.deepEqual(
      plan.map((b) => [b.id, b.keep, b.reasons, b.lockedUntil]),
      [
        [newer.id, true, ['last', 'newest', 'min-keep'], undefined],
        [older.id, true, ['locked'], older.lock!.until],
      ],
    );
    assert.equal(early.outputs['bytes-freed'], '0');
    assert.ok(
      early.summary!.table!.some(
        (r) => r[2] === 'kept by lock' && r[3] === `locked until ${older.lock!.until}`,
      ),
    );
    assert.ok(early.summary!.notes!.some((n) => n.includes(`${older.id} locked until ${older.lock!.until}`)));

    const folder = `backups/short/${older.id}/`;
    const before = await versionsUnder(folder);
    assert.ok(before.versions.length >= 5, 'manifest, artifact, the marker and two versions of the record');
    const stored = before.versions.reduce((n, v) => n + (v.Size ?? 0), 0);
    await wait(Math.max(0, Date.parse(older.lock!.until) - Date.now()) + 1000);
    const late = await run(pruneRetentionCommand, prune);
    assert.equal(JSON.parse(late.outputs.result!).sets[0].deletedBackups[0], older.id);
    assert.equal(Number(late.outputs['bytes-freed']), stored, 'every version removed is counted');
    assert.deepEqual(await versionsUnder(folder), { versions: [], markers: [] });
    assert.ok(await storage.head(`short/${newer.id}/manifest.json`));
  });

  test('verify-restore: the lock check passes, the record is locked like the backup; a missing or shortened lock fails it', {
    skip: !hasMariadb && 'needs mariadbd (apt-get install -y mariadb-server mariadb-client)',
  }, async () => {
    const mysql = await startMysql();
    try {
      await sql(mysql, sampleShop);
      const dump = (set: string, lock: Record<string, string>) =>
        run(dumpMysqlCommand, {
          storage: url,
          set,
          databases: 'shop',
          ...connectionInputs(mysql),
          'progress-interval': '1h',
          ...lock,
        }).then(manifestOf);
      const locked = await dump('shop', { 'lock-for': '1d' });
      const open = await dump('shop-open', {});
      const verify = async (set: string, extra: Record<string, string> = {}) => {
        const workDir = await tempDir('locks-verify');
        const result = await run(verifyRestoreCommand, {
          storage: url,
          set,
          'work-dir': workDir,
          'progress-interval': '1h',
          ...extra,
        });
        return JSON.parse(result.outputs.result!) as VerifyReport;
      };
      const lockRow = (report: VerifyReport) => report.checks.find((c) => c.name === 'retention lock');

      const good = await verify('shop');
      assert.equal(good.passed, true);
      assert.equal(lockRow(good)?.status, 'passed', lockRow(good)?.detail);
      const entry = (await new Catalog(storage).listBackups('shop'))[0]!;
      const record = entry.verifications[0]!;
      const { Retention } = await client.send(
        new s3.GetObjectRetentionCommand({ Bucket: bucket, Key: `backups/${record}` }),
      );
      assert.equal(Retention?.RetainUntilDate?.toISOString(), locked.lock!.until);

      assert.equal(lockRow(await verify('shop-open')), undefined, 'no lock recorded, none required: no row');
      const required = await verify('shop-open', { 'require-lock': 'true' });
      assert.equal(required.passed, false);
      assert.match(lockRow(required)!.detail, /the manifest records no lock/);
      assert.equal(open.lock, undefined);

      // Someone allowed to bypass governance shortens the artifact's lock: the check names it.
      const artifact = objectKey(locked, locked.artifacts[0]!.name);
      await client.send(
        new s3.PutObjectRetentionCommand({
          Bucket: bucket,
          Key: artifact,
          Retention: { Mode: 'GOVERNANCE', RetainUntilDate: new Date(Date.now() + 3_600_000) },
          BypassGovernanceRetention: true,
        }),
      );
      const shortened = await verify('shop', { record: 'false' });
      assert.equal(shortened.passed, false);
      assert.match(
        lockRow(shortened)!.detail,
        new RegExp(
          `1 of 2 object\\(s\\) do not hold the recorded lock .*${locked.artifacts[0]!.name}: governance until`,
        ),
      );
    } finally {
      await mysql.stop();
    }
  });
});

describe('retention locks on a folder (chattr +i)', {
  skip: !(isRoot && hasChattr) && 'needs root and chattr',
}, () => {
  let root: string;
  before(async () => {
    root = path.join(work, 'folder');
  });

  test('every file of the backup is immutable: rm fails, even rm -rf; the marker was never locked', async () => {
    const m = manifestOf(
      await run(backupFilesCommand, { storage: root, set: 'etc', source, 'lock-for': '30d' }),
    );
    assert.deepEqual(m.lock, { mode: 'governance', until: plusSeconds(m.startedAt, 30 * 86_400) });
    const folder = path.join(root, 'etc', m.id);
    assert.deepEqual(
      (await fs.readdir(folder)).sort(),
      [...m.artifacts.map((a) => a.name), 'manifest.json'].sort(),
    );
    for (const name of await fs.readdir(folder)) {
      const flags = spawnSync('lsattr', ['-d', path.join(folder, name)], { encoding: 'utf8' }).stdout;
      assert.match(flags.split(' ')[0]!, /i/, name);
    }
    const rm = spawnSync('rm', ['-rf', folder], { encoding: 'utf8' });
    assert.notEqual(rm.status, 0);
    assert.match(rm.stderr, /Operation not permitted/);
    assert.deepEqual((await fs.readdir(folder)).length, m.artifacts.length + 1);
  });

  test('prune keeps it while locked, then lifts the flag and deletes it once the lock has passed', async () => {
    const inputs = { storage: root, set: 'short', source, 'lock-for': '3s' };
    const older = manifestOf(await run(backupFilesCommand, inputs));
    const newer = manifestOf(await run(backupFilesCommand, inputs));
    const prune = { storage: root, set: 'short', 'keep-last': '1', 'dry-run': 'false' };
    const early = JSON.parse((await run(pruneRetentionCommand, prune)).outputs.result!);
    assert.deepEqual(early.sets[0].keptByLock, []);
    assert.equal(early.sets[0].plan.backups[1].lockedUntil, older.lock!.until);
    assert.equal(early.freedBytes, 0);
    const folder = path.join(root, 'short', older.id);
    const bytes = (
      await Promise.all((await fs.readdir(folder)).map((f) => fs.stat(path.join(folder, f))))
    ).reduce((n, s) => n + s.size, 0);
    await wait(Math.max(0, Date.parse(older.lock!.until) - Date.now()) + 500);
    const late = await run(pruneRetentionCommand, prune);
    assert.equal(Number(late.outputs['bytes-freed']), bytes);
    await assert.rejects(fs.stat(folder), { code: 'ENOENT' });
    assert.ok(await fs.stat(path.join(root, 'short', newer.id, 'manifest.json')));
  });

  test('compliance is refused on a folder, and so is lock-for for a user who cannot set the flag', async () => {
    const line = await refusal(backupFilesCommand, {
      storage: path.join(work, 'compliance'),
      set: 'etc',
      source,
      'lock-for': '1d',
      'lock-mode': 'compliance',
    });
    assert.match(line, /a folder cannot hold a compliance lock \(root can always lift the immutable flag/);
    assert.deepEqual(await fs.readdir(path.join(work, 'compliance')), []);
    // As nobody, in a folder nobody may write: chattr +i needs CAP_LINUX_IMMUTABLE.
    const open = path.join(work, 'open');
    await fs.mkdir(open);
    await fs.chmod(work, 0o711);
    await fs.chmod(open, 0o777);
    const script = `import { FsStorage } from ${JSON.stringify(path.resolve('shared/storage/fs.ts'))};
      await new FsStorage(${JSON.stringify(open)}, ${JSON.stringify(open)}).checkLocks('governance')
        .then(() => console.log('no error'), (e) => console.log(e.message));`;
    const child = spawnSync(process.execPath, ['--input-type=module', '-e', script], {
      uid: 65534,
      gid: 65534,
      encoding: 'utf8',
    });
    assert.match(
      child.stdout,
      /lock-for on a folder sets the immutable flag \(chattr \+i\) on every file, and that failed here: chattr: Operation not permitted.*run as root/,
    );
    assert.deepEqual(await fs.readdir(open), [], 'the probe file is gone');
  });
});

describe('snapshot-ebs: the manifest is locked, so prune keeps the backup and its snapshots', {
  skip: !(isRoot && hasChattr) && 'needs root and chattr',
}, () => {
  test('lock-for locks the catalog entry; prune keeps it and leaves its EC2 snapshots alone', async () => {
    const fake = await startFakeEc2();
    const restoreEnv = useEnv({
      AWS_ENDPOINT_URL_EC2: fake.url,
      AWS_ACCESS_KEY_ID: 'AKIDFAKE',
      AWS_SECRET_ACCESS_KEY: 'secret',
      AWS_REGION: 'eu-west-1',
      AWS_EC2_METADATA_DISABLED: 'true',
    });
    try {
      const root = path.join(work, 'ebs');
      const { volumeIds } = fake.addInstance({ volumes: [{ device: '/dev/xvda' }] });
      const inputs = { set: 'vols', 'volume-ids': volumeIds.join(','), 'poll-interval': '10ms' };
      const refused = await refusal(snapshotEbsCommand, { ...inputs, 'lock-for': '1d' });
      assert.equal(refused, 'lock-for: locks the manifest in storage; give storage too');
      const locked = await run(snapshotEbsCommand, { ...inputs, storage: root, 'lock-for': '1d' });
      await run(snapshotEbsCommand, { ...inputs, storage: root });
      assert.ok(
        locked.summary!.notes!.some((n) =>
          /^Locked: governance until .*\(the manifest; not the snapshots\)/.test(n),
        ),
      );
      const id = locked.outputs['backup-id']!;
      const manifest = path.join(root, 'vols', id, 'manifest.json');
      assert.match(spawnSync('lsattr', ['-d', manifest], { encoding: 'utf8' }).stdout, /^\S*i/);
      const snapshots = () =>
        [...fake.snapshots.values()].filter((s) => s.tags['lifeboat:backup-id'] === id).map((s) => s.state);
      assert.equal(snapshots().length, 1);
      const pruned = await run(pruneRetentionCommand, {
        storage: root,
        set: 'vols',
        'keep-last': '1',
        'dry-run': 'false',
      });
      const plan = JSON.parse(pruned.outputs.result!).sets[0].plan.backups;
      assert.deepEqual(plan.find((b: { id: string }) => b.id === id).reasons, ['locked']);
      assert.equal(snapshots().length, 1, 'its snapshot was not deleted');
    } finally {
      restoreEnv();
      await fake.stop();
    }
  });
});

describe('retention locks are refused where they are not built', () => {
  for (const [name, start, provider] of [
    ['azurite', startAzurite, 'Azure Blob Storage'],
    ['gcs', startGcs, 'Google Cloud Storage'],
  ] as const) {
    test(`${name}: lock-for is not built for ${provider}: one line, exit 1, nothing written`, async () => {
      const server = await start();
      const restoreEnv = useEnv(server.env);
      try {
        const line = await refusal(backupFilesCommand, {
          storage: server.url,
          set: 'etc',
          source,
          'lock-for': '30d',
        });
        assert.match(
          line,
          new RegExp(`lock-for is not built for ${provider} in this version \\(nothing was written\\)`),
        );
        assert.deepEqual(await keysOf(openStorage(server.url)), []);
      } finally {
        restoreEnv();
        await server.stop();
      }
    });
  }

  test('lock-mode without lock-for, and a lock-for that is no duration, are refused with the inputs', async () => {
    const line = await refusal(backupFilesCommand, {
      storage: path.join(work, 'never'),
      set: 'etc',
      source,
      'lock-mode': 'compliance',
    });
    assert.equal(line, 'lock-mode: compliance is given without lock-for; give lock-for too, e.g. 30d');
    const bad = await refusal(backupFilesCommand, {
      storage: path.join(work, 'never'),
      set: 'etc',
      source,
      'lock-for': '30 days',
    });
    assert.match(bad, /^lock-for: '30 days' is not accepted; accepted: a duration such as/);
  });
});

async function streamToBuffer(stream: NodeJS.ReadableStream): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

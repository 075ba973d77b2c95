/**
 * Nothing lost silently, nothing left behind: what a failed or killed upload leaves is found
 * and removed. Folder storage: the temporary files of backups killed with SIGKILL. S3: every
 * failure aborts its multipart upload (fauxqs behind a proxy that resets part uploads), and
 * prune aborts the multipart uploads of killed backups (Ceph radosgw: fauxqs and s3rver do
 * not implement ListMultipartUploads; fauxqs answers it with an empty object listing).
 */
import assert from 'node:assert/strict';
import { createWriteStream } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { after, before, describe, test } from 'node:test';
import {
  AbortMultipartUploadCommand,
  CreateMultipartUploadCommand,
  ListMultipartUploadsCommand,
  S3Client,
  UploadPartCommand,
} from '@aws-sdk/client-s3';
import { describeFailure, exitCodeOf } from '../../shared/action/run.ts';
import { backupFiles } from '../../shared/files/backup.ts';
import { silentLogger } from '../../shared/pipeline/progress.ts';
import type { RetentionPolicy } from '../../shared/retention/plan.ts';
import { prune } from '../../shared/retention/prune.ts';
import { openStorage } from '../../shared/storage/open.ts';
import { type Storage, StorageError } from '../../shared/storage/storage.ts';
import { generated } from '../harness/data.ts';
import { killedUpload } from '../harness/killed-upload.ts';
import { startFaultProxy } from '../harness/proxy.ts';
import { cephInstalled, startCeph, startFauxqs, type TestServer, tempDir } from '../harness/servers.ts';

/** The folder storage's temporary files (what a reader never sees). */
const partialPrefix = '.lifeboat-partial-';
const day = 24 * 3600;
const policy = (orphanGraceSeconds: number) =>
  ({
    last: 1,
    tags: [],
    timezone: 'UTC',
    keepVerified: 1,
    minKeep: 1,
    orphanGraceSeconds,
  }) as RetentionPolicy;
const later = () => new Date(Date.now() + 2000);

/** Every file under `dir`, with its size. */
async function filesUnder(dir: string): Promise<{ file: string; size: number }[]> {
  const found: { file: string; size: number }[] = [];
  for (const entry of await fs.readdir(dir, { withFileTypes: true, recursive: true })) {
    if (!entry.isFile()) continue;
    const file = path.join(entry.parentPath, entry.name);
    found.push({ file, size: (await fs.stat(file)).size });
  }
  return found;
}

async function keys(storage: Storage, prefix: string): Promise<string[]> {
  const found: string[] = [];
  for await (const item of storage.list(prefix)) found.push(item.key);
  return found;
}

function s3Client(server: TestServer): S3Client {
  return new S3Client({
    endpoint: server.env.AWS_ENDPOINT_URL_S3,
    region: 'us-east-1',
    forcePathStyle: true,
    credentials: {
      accessKeyId: server.env.AWS_ACCESS_KEY_ID!,
      secretAccessKey: server.env.AWS_SECRET_ACCESS_KEY!,
    },
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
  });
}

describe('folder storage: the temporary files of killed backups', () => {
  let dir: string;
  let root: string;
  let storage: Storage;
  before(async () => {
    dir = await tempDir('killed-fs');
    root = path.join(dir, 'backups');
    storage = openStorage(root);
  });
  after(() => fs.rm(dir, { recursive: true, force: true }));

  test('six backups killed mid-write: list shows none of it; prune keeps them within the grace and removes every byte after', async () => {
    const partials = async () =>
      (await filesUnder(root).catch(() => [])).filter((f) => path.basename(f.file).startsWith(partialPrefix));
    for (let i = 0; i < 6; i++) {
      const earlier = new Set((await partials()).map((f) => f.file));
      await killedUpload(root, {}, 'nightly', async () =>
        (await partials()).some((f) => !earlier.has(f.file) && f.size >= 4 << 20),
      );
    }
    const left = await partials();
    assert.equal(left.length, 6);
    const leaked = left.reduce((n, f) => n + f.size, 0);
    assert.ok(leaked >= 24 << 20, `${leaked} bytes left`);
    // Invisible as objects: only the six in-progress markers are listed.
    assert.deepEqual(
      (await keys(storage, 'nightly/')).map((k) => path.posix.basename(k)),
      Array(6).fill('in-progress.json'),
    );

    const within = await prune({
      storage,
      sets: ['nightly'],
      policy: policy(day),
      dryRun: false,
      logger: silentLogger,
    });
    assert.equal((await partials()).length, 6, 'within the grace nothing is removed');

    const past = await prune({
      storage,
      sets: ['nightly'],
      policy: policy(0),
      dryRun: false,
      logger: silentLogger,
      now: later,
    });
    assert.deepEqual(await filesUnder(root), [], 'no byte of the killed backups is left');
    assert.deepEqual(await fs.readdir(root), [], 'their folders are gone too');
    assert.equal(past.sets[0]!.deletedOrphans.length, 6);
    assert.ok(past.freedBytes >= leaked, `freed ${past.freedBytes} of ${leaked}`);
    assert.equal(within.sets[0]!.incomplete?.kept, 6);
    assert.equal(past.sets[0]!.incomplete?.removed.length, 6);
  });

  test('a temporary file outside any backup folder is removed past the grace as well, in a dry run only reported', async () => {
    const stray = path.join(root, 'nightly', '2026-01-01-0000-backup-full', `${partialPrefix}0123456789ab`);
    await fs.mkdir(path.dirname(stray), { recursive: true });
    await fs.writeFile(stray, Buffer.alloc(1 << 20));
    const dry = await prune({
      storage,
      sets: ['nightly'],
      policy: policy(0),
      dryRun: true,
      logger: silentLogger,
      now: later,
    });
    assert.equal(dry.freedBytes, 1 << 20);
    await fs.access(stray);
    await prune({
      storage,
      sets: ['nightly'],
      policy: policy(0),
      dryRun: false,
      logger: silentLogger,
      now: later,
    });
    await assert.rejects(fs.access(stray), { code: 'ENOENT' });
    assert.deepEqual(await fs.readdir(root), []);
  });
});

describe('S3: a failed upload aborts its multipart upload (fauxqs behind a resetting proxy)', () => {
  let server: TestServer;
  let work: string;
  before(async () => {
    server = await startFauxqs();
    work = await tempDir('mpu-abort');
    await fs.mkdir(path.join(work, 'src'));
    await pipeline(generated(40 << 20, 11), createWriteStream(path.join(work, 'src', 'big.bin')));
  });
  after(async () => {
    await server.stop();
    await fs.rm(work, { recursive: true, force: true });
  });

  test('six runs whose part uploads are reset: each exits 1 naming the storage, after AbortMultipartUpload', async () => {
    const proxy = await startFaultProxy(server.env.AWS_ENDPOINT_URL_S3!);
    const storage = openStorage(server.url, {
      ...process.env,
      ...server.env,
      AWS_ENDPOINT_URL_S3: proxy.endpoint,
    });
    const s3 = s3Client(server);
    const bucket = new URL(server.url.replace(/^s3:/, 'http:')).hostname;
    try {
      proxy.add({ match: /partNumber=/, fault: 'reset', afterBytes: 1000 });
      for (let run = 0; run < 6; run++) {
        const from = proxy.requests.length;
        const error = await backupFiles({
          storage,
          set: 'resets',
          source: path.join(work, 'src'),
          compression: 'none',
          include: [],
          exclude: [],
          tags: [],
          logger: silentLogger,
        } as Parameters<typeof backupFiles>[0]).then(
          () => assert.fail('the backup succeeded through a proxy that resets every part'),
          (e: unknown) => e,
        );
        assert.ok(error instanceof StorageError, `run ${run}: ${error}`);
        assert.match(error.message, /cannot reach the S3 endpoint \(ECONNRESET\)/);
        assert.equal(exitCodeOf(describeFailure(error)), 1);
        const lines = proxy.requests.slice(from).map((r) => r.line);
        const created = lines.findIndex((l) => /^POST \S*\?uploads/.test(l));
        const aborted = lines.findIndex((l) => /^DELETE \S*uploadId=/.test(l));
        const abandoned = lines.findIndex((l) => /^POST \/[^/]+\/\?delete/.test(l));
        assert.ok(
          created >= 0 && aborted > created,
          `run ${run}: no AbortMultipartUpload: ${lines.join(' | ')}`,
        );
        assert.ok(abandoned > aborted, `run ${run}: the upload was aborted before the command gave up`);
        // The upload is gone on the server: a part for it is refused.
        const uploadId = decodeURIComponent(/uploadId=([^& ]+)/.exec(lines[aborted]!)![1]!);
        const key = decodeURIComponent(/^DELETE \/[^/]+\/([^?]+)/.exec(lines[aborted]!)![1]!);
        await assert.rejects(
          s3.send(
            new UploadPartCommand({ Bucket: bucket, Key: key, UploadId: uploadId, PartNumber: 9, Body: 'x' }),
          ),
          { name: 'NoSuchUpload' },
        );
      }
    } finally {
      s3.destroy();
      await proxy.stop();
    }
  });

  test('a stop (timeout or cancel) in the middle of an upload aborts the multipart upload too', async () => {
    const proxy = await startFaultProxy(server.env.AWS_ENDPOINT_URL_S3!);
    const storage = openStorage(server.url, {
      ...process.env,
      ...server.env,
      AWS_ENDPOINT_URL_S3: proxy.endpoint,
    });
    try {
      const controller = new AbortController();
      let n = 0;
      const endless = new Readable({
        read() {
          setTimeout(() => this.push(Buffer.alloc(1 << 20, n++)), 5);
        },
      });
      const uploading = storage.putStream('stopped/files.tar', endless, controller.signal);
      while (!proxy.requests.some((r) => /partNumber=2&/.test(r.line)))
        await new Promise((r) => setTimeout(r, 20));
      const reason = new Error('timeout: the command was stopped');
      controller.abort(reason);
      await assert.rejects(uploading, (e) => e === reason);
      assert.ok(
        proxy.requests.some((r) => /^DELETE \S*uploadId=/.test(r.line)),
        'AbortMultipartUpload was sent',
      );
    } finally {
      await proxy.stop();
    }
  });
});

describe('S3: prune aborts the multipart uploads of killed backups (Ceph radosgw)', {
  skip: !cephInstalled && 'Ceph is not installed (apt-get install ceph-mon ceph-osd radosgw ceph-common)',
}, () => {
  let server: TestServer;
  let s3: S3Client;
  let bucket: string;
  before(async () => {
    server = await startCeph();
    s3 = s3Client(server);
    bucket = new URL(server.url.replace(/^s3:/, 'http:')).hostname;
  });
  after(async () => {
    s3?.destroy();
    await server?.stop();
  });

  const uploads = async (prefix: string) =>
    (await s3.send(new ListMultipartUploadsCommand({ Bucket: bucket, Prefix: prefix }))).Uploads ?? [];

  test('a backup killed mid-upload leaves its multipart upload; prune keeps it within the grace and aborts it after', async () => {
    const storage = openStorage(server.url, { ...process.env, ...server.env });
    const id = await killedUpload(
      server.url,
      server.env,
      'nightly',
      async () => (await uploads('backups/nightly/')).length > 0,
    );
    // Uploads that are not the set's: another set, and a key outside the storage prefix.
    await s3.send(new CreateMultipartUploadCommand({ Bucket: bucket, Key: 'backups/weekly/x/files.tar' }));
    const outside = await s3.send(
      new CreateMultipartUploadCommand({ Bucket: bucket, Key: 'elsewhere/files.tar' }),
    );
    assert.equal((await uploads('backups/nightly/'))[0]?.Key, `backups/nightly/${id}/files.tar`);

    const within = await prune({
      storage,
      sets: ['nightly'],
      policy: policy(day),
      dryRun: false,
      logger: silentLogger,
    });
    assert.equal((await uploads('backups/nightly/')).length, 1, 'within the grace it may still be uploading');

    const past = await prune({
      storage,
      sets: ['nightly'],
      policy: policy(0),
      dryRun: false,
      logger: silentLogger,
      now: later,
    });
    assert.deepEqual(await uploads('backups/nightly/'), [], "the killed backup's upload is aborted");
    assert.deepEqual(past.sets[0]!.deletedOrphans, [id]);
    assert.equal(within.sets[0]!.incomplete?.kept, 1);
    assert.deepEqual(past.sets[0]!.incomplete?.removed, [`nightly/${id}/files.tar`]);
    assert.deepEqual(await keys(storage, 'nightly/'), []);
    assert.equal((await uploads('backups/weekly/')).length, 1, "another set's upload is not touched");
    assert.equal((await uploads('elsewhere/')).length, 1, 'nor one outside the storage prefix');
    await s3.send(
      new AbortMultipartUploadCommand({
        Bucket: bucket,
        Key: 'elsewhere/files.tar',
        UploadId: outside.UploadId,
      }),
    );
  });
});

describe('S3 without ListMultipartUploads (s3rver answers 501)', () => {
  test('prune still deletes what it should, and warns that unfinished uploads were not listed', async () => {
    const { startS3rver } = await import('../harness/servers.ts');
    const server = await startS3rver();
    try {
      const storage = openStorage(server.url, { ...process.env, ...server.env });
      const id = '2026-01-01-0000-backup-full';
      await storage.putBytes(`nightly/${id}/in-progress.json`, Buffer.from('{}'));
      const warnings: string[] = [];
      const logger = { ...silentLogger, warn: (line: string) => void warnings.push(line) };
      const report = await prune({
        storage,
        sets: ['nightly'],
        policy: policy(0),
        dryRun: false,
        logger,
        now: later,
      });
      assert.deepEqual(report.sets[0]!.deletedOrphans, [id]);
      assert.deepEqual(await keys(storage, 'nightly/'), []);
      assert.ok(
        warnings.some((w) => /unfinished uploads were not listed.*AbortIncompleteMultipartUpload/.test(w)),
        warnings.join('\n'),
      );
    } finally {
      await server.stop();
    }
  });
});

/**
 * Downloads in parallel ranged GETs (shared/storage/ranged.ts) against real servers, with
 * ranges lowered to 64 KiB so that small objects cross many of them: every byte in order at
 * every edge size, one broken connection resumed from the byte reached, a connection that
 * keeps breaking failing in seconds as a named storage error, an object replaced while it
 * is read refused (where the server honours If-Match), and a reader that gives up stopping
 * the requests. Three streams (LIFEBOAT_DOWNLOAD_STREAMS) on S3 and Azure; GCS reads one.
 */
import assert from 'node:assert/strict';
import { createWriteStream } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { after, before, describe, test } from 'node:test';
import { restoreFiles } from '../../shared/files/restore.ts';
import { IntegrityError } from '../../shared/pipeline/artifact.ts';
import { silentLogger } from '../../shared/pipeline/progress.ts';
import { openStorage } from '../../shared/storage/open.ts';
import { type Storage, StorageError } from '../../shared/storage/storage.ts';
import { backupFolder } from '../harness/catalog.ts';
import { generated, sha256Of } from '../harness/data.ts';
import {
  type FaultProxy,
  type ProxiedServer,
  type ProxiedStorage,
  proxiedAzurite,
  proxiedGcs,
  proxiedS3,
  startProxied,
} from '../harness/proxy.ts';
import {
  cephInstalled,
  startCeph,
  startFauxqs,
  startS3rver,
  type TestServer,
  tempDir,
} from '../harness/servers.ts';

const rangeBytes = 64 * 1024;
const idleTimeoutMs = 1000;
const limit = { timeout: 120_000 };

interface Cloud extends ProxiedServer {
  name: string;
  /** The request line of a GET of the object's bytes. */
  get: RegExp;
  /** Parallel ranges (S3, Azure); GCS reads one stream, resumed where it broke. */
  parallel: boolean;
  /** The server refuses a range of a replaced object (If-Match; GCS: the generation asked for). */
  honoursIfMatch: boolean;
  skip?: string;
}

const s3 = (
  name: string,
  start: () => Promise<TestServer>,
  honoursIfMatch: boolean,
  skip?: string,
): Cloud => ({
  name,
  ...proxiedS3(start),
  get: /^GET \S*\.bin\?x-id=GetObject /,
  parallel: true,
  honoursIfMatch,
  skip,
});

const clouds: Cloud[] = [
  s3('S3 (s3rver)', startS3rver, false),
  s3('S3 (fauxqs)', startFauxqs, true),
  s3('S3 (Ceph RGW)', startCeph, true, cephInstalled ? undefined : 'Ceph radosgw is not installed'),
  {
    name: 'Azure (Azurite)',
    ...proxiedAzurite,
    get: /^GET \S*\.bin(\?timeout=\d+)? /,
    parallel: true,
    honoursIfMatch: true,
  },
  {
    name: 'GCS (emulator)',
    ...proxiedGcs,
    get: /^GET \S*\.bin\?alt=media/,
    parallel: false,
    // The emulator keeps one generation and serves it whatever generation is asked for.
    honoursIfMatch: false,
  },
];

for (const cloud of clouds) {
  describe(`ranged downloads: ${cloud.name}`, { skip: cloud.skip }, () => {
    let server: TestServer;
    let proxy: FaultProxy;
    let storage: Storage;
    let direct: Storage;
    let proxied: ProxiedStorage;

    before(async () => {
      proxied = await startProxied(cloud, { idleTimeoutMs, rangeBytes, downloadStreams: 3 });
      ({ server, proxy, storage, direct } = proxied);
    });
    after(() => proxied?.stop());

    const gets = () => proxy.requests.filter((r) => cloud.get.test(r.line));
    /** GETs a whole read of `size` bytes takes. */
    const getsFor = (size: number) => (cloud.parallel ? Math.max(1, Math.ceil(size / rangeBytes)) : 1);

    test('every byte comes back in order, at every edge of a range', limit, async () => {
      proxy.clear();
      const sizes = [0, 1, rangeBytes - 1, rangeBytes, rangeBytes + 1, 5 * rangeBytes + 3, 40 * rangeBytes];
      for (const [i, size] of sizes.entries()) {
        await direct.putStream(`t/edge-${i}.bin`, generated(size, 10 + i));
        const before = gets().length;
        assert.deepEqual(
          await sha256Of(await storage.get(`t/edge-${i}.bin`, undefined, { expectedBytes: size })),
          await sha256Of(generated(size, 10 + i)),
          `${size} bytes`,
        );
        const asked = gets().length - before;
        assert.equal(asked, getsFor(size), `GETs for ${size} bytes`);
      }
    });

    test('the expected size is a hint: the server decides how much is read', limit, async () => {
      proxy.clear();
      await direct.putStream('t/hinted.bin', generated(3 * rangeBytes, 50));
      let before = gets().length;
      const whole = await sha256Of(generated(3 * rangeBytes, 50));
      const lied = { expectedBytes: 100 * rangeBytes };
      assert.deepEqual(await sha256Of(await storage.get('t/hinted.bin', undefined, lied)), whole);
      assert.equal(gets().length - before, getsFor(3 * rangeBytes), 'three ranges, not a hundred');
      before = gets().length;
      assert.deepEqual(
        await sha256Of(await storage.get('t/hinted.bin', undefined, { expectedBytes: 10 })),
        whole,
      );
      assert.deepEqual(await sha256Of(await storage.get('t/hinted.bin')), whole);
      assert.equal(gets().length - before, 2, 'one plain GET each');
    });

    test('a connection that breaks once is resumed from the byte reached', limit, async () => {
      proxy.clear();
      const size = 12 * rangeBytes + 5;
      await direct.putStream('t/resumed.bin', generated(size, 20));
      proxy.add({ match: cloud.get, fault: 'stall-response', afterBytes: 20_000, times: 1 });
      const before = gets().length;
      const started = Date.now();
      assert.deepEqual(
        await sha256Of(await storage.get('t/resumed.bin', undefined, { expectedBytes: size })),
        await sha256Of(generated(size, 20)),
      );
      assert.ok(Date.now() - started < 20_000);
      assert.equal(proxy.requests.filter((r) => r.fault === 'stall-response').length, 1);
      assert.equal(gets().length - before, getsFor(size) + 1, 'one range asked twice');
    });

    test('one stream (the default) is resumed from the byte reached', limit, async () => {
      proxy.clear();
      const single = openStorage(server.url, { ...process.env, ...cloud.via(server, proxy) }, process.cwd(), {
        idleTimeoutMs,
        rangeBytes,
      });
      const size = 12 * rangeBytes + 5;
      await direct.putStream('t/single.bin', generated(size, 22));
      proxy.add({ match: cloud.get, fault: 'stall-response', afterBytes: 300_000, times: 1 });
      const before = gets().length;
      assert.deepEqual(
        await sha256Of(await single.get('t/single.bin', undefined, { expectedBytes: size })),
        await sha256Of(generated(size, 22)),
      );
      assert.equal(gets().length - before, 2, 'one GET, then the rest from the byte reached');
    });

    test('a connection that keeps breaking fails in seconds as a named storage error', limit, async () => {
      proxy.clear();
      const size = 3 * rangeBytes;
      await direct.putStream('t/broken.bin', generated(size, 21));
      proxy.add({ match: cloud.get, fault: 'stall-response', afterBytes: 4000 });
      const started = Date.now();
      const error = await (async () =>
        sha256Of(await storage.get('t/broken.bin', undefined, { expectedBytes: size })))().then(
        () => assert.fail('the download succeeded'),
        (e: unknown) => e,
      );
      assert.ok(error instanceof StorageError, String(error));
      assert.equal(error.code, 'timeout', error.message);
      assert.match(error.message, /download of 't\/broken\.bin' broke off.*no progress for 1 s/);
      assert.ok(Date.now() - started < 30_000, `took ${Date.now() - started} ms`);
    });

    test('an object replaced while it is read is refused, not spliced', {
      ...limit,
      skip: cloud.honoursIfMatch ? undefined : 'the server ignores If-Match',
    }, async () => {
      proxy.clear();
      const size = 200 * rangeBytes;
      await direct.putStream('t/replaced.bin', generated(size, 30));
      const body = await storage.get('t/replaced.bin', undefined, { expectedBytes: size });
      await new Promise((resolve) => body.once('readable', resolve));
      body.pause();
      await direct.putStream('t/replaced.bin', generated(size, 31));
      const error = await sha256Of(body).then(
        () => assert.fail('the replaced object was read to its end'),
        (e: unknown) => e,
      );
      assert.ok(error instanceof StorageError, String(error));
      assert.match(error.message, /'t\/replaced\.bin' changed while it was being read/);
    });

    test('a reader that gives up stops the requests', limit, async () => {
      proxy.clear();
      const size = 200 * rangeBytes;
      await direct.putStream('t/abandoned.bin', generated(size, 40));
      const before = gets().length;
      const body = await storage.get('t/abandoned.bin', undefined, { expectedBytes: size });
      await new Promise((resolve) => body.once('data', resolve));
      body.destroy();
      await new Promise((r) => setTimeout(r, 500));
      const asked = gets().length - before;
      await new Promise((r) => setTimeout(r, 1000));
      assert.equal(gets().length - before, asked, 'no GET after the reader gave up');
      assert.ok(asked <= Math.max(1, getsFor(size) / 2), `${asked} of ${getsFor(size)} GETs asked`);
    });

    test(
      'a crafted backup whose manifest lies about its size (the sha256 left matching) is refused, nothing restored',
      limit,
      async () => {
        const work = await tempDir('ranged-hostile');
        try {
          const source = path.join(work, 'source');
          await fs.mkdir(source);
          await pipeline(
            generated(5 * rangeBytes + 11, 60),
            createWriteStream(path.join(source, 'data.bin')),
          );
          const set = `hostile-${cloud.name.replace(/\W+/g, '-')}`;
          const real = await backupFolder({ storage: direct, set, source });
          const stored = real.artifacts[0]!;
          for (const claimed of [stored.bytes * 100, 1]) {
            // The bucket owner rewrites the manifest: the size lies, the sha256 is the stored bytes'.
            const manifest = structuredClone(real);
            manifest.artifacts[0]!.bytes = claimed;
            const target = path.join(work, `restored-${claimed}`);
            const before = gets().length;
            await assert.rejects(
              restoreFiles({
                storage,
                manifest,
                target,
                overwrite: false,
                dryRun: false,
                logger: silentLogger,
              }),
              (error: unknown) =>
                error instanceof IntegrityError &&
                error.message.includes(
                  `stored artifact has ${stored.bytes} bytes, the manifest records ${claimed}`,
                ),
            );
            const asked = gets().length - before;
            // Only what the server holds is read: a huge claim does not become a hundred ranges.
            assert.ok(asked <= getsFor(stored.bytes), `${asked} GETs for ${stored.bytes} stored bytes`);
            assert.deepEqual(
              (await fs.readdir(work)).sort(),
              ['source'],
              'no target and no staging folder left',
            );
          }
        } finally {
          await fs.rm(work, { recursive: true, force: true });
        }
      },
    );
  });
}

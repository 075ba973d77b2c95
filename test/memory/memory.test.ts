/**
 * Streaming, not staging: backing up and restoring a 1 GiB file keeps the process under
 * 200 MB resident, on each cloud provider.
 */
import assert from 'node:assert/strict';
import { createWriteStream } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { after, before, test } from 'node:test';
import { generated } from '../harness/data.ts';
import { measure } from '../harness/measure.ts';
import { startAzurite, startGcs, startS3rver, type TestServer, tempDir } from '../harness/servers.ts';

const GiB = 1024 * 1024 * 1024;
const limit = 200 * 1000 * 1000;
let work: string;

before(async () => {
  work = await tempDir('memory');
  await fs.mkdir(path.join(work, 'src'));
  await pipeline(generated(GiB, 9), createWriteStream(path.join(work, 'src', 'one-gib.bin')));
});
after(() => fs.rm(work, { recursive: true, force: true }));

for (const [name, start] of [
  ['S3 (s3rver)', startS3rver],
  ['Azure (Azurite)', startAzurite],
  ['GCS (emulator)', startGcs],
] as const) {
  test(`${name}: 1 GiB up and back down, each under 200 MB resident`, async (t) => {
    const server: TestServer = await start();
    try {
      const source = path.join(work, 'src');
      const up = await measure(
        [
          'backup-files',
          '--storage',
          server.url,
          '--set',
          'big',
          '--source',
          source,
          '--compression',
          'none',
        ],
        server.env,
      );
      assert.equal(up.code, 0, up.stderr);
      t.diagnostic(
        `upload: ${(up.peakRssBytes / 2 ** 20).toFixed(0)} MiB peak RSS, ${(GiB / 2 ** 20 / up.seconds).toFixed(0)} MiB/s`,
      );
      assert.ok(up.peakRssBytes > 0 && up.peakRssBytes < limit, `upload peak RSS ${up.peakRssBytes}`);

      const target = path.join(work, `out-${server.name}`);
      const down = await measure(
        ['restore', '--storage', server.url, '--set', 'big', '--target', target],
        server.env,
      );
      assert.equal(down.code, 0, down.stderr);
      t.diagnostic(
        `download: ${(down.peakRssBytes / 2 ** 20).toFixed(0)} MiB peak RSS, ${(GiB / 2 ** 20 / down.seconds).toFixed(0)} MiB/s`,
      );
      assert.ok(down.peakRssBytes > 0 && down.peakRssBytes < limit, `download peak RSS ${down.peakRssBytes}`);
      assert.equal((await fs.stat(path.join(target, 'one-gib.bin'))).size, GiB);
      await fs.rm(target, { recursive: true, force: true });
    } finally {
      await server.stop();
    }
  });
}

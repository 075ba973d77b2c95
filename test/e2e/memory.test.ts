/** Streaming, not staging: backing up and restoring a 1 GiB file keeps the process under 200 MB resident. */
import assert from 'node:assert/strict';
import { createWriteStream } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { after, before, test } from 'node:test';
import { generated } from '../harness/data.ts';
import { measure } from '../harness/measure.ts';
import { startS3rver, type TestServer, tempDir } from '../harness/servers.ts';

const GiB = 1024 * 1024 * 1024;
const limit = 200 * 1024 * 1024;
let work: string;
let server: TestServer;

before(async () => {
  work = await tempDir('memory');
  await fs.mkdir(path.join(work, 'src'));
  await pipeline(generated(GiB, 9), createWriteStream(path.join(work, 'src', 'one-gib.bin')));
  server = await startS3rver();
});
after(async () => {
  await server.stop();
  await fs.rm(work, { recursive: true, force: true });
});

test('1 GiB up to S3 and back down, each under 200 MB resident', async (t) => {
  const up = await measure(
    [
      'backup-files',
      '--storage',
      server.url,
      '--set',
      'big',
      '--source',
      path.join(work, 'src'),
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

  const down = await measure(
    ['restore', '--storage', server.url, '--set', 'big', '--target', path.join(work, 'out')],
    server.env,
  );
  assert.equal(down.code, 0, down.stderr);
  t.diagnostic(
    `download: ${(down.peakRssBytes / 2 ** 20).toFixed(0)} MiB peak RSS, ${(GiB / 2 ** 20 / down.seconds).toFixed(0)} MiB/s`,
  );
  assert.ok(down.peakRssBytes > 0 && down.peakRssBytes < limit, `download peak RSS ${down.peakRssBytes}`);
  assert.equal((await fs.stat(path.join(work, 'out', 'one-gib.bin'))).size, GiB);
});

/**
 * No request waits forever: each cloud provider behind a TCP proxy on 127.0.0.1 that stalls
 * requests or answers (real servers: fauxqs, Azurite, the GCS emulator; nothing mocked). The
 * no-progress timeout is lowered to 1 s here (30 s in use), so a stall costs about a second
 * and a retry, never the command's 6 h timeout; a reader that pauses is not cut off.
 */
import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import { type Storage, StorageError } from '../../shared/storage/storage.ts';
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
import { startFauxqs } from '../harness/servers.ts';

const idleTimeoutMs = 1000;
/** Each test's own limit: without timeouts these tests wait forever on the stalled connection. */
const limit = { timeout: 90_000 };

interface Cloud extends ProxiedServer {
  name: string;
  /** The request line of a data part of a streamed upload (undefined: one request for the stream). */
  part?: RegExp;
}

const clouds: Cloud[] = [
  {
    name: 'S3 (fauxqs)',
    ...proxiedS3(startFauxqs),
    part: /^PUT \S*partNumber=2&/,
  },
  {
    name: 'Azure (Azurite)',
    ...proxiedAzurite,
    part: /^PUT \S*comp=block&/,
  },
  {
    name: 'GCS (emulator)',
    ...proxiedGcs,
  },
];

async function rejectsWithin(
  promise: Promise<unknown>,
  seconds: number,
  code: StorageError['code'],
): Promise<StorageError> {
  const started = Date.now();
  try {
    await promise;
  } catch (error) {
    const elapsed = (Date.now() - started) / 1000;
    assert.ok(error instanceof StorageError, `expected a StorageError, got ${error}`);
    assert.equal(error.code, code, error.message);
    assert.ok(elapsed < seconds, `took ${elapsed} s`);
    return error;
  }
  assert.fail(`expected a StorageError ${code}`);
}

for (const cloud of clouds) {
  describe(`no request waits forever: ${cloud.name}`, () => {
    let proxy: FaultProxy;
    let storage: Storage;
    let direct: Storage;
    let proxied: ProxiedStorage;

    before(async () => {
      proxied = await startProxied(cloud, { idleTimeoutMs });
      ({ proxy, storage, direct } = proxied);
    });
    after(() => proxied?.stop());

    test(
      'a request that stalls once is dropped after the no-progress timeout and retried',
      limit,
      async () => {
        proxy.clear();
        proxy.add({ match: /stalled-once/, fault: 'stall', times: 1 });
        const started = Date.now();
        await storage.putBytes('t/stalled-once.json', Buffer.from('{"ok":true}'));
        const seconds = (Date.now() - started) / 1000;
        assert.ok(
          proxy.requests.some((r) => r.fault === 'stall'),
          'the proxy stalled a request',
        );
        assert.ok(seconds < 20, `took ${seconds} s`);
        assert.equal((await direct.head('t/stalled-once.json'))?.size, 11);
      },
    );

    if (cloud.part) {
      const part = cloud.part;
      test('a part that stalls once is retried, and the object is whole', limit, async () => {
        proxy.clear();
        proxy.add({ match: part, fault: 'stall', times: 1 });
        const size = 20 * 1024 * 1024 + 7;
        await storage.putStream('t/parts.bin', generated(size, 3));
        assert.ok(proxy.requests.some((r) => r.fault === 'stall'));
        assert.deepEqual(await sha256Of(await direct.get('t/parts.bin')), await sha256Of(generated(size, 3)));
      });
    } else {
      test('a streamed upload that stalls fails in seconds as a named storage error', limit, async () => {
        proxy.clear();
        // One request carries the whole stream and its bytes are not kept: it cannot be retried.
        proxy.add({ match: /^PUT \S*upload_id=/, fault: 'stall', times: 1 });
        const error = await rejectsWithin(
          storage.putStream('t/stream.bin', generated(3 << 20, 4)),
          20,
          'timeout',
        );
        assert.match(error.message, /stopped answering.*no progress for 1 s/);
        assert.equal(await direct.head('t/stream.bin'), undefined);
      });
    }

    test(
      'a download that keeps stopping half-way fails in seconds as a named storage error',
      limit,
      async () => {
        proxy.clear();
        const size = 6 * 1024 * 1024;
        await direct.putStream('t/download.bin', generated(size, 5));
        // Every GET of the object's bytes (not HEAD or metadata) is answered for 200 kB, then
        // never: each retry resumes from the byte reached (ranged-download.test.ts) and stalls again.
        proxy.add({
          match: /^GET \S*download\.bin(\?x-id=GetObject|\?alt=media\S*|\?timeout=\d+)? /,
          fault: 'stall-response',
          afterBytes: 200_000,
        });
        const error = await rejectsWithin(
          (async () => sha256Of(await storage.get('t/download.bin')))(),
          20,
          'timeout',
        );
        assert.match(error.message, /download of 't\/download\.bin' broke off.*no progress for 1 s/);
        assert.ok(
          proxy.requests.some((r) => r.fault === 'stall-response'),
          'the proxy stalled the download',
        );
      },
    );

    test('a reader that pauses longer than the timeout is not cut off', limit, async () => {
      proxy.clear();
      // Larger than what socket and stream buffers hold, so the connection really waits on us.
      const size = 32 * 1024 * 1024;
      await direct.putStream('t/paused.bin', generated(size, 6));
      const body = await storage.get('t/paused.bin');
      const first = await new Promise<Buffer>((resolve) => body.once('data', resolve));
      body.pause();
      await new Promise((r) => setTimeout(r, 4 * idleTimeoutMs));
      const rest = await sha256Of(body);
      assert.equal(first.length + rest.bytes, size);
    });

    test(
      'a source that pauses longer than the timeout is not cut off (a dump still thinking)',
      limit,
      async () => {
        proxy.clear();
        const chunk = Buffer.alloc(1 << 20, 7);
        let sent = 0;
        const thinking = new Readable({
          read() {
            sent++;
            if (sent > 6) return void this.push(null);
            // Half-way the source says nothing for four timeouts, as mysqldump does on a big table.
            setTimeout(() => this.push(chunk), sent === 3 ? 4 * idleTimeoutMs : 0);
          },
        });
        await storage.putStream('t/thinking.bin', thinking);
        assert.equal((await direct.head('t/thinking.bin'))?.size, 6 << 20);
      },
    );

    test('a server that never answers fails in seconds with a named storage error', limit, async () => {
      proxy.clear();
      proxy.add({ match: /./, fault: 'stall' });
      const error = await rejectsWithin(storage.check(), 60, 'timeout');
      assert.match(error.message, /stopped answering/);
      proxy.clear();
    });
  });
}

/**
 * ZFS through the built CLI on real ZFS (zfs-fuse): snapshot-zfs --send-to twice (full, then
 * incremental), verify-restore and restore of the chain, then the README's by-hand recipe
 * (`age -d | zstd -d | zfs receive`, stream by stream, oldest first) with no Lifeboat. Skipped,
 * saying why, without root, /dev/fuse, zfs-fuse, age or zstd.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { generateIdentity } from 'age-encryption';
import { digestTree } from '../../shared/files/tree-digest.ts';
import { recipientOf } from '../../shared/pipeline/encryption.ts';
import type { ZfsFacts } from '../../shared/zfs/snapshot.ts';
import { runCli } from '../harness/runner.ts';
import { tempDir } from '../harness/servers.ts';
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
const tools = ['age', 'zstd'].every((t) => spawnSync('sh', ['-c', `command -v ${t}`]).status === 0);
const skip = !available.ok ? `no ZFS here: ${available.reason}` : !tools ? 'age or zstd missing' : false;
if (skip) console.log(`# e2e zfs: skipped, ${skip}`);

describe('zfs through the CLI, and the by-hand recipe', { skip, timeout: 600_000 }, () => {
  let daemon: ZfsDaemon;
  let pool: TestPool;
  let work: string;
  let key: string;
  let recipient: string;
  const ids: string[] = [];
  before(async () => {
    daemon = await startZfs();
    pool = await makePool('e2e', { sizeMiB: 256 });
    work = await tempDir('zfs-e2e');
    const identity = await generateIdentity();
    recipient = await recipientOf(identity);
    key = path.join(work, 'key.txt');
    await fs.writeFile(key, `${identity}\n`, { mode: 0o600 });
    await zfsCommand('zfs', ['create', `${pool.pool}/app`]);
    await fs.writeFile(path.join(pool.mountpoint, 'app', 'one.txt'), 'one\n');
  });
  after(async () => {
    await pool?.destroy();
    await daemon?.stop();
    if (work) await fs.rm(work, { recursive: true, force: true });
  });
  const storage = () => path.join(work, 'offsite');
  const env = { PATH: `${path.dirname(zfsPrograms.zfs)}:${process.env.PATH}` };

  test('snapshot-zfs --send-to: full, then incremental', async () => {
    for (const file of ['two.txt', 'three.txt']) {
      const run = await runCli(
        [
          'snapshot-zfs',
          '--send-to',
          storage(),
          '--set',
          'app',
          '--datasets',
          `${pool.pool}/app`,
          '--age-recipients',
          recipient,
          '--json',
        ],
        env,
      );
      assert.equal(run.code, 0, run.stderr);
      ids.push(JSON.parse(run.stdout)['backup-id']);
      await fs.writeFile(path.join(pool.mountpoint, 'app', file), `${file}\n`);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    assert.match(ids[0]!, /-full$/);
    assert.match(ids[1]!, /-incremental$/);
  });

  test('verify-restore and restore of the incremental backup', async () => {
    const verify = await runCli(
      [
        'verify-restore',
        '--storage',
        storage(),
        '--set',
        'app',
        '--backup',
        ids[1]!,
        '--age-identity-file',
        key,
        '--work-dir',
        work,
      ],
      env,
    );
    assert.equal(verify.code, 0, verify.stderr + verify.stdout);
    const restore = await runCli(
      [
        'restore',
        '--storage',
        storage(),
        '--set',
        'app',
        '--backup',
        ids[1]!,
        '--age-identity-file',
        key,
        '--target',
        `${pool.pool}/back`,
      ],
      env,
    );
    assert.equal(restore.code, 0, restore.stderr);
    assert.deepEqual((await fs.readdir(path.join(pool.mountpoint, 'back'))).sort(), ['one.txt', 'two.txt']);
  });

  test('by hand: age -d | zstd -d | zfs receive, oldest stream first, gives the same files', async () => {
    const target = `${pool.pool}/byhand`;
    for (const id of ids) {
      const manifest = JSON.parse(
        await fs.readFile(path.join(storage(), 'app', id, 'manifest.json'), 'utf8'),
      );
      const artifact = path.join(storage(), 'app', id, manifest.artifacts[0].name);
      assert.equal(
        execFileSync('sha256sum', [artifact], { encoding: 'utf8' }).split(' ')[0],
        manifest.artifacts[0].sha256,
      );
      execFileSync('sh', ['-c', `age -d -i "$KEY" "$ARTIFACT" | zstd -dc | zfs receive "$TARGET"`], {
        env: { ...process.env, ...env, KEY: key, ARTIFACT: artifact, TARGET: target },
      });
      if (id === ids[1]) {
        const index = (manifest.facts as ZfsFacts).snapshots[0]!.stream!.index;
        const mount = (await zfsCommand('zfs', ['get', '-H', '-o', 'value', 'mountpoint', target])).trim();
        assert.deepEqual(await digestTree(mount), index);
      }
    }
  });
});

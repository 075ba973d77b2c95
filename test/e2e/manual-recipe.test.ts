/**
 * The README's promise: every artifact restores by hand with standard tools, no Lifeboat
 * needed. Back up with the bundle, then follow the recipe with age, zstd/gzip and tar.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs/promises';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { generateIdentity } from 'age-encryption';
import { recipientOf } from '../../shared/pipeline/encryption.ts';
import { runCli } from '../harness/runner.ts';
import { tempDir } from '../harness/servers.ts';
import { diffTrees, makeHostileTree } from '../harness/tree.ts';

const haveTools = ['age', 'zstd', 'tar', 'sha256sum'].every(
  (tool) => spawnSync('sh', ['-c', `command -v ${tool}`]).status === 0,
);
let work: string;
let source: string;

before(async () => {
  work = await tempDir('manual');
  source = path.join(work, 'src');
  await makeHostileTree(source, 2 * 1024 * 1024);
});
after(() => fs.rm(work, { recursive: true, force: true }));

for (const compression of ['zstd', 'gzip'] as const) {
  test(`age -d | ${compression} -d | tar -x gives back the tree, and sha256sum matches the manifest`, {
    skip: !haveTools && 'age, zstd, tar or sha256sum missing',
  }, async () => {
    const identity = await generateIdentity();
    const storage = path.join(work, `backups-${compression}`);
    const backup = await runCli(
      [
        'backup-files',
        '--storage',
        storage,
        '--set',
        'etc',
        '--source',
        source,
        '--compression',
        compression,
        '--age-recipients',
        await recipientOf(identity),
        '--json',
      ],
      {},
    );
    assert.equal(backup.code, 0, backup.stderr);
    const manifest = JSON.parse(backup.stdout).result;
    const artifact = path.join(storage, 'etc', manifest.id, manifest.artifacts[0].name);
    assert.equal(
      execFileSync('sha256sum', [artifact], { encoding: 'utf8' }).split(' ')[0],
      manifest.artifacts[0].sha256,
    );
    const key = path.join(work, `key-${compression}.txt`);
    await fs.writeFile(key, `${identity}\n`, { mode: 0o600 });
    const target = path.join(work, `by-hand-${compression}`);
    await fs.mkdir(target);
    const decompress = compression === 'zstd' ? 'zstd -dc' : 'gzip -dc';
    execFileSync('sh', ['-c', `age -d -i "$KEY" "$ARTIFACT" | ${decompress} | tar -x -p -C "$TARGET"`], {
      env: { ...process.env, KEY: key, ARTIFACT: artifact, TARGET: target },
    });
    assert.deepEqual(await diffTrees(source, target), []);
  });
}

/** An action used from a ref without the bundle (`@main`, a commit) says so in one line, exit 1. */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs/promises';
import path from 'node:path';
import { test } from 'node:test';
import { repoRoot } from '../harness/runner.ts';
import { tempDir } from '../harness/servers.ts';

test('every action entry from a checkout without dist/ gives one clear error', async () => {
  const checkout = await tempDir('unreleased-ref');
  await fs.cp(path.join(repoRoot, 'actions'), path.join(checkout, 'actions'), { recursive: true });
  await fs.copyFile(path.join(repoRoot, 'package.json'), path.join(checkout, 'package.json'));
  const entries = [
    'actions/run.js',
    'actions/restore/main.js',
    'actions/restore/post.js',
    'actions/dump-mysql/main.js',
  ];
  for (const entry of entries) {
    const run = spawnSync(process.execPath, [path.join(checkout, entry)], { encoding: 'utf8' });
    assert.equal(run.status, 1, `${entry}: ${run.stdout}${run.stderr}`);
    assert.match(
      run.stdout,
      /^::error::this ref of Lifeboat has no built bundle \(dist\/index\.js\): use a release tag/m,
    );
    assert.doesNotMatch(run.stderr, /ERR_MODULE_NOT_FOUND|at /, 'no stack');
  }
  await fs.rm(checkout, { recursive: true, force: true });
});

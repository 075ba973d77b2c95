import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { matchesPattern, type Selection, walk } from '../../shared/files/walk.ts';

let root: string;
before(async () => {
  root = await fs.mkdtemp(path.join(os.tmpdir(), 'lifeboat-walk-'));
  for (const file of [
    'nova.conf',
    'logs/a.log',
    'logs/keep.txt',
    'conf.d/01.conf',
    'conf.d/deep/x.conf',
    'cache/blob',
    'empty/',
  ]) {
    const full = path.join(root, file);
    if (file.endsWith('/')) await fs.mkdir(full, { recursive: true });
    else {
      await fs.mkdir(path.dirname(full), { recursive: true });
      await fs.writeFile(full, file);
    }
  }
});
after(() => fs.rm(root, { recursive: true, force: true }));

async function names(selection: Selection): Promise<string[]> {
  const found: string[] = [];
  for await (const e of walk(root, selection, () => {}))
    found.push(e.stat.isDirectory() ? `${e.rel}/` : e.rel);
  return found;
}

test('patterns without a slash match a name at any depth; with one, the whole path', () => {
  assert.ok(matchesPattern('logs/a.log', '*.log'));
  assert.ok(matchesPattern('a/b/cache', 'cache'));
  assert.ok(matchesPattern('conf.d/deep/x.conf', 'conf.d/**'));
  assert.ok(!matchesPattern('conf.d/deep/x.conf', 'conf.d/*.conf'));
  assert.ok(matchesPattern('cache/blob', './cache/'.replace(/\/$/, '/**')));
});

test('everything, parents before children, in name order', async () => {
  assert.deepEqual(await names({ include: [], exclude: [] }), [
    'cache/',
    'cache/blob',
    'conf.d/',
    'conf.d/01.conf',
    'conf.d/deep/',
    'conf.d/deep/x.conf',
    'empty/',
    'logs/',
    'logs/a.log',
    'logs/keep.txt',
    'nova.conf',
  ]);
});

test('exclude prunes names and folders', async () => {
  assert.deepEqual(await names({ include: [], exclude: ['*.log', 'cache', 'deep'] }), [
    'conf.d/',
    'conf.d/01.conf',
    'empty/',
    'logs/',
    'logs/keep.txt',
    'nova.conf',
  ]);
});

test('include keeps matches with their parent folders; a matching folder brings its contents', async () => {
  assert.deepEqual(await names({ include: ['*.conf'], exclude: [] }), [
    'conf.d/',
    'conf.d/01.conf',
    'conf.d/deep/',
    'conf.d/deep/x.conf',
    'nova.conf',
  ]);
  assert.deepEqual(await names({ include: ['logs'], exclude: ['*.log'] }), ['logs/', 'logs/keep.txt']);
});

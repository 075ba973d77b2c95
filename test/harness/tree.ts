/** A tree with what breaks naive backup tools, and a byte-for-byte comparison of two trees. */
import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { generated } from './data.ts';

export const oddNames = [
  'plain.txt',
  'with space.conf',
  'ünïcödé-名前-🚀.txt',
  '-leading-dash',
  'quote\'and"double',
  'new\nline',
  'back\\slash',
  '#hash ~tilde $dollar',
  `${'long-name-'.repeat(24)}.txt`,
];

/** Writes the tree under `root` (which must not exist); `bigBytes` sizes one large file. */
export async function makeHostileTree(root: string, bigBytes = 5 * 1024 * 1024): Promise<void> {
  await fs.mkdir(root, { recursive: true });
  for (const name of oddNames) await fs.writeFile(path.join(root, name), `content of ${name}\n`);
  const deep = path.join(root, ...Array.from({ length: 12 }, (_, i) => `level-${i}-${'d'.repeat(20)}`));
  await fs.mkdir(deep, { recursive: true });
  await fs.writeFile(path.join(deep, 'deep-file.txt'), 'at the bottom\n');
  await fs.writeFile(path.join(root, 'empty-file'), '');
  await fs.mkdir(path.join(root, 'empty-dir'));
  await fs.writeFile(path.join(root, 'secret.key'), 'k\n', { mode: 0o600 });
  await fs.chmod(path.join(root, 'secret.key'), 0o600);
  await fs.writeFile(path.join(root, 'run.sh'), '#!/bin/sh\necho hi\n');
  await fs.chmod(path.join(root, 'run.sh'), 0o755);
  await fs.writeFile(path.join(root, 'read-only.txt'), 'ro\n');
  await fs.chmod(path.join(root, 'read-only.txt'), 0o444);
  await fs.mkdir(path.join(root, 'locked-dir'));
  await fs.writeFile(path.join(root, 'locked-dir', 'inside.txt'), 'inside a 0555 folder\n');
  await fs.chmod(path.join(root, 'locked-dir'), 0o555);
  await fs.mkdir(path.join(root, 'shared-dir'));
  await fs.chmod(path.join(root, 'shared-dir'), 0o2775);
  await fs.symlink('plain.txt', path.join(root, 'link-relative'));
  await fs.symlink('/etc/hostname', path.join(root, 'link-absolute'));
  await fs.symlink('does-not-exist', path.join(root, 'link-dangling'));
  await fs.symlink('empty-dir', path.join(root, 'link-to-dir'));
  await fs.writeFile(path.join(root, 'binary.bin'), Buffer.from(Array.from({ length: 256 }, (_, i) => i)));
  await pipeline(generated(bigBytes, 42), createWriteStream(path.join(root, 'big.bin')));
  const old = new Date('2001-02-03T04:05:06Z');
  await fs.utimes(path.join(root, 'plain.txt'), old, old);
  await fs.lutimes(path.join(root, 'link-relative'), old, old);
}

interface Described {
  type: string;
  mode: number;
  size: number;
  mtime: number;
  uid: number;
  gid: number;
  link?: string;
  sha256?: string;
}

async function fileSha(file: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(file)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

/** Every entry under `root` (root itself as '.'): type, mode, size, mtime (s), owner, content hash or link. */
export async function describeTree(root: string): Promise<Map<string, Described>> {
  const result = new Map<string, Described>();
  async function visit(rel: string): Promise<void> {
    const full = rel === '.' ? root : path.join(root, rel);
    const stat = await fs.lstat(full);
    const entry: Described = {
      type: stat.isDirectory() ? 'dir' : stat.isSymbolicLink() ? 'symlink' : stat.isFile() ? 'file' : 'other',
      mode: stat.mode & 0o7777,
      size: stat.isFile() ? stat.size : 0,
      mtime: Math.floor(stat.mtimeMs / 1000),
      uid: stat.uid,
      gid: stat.gid,
    };
    if (stat.isSymbolicLink()) entry.link = await fs.readlink(full);
    if (stat.isFile()) entry.sha256 = await fileSha(full);
    result.set(rel, entry);
    if (stat.isDirectory())
      for (const name of (await fs.readdir(full)).sort()) await visit(rel === '.' ? name : `${rel}/${name}`);
  }
  await visit('.');
  return result;
}

/** The differences between two trees, one line each; empty when they are the same. */
export async function diffTrees(a: string, b: string): Promise<string[]> {
  const [left, right] = await Promise.all([describeTree(a), describeTree(b)]);
  const problems: string[] = [];
  for (const [rel, entry] of left) {
    const other = right.get(rel);
    if (!other) problems.push(`missing: ${JSON.stringify(rel)}`);
    else if (JSON.stringify(entry) !== JSON.stringify(other))
      problems.push(`differs: ${JSON.stringify(rel)} ${JSON.stringify(entry)} != ${JSON.stringify(other)}`);
  }
  for (const rel of right.keys()) if (!left.has(rel)) problems.push(`extra: ${JSON.stringify(rel)}`);
  return problems;
}

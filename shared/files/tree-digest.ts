/**
 * One sha256 over a folder tree: what a restore is compared with when the backup's own bytes
 * (a zfs send stream) say nothing about files. Each entry, in walk order (name order, depth
 * first, symlinks not followed), adds a line: type, path, permission bits, owner, size and
 * the sha256 of a file's content or a symlink's target. Times are left out (a received or
 * cloned dataset keeps them, but a copy by other means need not). A directory on another
 * device (a mount below the root) is entered as a directory and not descended into.
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import fs from 'node:fs/promises';
import { pipeline } from 'node:stream/promises';
import { walk } from './walk.ts';

export interface TreeDigest {
  /** Regular files. */
  files: number;
  directories: number;
  symlinks: number;
  /** Bytes of the regular files. */
  bytes: number;
  /** sha256 of the entry lines, hex. */
  sha256: string;
}

/** The sha256 of a file of `size` bytes (its stat's, which the caller has). */
export async function fileSha256(file: string, size: number, signal?: AbortSignal): Promise<string> {
  const hash = createHash('sha256');
  // A small file in one read: a stream per file costs more than its bytes (thousands of configs).
  if (size <= 1024 * 1024) return hash.update(await fs.readFile(file, { signal })).digest('hex');
  await pipeline(createReadStream(file, { highWaterMark: 1024 * 1024 }), hash, { signal });
  return hash.digest('hex');
}

/** The digest of everything below `root` (root itself not included). */
export async function digestTree(root: string, signal?: AbortSignal): Promise<TreeDigest> {
  const rootDevice = (await fs.stat(root)).dev;
  const digest = createHash('sha256');
  const result = { files: 0, directories: 0, symlinks: 0, bytes: 0 };
  const vanished: string[] = [];
  const skipped = new Set<string>();
  for await (const entry of walk(root, { include: [], exclude: [] }, (rel) => vanished.push(rel))) {
    signal?.throwIfAborted();
    if ([...skipped].some((s) => entry.rel.startsWith(`${s}/`))) continue;
    const { stat, rel } = entry;
    const head = `${JSON.stringify(rel)}\t${(stat.mode & 0o7777).toString(8)}\t${stat.uid}:${stat.gid}`;
    if (stat.isDirectory()) {
      result.directories++;
      digest.update(`d\t${head}\n`);
      if (stat.dev !== rootDevice) skipped.add(rel);
    } else if (stat.isSymbolicLink()) {
      result.symlinks++;
      digest.update(`l\t${head}\t${JSON.stringify(await fs.readlink(entry.abs))}\n`);
    } else if (stat.isFile()) {
      result.files++;
      result.bytes += stat.size;
      digest.update(`f\t${head}\t${stat.size}\t${await fileSha256(entry.abs, stat.size, signal)}\n`);
    } else {
      digest.update(`o\t${head}\t${stat.mode >> 12}\n`);
    }
  }
  if (vanished.length)
    throw new Error(`${root}: ${vanished.length} entries vanished while it was read (${vanished[0]}, …)`);
  return { ...result, sha256: digest.digest('hex') };
}

import { createWriteStream } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { finished, pipeline } from 'node:stream/promises';
import * as tar from 'tar-stream';
import type { Manifest } from '../catalog/manifest.ts';
import { UserError } from '../errors.ts';
import { IntegrityError, readArtifact } from '../pipeline/artifact.ts';
import type { DecryptionKeys } from '../pipeline/encryption.ts';
import type { Logger } from '../pipeline/progress.ts';
import type { Storage } from '../storage/storage.ts';
import type { FilesFacts } from './backup.ts';

export interface FilesRestoreOptions {
  storage: Storage;
  manifest: Manifest;
  target: string;
  overwrite: boolean;
  dryRun: boolean;
  keys?: DecryptionKeys;
  logger: Logger;
  signal?: AbortSignal;
  progressIntervalMs?: number;
}

export interface FilesRestoreResult {
  target: string;
  dryRun: boolean;
  facts: FilesFacts;
}

interface Deferred {
  file: string;
  header: tar.Header;
}

const asRoot = process.getuid?.() === 0;

/** Refuses a target that is a file, or a non-empty folder unless overwrite was asked. */
export async function checkTarget(target: string, overwrite: boolean): Promise<void> {
  const stat = await fs.lstat(target).catch(() => undefined);
  if (!stat) return;
  if (!stat.isDirectory())
    throw new UserError(`target: '${target}' exists and is not a folder; accepted: a new or empty folder`);
  if (!overwrite && (await fs.readdir(target)).length > 0) {
    throw new UserError(
      `target: '${target}' is not empty; restore into a new or empty folder, or set overwrite: true (the old contents are replaced only once the restore has succeeded)`,
    );
  }
}

/**
 * Restores a files backup into `target`. Everything is written into a staging folder beside
 * the target and moved into place only after the archive was read to its end, its sha256
 * matched the manifest and the counts agreed; on any failure the staging folder is removed
 * and the target is left as it was. With `dryRun` the archive is downloaded, checked,
 * decrypted and read through, and nothing is written.
 */
export async function restoreFiles(options: FilesRestoreOptions): Promise<FilesRestoreResult> {
  const { manifest } = options;
  const artifact = manifest.artifacts.find((a) => a.format === 'tar');
  if (manifest.kind !== 'files' || !artifact)
    throw new UserError(`backup: '${manifest.id}' is a ${manifest.kind} backup, not a files backup`);
  const target = path.resolve(options.target);
  await checkTarget(target, options.overwrite);

  const parent = path.dirname(target);
  let staging: string | undefined;
  if (!options.dryRun) {
    await fs.mkdir(parent, { recursive: true });
    staging = await fs.mkdtemp(path.join(parent, `.${path.basename(target)}.lifeboat-restore-`));
  }
  try {
    const plain = await readArtifact({
      storage: options.storage,
      key: `${manifest.set}/${manifest.id}/${artifact.name}`,
      artifact,
      keys: options.keys,
      logger: options.logger,
      label: 'downloaded',
      progressIntervalMs: options.progressIntervalMs,
      signal: options.signal,
    });
    const facts = await extractArchive(plain, staging, options);
    const expected = manifest.facts as unknown as FilesFacts;
    for (const key of ['files', 'directories', 'symlinks', 'bytes'] as const) {
      if (facts[key] !== expected[key]) {
        throw new IntegrityError(
          `backup ${manifest.id}: the archive holds ${facts[key]} ${key}, the manifest records ${expected[key]}`,
        );
      }
    }
    if (staging) await swapIn(staging, target);
    return { target, dryRun: options.dryRun, facts };
  } catch (error) {
    if (staging) await fs.rm(staging, { recursive: true, force: true });
    throw error;
  }
}

async function extractArchive(
  plain: Readable,
  root: string | undefined,
  options: FilesRestoreOptions,
): Promise<FilesFacts> {
  const facts: FilesFacts = { files: 0, directories: 0, symlinks: 0, bytes: 0 };
  const dirs: Deferred[] = [];
  const links: Deferred[] = [];
  const extract = tar.extract();
  plain.on('error', (error) => extract.destroy(error));
  plain.pipe(extract as unknown as NodeJS.WritableStream);
  for await (const entry of extract) {
    options.signal?.throwIfAborted();
    const { header } = entry;
    const rel = safeName(header.name);
    const file = root ? (rel ? path.join(root, rel) : root) : '';
    switch (header.type) {
      case 'directory':
        if (rel) facts.directories++;
        if (root) {
          await fs.mkdir(file, { recursive: true, mode: 0o700 });
          dirs.push({ file, header });
        }
        entry.resume();
        break;
      case 'file':
      case 'contiguous-file':
        facts.files++;
        facts.bytes += header.size ?? 0;
        if (root) {
          await fs.mkdir(path.dirname(file), { recursive: true, mode: 0o700 });
          await pipeline(entry as unknown as Readable, createWriteStream(file, { flags: 'wx', mode: 0o600 }));
          await applyOwnerModeTime(file, header);
        } else await drain(entry as unknown as Readable);
        break;
      case 'symlink':
        facts.symlinks++;
        if (root) links.push({ file, header });
        entry.resume();
        break;
      default:
        options.logger.warn(`${header.name}: a ${header.type} entry is not restored`);
        entry.resume();
    }
  }
  await finished(plain);
  if (!root) return facts;
  // Symlinks last, so that no file in the archive can be written through one.
  for (const { file, header } of links) {
    await fs.mkdir(path.dirname(file), { recursive: true, mode: 0o700 });
    await fs.symlink(header.linkname ?? '', file);
    if (asRoot) await fs.lchown(file, header.uid, header.gid);
    await fs.lutimes(file, header.mtime, header.mtime);
  }
  // Folders deepest first, so setting a read-only mode does not block what lies below.
  dirs.sort((a, b) => b.file.length - a.file.length);
  for (const { file, header } of dirs) await applyOwnerModeTime(file, header);
  return facts;
}

async function drain(stream: Readable): Promise<void> {
  for await (const _ of stream);
}

async function applyOwnerModeTime(file: string, header: tar.Header): Promise<void> {
  if (asRoot) await fs.chown(file, header.uid, header.gid); // before chmod: chown clears setuid bits
  await fs.chmod(file, (header.mode ?? 0o644) & 0o7777);
  await fs.utimes(file, header.mtime, header.mtime);
}

/** The entry's path, relative and normalised; an absolute path or one with '..' is refused. */
function safeName(name: string): string {
  const normal = path.posix.normalize(name.replace(/\/+$/, '') || '.');
  if (path.posix.isAbsolute(normal) || normal === '..' || normal.startsWith('../')) {
    throw new IntegrityError(`archive entry '${name}' points outside the restore folder; refusing it`);
  }
  return normal === '.' ? '' : normal;
}

/** Moves the finished staging folder to the target; an existing target is replaced only now. */
async function swapIn(staging: string, target: string): Promise<void> {
  const existing = await fs.lstat(target).catch(() => undefined);
  if (!existing || (await fs.readdir(target)).length === 0) {
    await rename(staging, target);
    return;
  }
  const previous = `${staging.replace(/lifeboat-restore-/, 'lifeboat-previous-')}`;
  await rename(target, previous);
  try {
    await rename(staging, target);
  } catch (error) {
    await fs.rename(previous, target);
    throw error;
  }
  await fs.rm(previous, { recursive: true, force: true });
}

async function rename(from: string, to: string): Promise<void> {
  try {
    await fs.rename(from, to);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'EXDEV' || code === 'EBUSY') {
      throw new UserError(
        `target: '${to}' is a mount point or on another filesystem than its parent; restore into a folder inside it`,
      );
    }
    throw error;
  }
}

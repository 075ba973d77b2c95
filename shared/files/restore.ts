import { constants as fsConstants } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { finished } from 'node:stream/promises';
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
  /** Restore the archive's owners (as root) and its setuid, setgid and sticky bits; default false. */
  preserveOwner?: boolean;
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
  rel: string;
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
    const into = staging ? new Staging(staging, options.preserveOwner ?? false) : undefined;
    const facts = await extractArchive(plain, into, options);
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

/**
 * Reads the archive into `staging` (or only through it, for a dry run). Every path stays
 * inside: absolute paths and '..' are refused, nothing is written through a symlink (the
 * archive's symlinks are made last, after every file and folder), hard links only point at
 * files restored before them, and devices, FIFOs and other entry types are left out.
 */
async function extractArchive(
  plain: Readable,
  staging: Staging | undefined,
  options: FilesRestoreOptions,
): Promise<FilesFacts> {
  const facts: FilesFacts = { files: 0, directories: 0, symlinks: 0, bytes: 0 };
  const dirs: Deferred[] = [];
  const links: Deferred[] = [];
  const symlinks = new Set<string>();
  const extract = tar.extract();
  plain.on('error', (error) => extract.destroy(error));
  plain.pipe(extract as unknown as NodeJS.WritableStream);
  for await (const entry of extract) {
    options.signal?.throwIfAborted();
    const { header } = entry;
    const rel = entryPath(header.name, symlinks);
    switch (header.type) {
      case 'directory':
        if (rel) facts.directories++;
        if (staging) {
          await staging.makeFolders(header.name, rel);
          dirs.push({ rel, header });
        }
        entry.resume();
        break;
      case 'file':
      case 'contiguous-file':
        facts.files++;
        facts.bytes += header.size ?? 0;
        if (staging) await staging.writeFile(header.name, rel, entry as unknown as Readable, header);
        else await drain(entry);
        break;
      case 'link': {
        facts.files++;
        const target = linkTarget(header, symlinks);
        if (staging) await staging.hardLink(header.name, rel, target);
        entry.resume();
        break;
      }
      case 'symlink':
        facts.symlinks++;
        symlinks.add(rel);
        if (staging) links.push({ rel, header });
        entry.resume();
        break;
      default:
        options.logger.warn(`${header.name}: a ${header.type} entry is not restored`);
        entry.resume();
    }
  }
  await finished(plain);
  if (!staging) return facts;
  for (const { rel, header } of links) await staging.symlink(header.name, rel, header);
  // Folders deepest first, so setting a read-only mode does not block what lies below.
  dirs.sort((a, b) => b.rel.length - a.rel.length);
  for (const { rel, header } of dirs) await staging.folderMetadata(rel, header);
  return facts;
}

async function drain(stream: AsyncIterable<unknown>): Promise<void> {
  for await (const _ of stream);
}

function refusal(name: string, why: string): UserError {
  return new UserError(`backup: the archive entry '${name}' ${why}; nothing was restored`);
}

/** A path from the archive relative to the restore folder, normalised; undefined if it leaves it. */
function insidePath(name: string): string | undefined {
  if (path.posix.isAbsolute(name) || name.split('/').includes('..')) return undefined;
  const normal = path.posix.normalize(name.replace(/\/+$/, '') || '.');
  return normal === '.' ? '' : normal;
}

/** The first folder above `rel` that the archive holds as a symlink, if any. */
function symlinkAbove(rel: string, symlinks: Set<string>): string | undefined {
  const parts = rel.split('/');
  for (let i = 1; i < parts.length && symlinks.size > 0; i++) {
    const prefix = parts.slice(0, i).join('/');
    if (symlinks.has(prefix)) return prefix;
  }
  return undefined;
}

/** The entry's path; refused when it leaves the restore folder or goes through a symlink of the archive. */
function entryPath(name: string, symlinks: Set<string>): string {
  const rel = insidePath(name);
  if (rel === undefined) throw refusal(name, 'points outside the restore folder');
  const through = symlinkAbove(rel, symlinks);
  if (through !== undefined) throw refusal(name, `would be written through the symlink '${through}'`);
  return rel;
}

/** The path a hard link points at, checked like an entry's path. */
function linkTarget(header: tar.Header, symlinks: Set<string>): string {
  const linkname = header.linkname ?? '';
  const target = insidePath(linkname);
  if (target === undefined)
    throw refusal(header.name, `is a hard link to '${linkname}', which points outside the restore folder`);
  const through = symlinkAbove(target, symlinks);
  if (through !== undefined)
    throw refusal(header.name, `is a hard link to '${linkname}', through the symlink '${through}'`);
  return target;
}

/**
 * The mode bits to set. Without preserve-owner a file gets no setuid, setgid or sticky bit
 * (like tar --no-same-owner); a folder keeps setgid and sticky, which grant no privilege
 * (the group new files get, who may delete them).
 */
function modeOf(header: tar.Header, preserveOwner: boolean): number {
  const mode = header.mode ?? 0o644;
  if (preserveOwner) return mode & 0o7777;
  return mode & (header.type === 'directory' ? 0o3777 : 0o777);
}

function ifMissing(error: NodeJS.ErrnoException): undefined {
  if (error.code === 'ENOENT') return undefined;
  throw error;
}

/** Runs a create that never replaces: a path that exists means two entries claim it. */
async function createOnce<T>(name: string, create: () => Promise<T>): Promise<T> {
  try {
    return await create();
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'EEXIST')
      throw refusal(name, 'would replace what an earlier entry restored there');
    throw error;
  }
}

const parentOf = (rel: string) => path.posix.dirname(rel).replace(/^\.$/, '');
const folderFlags = fsConstants.O_RDONLY | fsConstants.O_DIRECTORY | fsConstants.O_NOFOLLOW;

/**
 * The staging folder being filled. Paths are made one component at a time and no component
 * may be a symlink or anything but a folder; files are created exclusively and their owner,
 * mode and time set through their own handle, so nothing is ever written or changed through
 * a symlink, whatever the archive holds.
 */
class Staging {
  readonly root: string;
  private readonly preserveOwner: boolean;
  /** Folders inside root already checked or made: real folders, never symlinks. */
  private readonly folders = new Set<string>();

  constructor(root: string, preserveOwner: boolean) {
    this.root = root;
    this.preserveOwner = preserveOwner;
  }

  private path(rel: string): string {
    return rel ? path.join(this.root, rel) : this.root;
  }

  /** Makes the folders of `rel`, each component in turn; refuses one that is a symlink or no folder. */
  async makeFolders(name: string, rel: string): Promise<void> {
    let prefix = '';
    for (const part of rel ? rel.split('/') : []) {
      prefix = prefix ? `${prefix}/${part}` : part;
      if (this.folders.has(prefix)) continue;
      const stat = await fs.lstat(this.path(prefix)).catch(ifMissing);
      if (!stat) await fs.mkdir(this.path(prefix), { mode: 0o700 });
      else if (stat.isSymbolicLink()) throw refusal(name, `would be written through the symlink '${prefix}'`);
      else if (!stat.isDirectory())
        throw refusal(name, `needs a folder at '${prefix}', where something else is`);
      this.folders.add(prefix);
    }
  }

  async writeFile(name: string, rel: string, content: Readable, header: tar.Header) {
    await this.makeFolders(name, parentOf(rel));
    const handle = await createOnce(name, () => fs.open(this.path(rel), 'wx', 0o600));
    try {
      await handle.writeFile(content);
      await this.applyMetadata(handle, header);
    } finally {
      await handle.close();
    }
  }

  /** A hard link to a regular file restored earlier from this archive, inside the staging folder. */
  async hardLink(name: string, rel: string, target: string): Promise<void> {
    const folder = parentOf(target);
    const stat =
      !folder || this.folders.has(folder) ? await fs.lstat(this.path(target)).catch(ifMissing) : undefined;
    if (!stat?.isFile())
      throw refusal(name, `is a hard link to '${target}', which is not a file restored before it`);
    await this.makeFolders(name, parentOf(rel));
    await createOnce(name, () => fs.link(this.path(target), this.path(rel)));
  }

  /** A symlink, made once every file and folder is in place; its owner and time set on the link itself. */
  async symlink(name: string, rel: string, header: tar.Header): Promise<void> {
    await this.makeFolders(name, parentOf(rel));
    const file = this.path(rel);
    await createOnce(name, () => fs.symlink(header.linkname ?? '', file));
    if (this.preserveOwner && asRoot) await fs.lchown(file, header.uid, header.gid);
    await fs.lutimes(file, header.mtime, header.mtime);
  }

  /** A folder's owner, mode and time, through a handle that refuses a symlink. */
  async folderMetadata(rel: string, header: tar.Header): Promise<void> {
    const handle = await fs.open(this.path(rel), folderFlags);
    try {
      await this.applyMetadata(handle, header);
    } finally {
      await handle.close();
    }
  }

  private async applyMetadata(handle: fs.FileHandle, header: tar.Header): Promise<void> {
    // Owners only when asked (and possible): by default files belong to whoever restores.
    if (this.preserveOwner && asRoot) await handle.chown(header.uid, header.gid); // before chmod: chown clears setuid bits
    await handle.chmod(modeOf(header, this.preserveOwner));
    await handle.utimes(header.mtime, header.mtime);
  }
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

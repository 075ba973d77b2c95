import { constants as fsConstants } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { finished } from 'node:stream/promises';
import * as tar from 'tar-stream';
import type { Manifest } from '../catalog/manifest.ts';
import { messageOf, UserError } from '../errors.ts';
import { IntegrityError, openArtifact, UndecodableArtifactError } from '../pipeline/artifact.ts';
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
  /**
   * Told the staging folder once it exists, and undefined once it is gone: what the action's
   * `post:` step removes (or, killed mid-swap, puts right) should this process die first.
   */
  onLeftovers?: (leftovers: FilesLeftovers | undefined) => void;
}

/** A files restore's staging folder beside its target, for the `post:` step of a killed one. */
export interface FilesLeftovers {
  type: 'files-staging';
  target: string;
  staging: string;
}

export interface FilesRestoreResult {
  target: string;
  dryRun: boolean;
  facts: FilesFacts;
}

/**
 * The archive read to its end (its stored bytes intact) holds other counts than its manifest:
 * damage of the backup as a whole, told apart from damaged bytes for a verification's rows.
 */
export class ArchiveFactsError extends IntegrityError {
  override name = 'ArchiveFactsError';
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
  // A restore of this target killed during its swap is finished or undone first.
  await repairSwap(target, { dryRun: options.dryRun, logger: options.logger });
  await checkTarget(target, options.overwrite);

  const parent = path.dirname(target);
  let staging: string | undefined;
  if (!options.dryRun) {
    await fs.mkdir(parent, { recursive: true });
    staging = await fs.mkdtemp(path.join(parent, `.${path.basename(target)}.${stagingMark}`));
    options.onLeftovers?.({ type: 'files-staging', target, staging });
  }
  const key = `${manifest.set}/${manifest.id}/${artifact.name}`;
  const read = await openArtifact({
    storage: options.storage,
    key,
    artifact,
    keys: options.keys,
    logger: options.logger,
    label: 'downloaded',
    progressIntervalMs: options.progressIntervalMs,
    signal: options.signal,
  }).catch(async (error) => {
    if (staging) await removeStaging(staging, options);
    throw error;
  });
  try {
    const into = staging ? new Staging(staging, options.preserveOwner ?? false) : undefined;
    let facts: FilesFacts;
    try {
      facts = await extractArchive(read.stream, into, options);
    } catch (error) {
      throw await judged(error, read, key, options);
    }
    const expected = manifest.facts as unknown as FilesFacts;
    for (const key of ['files', 'directories', 'symlinks', 'bytes'] as const) {
      if (facts[key] !== expected[key]) {
        throw new ArchiveFactsError(
          `backup ${manifest.id}: the archive holds ${facts[key]} ${key}, the manifest records ${expected[key]}`,
        );
      }
    }
    if (staging) await swapIn(staging, target);
    options.onLeftovers?.(undefined);
    return { target, dryRun: options.dryRun, facts };
  } catch (error) {
    read.close();
    if (staging) await removeStaging(staging, options);
    throw error;
  }
}

/** Removes the staging folder of a failed restore (and says so no more to the post: step). */
async function removeStaging(staging: string, options: FilesRestoreOptions): Promise<void> {
  await fs.rm(staging, { recursive: true, force: true });
  options.onLeftovers?.(undefined);
}

/**
 * A failure of the read before the archive's end (an entry refused, a disk full, a tar
 * header that does not parse), judged by the stored bytes: when they are damaged, that is
 * what the failure says. Their sha256 is finished by reading the rest of them, not decoded.
 */
async function judged(
  error: unknown,
  read: { verdict(): Promise<IntegrityError | undefined>; close(): void },
  key: string,
  options: FilesRestoreOptions,
): Promise<unknown> {
  if (
    options.signal?.aborted ||
    error instanceof IntegrityError ||
    error instanceof UndecodableArtifactError ||
    (error instanceof UserError && /^age-identity:|^backup: the artifact/.test(error.message))
  ) {
    return error;
  }
  options.logger.info(
    `${key}: the restore stopped (${messageOf(error)}); reading the rest of the stored artifact to finish its sha256 before saying why`,
  );
  const damage = await read.verdict().catch(() => undefined);
  return damage
    ? new IntegrityError(`${damage.message}; what it decoded to failed first (${messageOf(error)})`)
    : error;
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

/** What a restore names its staging folder beside the target: `.<target>.lifeboat-restore-<suffix>`. */
const stagingMark = 'lifeboat-restore-';
/** What the swap names the target's previous contents: `.<target>.lifeboat-previous-<suffix>`. */
const previousMark = 'lifeboat-previous-';

/** The previous contents' path of a swap: beside the target, with its staging folder's suffix. */
function previousOf(staging: string, target: string): string {
  const suffix = path.basename(staging).slice(`.${path.basename(target)}.${stagingMark}`.length);
  return path.join(path.dirname(target), `.${path.basename(target)}.${previousMark}${suffix}`);
}

/**
 * Moves the finished staging folder to the target; an existing target is replaced only now,
 * in two renames (Node has no renameat2(RENAME_EXCHANGE)): the target to
 * `.<name>.lifeboat-previous-<suffix>`, then the staging folder to the target. Killed
 * between them, no target is there: the two names, which share the suffix, say what happened,
 * and repairSwap (the next restore, the post: step) puts the previous contents back.
 */
async function swapIn(staging: string, target: string): Promise<void> {
  const existing = await fs.lstat(target).catch(() => undefined);
  if (!existing || (await fs.readdir(target)).length === 0) {
    await rename(staging, target);
    return;
  }
  const previous = previousOf(staging, target);
  await rename(target, previous);
  try {
    await rename(staging, target);
  } catch (error) {
    await fs.rename(previous, target);
    throw error;
  }
  await fs.rm(previous, { recursive: true, force: true });
}

/**
 * Finishes or undoes what an earlier restore of `target` left when it was killed during its
 * swap, from the names beside the target (see swapIn):
 * - the previous contents there and no target (killed between the two renames): they are put
 *   back at the target, and the restored copy that never got in is removed;
 * - the previous contents and the target, but no staging folder (killed after the new copy
 *   was moved in): the swap had finished, and the previous contents are removed;
 * - all three: which should be the target cannot be told, so nothing is touched and the
 *   restore is refused, naming the paths.
 * A staging folder alone (a restore stopped before its swap) is reported, not removed: a
 * restore running now may be using it. With `dryRun` nothing is changed, only reported.
 */
export async function repairSwap(
  target: string,
  options: { dryRun?: boolean; logger: Logger; own?: string },
): Promise<void> {
  const parent = path.dirname(target);
  const name = path.basename(target);
  const stagingPrefix = `.${name}.${stagingMark}`;
  const previousPrefix = `.${name}.${previousMark}`;
  const entries = await fs.readdir(parent).catch(() => [] as string[]);
  const staged = new Set(entries.filter((e) => e.startsWith(stagingPrefix)));
  const would = options.dryRun ? 'dry run, nothing changed: a restore would' : '';
  for (const entry of entries.filter((e) => e.startsWith(previousPrefix))) {
    const suffix = entry.slice(previousPrefix.length);
    const previous = path.join(parent, entry);
    const staging = path.join(parent, `${stagingPrefix}${suffix}`);
    const hasStaging = staged.delete(`${stagingPrefix}${suffix}`);
    const hasTarget = (await fs.lstat(target).catch(() => undefined)) !== undefined;
    if (!hasTarget) {
      const what = `an earlier restore of ${target} was stopped between the two renames of its swap (its previous contents were moved to ${previous}${hasStaging ? `, the restored copy ${staging} was not moved in yet` : ''})`;
      if (options.dryRun) {
        options.logger.warn(`target: ${what}; ${would} put the previous contents back at ${target}`);
        continue;
      }
      await rename(previous, target);
      if (hasStaging) await fs.rm(staging, { recursive: true, force: true });
      options.logger.warn(
        `target: ${what}: the previous contents are put back at ${target}${hasStaging ? ` and ${staging} is removed` : ''}`,
      );
    } else if (!hasStaging) {
      const what = `an earlier restore of ${target} was stopped after its swap, before it removed the previous contents at ${previous}`;
      if (options.dryRun) {
        options.logger.warn(`target: ${what}; ${would} remove them`);
        continue;
      }
      await fs.rm(previous, { recursive: true, force: true });
      options.logger.warn(`target: ${what}: they are removed`);
    } else {
      throw new UserError(
        `target: ${target} is there, and so are ${previous} (its contents before an earlier restore) and ${staging} (a restored copy) from that restore, stopped during its swap; which should be the target cannot be told: keep the one you want at ${target}, remove the other two, and run the restore again`,
      );
    }
  }
  for (const entry of staged) {
    if (options.own && path.join(parent, entry) === options.own) continue;
    options.logger.warn(
      `target: ${path.join(parent, entry)} is left from an earlier restore of ${target} that stopped before its swap (or from one running now); nothing uses it once no restore of ${target} runs: then remove it`,
    );
  }
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

/**
 * The `post:` step of a killed restore: finishes or undoes a swap it was killed in (see
 * repairSwap), then removes its staging folder if the kill came before the swap.
 */
export async function removeFilesLeftovers(leftovers: FilesLeftovers, logger: Logger): Promise<void> {
  const target = path.resolve(leftovers.target);
  const staging = path.resolve(leftovers.staging);
  const prefix = `.${path.basename(target)}.${stagingMark}`;
  if (path.dirname(staging) !== path.dirname(target) || !path.basename(staging).startsWith(prefix)) {
    throw new UserError(`post: ${staging} is not a staging folder of ${target}; left alone`);
  }
  await repairSwap(target, { logger, own: staging });
  if (await fs.lstat(staging).catch(() => undefined)) {
    await fs.rm(staging, { recursive: true, force: true });
    logger.info(
      `removed the staging folder ${staging} of the restore of ${target}, which was stopped before its swap`,
    );
  }
}

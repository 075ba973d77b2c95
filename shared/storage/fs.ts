import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { promisify } from 'node:util';
import { fileSystemProblem } from '../errors.ts';
import { chunkBytes } from '../pipeline/buffers.ts';
import {
  type DeleteOptions,
  type DeleteResult,
  type IncompleteUpload,
  type LockMode,
  type ObjectInfo,
  type ObjectLock,
  type PutBytesOptions,
  type PutOptions,
  type Storage,
  type StorageAccess,
  StorageError,
  type StorageErrorCode,
} from './storage.ts';

/** The name prefix of the temporary file an object is written to before it is renamed into place. */
export const partialPrefix = '.lifeboat-partial-';

const run = promisify(execFile);

/** chattr's or lsattr's own words for why it failed (its stderr, or why it did not start). */
function attrProblem(error: unknown): string {
  const e = error as NodeJS.ErrnoException & { stderr?: string };
  if (e.code === 'ENOENT') return 'chattr is not installed (Debian and Ubuntu: e2fsprogs)';
  return (e.stderr || e.message).trim().split('\n')[0]!;
}

const storageCodes: Record<string, StorageErrorCode> = {
  ENOSPC: 'full',
  EDQUOT: 'full',
  EACCES: 'denied',
  EPERM: 'denied',
  EROFS: 'read-only',
};

/**
 * A local folder (the default `./backups`). Every object is written to a hidden temporary
 * file and renamed into place, so a reader never sees half an object; `ifAbsent` uses
 * link(2), which fails atomically when the name exists. A full disk, a folder this user may
 * not write and a read-only file system are StorageErrors naming the path and the fix.
 * Temporary files a killed run left are not objects: `listIncomplete` finds them for prune.
 * A retention lock is the immutable flag (`chattr +i`, root only), set once the file is in
 * place: no one but root can delete, rename or change it. The flag has no date: the manifest
 * records it, and prune lifts the flag (`lockPassed`) once that date has passed.
 */
export class FsStorage implements Storage {
  readonly url: string;
  readonly root: string;

  constructor(url: string, root: string) {
    this.url = url;
    this.root = root;
  }

  /**
   * Translates a file-system error the user can fix into a StorageError that names the path
   * and the fix; `doing` is a verb phrase ("writing", "reading the folder"). Others pass.
   */
  private fail(error: unknown, file: string, doing: string, reading = false): never {
    if (error instanceof StorageError) throw error;
    const known = fileSystemProblem(error);
    const code = known && storageCodes[known.code];
    if (known && code) {
      const fix =
        code === 'full'
          ? 'free space on that disk (prune-retention removes old backups) or point storage at a larger one'
          : reading && code === 'denied'
            ? 'run Lifeboat as a user that may read the storage folder, or fix its owner and mode (chown, chmod)'
            : known.fix;
      throw new StorageError(
        code,
        `storage ${this.url}: ${known.problem} ${doing} ${file} (${known.code}); ${fix}`,
        {
          cause: error,
        },
      );
    }
    if ((error as NodeJS.ErrnoException).code === 'ENOTDIR') {
      throw new StorageError(
        'invalid',
        `storage ${this.url}: a part of ${file} is a file, not a folder (ENOTDIR); fix the storage input`,
        { cause: error },
      );
    }
    throw error;
  }

  async check(access: StorageAccess = 'write'): Promise<void> {
    if (access === 'read') {
      const stat = await fs.stat(this.root).catch((error: NodeJS.ErrnoException) => {
        if (error.code === 'ENOENT') {
          throw new StorageError(
            'no-bucket',
            `storage ${this.url}: the folder ${this.root} does not exist; check the storage input (list and restore never create a folder; a backup does)`,
            { cause: error },
          );
        }
        this.fail(error, this.root, 'reading the folder', true);
      });
      if (!stat.isDirectory()) {
        throw new StorageError(
          'invalid',
          `storage ${this.url}: ${this.root} is not a folder; fix the storage input`,
        );
      }
      await fs
        .access(this.root, fs.constants.R_OK | fs.constants.X_OK)
        .catch((error) => this.fail(error, this.root, 'reading the folder', true));
      return;
    }
    await fs
      .mkdir(this.root, { recursive: true })
      .catch((error) => this.fail(error, this.root, 'creating the folder'));
    await fs
      .access(this.root, fs.constants.W_OK | fs.constants.R_OK | fs.constants.X_OK)
      .catch((error) => this.fail(error, this.root, 'writing the folder'));
  }

  /**
   * Sets and lifts the immutable flag on a probe file: it needs root (CAP_LINUX_IMMUTABLE),
   * chattr and a file system with the flag (ext4, xfs, btrfs, tmpfs). A compliance lock is
   * refused: root can always lift the flag.
   */
  async checkLocks(mode: LockMode): Promise<void> {
    if (mode === 'compliance') {
      throw new StorageError(
        'invalid',
        `storage ${this.url}: a folder cannot hold a compliance lock (root can always lift the immutable flag, chattr -i); use lock-mode: governance, or a bucket with S3 Object Lock for compliance`,
      );
    }
    await this.check('write');
    const probe = path.join(this.root, `${partialPrefix}lock-probe-${randomBytes(6).toString('hex')}`);
    await fs.writeFile(probe, '').catch((error) => this.fail(error, probe, 'writing'));
    try {
      await run('chattr', ['+i', probe]);
      await run('chattr', ['-i', probe]);
    } catch (error) {
      await run('chattr', ['-i', probe]).catch(() => {});
      throw new StorageError(
        'invalid',
        `storage ${this.url}: lock-for on a folder sets the immutable flag (chattr +i) on every file, and that failed here: ${attrProblem(error)}; run as root on a file system with the flag (ext4, xfs, btrfs, tmpfs), or leave lock-for out`,
        { cause: error },
      );
    } finally {
      await fs.rm(probe, { force: true }).catch(() => {});
    }
  }

  /** Sets the immutable flag on a file now in place. */
  private async immutable(file: string): Promise<void> {
    await run('chattr', ['+i', file]).catch((error) => {
      throw new StorageError(
        'invalid',
        `storage ${this.url}: could not lock ${file} (chattr +i): ${attrProblem(error)}`,
        { cause: error },
      );
    });
  }

  /** An immutable file holds a governance lock without a date (the manifest records the date). */
  async lockOf(key: string): Promise<ObjectLock | undefined> {
    const file = this.file(key);
    try {
      const { stdout } = await run('lsattr', ['-d', file]);
      return stdout.split(/\s/, 1)[0]!.includes('i') ? { mode: 'governance' } : undefined;
    } catch (error) {
      if (/No such file/.test(attrProblem(error))) return undefined;
      throw new StorageError(
        'invalid',
        `storage ${this.url}: could not read the flags of ${file} (lsattr): ${attrProblem(error)}`,
        { cause: error },
      );
    }
  }

  private file(key: string): string {
    const normal = path.posix.normalize(key);
    if (normal.startsWith('../') || normal === '..' || path.posix.isAbsolute(normal)) {
      throw new StorageError('invalid', `storage ${this.url}: key '${key}' leaves the storage folder`);
    }
    return path.join(this.root, ...normal.split('/'));
  }

  /** The temporary file beside `file`, its folder created. */
  private async temp(file: string): Promise<string> {
    const dir = path.dirname(file);
    await fs.mkdir(dir, { recursive: true }).catch((error) => this.fail(error, dir, 'creating the folder'));
    return path.join(dir, `${partialPrefix}${randomBytes(6).toString('hex')}`);
  }

  /**
   * Streams `body` into a temporary file and renames it into place. A write that fails (a
   * full disk) removes the temporary file and fails `body` with the same StorageError, so
   * that whatever feeds it reports the storage's words, not a bare ENOSPC.
   */
  async putStream(
    key: string,
    body: Readable,
    signal?: AbortSignal,
    options: PutOptions = {},
  ): Promise<void> {
    const file = this.file(key);
    try {
      const temp = await this.temp(file);
      const out = createWriteStream(temp, { flags: 'wx' });
      let writeError: unknown;
      out.once('error', (error) => {
        writeError = error;
      });
      try {
        await pipeline(body.iterator({ destroyOnReturn: false }), out, { signal });
      } catch (error) {
        await fs.rm(temp, { force: true }).catch(() => {});
        // Only the file's own errors are the storage's; a source that broke says so itself.
        if (error === writeError) this.fail(error, temp, 'writing');
        throw error;
      }
      await fs.rename(temp, file).catch((error) => this.fail(error, file, 'renaming into place'));
      if (options.lock) await this.immutable(file);
    } catch (error) {
      if (error instanceof StorageError) body.destroy(error);
      throw error;
    }
  }

  async putBytes(key: string, body: Uint8Array, options: PutBytesOptions = {}): Promise<void> {
    const file = this.file(key);
    const temp = await this.temp(file);
    try {
      const handle = await fs.open(temp, 'wx');
      try {
        await handle.writeFile(body);
        await handle.sync();
      } finally {
        await handle.close();
      }
    } catch (error) {
      await fs.rm(temp, { force: true }).catch(() => {});
      this.fail(error, temp, 'writing');
    }
    if (!options.ifAbsent) {
      await fs.rename(temp, file).catch((error) => this.fail(error, file, 'renaming into place'));
    } else {
      try {
        await fs.link(temp, file);
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code === 'EEXIST') {
          throw new StorageError('exists', `storage ${this.url}: '${key}' already exists`, { cause: error });
        }
        this.fail(error, file, 'writing');
      } finally {
        // Before the flag: the temporary name is a link to the same (then immutable) file.
        await fs.rm(temp, { force: true });
      }
    }
    if (options.lock) await this.immutable(file);
  }

  async get(key: string): Promise<Readable> {
    const file = this.file(key);
    const handle = await fs.open(file, 'r').catch((error: NodeJS.ErrnoException) => {
      if (error.code === 'ENOENT' || error.code === 'EISDIR') {
        throw new StorageError('not-found', `storage ${this.url}: '${key}' does not exist`, { cause: error });
      }
      this.fail(error, file, 'reading', true);
    });
    return handle.createReadStream({ highWaterMark: chunkBytes });
  }

  async head(key: string): Promise<ObjectInfo | undefined> {
    const file = this.file(key);
    const stat = await fs.stat(file).catch((error: NodeJS.ErrnoException) => {
      if (error.code === 'ENOENT' || error.code === 'ENOTDIR') return undefined;
      this.fail(error, file, 'reading', true);
    });
    return stat?.isFile() ? { key, size: stat.size, modified: stat.mtime } : undefined;
  }

  async *list(prefix: string): AsyncIterable<ObjectInfo> {
    // Walk only the folder that holds the prefix, in sorted order like the object stores.
    yield* this.walk(baseOf(prefix), prefix, false);
  }

  /** Objects (`partials` false) or temporary files of unfinished writes (`partials` true). */
  private async *walk(dir: string, prefix: string, partials: boolean): AsyncIterable<ObjectInfo> {
    const folder = this.file(dir || '.');
    const entries = await fs.readdir(folder, { withFileTypes: true }).catch((error) => {
      const code = (error as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ENOTDIR') return [];
      this.fail(error, folder, 'reading the folder', true);
    });
    entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    for (const entry of entries) {
      const key = `${dir}${entry.name}`;
      if (entry.isDirectory()) {
        if (`${key}/`.startsWith(prefix) || prefix.startsWith(`${key}/`))
          yield* this.walk(`${key}/`, prefix, partials);
      } else if (
        entry.isFile() &&
        key.startsWith(prefix) &&
        entry.name.startsWith(partialPrefix) === partials
      ) {
        const stat = await fs.stat(this.file(key)).catch(() => undefined);
        if (stat) yield { key, size: stat.size, modified: stat.mtime };
      }
    }
  }

  async listDirs(prefix: string): Promise<string[]> {
    const folder = this.file(prefix || '.');
    const entries = await fs.readdir(folder, { withFileTypes: true }).catch((error) => {
      const code = (error as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ENOTDIR') return [];
      this.fail(error, folder, 'reading the folder', true);
    });
    return entries
      .filter((e) => e.isDirectory())
      .map((e) => `${prefix}${e.name}/`)
      .sort();
  }

  /**
   * An immutable file (chattr +i) refuses deletion even to root: it is reported as locked,
   * unless the caller says its lock has passed (`lockPassed`): then the flag is lifted first.
   */
  async delete(keys: string[], options: DeleteOptions = {}): Promise<DeleteResult> {
    const dirs = new Set<string>();
    const locked: string[] = [];
    for (const key of keys) {
      const file = this.file(key);
      try {
        await fs.unlink(file).catch(async (error: NodeJS.ErrnoException) => {
          if (error.code !== 'EPERM' || !options.lockPassed) throw error;
          await run('chattr', ['-i', file]).catch(() => {
            throw error;
          });
          await fs.unlink(file);
        });
      } catch (error) {
        const code = (error as NodeJS.ErrnoException).code;
        if (code === 'EPERM') locked.push(key);
        else if (code !== 'ENOENT') this.fail(error, file, 'deleting');
      }
      dirs.add(path.dirname(file));
    }
    await this.removeEmptyFolders(dirs);
    return { locked };
  }

  /** Removes folders left empty, up to the storage root, so deleted backups leave no trace. */
  private async removeEmptyFolders(dirs: Iterable<string>): Promise<void> {
    for (let dir of [...dirs].sort((a, b) => b.length - a.length)) {
      while (dir.startsWith(this.root) && dir !== this.root) {
        try {
          await fs.rmdir(dir);
        } catch {
          break;
        }
        dir = path.dirname(dir);
      }
    }
  }

  /** The temporary files of writes that never finished, dated by their last write. */
  async listIncomplete(prefix: string): Promise<IncompleteUpload[]> {
    const found: IncompleteUpload[] = [];
    for await (const item of this.walk(baseOf(prefix), prefix, true)) {
      found.push({ key: item.key, started: item.modified, bytes: item.size });
    }
    return found;
  }

  async removeIncomplete(uploads: IncompleteUpload[]): Promise<void> {
    const dirs = new Set<string>();
    for (const upload of uploads) {
      if (!path.posix.basename(upload.key).startsWith(partialPrefix)) {
        throw new Error(`removeIncomplete: '${upload.key}' is not a temporary file of this storage`);
      }
      const file = this.file(upload.key);
      await fs.unlink(file).catch((error: NodeJS.ErrnoException) => {
        if (error.code !== 'ENOENT') this.fail(error, file, 'deleting');
      });
      dirs.add(path.dirname(file));
    }
    await this.removeEmptyFolders(dirs);
  }
}

/** The folder part of a key prefix ('set/2026-' → 'set/'). */
function baseOf(prefix: string): string {
  const slash = prefix.lastIndexOf('/');
  return slash < 0 ? '' : prefix.slice(0, slash + 1);
}

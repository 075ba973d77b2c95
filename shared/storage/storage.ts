import type { Readable } from 'node:stream';

/** One stored object, its key relative to the storage's prefix. */
export interface ObjectInfo {
  key: string;
  size: number;
  modified: Date;
}

/**
 * The one interface every provider implements. Keys are relative to the prefix of the
 * storage URL and always use '/'. Large artifacts go through `putStream` (multipart or
 * resumable, parallel parts, aborted on failure); small JSON documents through `putBytes`,
 * which can refuse to overwrite where the provider supports a conditional create.
 */
export interface Storage {
  /** The storage URL as the user gave it, safe to print (no credentials). */
  readonly url: string;
  /**
   * Fails with a StorageError naming the problem when the bucket is missing or unreachable.
   * `write` (the default, for backups, prune and verification records) may create a folder
   * storage and demands write access; `read` (list, restore) creates nothing, works on a
   * read-only folder and refuses a folder that does not exist.
   */
  check(access?: StorageAccess): Promise<void>;
  /**
   * Fails with one StorageError line, before anything is written, when this storage cannot
   * hold a retention lock of `mode` (a bucket without S3 Object Lock, a folder where
   * `chattr +i` fails, a provider Lifeboat does not lock on).
   */
  checkLocks(mode: LockMode): Promise<void>;
  putStream(key: string, body: Readable, signal?: AbortSignal, options?: PutOptions): Promise<void>;
  putBytes(key: string, body: Uint8Array, options?: PutBytesOptions): Promise<void>;
  /**
   * The object's bytes as a stream; S3, Azure and GCS resume a broken read from the byte
   * reached (ranged.ts). With `expectedBytes` above one range (an artifact whose size the
   * manifest gives) and LIFEBOAT_DOWNLOAD_STREAMS above 1, S3 and Azure read it in parallel
   * ranged GETs; the size is only a hint: the server's own size decides how much is read.
   */
  get(key: string, signal?: AbortSignal, options?: GetOptions): Promise<Readable>;
  head(key: string): Promise<ObjectInfo | undefined>;
  /** Every object whose key starts with `prefix`, page by page. */
  list(prefix: string): AsyncIterable<ObjectInfo>;
  /** The "folders" directly below `prefix` (which ends with '/'), each ending with '/'. */
  listDirs(prefix: string): Promise<string[]>;
  /**
   * Deletes in batches; a key that is already gone is not an error. Keys that a retention
   * lock protects (S3 Object Lock, Azure immutability, GCS retention and holds, an immutable
   * file) are returned instead of failing the call.
   */
  delete(keys: string[], options?: DeleteOptions): Promise<DeleteResult>;
  /**
   * The retention lock an object holds now, if any (S3 Object Lock retention or legal hold,
   * a folder's immutable flag); undefined for an object without one, or one that is gone.
   */
  lockOf(key: string): Promise<ObjectLock | undefined>;
  /**
   * Uploads under `prefix` that were started and never finished (a killed run): a folder
   * storage's `.lifeboat-partial-*` files, S3 multipart uploads. None on Azure and GCS, whose
   * uncommitted blocks and resumable sessions expire by themselves after a week.
   */
  listIncomplete(prefix: string): Promise<IncompleteUpload[]>;
  /** Removes (aborts) the given incomplete uploads; one already gone is not an error. */
  removeIncomplete(uploads: IncompleteUpload[]): Promise<void>;
}

export type StorageAccess = 'read' | 'write';

export interface GetOptions {
  /** The size the caller expects (from a manifest): large objects may be read in parallel ranges. */
  expectedBytes?: number;
}

export interface PutOptions {
  /** Write the object under this retention lock (see checkLocks). */
  lock?: RetentionLock;
}

export interface PutBytesOptions extends PutOptions {
  /** Refuse to overwrite an object of that name, where the provider enforces it. */
  ifAbsent?: boolean;
}

/** An upload that was started and not finished: its space is used, and no object is visible. */
export interface IncompleteUpload {
  /** The key it would have become, or (folder storage) the temporary file's key. */
  key: string;
  /** When it started (S3) or was last written to (folder storage). */
  started: Date;
  /** Bytes it holds, where the provider says. */
  bytes?: number;
  /** The provider's id for it (S3 UploadId). */
  id?: string;
}

export interface DeleteOptions {
  /**
   * Remove every version and delete marker of each key (prune), so that a versioned bucket
   * really frees the bytes; without it a versioned bucket only gets delete markers.
   */
  allVersions?: boolean;
  /**
   * The caller checked (in the manifest) that these keys' retention lock has passed: a lock
   * that holds no date of its own (a folder's immutable flag) is lifted, then the key deleted.
   */
  lockPassed?: boolean;
}

export interface DeleteResult {
  /** Keys left in place because a retention lock or hold protects them. */
  locked: string[];
  /**
   * Bytes actually removed, where the provider counts them (S3 with allVersions on a
   * versioned bucket: every version removed); otherwise the caller counts the listed sizes
   * of the keys not locked.
   */
  freedBytes?: number;
}

/**
 * Retention lock modes, as S3 Object Lock names them: governance can be lifted early by an
 * identity allowed to bypass it, compliance by no one (not even the account's root) until
 * it passes.
 */
export const lockModes = ['governance', 'compliance'] as const;
export type LockMode = (typeof lockModes)[number];

/** A retention lock to write an object under: no one may delete or overwrite it before `until`. */
export interface RetentionLock {
  mode: LockMode;
  until: Date;
}

/**
 * The lock an object holds: a retention (`mode`, and `until` unless the lock has no date of
 * its own: a folder's immutable flag holds until it is lifted), and/or an S3 legal hold (no
 * date, holds until removed).
 */
export interface ObjectLock {
  mode?: LockMode;
  until?: Date;
  legalHold?: boolean;
}

export type StorageErrorCode =
  | 'not-found'
  | 'exists'
  | 'no-bucket'
  | 'denied'
  | 'credentials'
  | 'unreachable'
  | 'timeout'
  | 'full'
  | 'read-only'
  | 'invalid';

/** A provider failure, translated into words a user can act on. */
export class StorageError extends Error {
  override name = 'StorageError';
  readonly code: StorageErrorCode;
  constructor(code: StorageErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
  }
}

/**
 * The base of a provider Lifeboat writes no retention lock on in this version (GCS, Azure):
 * checkLocks and a locked write refuse, naming the provider and what to do instead; lockOf
 * finds none.
 */
export abstract class StorageWithoutLocks {
  abstract readonly url: string;
  /** The provider's name, and what locks its objects instead (set on the bucket, outside Lifeboat). */
  protected abstract readonly lockless: { provider: string; instead: string };

  async checkLocks(): Promise<void> {
    throw this.locksRefused();
  }

  async lockOf(): Promise<ObjectLock | undefined> {
    return undefined;
  }

  /** Refuses a write that asks for a lock (before anything is sent). */
  protected refuseLock(lock: RetentionLock | undefined): void {
    if (lock) throw this.locksRefused();
  }

  private locksRefused(): StorageError {
    return new StorageError(
      'invalid',
      `storage ${this.url}: lock-for is not built for ${this.lockless.provider} in this version (nothing was written); leave lock-for out, or ${this.lockless.instead}`,
    );
  }
}

/**
 * A storage that passes every call on to another (`target`, which may still be loading): the
 * base of the wrappers that change only some calls (locking.ts), and openStorage's lazy one.
 */
export class ForwardingStorage implements Storage {
  readonly url: string;
  protected readonly target: () => Storage | Promise<Storage>;

  constructor(url: string, target: () => Storage | Promise<Storage>) {
    this.url = url;
    this.target = target;
  }

  async check(access?: StorageAccess): Promise<void> {
    return (await this.target()).check(access);
  }
  async checkLocks(mode: LockMode): Promise<void> {
    return (await this.target()).checkLocks(mode);
  }
  async putStream(key: string, body: Readable, signal?: AbortSignal, options?: PutOptions): Promise<void> {
    return (await this.target()).putStream(key, body, signal, options);
  }
  async putBytes(key: string, body: Uint8Array, options?: PutBytesOptions): Promise<void> {
    return (await this.target()).putBytes(key, body, options);
  }
  async get(key: string, signal?: AbortSignal, options?: GetOptions): Promise<Readable> {
    return (await this.target()).get(key, signal, options);
  }
  async head(key: string): Promise<ObjectInfo | undefined> {
    return (await this.target()).head(key);
  }
  async *list(prefix: string): AsyncIterable<ObjectInfo> {
    yield* (await this.target()).list(prefix);
  }
  async listDirs(prefix: string): Promise<string[]> {
    return (await this.target()).listDirs(prefix);
  }
  async delete(keys: string[], options?: DeleteOptions): Promise<DeleteResult> {
    return (await this.target()).delete(keys, options);
  }
  async lockOf(key: string): Promise<ObjectLock | undefined> {
    return (await this.target()).lockOf(key);
  }
  async listIncomplete(prefix: string): Promise<IncompleteUpload[]> {
    return (await this.target()).listIncomplete(prefix);
  }
  async removeIncomplete(uploads: IncompleteUpload[]): Promise<void> {
    return (await this.target()).removeIncomplete(uploads);
  }
}

export function isNotFound(error: unknown): boolean {
  return error instanceof StorageError && error.code === 'not-found';
}

/** Joins a storage prefix and a key with exactly one '/'. */
export function joinKey(prefix: string, key: string): string {
  if (!prefix) return key;
  if (!key) return prefix.endsWith('/') ? prefix : `${prefix}/`;
  return `${prefix.replace(/\/+$/, '')}/${key.replace(/^\/+/, '')}`;
}

/** Runs `task` over `items` with at most `limit` at a time. */
export async function forEachLimit<T>(
  items: T[],
  limit: number,
  task: (item: T) => Promise<void>,
): Promise<void> {
  let next = 0;
  const workers = Array.from({ length: Math.min(limit, items.length) }, async () => {
    while (next < items.length) {
      const item = items[next++] as T;
      await task(item);
    }
  });
  await Promise.all(workers);
}

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
  putStream(key: string, body: Readable, signal?: AbortSignal): Promise<void>;
  putBytes(key: string, body: Uint8Array, options?: { ifAbsent?: boolean }): Promise<void>;
  get(key: string, signal?: AbortSignal): Promise<Readable>;
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
  delete(keys: string[]): Promise<DeleteResult>;
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

export interface DeleteResult {
  /** Keys left in place because a retention lock or hold protects them. */
  locked: string[];
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

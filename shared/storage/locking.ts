import type { Readable } from 'node:stream';
import {
  ForwardingStorage,
  type LockMode,
  type ObjectLock,
  type PutBytesOptions,
  type PutOptions,
  type RetentionLock,
  type Storage,
  type StorageAccess,
} from './storage.ts';

/**
 * The terms of a lock: a fixed date, or a duration that runs from the start of the backup
 * (`start`, which the catalog calls when it begins one; until then, from when the storage was
 * wrapped).
 */
export type LockTerms = { mode: LockMode; until: Date } | { mode: LockMode; seconds: number };

/**
 * A storage that writes every object under one retention lock, so that the engines that
 * write backups stay unaware of locks. `check` (for writing) also checks that the storage
 * can hold the lock, so that a storage that cannot fails before anything is written. A write
 * made after the lock has passed (a backup that took longer than its lock) is not locked.
 * Temporary objects (the in-progress marker, which commit deletes) are written through
 * `unlocked`.
 */
export class LockingStorage extends ForwardingStorage {
  readonly unlocked: Storage;
  private readonly terms: LockTerms;
  private startedAt = new Date();

  constructor(storage: Storage, terms: LockTerms) {
    super(storage.url, () => storage);
    this.unlocked = storage;
    this.terms = terms;
  }

  /** The backup starts now: a lock given as a duration runs from `at`. */
  start(at: Date): void {
    this.startedAt = at;
  }

  /** The lock every write gets, as the manifest records it. */
  get lock(): RetentionLock {
    const { mode } = this.terms;
    if ('until' in this.terms) return { mode, until: this.terms.until };
    return { mode, until: new Date(this.startedAt.getTime() + this.terms.seconds * 1000) };
  }

  /** The lock for a write now; none once it has passed. */
  private current(): RetentionLock | undefined {
    const lock = this.lock;
    return lock.until.getTime() > Date.now() ? lock : undefined;
  }

  override async check(access?: StorageAccess): Promise<void> {
    await this.unlocked.check(access);
    if (access !== 'read') await this.unlocked.checkLocks(this.terms.mode);
  }
  override putStream(key: string, body: Readable, signal?: AbortSignal, options?: PutOptions) {
    return this.unlocked.putStream(key, body, signal, { ...options, lock: options?.lock ?? this.current() });
  }
  override putBytes(key: string, body: Uint8Array, options?: PutBytesOptions) {
    return this.unlocked.putBytes(key, body, { ...options, lock: options?.lock ?? this.current() });
  }
}

/** `storage` with every permanent write under the lock `terms` (see LockingStorage). */
export function withRetentionLock(storage: Storage, terms: LockTerms): LockingStorage {
  return new LockingStorage(storage, terms);
}

/** Whether an object's lock holds at least as long and as strictly as `wanted`. */
export function lockCovers(held: ObjectLock | undefined, wanted: RetentionLock): boolean {
  if (!held) return false;
  const strict = held.mode === 'compliance' || (held.mode === 'governance' && wanted.mode === 'governance');
  const long = held.until === undefined || held.until.getTime() >= wanted.until.getTime();
  // A legal hold has no date and holds until lifted: as strong as governance, no more.
  return (strict && long) || (Boolean(held.legalHold) && wanted.mode === 'governance');
}

import os from 'node:os';
import { text } from 'node:stream/consumers';
import { messageOf, UserError } from '../errors.ts';
import { LockingStorage } from '../storage/locking.ts';
import { isNotFound, type RetentionLock, type Storage, StorageError } from '../storage/storage.ts';
import { version } from '../version.ts';
import {
  backupIdWithSequence,
  baseBackupId,
  clockSkewMs,
  compareIdsNewestFirst,
  isAheadOfClock,
  isBackupId,
  isSetName,
  parseBackupId,
} from './ids.ts';
import {
  checkManifestFolder,
  type Manifest,
  manifestSchema,
  parseManifest,
  type Verification,
  verificationSchema,
} from './manifest.ts';

export const manifestName = 'manifest.json';
/** Written when a backup starts and removed when it commits; it dates an unfinished backup. */
export const inProgressName = 'in-progress.json';
export const verificationsDir = 'verifications/';

/** One backup folder as listed: committed or not, with its objects. */
export interface BackupEntry {
  set: string;
  id: string;
  committed: boolean;
  inProgress: boolean;
  bytes: number;
  objects: string[];
  /** The listed size of each object, by key. */
  objectBytes: Record<string, number>;
  verifications: string[];
  /** The newest modification time of its objects. */
  modified: Date;
}

/** A backup being written: artifacts go under its folder, then `commit` writes the manifest. */
export interface PendingBackup {
  set: string;
  id: string;
  key(name: string): string;
}

/** The catalog: sets and backups in one storage, and the commit protocol. */
export class Catalog {
  readonly storage: Storage;

  constructor(storage: Storage) {
    this.storage = storage;
  }

  /**
   * Reserves a fresh backup id in `set` for `mode` at `now`; a taken minute gets -2, -3, …
   * On a locking storage (withRetentionLock) the lock starts now; the marker, which commit
   * deletes, is not locked.
   */
  async begin(set: string, mode: string, now: Date): Promise<PendingBackup> {
    const base = baseBackupId(now, mode);
    const locking = this.storage instanceof LockingStorage ? this.storage : undefined;
    locking?.start(now);
    const taken = new Set<string>();
    for await (const item of this.storage.list(`${set}/${base}`)) taken.add(item.key.split('/')[1]!);
    for (let n = 1; n < 1000; n++) {
      const id = backupIdWithSequence(base, n);
      if (taken.has(id)) continue;
      const marker = JSON.stringify({
        id,
        set,
        startedAt: now.toISOString(),
        host: os.hostname(),
        tool: { name: 'lifeboat', version },
      });
      try {
        await (locking?.unlocked ?? this.storage).putBytes(
          `${set}/${id}/${inProgressName}`,
          Buffer.from(marker),
          { ifAbsent: true },
        );
      } catch (error) {
        if (error instanceof StorageError && error.code === 'exists') continue;
        throw error;
      }
      return { set, id, key: (name) => `${set}/${id}/${name}` };
    }
    throw new Error(`set ${set}: could not find a free backup id for ${base}`);
  }

  /**
   * Writes the manifest (the commit point; it never overwrites one) and clears the marker. On
   * a locking storage the manifest records the lock (in `manifest` too, for the caller).
   */
  async commit(pending: PendingBackup, manifest: Manifest): Promise<void> {
    if (this.storage instanceof LockingStorage) {
      const { mode, until } = this.storage.lock;
      manifest.lock = { mode, until: until.toISOString() };
    }
    const valid = manifestSchema.parse(manifest);
    if (valid.set !== pending.set || valid.id !== pending.id) {
      throw new Error(
        `commit: the manifest says ${valid.set}/${valid.id}, but the backup is ${pending.set}/${pending.id}`,
      );
    }
    await this.storage.putBytes(
      pending.key(manifestName),
      Buffer.from(`${JSON.stringify(valid, null, 2)}\n`),
      { ifAbsent: true },
    );
    await this.storage.delete([pending.key(inProgressName)]);
  }

  /** Removes what an unfinished backup wrote; best effort, prune removes anything left. */
  async abandon(pending: PendingBackup): Promise<void> {
    const keys: string[] = [];
    for await (const item of this.storage.list(`${pending.set}/${pending.id}/`)) keys.push(item.key);
    const rest = keys.filter((k) => !k.endsWith(`/${inProgressName}`));
    await this.storage.delete(rest);
    await this.storage.delete([pending.key(inProgressName)]);
  }

  async listSets(): Promise<string[]> {
    return (await this.storage.listDirs('')).map((d) => d.replace(/\/$/, ''));
  }

  /** Every backup folder in `set`, newest first, committed or not. */
  async listBackups(set: string): Promise<BackupEntry[]> {
    const byId = new Map<string, BackupEntry>();
    for await (const item of this.storage.list(`${set}/`)) {
      const [, id, ...rest] = item.key.split('/');
      if (!id || rest.length === 0) continue;
      let entry = byId.get(id);
      if (!entry) {
        entry = {
          set,
          id,
          committed: false,
          inProgress: false,
          bytes: 0,
          objects: [],
          objectBytes: {},
          verifications: [],
          modified: item.modified,
        };
        byId.set(id, entry);
      }
      const name = rest.join('/');
      entry.objects.push(item.key);
      entry.objectBytes[item.key] = item.size;
      entry.bytes += item.size;
      if (item.modified > entry.modified) entry.modified = item.modified;
      if (name === manifestName) entry.committed = true;
      else if (name === inProgressName) entry.inProgress = true;
      else if (name.startsWith(verificationsDir) && name.endsWith('.json'))
        entry.verifications.push(item.key);
    }
    for (const entry of byId.values()) entry.verifications.sort();
    return [...byId.values()].sort((a, b) => compareIdsNewestFirst(a.id, b.id));
  }

  /**
   * The manifest of the folder `<set>/<id>/`, refused (a UserError) unless the folder's names
   * are a set name and a backup id and the manifest describes that same folder: every key
   * and path Lifeboat makes from a backup comes from names checked here.
   */
  async readManifest(set: string, id: string): Promise<Manifest> {
    const where = `backup ${set}/${id} in ${this.storage.url}`;
    // Checked before the folder is read, so that no key is made from a name that is not one.
    checkManifestFolder({ set, id });
    const body = await this.storage.get(`${set}/${id}/${manifestName}`);
    return parseManifest(await text(body), where, { set, id });
  }

  /**
   * The committed backup that `ref` names: `latest` or an id. Refuses, with the reason, a set
   * without backups, an id that does not exist, and a backup that was never committed.
   *
   * `latest` is the newest committed backup whose id is not ahead of the clock (`now`, by more
   * than clockSkewMs: a runner's clock was ahead; `warn` hears of each one passed over). When
   * that backup's manifest is damaged (not JSON, not the schema, a newer format, another
   * folder's), `latest` does not fall back to an older one unasked: it refuses with the reason
   * and names the newest intact backup, which `ref` can then name by id.
   */
  async resolve(
    set: string,
    ref: string,
    options: { now?: Date; warn?: (message: string) => void } = {},
  ): Promise<Manifest> {
    const backups = await this.listBackups(set);
    if (ref === 'latest') {
      const now = options.now ?? new Date();
      const committed = backups.filter((b) => b.committed);
      const ahead = (id: string) => {
        const time = parseBackupId(id)?.time;
        return time !== undefined && isAheadOfClock(time, now);
      };
      const future = committed.filter((b) => ahead(b.id));
      const present = committed.filter((b) => !ahead(b.id));
      for (const b of future) {
        options.warn?.(
          `backup ${set}/${b.id} is dated ahead of this machine's clock (${now.toISOString()}) by more than ${clockSkewMs / 60_000} minutes (a runner's clock was ahead when it was taken), so it is not latest; restore it by its id if it is the one you want`,
        );
      }
      const newest = present[0];
      if (!newest) {
        if (future.length) {
          throw new UserError(
            `backup: every committed backup of set '${set}' is dated ahead of this machine's clock (${now.toISOString()}) by more than ${clockSkewMs / 60_000} minutes: ${future.map((b) => b.id).join(', ')}; latest never picks such a backup (check the clocks of the machine that took it and of this one), name one by its id to restore it`,
          );
        }
        const sets = await this.listSets();
        const known = sets.length ? `sets here: ${sets.join(', ')}` : 'the storage holds no sets';
        throw new UserError(`set: '${set}' has no committed backup in ${this.storage.url} (${known})`);
      }
      try {
        return await this.readManifest(set, newest.id);
      } catch (error) {
        if (!(error instanceof UserError)) throw error;
        // The reason as it is, then where an intact backup is, if there is one.
        const intact = await this.newestIntact(set, present.slice(1));
        if (!intact) throw error;
        throw new UserError(
          `${messageOf(error)}. That is the newest backup of set '${set}' (${newest.id}), and latest does not pass over it silently: the newest intact backup is ${intact}; restore it with backup: ${intact}`,
        );
      }
    }
    const entry = backups.find((b) => b.id === ref);
    if (!entry) {
      const recent = backups
        .filter((b) => b.committed)
        .slice(0, 3)
        .map((b) => b.id);
      throw new UserError(
        `backup: '${ref}' does not exist in set '${set}' of ${this.storage.url}${recent.length ? `; newest: ${recent.join(', ')}` : ''}`,
      );
    }
    if (!entry.committed) {
      throw new UserError(
        `backup: '${ref}' in set '${set}' was never committed (no ${manifestName}): it is unfinished or still being written, and cannot be restored`,
      );
    }
    return this.readManifest(set, ref);
  }

  /** The id of the newest of `entries` whose manifest reads and validates, if any. */
  private async newestIntact(set: string, entries: BackupEntry[]): Promise<string | undefined> {
    for (const entry of entries) {
      try {
        await this.readManifest(set, entry.id);
        return entry.id;
      } catch (error) {
        if (!(error instanceof UserError)) throw error;
      }
    }
    return undefined;
  }

  /**
   * A committed backup picked at random among those taken within `seconds` before `now`
   * (by the time in their ids), so that older backups get verified too, not only the newest.
   */
  async pickRandom(set: string, seconds: number, now: Date, random = Math.random): Promise<Manifest> {
    const since = now.getTime() - seconds * 1000;
    const candidates = (await this.listBackups(set)).filter((b) => {
      const time = parseBackupId(b.id)?.time.getTime();
      return b.committed && time !== undefined && time >= since && time <= now.getTime();
    });
    if (candidates.length === 0) {
      throw new UserError(
        `random-within: set '${set}' in ${this.storage.url} has no committed backup taken in the last ${Math.round(seconds / 3600)} h`,
      );
    }
    const chosen = candidates[Math.floor(random() * candidates.length)]!;
    return this.readManifest(set, chosen.id);
  }

  /**
   * Writes a verification record into the backup's folder; with `lock` (the backup's own, from
   * its manifest) the record is locked as long as the backup, so that it neither outlives the
   * backup's lock nor goes before it. A lock that has passed is not given.
   */
  async recordVerification(record: Verification, lock?: RetentionLock): Promise<string> {
    const valid = verificationSchema.parse(record);
    if (!isSetName(record.set) || !isBackupId(record.backupId)) {
      throw new UserError(
        `verification: set '${record.set}', backup '${record.backupId}' is not a backup folder Lifeboat makes; the record is not written`,
      );
    }
    const key = `${record.set}/${record.backupId}/${verificationsDir}${record.at.replace(/[:.]/g, '-')}.json`;
    const inForce = lock && lock.until.getTime() > Date.now() ? { lock } : {};
    await this.storage.putBytes(key, Buffer.from(`${JSON.stringify(valid, null, 2)}\n`), inForce);
    return key;
  }

  /**
   * The newest verification record of a backup, if any; a damaged record (not JSON, not the
   * schema) counts as none: it proves nothing. readLastVerification says which it was.
   */
  async lastVerification(entry: BackupEntry): Promise<Verification | undefined> {
    return (await this.readLastVerification(entry)).verification;
  }

  /** The newest verification record of a backup, or why that record cannot be used. */
  async readLastVerification(entry: BackupEntry): Promise<{ verification?: Verification; damaged?: string }> {
    const key = entry.verifications.at(-1);
    if (!key) return {};
    let body: string;
    try {
      body = await text(await this.storage.get(key));
    } catch (error) {
      if (isNotFound(error)) return {};
      throw error;
    }
    let json: unknown;
    try {
      json = JSON.parse(body);
    } catch {
      return { damaged: `the verification record ${key} is damaged: it is not valid JSON` };
    }
    const result = verificationSchema.safeParse(json);
    if (!result.success) {
      const issue = result.error.issues[0]!;
      return {
        damaged: `the verification record ${key} is damaged: invalid at ${issue.path.join('.') || '(root)'}: ${issue.message}`,
      };
    }
    return { verification: result.data };
  }

  /**
   * Deletes backups (committed or not) manifest first: every manifest goes, in batches,
   * before any other object, so the backups stop being visible at once and a crash part-way
   * leaves only uncommitted folders (which prune removes), never a committed backup with
   * missing artifacts. A backup whose manifest a retention lock protects (any version of it)
   * is left whole. Every version of each key goes (a versioned bucket frees the bytes);
   * `lockPassed` names the backups (`<set>/<id>`) whose recorded lock has passed: their
   * dateless locks (a folder's immutable flag) are lifted. `freedBytes` counts what was really removed.
   */
  async deleteBackups(
    entries: BackupEntry[],
    signal?: AbortSignal,
    lockPassed: ReadonlySet<string> = new Set(),
  ): Promise<{ keptByLock: string[]; lockedObjects: string[]; freedBytes: number }> {
    const sizes: Record<string, number> = Object.assign({}, ...entries.map((e) => e.objectBytes));
    let freedBytes = 0;
    const remove = async (keys: string[]) => {
      const locked: string[] = [];
      for (const passed of [true, false]) {
        const group = keys.filter((k) => lockPassed.has(k.split('/', 2).join('/')) === passed);
        if (group.length === 0) continue;
        const result = await this.storage.delete(group, { allVersions: true, lockPassed: passed });
        locked.push(...result.locked);
        const held = new Set(result.locked);
        freedBytes += result.freedBytes ?? group.reduce((n, k) => n + (held.has(k) ? 0 : (sizes[k] ?? 0)), 0);
      }
      return new Set(locked);
    };
    const manifests = entries.filter((e) => e.committed).map((e) => `${e.set}/${e.id}/${manifestName}`);
    const lockedManifests = await remove(manifests);
    signal?.throwIfAborted();
    const goners = entries.filter((e) => !lockedManifests.has(`${e.set}/${e.id}/${manifestName}`));
    // The marker too, listed or not: on a versioned bucket commit left its old version behind.
    const markers = goners.map((e) => `${e.set}/${e.id}/${inProgressName}`);
    const rest = [...new Set([...goners.flatMap((e) => e.objects), ...markers])].filter(
      (k) => !k.endsWith(`/${manifestName}`),
    );
    const locked = await remove(rest);
    return {
      keptByLock: [...lockedManifests].map((k) => k.split('/')[1]!),
      lockedObjects: [...locked],
      freedBytes,
    };
  }
}

export type { Manifest };

/**
 * Copies committed backups from one storage to another with the commit protocol of a backup:
 * the in-progress marker of the same backup id first (create-only), the artifacts streamed
 * and re-hashed, the manifest last, then the marker removed; verification records after.
 * Nothing but keys under `<set>/<id>/` is read or written, on either side.
 */
import { randomUUID } from 'node:crypto';
import os from 'node:os';
import { text } from 'node:stream/consumers';
import {
  type BackupEntry,
  Catalog,
  inProgressName,
  type PendingBackup,
  verificationsDir,
} from '../catalog/catalog.ts';
import { isSetName } from '../catalog/ids.ts';
import { type Manifest, totalBytes, verificationSchema } from '../catalog/manifest.ts';
import { messageOf, UserError } from '../errors.ts';
import { IntegrityError } from '../pipeline/artifact.ts';
import { formatBytes, formatDuration, type Logger } from '../pipeline/progress.ts';
import { LockingStorage } from '../storage/locking.ts';
import { isNotFound, type Storage, StorageError } from '../storage/storage.ts';
import { version } from '../version.ts';
import { copyArtifact } from './artifact.ts';

export interface CopyOptions {
  source: Storage;
  target: Storage;
  /** The sets to copy (see chooseSets). */
  sets: string[];
  /** Set was '*': a set without a committed backup is passed over, not a failure. */
  allSets?: boolean;
  /** latest, a backup id, or all-missing (every committed backup the target lacks). */
  backup: string;
  /** Plan only: read both sides, write nothing. */
  dryRun: boolean;
  logger: Logger;
  progressIntervalMs?: number;
  signal?: AbortSignal;
  now?: Date;
}

/** copied; present (the target holds the same artifacts); would-copy (a dry run); failed. */
export type CopyState = 'copied' | 'present' | 'would-copy' | 'failed';

export interface CopiedBackup {
  set: string;
  /** The backup id, or `latest` when the newest backup could not be read. */
  id: string;
  kind?: string;
  state: CopyState;
  /** Artifact bytes of the backup (copied, present or to copy). */
  bytes: number;
  seconds?: number;
  /** An unfinished folder of an earlier, killed copy of this backup was removed (or would be) first. */
  replacedUnfinished?: boolean;
  /** Verification records copied. */
  verifications?: number;
  /** Why it failed: one line naming the backup. */
  reason?: string;
}

export interface CopyReport {
  source: string;
  target: string;
  dryRun: boolean;
  backups: CopiedBackup[];
  /** Artifact bytes copied by this run (a dry run: to copy). */
  bytes: number;
  /** Seconds spent copying backups, and the bytes per second over them. */
  seconds: number;
  bytesPerSecond: number;
}

/** What the in-progress marker of a copy holds: `copy` tells a killed copy's folder from a backup's. */
interface CopyMarker {
  id: string;
  set: string;
  startedAt: string;
  host: string;
  tool: { name: 'lifeboat'; version: string };
  copy: { from: string; run: string };
}

/** One backup to copy: the source's manifest, what the target holds under its id, its report row. */
interface CopyJob {
  options: CopyOptions;
  from: Catalog;
  to: Catalog;
  manifest: Manifest;
  existing: BackupEntry | undefined;
  row: CopiedBackup;
}

/** Larger than any marker or verification record Lifeboat writes: such an object is not read. */
const smallObjectBytes = 1 << 20;

/** Failures that are one backup's (damage, a conflict, a storage refusing): the others go on. */
function isBackupFailure(error: unknown): boolean {
  return error instanceof UserError || error instanceof StorageError || error instanceof IntegrityError;
}

/** Copies the chosen backups of every chosen set, each on its own; see the module comment. */
export async function copyBackups(options: CopyOptions): Promise<CopyReport> {
  const { logger } = options;
  const from = new Catalog(options.source);
  const to = new Catalog(options.target);
  const backups: CopiedBackup[] = [];
  for (const set of options.sets) {
    const present = new Map((await to.listBackups(set)).map((e) => [e.id, e]));
    for (const picked of await chooseBackups(from, set, options, new Set(present.keys()))) {
      options.signal?.throwIfAborted();
      if ('reason' in picked) {
        logger.warn(picked.reason);
        backups.push({ set, id: picked.id, state: 'failed', bytes: 0, reason: picked.reason });
        continue;
      }
      const manifest = picked;
      const row: CopiedBackup = {
        set,
        id: manifest.id,
        kind: manifest.kind,
        state: 'failed',
        bytes: totalBytes(manifest),
      };
      backups.push(row);
      try {
        await copyOne({ options, from, to, manifest, existing: present.get(manifest.id), row });
      } catch (error) {
        if (options.signal?.aborted || !isBackupFailure(error)) throw error;
        row.state = 'failed';
        row.reason = messageOf(error);
        logger.warn(row.reason);
      }
    }
  }
  const moved = backups.filter((b) => b.state === (options.dryRun ? 'would-copy' : 'copied'));
  const bytes = moved.reduce((sum, b) => sum + b.bytes, 0);
  const seconds = moved.reduce((sum, b) => sum + (b.seconds ?? 0), 0);
  return {
    source: options.source.url,
    target: options.target.url,
    dryRun: options.dryRun,
    backups,
    bytes,
    seconds,
    bytesPerSecond: seconds > 0 ? Math.round(bytes / seconds) : 0,
  };
}

/** The sets to copy: every set of `source` for '*', else the one named, which must be one. */
export async function chooseSets(source: Storage, set: string): Promise<string[]> {
  const catalog = new Catalog(source);
  if (set === '*') return (await catalog.listSets()).filter(isSetName);
  if ((await catalog.listBackups(set)).length === 0) {
    const sets = (await catalog.listSets()).filter(isSetName);
    throw new UserError(
      `set: '${set}' is not a set in ${source.url}; ${sets.length ? `sets here: ${sets.join(', ')}` : 'the storage holds no sets'}`,
    );
  }
  return [set];
}

type Picked = Manifest | { id: string; reason: string };

/**
 * The source backups `backup` names in `set`, their manifests read with the catalog's checks:
 * a damaged one is that backup's failure (named), never a reason to skip the others.
 */
async function chooseBackups(
  from: Catalog,
  set: string,
  options: CopyOptions,
  present: Set<string>,
): Promise<Picked[]> {
  const committed = (await from.listBackups(set)).filter((e) => e.committed);
  const read = async (id: string, load: () => Promise<Manifest>): Promise<Picked> => {
    try {
      return await load();
    } catch (error) {
      if (!(error instanceof UserError)) throw error;
      return { id, reason: messageOf(error) };
    }
  };
  if (options.backup === 'all-missing') {
    const picked: Picked[] = [];
    for (const entry of committed) picked.push(await read(entry.id, () => from.readManifest(set, entry.id)));
    return picked;
  }
  if (options.allSets && committed.length === 0) {
    options.logger.info(`set ${set}: no committed backup in ${from.storage.url}, nothing to copy`);
    return [];
  }
  const warn = (message: string) => options.logger.warn(message);
  const picked = await read(options.backup, () =>
    from.resolve(set, options.backup, { now: options.now, warn }),
  );
  // An incremental backup restores only on top of its parent: the parents the target lacks
  // are copied first, oldest first (a parent that cannot be read fails as its own row).
  const chain: Picked[] = [picked];
  for (let head = picked; 'parent' in head && head.parent && !present.has(head.parent); ) {
    const id: string = head.parent;
    if (chain.length > 10_000 || chain.some((p) => p.id === id)) break;
    head = await read(id, () => from.readManifest(set, id));
    chain.unshift(head);
  }
  if (chain.length > 1)
    options.logger.info(
      `${set}/${picked.id}: incremental; copying the ${chain.length - 1} backup(s) under it the target lacks first`,
    );
  return chain;
}

/** The artifacts (and, for EBS, the snapshot facts) that make a backup's content. */
function contentOf(manifest: Manifest): string {
  const artifacts = manifest.artifacts
    .map((a) => `${a.name} ${a.bytes} ${a.sha256}`)
    .sort()
    .join(', ');
  return `${manifest.kind}: ${artifacts}${manifest.artifacts.length ? '' : JSON.stringify(manifest.facts)}`;
}

/**
 * Copies one backup into the target (or plans it), filling in `row`: skipped when the target
 * holds it with the same content, refused when it holds other content under that id or an
 * unfinished folder that is not a copy's.
 */
async function copyOne(job: CopyJob): Promise<void> {
  const { options, from, to, manifest, existing, row } = job;
  const { set, id } = manifest;
  const { logger, target } = options;
  const name = `${set}/${id}`;
  if (existing?.committed) {
    const theirs = await to.readManifest(set, id).catch((error) => {
      if (!(error instanceof UserError)) throw error;
      throw new UserError(
        `backup ${name}: the target ${target.url} holds this backup id with a manifest Lifeboat refuses (${messageOf(error)}); it is not overwritten`,
      );
    });
    if (contentOf(theirs) !== contentOf(manifest)) {
      throw new UserError(
        `backup ${name}: ${options.source.url} and ${target.url} each hold a backup with this id but with other content (source ${contentOf(manifest)}; target ${contentOf(theirs)}); the target's is not overwritten`,
      );
    }
    row.state = 'present';
    logger.info(`${name}: already in ${target.url} with the same sha256s, skipped`);
    if (!options.dryRun) {
      // A copy killed after its commit left its marker, or had not copied the records yet.
      if (existing.inProgress && (await readMarker(target, set, id))?.copy)
        await target.delete([`${name}/${inProgressName}`]);
      row.verifications = await copyVerifications(from, to, manifest, logger);
    }
    return;
  }
  if (existing) {
    // Unfinished: a killed copy of this backup (its marker says so) is replaced; anything
    // else (a backup still being written, or killed) is not this command's to remove.
    if (existing.inProgress && !(await readMarker(target, set, id))?.copy) {
      throw new UserError(
        `backup ${name}: the target ${target.url} holds an unfinished backup with this id that is not a copy (a backup is writing it, or a killed one left it); it is left alone: prune-retention removes it after orphan-grace, or delete it, then copy again`,
      );
    }
    row.replacedUnfinished = true;
  }
  if (manifest.kind === 'ebs') {
    logger.warn(
      `${name} is an EBS backup: only its manifest is copied; its snapshots stay in EC2, shared with ${options.source.url}, and prune-retention of either storage deletes them when its policy drops the backup`,
    );
  }
  if (options.dryRun) {
    row.state = 'would-copy';
    logger.info(
      `${name}: would copy ${formatBytes(row.bytes)} (${manifest.artifacts.length} artifact(s))${existing ? ', replacing an unfinished copy' : ''}`,
    );
    return;
  }
  await writeCopy(job);
}

/**
 * Writes one backup into the target with the commit protocol: the unfinished folder of a
 * killed copy removed first, the marker (create-only), the artifacts, the manifest, the
 * marker removed; then the verification records. A failure removes what it wrote.
 */
async function writeCopy({ options, from, to, manifest, existing, row }: CopyJob): Promise<void> {
  const { set, id } = manifest;
  const { logger, target } = options;
  const name = `${set}/${id}`;
  const started = Date.now();
  if (existing) await removeUnfinished(target, existing, logger);
  const pending: PendingBackup = { set, id, key: (file) => `${name}/${file}` };
  const run = randomUUID();
  const marker: CopyMarker = {
    id,
    set,
    startedAt: new Date().toISOString(),
    host: os.hostname(),
    tool: { name: 'lifeboat', version },
    copy: { from: options.source.url, run },
  };
  // With lock-for, the copy is locked from the backup's own start, as the backup would be;
  // the marker, which commit deletes, is not locked.
  const locking = target instanceof LockingStorage ? target : undefined;
  locking?.start(new Date(manifest.startedAt));
  await (locking?.unlocked ?? target)
    .putBytes(pending.key(inProgressName), Buffer.from(JSON.stringify(marker)), { ifAbsent: true })
    .catch((error) => {
      if (error instanceof StorageError && error.code === 'exists') {
        throw new UserError(
          `backup ${name}: another copy began writing it into ${target.url} just now (its in-progress marker appeared); run one copy per target at a time`,
        );
      }
      throw error;
    });
  logger.info(`copying ${name} (${formatBytes(row.bytes)}, ${manifest.artifacts.length} artifact(s))`);
  const ours = async () => (await readMarker(target, set, id))?.copy?.run === run;
  try {
    for (const artifact of manifest.artifacts) {
      await copyArtifact({
        source: options.source,
        target,
        key: pending.key(artifact.name),
        artifact,
        what: `the artifact ${artifact.name} of backup ${name} in ${options.source.url}`,
        logger,
        progressIntervalMs: options.progressIntervalMs,
        signal: options.signal,
      });
    }
    options.signal?.throwIfAborted();
    if (!(await ours())) {
      throw new UserError(
        `backup ${name}: another copy took over its unfinished folder in ${target.url} while this one ran; this run does not commit it (run one copy per target at a time)`,
      );
    }
    await to.commit(pending, manifest);
  } catch (error) {
    // Only while the folder is still this run's: a copy that took it over keeps its objects.
    try {
      if (await ours()) await to.abandon(pending);
    } catch (failure) {
      logger.warn(
        `${name}: could not remove what this copy wrote in ${target.url} (${messageOf(failure)}); an unfinished folder without a manifest is left, which the next copy replaces and prune-retention removes`,
      );
    }
    throw error;
  }
  row.seconds = (Date.now() - started) / 1000;
  row.state = 'copied';
  row.verifications = await copyVerifications(from, to, manifest, logger).catch((error) => {
    if (!isBackupFailure(error)) throw error;
    logger.warn(
      `${name}: committed, but its verification records were not copied (${messageOf(error)}); the next copy adds them`,
    );
    return 0;
  });
  logger.info(
    `committed ${name} in ${target.url}: ${formatBytes(row.bytes)} in ${formatDuration(row.seconds)} (${formatBytes(row.bytes / Math.max(row.seconds, 0.001))}/s)`,
  );
}

/** The in-progress marker of `<set>/<id>/`, if there is one Lifeboat could have written. */
async function readMarker(
  storage: Storage,
  set: string,
  id: string,
): Promise<Partial<CopyMarker> | undefined> {
  const key = `${set}/${id}/${inProgressName}`;
  const info = await storage.head(key);
  if (!info || info.size > smallObjectBytes) return undefined;
  try {
    const marker = JSON.parse(await text(await storage.get(key))) as Partial<CopyMarker>;
    return marker && typeof marker === 'object' && marker.id === id && marker.set === set
      ? marker
      : undefined;
  } catch (error) {
    if (isNotFound(error) || error instanceof SyntaxError) return undefined;
    throw error;
  }
}

/**
 * Removes what a killed copy left of a backup on the target: its objects (the marker last,
 * so a crash part-way still leaves a dated folder) and its unfinished uploads (S3 multipart
 * uploads, a folder storage's temporary files), the latter best effort.
 */
async function removeUnfinished(target: Storage, entry: BackupEntry, logger: Logger): Promise<void> {
  const marker = `${entry.set}/${entry.id}/${inProgressName}`;
  logger.info(
    `${entry.set}/${entry.id}: removing the unfinished folder an earlier copy left in ${target.url}`,
  );
  await target.delete(entry.objects.filter((k) => k !== marker));
  try {
    await target.removeIncomplete(await target.listIncomplete(`${entry.set}/${entry.id}/`));
  } catch (error) {
    if (!(error instanceof StorageError)) throw error;
    logger.warn(
      `${entry.set}/${entry.id}: unfinished uploads of the earlier copy could not be listed or removed (${messageOf(error)}); prune-retention removes them later`,
    );
  }
  await target.delete([marker]);
}

/**
 * Copies the verification records of a committed backup that the target lacks, exactly as
 * stored; a record that is not one (too large, not JSON or not the schema, or about another
 * backup) is left behind with a warning. Returns how many were copied.
 */
async function copyVerifications(from: Catalog, to: Catalog, manifest: Manifest, logger: Logger) {
  const prefix = `${manifest.set}/${manifest.id}/${verificationsDir}`;
  const have = new Set<string>();
  for await (const item of to.storage.list(prefix)) have.add(item.key);
  let copied = 0;
  for await (const item of from.storage.list(prefix)) {
    const file = item.key.slice(prefix.length);
    if (have.has(item.key) || !/^[A-Za-z0-9._-]+\.json$/.test(file)) continue;
    const body = item.size <= smallObjectBytes ? await text(await from.storage.get(item.key)) : '';
    let record: ReturnType<typeof verificationSchema.safeParse> | undefined;
    try {
      record = verificationSchema.safeParse(JSON.parse(body));
    } catch {}
    if (!record?.success || record.data.set !== manifest.set || record.data.backupId !== manifest.id) {
      logger.warn(`${item.key}: not copied, it is not a verification record of this backup`);
      continue;
    }
    await to.storage.putBytes(item.key, Buffer.from(body));
    copied++;
  }
  return copied;
}

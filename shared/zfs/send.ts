/**
 * `snapshot-zfs send-to`: the snapshots of a backup streamed off the host as artifacts of the
 * catalog (zfs send → zstd → age → storage, no temporary file), one stream per dataset.
 *
 * - The base: the newest committed backup of the set in the send-to storage whose snapshot of
 *   a dataset still exists on this host with the same guid; that dataset's stream is then
 *   incremental (`zfs send -i`) from it, and the backup is `incremental` with that backup as
 *   its `parent`. A dataset without such a snapshot (new, or its base destroyed) gets a full
 *   stream; a backup whose streams are all full is `full`.
 * - The index: before sending, each filesystem's snapshot is cloned read-only to a throwaway
 *   mount and walked (../files/tree-digest.ts): its file count, bytes and content sha256 go in
 *   the manifest, for verify-restore to compare what it receives with. The clone is destroyed
 *   on every path; a clone a killed run left is found by its lifeboat:index property and
 *   destroyed by the next run on the host once that run's process is gone.
 */
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { Catalog, PendingBackup } from '../catalog/catalog.ts';
import type { Artifact, Manifest } from '../catalog/manifest.ts';
import { UserError } from '../errors.ts';
import { digestTree, type TreeDigest } from '../files/tree-digest.ts';
import { isAlive } from '../mysql/ephemeral.ts';
import { artifactName, writeArtifact } from '../pipeline/artifact.ts';
import type { Compression } from '../pipeline/compression.ts';
import type { EncryptionKeys } from '../pipeline/encryption.ts';
import type { Logger } from '../pipeline/progress.ts';
import type { Storage } from '../storage/storage.ts';
import type { ZfsSnapshotFact } from './snapshot.ts';
import type { Zfs } from './zfs.ts';

export interface SendOptions {
  storage: Storage;
  compression: Compression;
  compressionLevel?: number;
  encryption?: EncryptionKeys;
  /** Clone and walk each snapshot for the file count and content checksum (default true). */
  index: boolean;
  progressIntervalMs?: number;
}

/** What a backup's manifest records of one snapshot's stream. */
export interface ZfsStreamFact {
  /** The artifact holding the stream. */
  artifact: string;
  /** An incremental stream: the snapshot it applies to (in the parent backup). */
  from?: { snapshot: string; guid: string };
  /** The snapshot's files, as a receive must reproduce them (filesystems, with index). */
  index?: TreeDigest;
}

/** A dataset's snapshot in the base backup, which an incremental stream applies to. */
export interface SendBase {
  manifest: Manifest;
  /** By dataset: the base snapshot's full name and guid. */
  snapshots: Map<string, { snapshot: string; guid: string }>;
}

const indexProperty = 'lifeboat:index';

interface SnapshotOf {
  dataset: string;
  snapshot: string;
  guid: string;
}

const snapshotsOf = (manifest: Manifest): SnapshotOf[] =>
  ((manifest.facts as { snapshots?: SnapshotOf[] }).snapshots ?? []).filter(
    (s) => typeof s?.dataset === 'string' && typeof s.snapshot === 'string' && typeof s.guid === 'string',
  );

/**
 * The base of the next send: the newest of the set's last ten committed backups with streams
 * whose snapshots (of any of `datasets`' trees) are still on this host with the same guid.
 */
export async function findSendBase(
  catalog: Catalog,
  set: string,
  zfs: Zfs,
  logger: Logger,
): Promise<SendBase | undefined> {
  const committed = (await catalog.listBackups(set)).filter((b) => b.committed).slice(0, 10);
  for (const entry of committed) {
    let manifest: Manifest;
    try {
      manifest = await catalog.readManifest(set, entry.id);
    } catch (error) {
      if (!(error instanceof UserError)) throw error;
      logger.warn(`${set}/${entry.id}: not a base for an incremental send (${error.message})`);
      continue;
    }
    if (manifest.kind !== 'zfs' || manifest.artifacts.length === 0) continue;
    const snapshots = new Map<string, { snapshot: string; guid: string }>();
    for (const s of snapshotsOf(manifest)) {
      const local = await zfs.get(s.snapshot, { properties: [] }).catch(() => undefined);
      if (local?.guid === s.guid) snapshots.set(s.dataset, { snapshot: s.snapshot, guid: s.guid });
    }
    if (snapshots.size) return { manifest, snapshots };
    logger.info(`${set}/${entry.id}: its snapshots are no longer on this host; not a base for -i`);
  }
  return undefined;
}

/** The artifact name of the i-th stream: `03-tank.db.zfs.zst.age`. */
function streamName(index: number, dataset: string, options: SendOptions): string {
  const label = `${String(index).padStart(2, '0')}-${dataset.replaceAll('/', '.')}.zfs`;
  return artifactName(label, options.compression, options.encryption !== undefined);
}

/** Destroys throwaway index clones of `pool` whose run is gone (a killed run's). */
async function sweepClones(zfs: Zfs, pool: string, logger: Logger): Promise<void> {
  const host = os.hostname();
  for (const dataset of await zfs.datasets(pool, { properties: [indexProperty] })) {
    const owner = dataset.properties[indexProperty];
    if (!owner) continue;
    const [ownerHost, pid] = owner.split(':');
    if (ownerHost !== host || isAlive(Number(pid))) continue;
    await zfs.destroy(dataset.name, { recursive: true }).then(
      () => logger.info(`destroyed ${dataset.name}, an index clone a killed run left`),
      (error) => logger.warn(`could not destroy ${dataset.name} (${(error as Error).message})`),
    );
  }
}

/** Clones `snapshot` read-only to a temporary mount, walks it, and destroys the clone. */
async function indexSnapshot(zfs: Zfs, snapshot: ZfsSnapshotFact, signal?: AbortSignal): Promise<TreeDigest> {
  const pool = snapshot.dataset.split('/')[0]!;
  const mount = await fs.mkdtemp(path.join(os.tmpdir(), 'lifeboat-zfs-index-'));
  const clone = `${pool}/lifeboat-index-${process.pid}-${path.basename(mount).slice(-6).toLowerCase()}`;
  try {
    await zfs.clone(snapshot.snapshot, clone, {
      mountpoint: mount,
      readonly: 'on',
      [indexProperty]: `${os.hostname()}:${process.pid}`,
    });
    try {
      return await digestTree(mount, signal);
    } finally {
      await zfs.destroy(clone, { recursive: true });
    }
  } finally {
    await fs.rm(mount, { recursive: true, force: true });
  }
}

/**
 * Streams each snapshot (its own full or incremental send) into `pending`; returns the
 * artifacts and, by snapshot name, what the manifest records of its stream.
 */
export async function sendSnapshots(
  zfs: Zfs,
  snapshots: ZfsSnapshotFact[],
  base: SendBase | undefined,
  pending: PendingBackup,
  options: SendOptions & { logger: Logger; signal?: AbortSignal },
): Promise<{ artifacts: Artifact[]; streams: Map<string, ZfsStreamFact> }> {
  const { logger, signal } = options;
  const artifacts: Artifact[] = [];
  const streams = new Map<string, ZfsStreamFact>();
  if (options.index)
    for (const pool of new Set(snapshots.map((s) => s.dataset.split('/')[0]!)))
      await sweepClones(zfs, pool, logger);
  for (const [i, snapshot] of snapshots.entries()) {
    signal?.throwIfAborted();
    const from = base?.snapshots.get(snapshot.dataset);
    const index =
      options.index && snapshot.type === 'filesystem'
        ? await indexSnapshot(zfs, snapshot, signal)
        : undefined;
    const name = streamName(i + 1, snapshot.dataset, options);
    logger.info(
      `${snapshot.snapshot}: zfs send${from ? ` -i ${from.snapshot}` : ' (full)'} → ${name}${index ? ` (${index.files} files)` : ''}`,
    );
    const artifact = await writeArtifact(
      {
        storage: options.storage,
        key: pending.key(name),
        format: 'zfs-send',
        source: zfs.send(snapshot.snapshot, { ...(from ? { from: from.snapshot } : {}), signal }),
        compression: options.compression,
        compressionLevel: options.compressionLevel,
        encryption: options.encryption,
        logger,
        label: `zfs send ${snapshot.snapshot}`,
        progressIntervalMs: options.progressIntervalMs,
        signal,
      },
      name,
    );
    artifacts.push(artifact);
    streams.set(snapshot.snapshot, {
      artifact: name,
      ...(from ? { from } : {}),
      ...(index ? { index } : {}),
    });
  }
  return { artifacts, streams };
}

/**
 * snapshot-zfs: ZFS snapshots of datasets as one backup. The snapshots stay on the host (like
 * snapshot-ebs's stay in EC2); storage, when given, gets the catalog entry (a manifest of
 * kind `zfs`, no artifacts) through the commit protocol.
 *
 * Each dataset gets `<dataset>@lifeboat-<backup id>` (recursive by default: every dataset
 * below it too, atomically per given dataset), with the user properties `lifeboat:set` and
 * `lifeboat:backup-id` set at creation. A failure before the manifest is committed destroys
 * every snapshot this run made and abandons the catalog entry. After the commit, local
 * retention (./local-retention.ts) holds what the policy keeps and destroys what it drops.
 */
import os from 'node:os';
import { Catalog, type PendingBackup } from '../catalog/catalog.ts';
import { baseBackupId } from '../catalog/ids.ts';
import type { Manifest } from '../catalog/manifest.ts';
import { UserError } from '../errors.ts';
import type { Logger } from '../pipeline/progress.ts';
import type { RetentionPolicy } from '../retention/plan.ts';
import type { Storage } from '../storage/storage.ts';
import { version } from '../version.ts';
import { applyLocalRetention, type LocalRetentionReport } from './local-retention.ts';
import { findSendBase, type SendBase, type SendOptions, sendSnapshots, type ZfsStreamFact } from './send.ts';
import { datasetNameProblem, lifeboatProperties, Zfs, type ZfsEntry, ZfsError } from './zfs.ts';

export interface ZfsSnapshotOptions {
  /** Where the manifest goes; without one, the snapshots' properties alone identify the set. */
  storage?: Storage;
  /**
   * Off-site: the snapshots are also streamed (zfs send, full or incremental) into this
   * storage's catalog, whose manifest then holds them as artifacts (./send.ts). Given
   * instead of `storage`.
   */
  sendTo?: SendOptions;
  tags?: string[];
  set: string;
  datasets: string[];
  recursive: boolean;
  /** The local retention policy; none: every snapshot of the set is kept (but max-pool-usage). */
  policy?: RetentionPolicy;
  /** Percent (1–100) of a pool allocated above which the oldest unprotected snapshots go. */
  maxPoolUsage?: number;
  /** Put the hold `lifeboat` on the snapshots the policy keeps. */
  hold: boolean;
  dryRun: boolean;
  logger: Logger;
  signal?: AbortSignal;
  now?: () => Date;
  zfs?: Zfs;
}

/** One snapshot of the backup (a given dataset's, or, recursive, one below it). */
export interface ZfsSnapshotFact {
  /** The given dataset this snapshot was taken under. */
  root: string;
  dataset: string;
  pool: string;
  type: 'filesystem' | 'volume';
  snapshot: string;
  /** Decimal string: guids do not fit in a double. */
  guid: string;
  referenced: number;
  used: number;
  /** ISO time. */
  creation: string;
  /** With send-to: its stream in the catalog. */
  stream?: ZfsStreamFact;
}

export interface ZfsFacts {
  host: string;
  /** The part after "@" every snapshot of the backup has. */
  snapshotName: string;
  recursive: boolean;
  datasets: string[];
  pools: string[];
  snapshots: ZfsSnapshotFact[];
}

export interface ZfsSnapshotResult {
  id: string;
  manifest?: Manifest;
  facts: ZfsFacts;
  retention: LocalRetentionReport;
  dryRun: boolean;
}

const [setProperty, idProperty] = lifeboatProperties as [string, string];

/** The snapshot name (after "@") of a backup id. */
export const snapshotNameOf = (id: string) => `lifeboat-${id}`;

/** Checks every dataset name at once: one error naming all bad ones, before any zfs command. */
export function checkDatasets(datasets: string[]): string[] {
  if (datasets.length === 0)
    throw new UserError(
      'datasets: required; accepted: ZFS datasets, comma separated, e.g. tank/db,tank/home',
    );
  const bad = datasets
    .map((d) => [d, datasetNameProblem(d)] as const)
    .filter(([, problem]) => problem !== undefined)
    .map(([d, problem]) => `'${d}' ${problem}`);
  if (bad.length)
    throw new UserError(`datasets: ${bad.join('; ')}; accepted: ZFS dataset names such as tank/db`);
  const dupes = datasets.filter((d, i) => datasets.indexOf(d) !== i);
  if (dupes.length) throw new UserError(`datasets: '${dupes[0]}' is given twice`);
  return datasets;
}

const poolOf = (dataset: string) => dataset.split('/')[0]!;

function fact(root: string, s: ZfsEntry, types: Map<string, ZfsEntry['type']>): ZfsSnapshotFact {
  return {
    root,
    dataset: s.dataset,
    pool: poolOf(s.dataset),
    type: types.get(s.dataset) === 'volume' ? 'volume' : 'filesystem',
    snapshot: s.name,
    guid: s.guid,
    referenced: s.referenced,
    used: s.used,
    creation: new Date(s.creation * 1000).toISOString(),
  };
}

/** Snapshots the datasets, commits the manifest, then applies local retention. */
export async function snapshotZfs(options: ZfsSnapshotOptions): Promise<ZfsSnapshotResult> {
  const { logger } = options;
  const now = options.now ?? (() => new Date());
  const datasets = checkDatasets(options.datasets);
  const zfs = options.zfs ?? new Zfs();
  const pools = [...new Set(datasets.map(poolOf))];
  const base = (snapshotName: string): ZfsFacts => ({
    host: os.hostname(),
    snapshotName,
    recursive: options.recursive,
    datasets,
    pools,
    snapshots: [],
  });

  if (options.dryRun) {
    const started = now();
    const id = baseBackupId(started, 'full');
    const name = snapshotNameOf(id);
    for (const dataset of datasets) {
      if (!(await zfs.get(dataset)))
        throw new UserError(`datasets: '${dataset}' does not exist (zfs list ${dataset})`);
      logger.info(`dry run: would snapshot ${dataset}@${name}${options.recursive ? ' (recursive)' : ''}`);
    }
    if (options.sendTo) {
      await options.sendTo.storage.check();
      const sendBase = await baseOf(new Catalog(options.sendTo.storage), options, zfs, datasets);
      logger.info(
        `dry run: would send ${sendBase ? `incremental streams from ${options.set}/${sendBase.manifest.id} (full for datasets it lacks)` : 'full streams'} to ${options.sendTo.storage.url}`,
      );
    }
    const retention = await applyLocalRetention({
      zfs,
      set: options.set,
      datasets,
      policy: options.policy,
      maxPoolUsage: options.maxPoolUsage,
      hold: options.hold,
      dryRun: true,
      logger,
      now: started,
      pretend: { id, time: started, snapshots: [], bytes: 0 },
    });
    return { id, facts: base(name), retention, dryRun: true };
  }

  const storage = options.sendTo?.storage ?? options.storage;
  await storage?.check();
  const started = now();
  const catalog = storage ? new Catalog(storage) : undefined;
  const sendBase = options.sendTo ? await baseOf(catalog!, options, zfs, datasets) : undefined;
  if (options.sendTo)
    logger.info(
      sendBase
        ? `send-to: incremental from ${options.set}/${sendBase.manifest.id} (${[...sendBase.snapshots.values()].map((s) => s.snapshot).join(', ')})`
        : `send-to: full streams (no earlier backup of ${options.set} in ${storage!.url} has its snapshots on this host)`,
    );
  const pending: PendingBackup | undefined = await catalog?.begin(
    options.set,
    sendBase ? 'incremental' : 'full',
    started,
  );
  const id = pending?.id ?? baseBackupId(started, 'full');
  const name = snapshotNameOf(id);
  logger.info(`backup ${options.set}/${id}: snapshots ${datasets.map((d) => `${d}@${name}`).join(', ')}`);
  const facts = base(name);
  const made: string[] = [];
  let committed = false;
  let manifest: Manifest | undefined;
  try {
    for (const dataset of datasets) {
      options.signal?.throwIfAborted();
      let snapshots: ZfsEntry[];
      try {
        snapshots = await zfs.snapshot(dataset, name, {
          recursive: options.recursive,
          properties: { [setProperty]: options.set, [idProperty]: id },
        });
      } catch (error) {
        if (error instanceof ZfsError && error.kind === 'missing')
          throw new UserError(`datasets: '${dataset}' does not exist (${error.message})`);
        throw error;
      }
      made.push(`${dataset}@${name}`);
      const types = new Map(
        (await zfs.datasets(dataset, { recursive: options.recursive, properties: [] })).map((d) => [
          d.name,
          d.type,
        ]),
      );
      facts.snapshots.push(...snapshots.map((s) => fact(dataset, s, types)));
    }
    let artifacts: Manifest['artifacts'] = [];
    if (options.sendTo && pending) {
      const sent = await sendSnapshots(zfs, facts.snapshots, sendBase, pending, {
        ...options.sendTo,
        logger,
        signal: options.signal,
      });
      artifacts = sent.artifacts;
      for (const f of facts.snapshots) f.stream = sent.streams.get(f.snapshot);
    }
    if (pending) {
      manifest = zfsManifest(options, facts, {
        id,
        started,
        finished: now(),
        artifacts,
        parent: sendBase?.manifest.id,
      });
      await catalog!.commit(pending, manifest);
    }
    committed = true;
  } catch (error) {
    if (!committed) {
      if (pending) await catalog!.abandon(pending).catch(() => {});
      await removeMade(zfs, made, options.recursive, logger);
    }
    throw error;
  }
  logger.info(`${facts.snapshots.length} snapshot(s) of ${options.set}/${id} taken`);
  const retention = await applyLocalRetention({
    zfs,
    set: options.set,
    datasets,
    policy: options.policy,
    maxPoolUsage: options.maxPoolUsage,
    hold: options.hold,
    dryRun: false,
    logger,
    now: started,
  });
  return { id, manifest, facts, retention, dryRun: false };
}

/** Best effort: destroys the snapshots a failed run made. */
async function removeMade(zfs: Zfs, made: string[], recursive: boolean, logger: Logger): Promise<void> {
  for (const snapshot of made) {
    try {
      const result = await zfs.destroySnapshot(snapshot, { recursive });
      if (result.destroyed) logger.info(`destroyed ${result.snapshots.join(', ')}, made by this failed run`);
      else logger.warn(`could not destroy ${snapshot} (${result.message}); destroy it by hand`);
    } catch (error) {
      logger.warn(`could not destroy ${snapshot} (${(error as Error).message}); destroy it by hand`);
    }
  }
}

/** The base of an incremental send, among the datasets (and, recursive, those below) of this run. */
async function baseOf(
  catalog: Catalog,
  options: ZfsSnapshotOptions,
  zfs: Zfs,
  datasets: string[],
): Promise<SendBase | undefined> {
  const base = await findSendBase(catalog, options.set, zfs, options.logger);
  if (!base) return undefined;
  const covered = (d: string) =>
    datasets.some((root) => d === root || (options.recursive && d.startsWith(`${root}/`)));
  for (const dataset of [...base.snapshots.keys()]) if (!covered(dataset)) base.snapshots.delete(dataset);
  return base.snapshots.size ? base : undefined;
}

function zfsManifest(
  options: ZfsSnapshotOptions,
  facts: ZfsFacts,
  at: { id: string; started: Date; finished: Date; artifacts: Manifest['artifacts']; parent?: string },
): Manifest {
  const sent = at.artifacts.length > 0;
  return {
    format: 1,
    id: at.id,
    set: options.set,
    kind: 'zfs',
    mode: at.parent ? 'incremental' : 'full',
    ...(at.parent ? { parent: at.parent } : {}),
    startedAt: at.started.toISOString(),
    finishedAt: at.finished.toISOString(),
    tool: { name: 'lifeboat', version },
    source: { host: facts.host, pools: facts.pools, datasets: facts.datasets },
    artifacts: at.artifacts,
    contents: {
      included: [
        `ZFS snapshots ${facts.datasets.map((d) => `${d}@${facts.snapshotName}`).join(', ')}${options.recursive ? ' and every dataset below them' : ''} on ${facts.host} (${sent ? `and a zfs send stream of each, ${at.parent ? `incremental from ${at.parent} where that backup has the dataset` : 'full'}` : 'they stay on the host'})`,
      ],
      excluded: options.recursive ? [] : ['datasets below the given ones'],
    },
    facts: facts as unknown as Record<string, unknown>,
    tags: options.tags ?? [],
  };
}

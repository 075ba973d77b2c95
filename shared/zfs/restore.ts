/**
 * restore of a zfs backup, two ways:
 * - receive: the backup's chain of streams (full, then each incremental, in order, checked by
 *   ./receive.ts) into a target dataset that does not exist yet. A failure destroys what this
 *   restore received; a killed one leaves a state the `post:` step removes.
 * - rollback: on the host that took it, `zfs rollback` of each dataset to the backup's
 *   snapshot. Only snapshots that carry the set's and the backup's lifeboat properties with
 *   the guid the manifest records are touched (the manifest is not trusted to name
 *   datasets), and only when no newer snapshot would be destroyed, unless destroy-newer.
 */
import { Catalog } from '../catalog/catalog.ts';
import type { Manifest } from '../catalog/manifest.ts';
import { UserError } from '../errors.ts';
import type { DecryptionKeys } from '../pipeline/encryption.ts';
import type { Logger } from '../pipeline/progress.ts';
import type { Storage } from '../storage/storage.ts';
import { resolveChains, targetsOf, zfsFacts } from './chain.ts';
import { receiveChain } from './receive.ts';
import { checkDataset, lifeboatProperties, Zfs, ZfsError } from './zfs.ts';

export interface ZfsRestoreOptions {
  manifest: Manifest;
  storage: Storage;
  keys: DecryptionKeys;
  /** receive: the new dataset the backup goes to. */
  target?: string;
  rollback: boolean;
  /** rollback: destroy the snapshots newer than the backup's (zfs rollback -r). */
  destroyNewer: boolean;
  dryRun: boolean;
  logger: Logger;
  progressIntervalMs?: number;
  signal?: AbortSignal;
  onLeftovers?: (state: ZfsReceiveLeftovers | undefined) => void;
  zfs?: Zfs;
}

export interface ZfsRestoreResult {
  how: 'receive' | 'rollback';
  /** receive: dataset → where it went; rollback: snapshot → the snapshots it destroyed. */
  datasets: { dataset: string; target: string; streams: number; destroyed?: string[] }[];
  dryRun: boolean;
}

export interface ZfsReceiveLeftovers {
  type: 'zfs-received';
  /** The datasets this restore created (destroyed with everything below them). */
  datasets: string[];
}

const [setProperty, idProperty] = lifeboatProperties as [string, string];

const parentOf = (d: string) => d.slice(0, d.lastIndexOf('/'));

export async function restoreZfs(options: ZfsRestoreOptions): Promise<ZfsRestoreResult> {
  const zfs = options.zfs ?? new Zfs();
  if (options.rollback) {
    if (options.target)
      throw new UserError(
        'target: given with rollback: true; give one (rollback restores the datasets in place)',
      );
    return rollbackZfs(options, zfs);
  }
  if (!options.target)
    throw new UserError(
      'target: required for a zfs backup (a new dataset to zfs receive into, e.g. tank/restored), or rollback: true to roll the datasets back on the host',
    );
  const target = checkDataset(options.target.trim(), 'target');
  const { manifest } = options;
  const chains = await resolveChains(new Catalog(options.storage), manifest);
  const roots = [...new Set(chains.map((c) => c.fact.root))];
  const targets = targetsOf(chains, roots, target);
  // The datasets this restore makes at the top: under them everything is new too.
  const tops = [...new Set(chains.map((c) => c.fact.root).map((root) => targets.get(root)!))];
  const needs = roots.length === 1 ? parentOf(target) : target;
  if (!needs)
    throw new UserError(`target: '${target}' is a pool; give a new dataset in it, e.g. ${target}/restored`);
  if (!(await zfs.get(needs, { properties: [] })))
    throw new UserError(`target: '${needs}' does not exist; create it first (zfs create ${needs})`);
  for (const top of tops)
    if (await zfs.get(top, { properties: [] }))
      throw new UserError(
        `target: '${top}' exists; zfs receive goes into a new dataset (name another one), or roll back on the host with rollback: true`,
      );
  const common = {
    zfs,
    storage: options.storage,
    keys: options.keys,
    logger: options.logger,
    signal: options.signal,
    progressIntervalMs: options.progressIntervalMs,
  };
  const result: ZfsRestoreResult = { how: 'receive', datasets: [], dryRun: options.dryRun };
  if (options.dryRun) {
    for (const chain of chains) {
      await receiveChain(chain, undefined, common);
      result.datasets.push({
        dataset: chain.fact.dataset,
        target: targets.get(chain.fact.dataset)!,
        streams: chain.links.length,
      });
    }
    return result;
  }
  options.onLeftovers?.({ type: 'zfs-received', datasets: tops });
  try {
    for (const chain of chains) {
      const into = targets.get(chain.fact.dataset)!;
      await receiveChain(chain, into, common);
      result.datasets.push({ dataset: chain.fact.dataset, target: into, streams: chain.links.length });
    }
  } catch (error) {
    await removeReceived({ type: 'zfs-received', datasets: tops }, options.logger, zfs);
    options.onLeftovers?.(undefined);
    throw error;
  }
  options.onLeftovers?.(undefined);
  return result;
}

/** Destroys what a failed or killed receive made (each top dataset and everything below it). */
export async function removeReceived(
  state: ZfsReceiveLeftovers,
  logger: Logger,
  zfs = new Zfs(),
): Promise<void> {
  for (const dataset of state.datasets) {
    checkDataset(dataset);
    if (!(await zfs.get(dataset, { properties: [] }))) continue;
    try {
      await zfs.destroy(dataset, { recursive: true });
      logger.info(`destroyed ${dataset}, received in part by a restore that did not finish`);
    } catch (error) {
      logger.warn(
        `could not destroy ${dataset} (${(error as Error).message}); destroy it by hand: zfs destroy -r ${dataset}`,
      );
    }
  }
}

async function rollbackZfs(options: ZfsRestoreOptions, zfs: Zfs): Promise<ZfsRestoreResult> {
  const { manifest, logger } = options;
  const facts = zfsFacts(manifest);
  const result: ZfsRestoreResult = { how: 'rollback', datasets: [], dryRun: options.dryRun };
  // Every snapshot checked before any rollback: all or nothing is refused.
  const plans: { snapshot: string; dataset: string; newer: string[] }[] = [];
  for (const fact of facts.snapshots) {
    const local = await zfs.get(fact.snapshot, { properties: lifeboatProperties });
    const ours =
      local &&
      local.properties[setProperty] === manifest.set &&
      local.properties[idProperty] === manifest.id &&
      local.guid === fact.guid;
    if (!ours)
      throw new UserError(
        `backup: ${fact.snapshot} ${local ? `is not the snapshot of ${manifest.set}/${manifest.id} (its lifeboat properties or guid differ)` : 'is not on this host'}; rollback works on the host that took the backup, while its snapshots exist`,
      );
    const all = await zfs.snapshots(fact.dataset, { recursive: false, properties: [] });
    const newer = all.filter((s) => s.createtxg > local.createtxg).map((s) => s.name);
    plans.push({ snapshot: fact.snapshot, dataset: fact.dataset, newer });
  }
  const blocked = plans.filter((p) => p.newer.length);
  if (blocked.length && !options.destroyNewer && !options.dryRun)
    throw new UserError(
      `destroy-newer: rolling back would destroy newer snapshots: ${blocked.flatMap((p) => p.newer).join(', ')}; give destroy-newer: true to destroy them (see the dry run), or restore with target: to receive into a new dataset instead`,
    );
  for (const plan of plans) {
    if (options.dryRun) {
      logger.info(
        `dry run: would roll ${plan.dataset} back to ${plan.snapshot}${plan.newer.length ? `, destroying ${plan.newer.join(', ')}${options.destroyNewer ? '' : ' (needs destroy-newer: true)'}` : ''}`,
      );
      result.datasets.push({
        dataset: plan.dataset,
        target: plan.snapshot,
        streams: 0,
        destroyed: plan.newer,
      });
      continue;
    }
    try {
      const rolled = await zfs.rollback(plan.snapshot, { destroyNewer: options.destroyNewer });
      logger.info(
        `rolled ${plan.dataset} back to ${plan.snapshot}${rolled.destroyed.length ? `, destroying ${rolled.destroyed.join(', ')}` : ''}`,
      );
      result.datasets.push({
        dataset: plan.dataset,
        target: plan.snapshot,
        streams: 0,
        destroyed: rolled.destroyed,
      });
    } catch (error) {
      if (error instanceof ZfsError) {
        const done = result.datasets.map((d) => d.dataset);
        throw new UserError(
          `rollback of ${plan.dataset} to ${plan.snapshot} failed (${error.message})${done.length ? `; already rolled back: ${done.join(', ')}` : ''}`,
        );
      }
      throw error;
    }
  }
  return result;
}

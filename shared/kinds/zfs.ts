import { parseBoolean } from '../action/inputs.ts';
import type { Manifest } from '../catalog/manifest.ts';
import { formatBytes } from '../pipeline/progress.ts';
import { zfsFacts } from '../zfs/chain.ts';
import { removeReceived, restoreZfs, type ZfsReceiveLeftovers } from '../zfs/restore.ts';
import { removeVerifyPool, verifyZfs, type ZfsPoolLeftovers } from '../zfs/verify.ts';
import { defineKind, restoreOutputs } from './kind.ts';

/**
 * What the anomaly gates compare of a zfs backup: the snapshots taken, each dataset's
 * referenced bytes ('volume-bytes:<dataset>') and, where send-index walked it, its files
 * ('files:<dataset>').
 */
export function zfsMetrics(manifest: Manifest): Record<string, number> {
  const { snapshots } = zfsFacts(manifest);
  const metrics: Record<string, number> = { snapshots: snapshots.length };
  for (const s of snapshots) {
    metrics[`volume-bytes:${s.dataset}`] = s.referenced;
    if (s.stream?.index) metrics[`files:${s.dataset}`] = s.stream.index.files;
  }
  return metrics;
}

export const zfsKind = defineKind({
  name: 'zfs',
  metrics: zfsMetrics,
  restore: {
    inputs: [
      {
        name: 'target',
        description:
          "a new dataset to zfs receive the backup's streams into (e.g. tank/restored; its parent must exist).",
      },
      {
        name: 'rollback',
        description:
          "true: on the host that took the backup, zfs rollback each dataset to the backup's snapshot instead of receiving (refused when newer snapshots would be destroyed, unless destroy-newer).",
        default: 'false',
      },
      {
        name: 'destroy-newer',
        description: 'with rollback: destroy the snapshots newer than the backup (zfs rollback -r).',
        default: 'false',
      },
    ],
    parse: (read, c) => ({
      target: read('target')?.trim() || undefined,
      rollback: c.field(() => parseBoolean('rollback', read('rollback'), false)),
      destroyNewer: c.field(() => parseBoolean('destroy-newer', read('destroy-newer'), false)),
    }),
    async run(options, manifest, context) {
      const { logger, signal, dryRun, storage, keys, progressIntervalMs, leftovers } = context;
      const result = await restoreZfs({
        ...options,
        manifest,
        storage,
        keys,
        dryRun,
        logger,
        signal,
        progressIntervalMs,
        onLeftovers: (state) => leftovers?.(state),
      });
      const bytes = manifest.artifacts.reduce((n, a) => n + a.contentBytes, 0);
      const verb = dryRun
        ? 'checked (dry run, nothing changed)'
        : result.how === 'receive'
          ? 'received'
          : 'rolled back';
      logger.info(`${verb}: ${result.datasets.map((d) => `${d.dataset} → ${d.target}`).join(', ')}`);
      const { seconds, outputs, heading } = restoreOutputs(
        manifest,
        context,
        result.datasets.map((d) => d.target).join(','),
        result.how === 'receive' ? bytes : 0,
        result,
      );
      return {
        outputs,
        summary: {
          heading,
          table: [
            [
              'Dataset',
              result.how === 'receive' ? 'Received into' : 'Rolled back to',
              result.how === 'receive' ? 'Streams' : 'Destroyed',
            ],
            ...result.datasets.map((d) => [
              d.dataset,
              `${d.target}${dryRun ? ' (dry run)' : ''}`,
              result.how === 'receive' ? String(d.streams) : (d.destroyed ?? []).join(', ') || '-',
            ]),
          ],
          notes: [
            result.how === 'receive'
              ? `${formatBytes(bytes)} of streams, each sha256-checked and its BEGIN record matched to the manifest before zfs saw it; every received snapshot has the recorded guid; ${seconds.toFixed(1)} s.`
              : `Each snapshot carried this backup's lifeboat properties and guid; ${seconds.toFixed(1)} s.`,
          ],
        },
      };
    },
    leftovers: {
      types: ['zfs-received'],
      remove: (state, _read, logger) => removeReceived(state as ZfsReceiveLeftovers, logger),
    },
  },
  prune: {
    // Snapshots on the host alone (no artifacts) are pruned there by snapshot-zfs's own policy:
    // deleting the catalog entry would only lose track of them. A `snapshot-zfs send-to` stream
    // stored in the catalog is pruned like any other backup (chains included).
    refuse: (manifest) =>
      manifest.artifacts.length === 0
        ? 'is a zfs backup: prune-retention does not prune zfs sets of snapshots kept on the host alone (snapshot-zfs prunes those there, with its keep-* rules and max-pool-usage; a stream snapshot-zfs send-to stored in the catalog is pruned here)'
        : undefined,
  },
  verify: {
    checks: "the chain of streams received into a throwaway pool, guids and every file's content compared",
    inputs: [],
    parse: () => ({}),
    run(_options, manifest, { logger, signal, leftovers, uri, storage, keys, progressIntervalMs, workDir }) {
      logger.info(`verifying ${uri} (zfs, taken ${manifest.startedAt}): receive into a throwaway pool`);
      return verifyZfs({
        manifest,
        storage,
        keys,
        workDir,
        logger,
        signal,
        progressIntervalMs,
        onLeftovers: (state) => leftovers?.(state),
      });
    },
    leftovers: {
      types: ['zfs-pool'],
      remove: async (state, _read, logger) => {
        await removeVerifyPool(state as ZfsPoolLeftovers, logger);
      },
    },
  },
});

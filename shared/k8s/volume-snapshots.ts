import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { messageOf, UserError } from '../errors.ts';
import type { Logger } from '../pipeline/progress.ts';
import { type KubeClient, KubeError } from './client.ts';

const base = '/apis/snapshot.storage.k8s.io/v1';

/** One CSI snapshot taken for a backup. */
export interface VolumeSnapshotFact {
  namespace: string;
  pvc: string;
  snapshot: string;
  content: string;
  restoreSize?: string;
}

type Snapshot = {
  metadata: { name: string; namespace: string };
  status?: {
    readyToUse?: boolean;
    boundVolumeSnapshotContentName?: string;
    restoreSize?: string;
    error?: { message?: string };
  };
};
type Pvc = { metadata: { name: string; namespace: string; labels?: Record<string, string> } };

/**
 * Takes a CSI VolumeSnapshot of every PVC of the namespaces (matching the label selector, if
 * any) with the given VolumeSnapshotClass, and waits until all are ready to use. A snapshot
 * that fails deletes every snapshot this call made. The snapshots are labelled with the backup.
 */
export async function snapshotVolumes(options: {
  client: KubeClient;
  namespaces: string[];
  labelSelector?: string;
  volumeSnapshotClass: string;
  labels: Record<string, string>;
  pollIntervalMs?: number;
  logger: Logger;
  signal?: AbortSignal;
}): Promise<VolumeSnapshotFact[]> {
  const { client, logger } = options;
  try {
    await client.get(
      `${base}/volumesnapshotclasses/${encodeURIComponent(options.volumeSnapshotClass)}`,
      options.signal,
    );
  } catch (error) {
    if (error instanceof KubeError && error.code === 404)
      throw new UserError(
        `volume-snapshot-class: '${options.volumeSnapshotClass}' does not exist in the cluster`,
      );
    throw error;
  }
  const pvcs: Pvc[] = [];
  for (const ns of options.namespaces) {
    const query = options.labelSelector ? `?labelSelector=${encodeURIComponent(options.labelSelector)}` : '';
    pvcs.push(
      ...(
        await client.get<{ items: Pvc[] }>(
          `/api/v1/namespaces/${ns}/persistentvolumeclaims${query}`,
          options.signal,
        )
      ).items,
    );
  }
  const suffix = randomBytes(3).toString('hex');
  const made: Snapshot[] = [];
  try {
    for (const pvc of pvcs) {
      const name = `lb-${pvc.metadata.name.slice(0, 237)}-${suffix}`;
      made.push(
        await client.request<Snapshot>(
          'POST',
          `${base}/namespaces/${pvc.metadata.namespace}/volumesnapshots`,
          {
            apiVersion: 'snapshot.storage.k8s.io/v1',
            kind: 'VolumeSnapshot',
            metadata: { name, namespace: pvc.metadata.namespace, labels: options.labels },
            spec: {
              volumeSnapshotClassName: options.volumeSnapshotClass,
              source: { persistentVolumeClaimName: pvc.metadata.name },
            },
          },
          options.signal,
        ),
      );
    }
    logger.info(
      `took ${made.length} CSI snapshot(s) with class ${options.volumeSnapshotClass}; waiting until ready`,
    );
    const facts: VolumeSnapshotFact[] = [];
    for (const [i, snap] of made.entries()) {
      const path = `${base}/namespaces/${snap.metadata.namespace}/volumesnapshots/${snap.metadata.name}`;
      for (;;) {
        const current = await client.get<Snapshot>(path, options.signal);
        if (current.status?.error) {
          throw new UserError(
            `volume snapshot of PVC ${snap.metadata.namespace}/${pvcs[i]!.metadata.name} failed: ${current.status.error.message}`,
          );
        }
        if (current.status?.readyToUse) {
          facts.push({
            namespace: snap.metadata.namespace,
            pvc: pvcs[i]!.metadata.name,
            snapshot: snap.metadata.name,
            content: current.status.boundVolumeSnapshotContentName ?? '',
            restoreSize: current.status.restoreSize,
          });
          break;
        }
        await sleep(options.pollIntervalMs ?? 2000, undefined, { signal: options.signal });
      }
    }
    return facts;
  } catch (error) {
    await deleteVolumeSnapshots(
      client,
      made.map((s) => s.metadata),
      logger,
    );
    throw error;
  }
}

/** Best effort: deletes VolumeSnapshots (their contents follow their class's deletion policy). */
export async function deleteVolumeSnapshots(
  client: KubeClient,
  snapshots: { name: string; namespace: string }[],
  logger: Logger,
): Promise<void> {
  for (const s of snapshots) {
    await client
      .request('DELETE', `${base}/namespaces/${s.namespace}/volumesnapshots/${s.name}`)
      .catch((error) =>
        logger.warn(`could not delete the volume snapshot ${s.namespace}/${s.name}: ${messageOf(error)}`),
      );
  }
}

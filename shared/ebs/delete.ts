import type { Logger } from '../pipeline/progress.ts';
import { ec2Client } from './ec2.ts';
import type { EbsFacts } from './snapshot.ts';

export interface SnapshotRef {
  region: string;
  snapshotId: string;
}

export interface SnapshotDeletion {
  deleted: SnapshotRef[];
  /** Snapshots EC2 would not delete (in use by an AMI, locked): reported and kept, not a failure. */
  kept: (SnapshotRef & { reason: string })[];
}

/** Every snapshot of an EBS backup: the originals and their copies in other regions. */
export function snapshotsOf(facts: EbsFacts): SnapshotRef[] {
  return facts.snapshots.flatMap((s) => [
    { region: facts.region, snapshotId: s.snapshotId },
    ...s.copies.map((c) => ({ region: c.region, snapshotId: c.snapshotId })),
  ]);
}

/**
 * Deletes snapshots (a pending one is cancelled). One already gone counts as deleted; one
 * in use by an AMI or under a snapshot lock is kept with the reason; any other error fails.
 */
export async function deleteSnapshots(refs: SnapshotRef[], logger: Logger): Promise<SnapshotDeletion> {
  const result: SnapshotDeletion = { deleted: [], kept: [] };
  if (refs.length === 0) return result;
  const { DeleteSnapshotCommand } = await import('@aws-sdk/client-ec2');
  const clients = new Map<string, Awaited<ReturnType<typeof ec2Client>>>();
  for (const ref of refs) {
    let client = clients.get(ref.region);
    if (!client) {
      client = await ec2Client(ref.region);
      clients.set(ref.region, client);
    }
    try {
      await client.send(new DeleteSnapshotCommand({ SnapshotId: ref.snapshotId }));
      result.deleted.push(ref);
    } catch (error) {
      const e = error as { name?: string; message?: string };
      if (e.name === 'InvalidSnapshot.NotFound') result.deleted.push(ref);
      else if (e.name === 'InvalidSnapshot.InUse' || /Lock/i.test(e.name ?? '')) {
        result.kept.push({ ...ref, reason: `${e.name}: ${e.message}` });
        logger.warn(`kept ${ref.snapshotId} in ${ref.region}: ${e.message}`);
      } else throw new Error(`DeleteSnapshot ${ref.snapshotId} in ${ref.region}: ${e.name}: ${e.message}`);
    }
  }
  return result;
}

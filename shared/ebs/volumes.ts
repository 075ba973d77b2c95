import { setTimeout as sleep } from 'node:timers/promises';
import type { EC2Client, Tag, Volume } from '@aws-sdk/client-ec2';
import { UserError } from '../errors.ts';
import type { Logger } from '../pipeline/progress.ts';
import { ec2Error } from './ec2.ts';

/** A volume to make from a snapshot. */
export interface VolumeFromSnapshot {
  snapshotId: string;
  zone: string;
  volumeType?: string;
  iops?: number;
  throughput?: number;
  kmsKeyId?: string;
  tags: Record<string, string>;
}

export const toTags = (tags: Record<string, string>): Tag[] =>
  Object.entries(tags).map(([Key, Value]) => ({ Key, Value }));

/** Creates a volume from each snapshot; `onMade` hears each id at once, for cleanup. */
export async function createVolumes(
  ec2: EC2Client,
  specs: VolumeFromSnapshot[],
  onMade: (volumeId: string) => void,
  dryRun = false,
): Promise<string[]> {
  const { CreateVolumeCommand } = await import('@aws-sdk/client-ec2');
  const ids: string[] = [];
  for (const spec of specs) {
    const reply = await ec2
      .send(
        new CreateVolumeCommand({
          SnapshotId: spec.snapshotId,
          AvailabilityZone: spec.zone,
          ...(spec.volumeType ? { VolumeType: spec.volumeType as never } : {}),
          ...(spec.iops ? { Iops: spec.iops } : {}),
          ...(spec.throughput ? { Throughput: spec.throughput } : {}),
          ...(spec.kmsKeyId ? { Encrypted: true, KmsKeyId: spec.kmsKeyId } : {}),
          TagSpecifications: [{ ResourceType: 'volume', Tags: toTags(spec.tags) }],
          DryRun: dryRun,
        }),
      )
      .catch((error) => {
        // A dry run's answer (DryRunOperation) is for the caller to read as it is.
        throw dryRun ? error : ec2Error(error, `CreateVolume from ${spec.snapshotId} in ${spec.zone}`);
      });
    onMade(reply.VolumeId!);
    ids.push(reply.VolumeId!);
  }
  return ids;
}

/** Polls DescribeVolumes until every volume meets `done`; `what` names the wait in messages. */
export async function waitForVolumes(
  ec2: EC2Client,
  volumeIds: string[],
  done: (v: Volume) => boolean,
  what: string,
  options: { pollIntervalMs?: number; signal?: AbortSignal; logger: Logger },
): Promise<Volume[]> {
  const { DescribeVolumesCommand } = await import('@aws-sdk/client-ec2');
  let last = '';
  for (;;) {
    options.signal?.throwIfAborted();
    const reply = await ec2.send(new DescribeVolumesCommand({ VolumeIds: volumeIds })).catch((error) => {
      throw ec2Error(error, `DescribeVolumes (${what})`);
    });
    const volumes = reply.Volumes ?? [];
    const line = volumes.map((v) => `${v.VolumeId} ${v.Attachments?.[0]?.State ?? v.State}`).join(', ');
    if (line !== last) options.logger.info(`${what}: ${line}`);
    last = line;
    if (volumes.length === volumeIds.length && volumes.every(done)) return volumes;
    if (volumes.some((v) => v.State === 'error'))
      throw new UserError(`${what}: a volume went to state error: ${line}`);
    await sleep(options.pollIntervalMs ?? 5000, undefined, { signal: options.signal });
  }
}

/** Best effort: deletes volumes (not attached ones), saying which could not be deleted. */
export async function deleteVolumes(ec2: EC2Client, volumeIds: string[], logger: Logger): Promise<string[]> {
  const { DeleteVolumeCommand } = await import('@aws-sdk/client-ec2');
  const left: string[] = [];
  for (const id of volumeIds) {
    try {
      await ec2.send(new DeleteVolumeCommand({ VolumeId: id }));
    } catch (error) {
      if ((error as { name?: string }).name === 'InvalidVolume.NotFound') continue;
      left.push(id);
      logger.warn(`could not delete the volume ${id}: ${(error as Error).message}; delete it by hand`);
    }
  }
  return left;
}

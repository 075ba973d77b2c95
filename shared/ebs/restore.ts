import { setTimeout as sleep } from 'node:timers/promises';
import type { EC2Client, Instance } from '@aws-sdk/client-ec2';
import type { Manifest } from '../catalog/manifest.ts';
import { messageOf, UserError } from '../errors.ts';
import type { Logger } from '../pipeline/progress.ts';
import { ec2Client, ec2Error } from './ec2.ts';
import { ebsFacts, tagKeys } from './snapshot.ts';
import { createVolumes, deleteVolumes, toTags, waitForVolumes } from './volumes.ts';

export interface EbsRestoreOptions {
  manifest: Manifest;
  /** The instance to restore for (its zone) and, with swap, to swap the volumes into. */
  instanceId?: string;
  zone?: string;
  volumeType?: string;
  iops?: number;
  throughput?: number;
  kmsKeyId?: string;
  swap: boolean;
  stopInstance: boolean;
  deleteOldVolumes: boolean;
  dryRun: boolean;
  pollIntervalMs?: number;
  logger: Logger;
  signal?: AbortSignal;
}

export interface RestoredVolume {
  device: string;
  snapshotId: string;
  volumeId: string;
  /** With swap: the volume it replaced (kept and tagged unless delete-old-volumes). */
  replaced?: string;
}

export interface EbsRestoreResult {
  instanceId?: string;
  zone: string;
  swapped: boolean;
  dryRun: boolean;
  volumes: RestoredVolume[];
  oldVolumesDeleted: boolean;
}

/**
 * Restores an EBS backup: a volume from each snapshot in the target zone; with `swap`, the
 * instance is stopped if asked, the old volumes detached, the new ones attached at the same
 * device names, and the instance started again. If an attach fails, everything is rolled
 * back: the new volumes are detached and deleted and the old ones attached again. The old
 * volumes are kept and tagged (deleted only when asked). `dryRun` asks EC2 (DryRun) whether
 * every call would be allowed and prints the plan.
 */
export async function restoreEbs(options: EbsRestoreOptions): Promise<EbsRestoreResult> {
  const { manifest, logger } = options;
  const facts = ebsFacts(manifest);
  const ec2 = await ec2Client(facts.region);
  const sourceInstances = [...new Set(facts.snapshots.map((s) => s.instanceId).filter(Boolean))];
  const instanceId = options.instanceId ?? (sourceInstances.length === 1 ? sourceInstances[0] : undefined);
  const instance = instanceId ? await describeInstance(ec2, instanceId) : undefined;
  const zone = options.zone ?? instance?.Placement?.AvailabilityZone ?? facts.snapshots[0]!.zone;
  if (options.swap) {
    if (!instance) throw new UserError('instance-id: swap needs the instance to swap the volumes into');
    if (zone !== instance.Placement?.AvailabilityZone)
      throw new UserError(
        `zone: ${zone} is not the zone of ${instanceId} (${instance.Placement?.AvailabilityZone}); volumes attach only in their own zone`,
      );
    const deviceless = facts.snapshots.find((s) => !s.device);
    if (deviceless)
      throw new UserError(
        `swap: the snapshot ${deviceless.snapshotId} records no device name to attach it at`,
      );
    const root = facts.snapshots.find((s) => s.device === instance.RootDeviceName);
    if (root && instance.State?.Name !== 'stopped' && !options.stopInstance) {
      throw new UserError(
        `stop-instance: swapping the root volume (${root.device}) needs ${instanceId} stopped; set stop-instance: true`,
      );
    }
  }
  const mapping = new Map(
    (instance?.BlockDeviceMappings ?? []).map((m) => [m.DeviceName!, m.Ebs?.VolumeId ?? '']),
  );
  const plan = facts.snapshots.map((s) => ({
    device: s.device,
    snapshotId: s.snapshotId,
    volumeId: '',
    ...(options.swap && mapping.get(s.device) ? { replaced: mapping.get(s.device) } : {}),
  }));
  for (const p of plan) {
    logger.info(
      `${options.dryRun ? 'would create' : 'creating'} a volume from ${p.snapshotId} in ${zone}${options.swap ? ` and attach it to ${instanceId} at ${p.device}${p.replaced ? ` in place of ${p.replaced}` : ''}` : ''}`,
    );
  }
  const specs = facts.snapshots.map((s) => ({
    snapshotId: s.snapshotId,
    zone,
    volumeType: options.volumeType,
    iops: options.iops,
    throughput: options.throughput,
    kmsKeyId: options.kmsKeyId,
    tags: {
      [tagKeys.set]: manifest.set,
      [tagKeys.backupId]: manifest.id,
      'lifeboat:restored-from': s.snapshotId,
      ...(s.device ? { [tagKeys.device]: s.device } : {}),
    },
  }));
  const result: EbsRestoreResult = {
    instanceId,
    zone,
    swapped: false,
    dryRun: options.dryRun,
    volumes: plan,
    oldVolumesDeleted: false,
  };
  if (options.dryRun) {
    await dryRunChecks(ec2, specs, plan, instanceId, options);
    return result;
  }

  const made: string[] = [];
  try {
    const ids = await createVolumes(ec2, specs, (id) => made.push(id));
    ids.forEach((id, i) => {
      plan[i]!.volumeId = id;
    });
    await waitForVolumes(ec2, ids, (v) => v.State === 'available', 'new volumes', options);
  } catch (error) {
    await deleteVolumes(ec2, made, logger);
    throw error;
  }
  if (!options.swap) return result;
  await swapVolumes(ec2, instance!, plan, options);
  result.swapped = true;
  const old = plan.map((p) => p.replaced).filter((v): v is string => Boolean(v));
  if (old.length && options.deleteOldVolumes) {
    const left = await deleteVolumes(ec2, old, logger);
    result.oldVolumesDeleted = left.length === 0;
  }
  return result;
}

async function describeInstance(ec2: EC2Client, instanceId: string): Promise<Instance> {
  const { DescribeInstancesCommand } = await import('@aws-sdk/client-ec2');
  const reply = await ec2.send(new DescribeInstancesCommand({ InstanceIds: [instanceId] })).catch((error) => {
    throw ec2Error(error, 'instance-id');
  });
  const instance = reply.Reservations?.[0]?.Instances?.[0];
  if (!instance) throw new UserError(`instance-id: '${instanceId}' does not exist`);
  return instance;
}

async function waitForInstance(ec2: EC2Client, instanceId: string, want: string, options: EbsRestoreOptions) {
  for (;;) {
    const state = (await describeInstance(ec2, instanceId)).State?.Name;
    options.logger.info(`${instanceId}: ${state}`);
    if (state === want) return;
    await sleep(options.pollIntervalMs ?? 5000, undefined, { signal: options.signal });
  }
}

/**
 * Detaches the old volumes and attaches the new ones at the same devices, stopping and
 * starting the instance if asked; on a failure, puts every old volume back and deletes the
 * new ones.
 */
async function swapVolumes(
  ec2: EC2Client,
  instance: Instance,
  plan: RestoredVolume[],
  options: EbsRestoreOptions,
): Promise<void> {
  const {
    AttachVolumeCommand,
    CreateTagsCommand,
    DetachVolumeCommand,
    StartInstancesCommand,
    StopInstancesCommand,
  } = await import('@aws-sdk/client-ec2');
  const instanceId = instance.InstanceId!;
  const { logger } = options;
  const wait = (ids: string[], done: Parameters<typeof waitForVolumes>[2], what: string) =>
    waitForVolumes(ec2, ids, done, what, options);
  const attached = (v: { Attachments?: { State?: string }[] }) => v.Attachments?.[0]?.State === 'attached';
  const detached = (v: { State?: string }) => v.State === 'available';
  const call = <T>(promise: Promise<T>, doing: string) =>
    promise.catch((error) => {
      throw ec2Error(error, doing);
    });
  let stopped = false;
  if (options.stopInstance && instance.State?.Name !== 'stopped') {
    await call(
      ec2.send(new StopInstancesCommand({ InstanceIds: [instanceId] })),
      `StopInstances ${instanceId}`,
    );
    stopped = true;
    await waitForInstance(ec2, instanceId, 'stopped', options);
  }
  const done: RestoredVolume[] = [];
  try {
    for (const p of plan) {
      if (p.replaced) {
        await call(ec2.send(new DetachVolumeCommand({ VolumeId: p.replaced })), `DetachVolume ${p.replaced}`);
        await wait([p.replaced], detached, `detaching ${p.replaced} from ${p.device}`);
      }
      done.push(p);
      await call(
        ec2.send(new AttachVolumeCommand({ VolumeId: p.volumeId, InstanceId: instanceId, Device: p.device })),
        `AttachVolume ${p.volumeId} at ${p.device}`,
      );
      await wait([p.volumeId], attached, `attaching ${p.volumeId} at ${p.device}`);
    }
  } catch (error) {
    logger.warn(`swap failed (${messageOf(error)}); rolling back: the old volumes go back`);
    await rollback(ec2, instanceId, done, options).catch((rollbackError) => {
      throw new UserError(
        `swap failed (${messageOf(error)}) and so did the rollback (${messageOf(rollbackError)}): check ${instanceId} by hand; new volumes: ${plan.map((p) => `${p.device}=${p.volumeId}`).join(', ')}`,
      );
    });
    await deleteVolumes(
      ec2,
      plan.map((p) => p.volumeId),
      logger,
    );
    if (stopped)
      await call(
        ec2.send(new StartInstancesCommand({ InstanceIds: [instanceId] })),
        `StartInstances ${instanceId}`,
      );
    throw new UserError(
      `swap failed: ${messageOf(error)}; rolled back: the old volumes are attached again at their devices and the new volumes are deleted`,
    );
  }
  const at = new Date().toISOString();
  for (const p of plan.filter((x) => x.replaced)) {
    await call(
      ec2.send(
        new CreateTagsCommand({
          Resources: [p.replaced!],
          Tags: toTags({
            'lifeboat:replaced-by': p.volumeId,
            'lifeboat:replaced-at': at,
            [tagKeys.device]: p.device,
          }),
        }),
      ),
      `CreateTags on ${p.replaced}`,
    );
  }
  if (stopped) {
    await call(
      ec2.send(new StartInstancesCommand({ InstanceIds: [instanceId] })),
      `StartInstances ${instanceId}`,
    );
    await waitForInstance(ec2, instanceId, 'running', options);
  }
}

/** Detaches what was attached of the new volumes and attaches each old volume at its device again. */
async function rollback(
  ec2: EC2Client,
  instanceId: string,
  done: RestoredVolume[],
  options: EbsRestoreOptions,
) {
  const { AttachVolumeCommand, DescribeVolumesCommand, DetachVolumeCommand } = await import(
    '@aws-sdk/client-ec2'
  );
  for (const p of [...done].reverse()) {
    const [current] = (await ec2.send(new DescribeVolumesCommand({ VolumeIds: [p.volumeId] }))).Volumes ?? [];
    if (current?.Attachments?.length) {
      await ec2.send(new DetachVolumeCommand({ VolumeId: p.volumeId }));
      await waitForVolumes(
        ec2,
        [p.volumeId],
        (v) => v.State === 'available',
        `detaching ${p.volumeId}`,
        options,
      );
    }
    if (p.replaced) {
      await ec2.send(
        new AttachVolumeCommand({ VolumeId: p.replaced, InstanceId: instanceId, Device: p.device }),
      );
      await waitForVolumes(
        ec2,
        [p.replaced],
        (v) => v.Attachments?.[0]?.State === 'attached',
        `re-attaching ${p.replaced} at ${p.device}`,
        options,
      );
    }
  }
}

/** Asks EC2 whether each call of the restore would be allowed (DryRun), without making anything. */
async function dryRunChecks(
  ec2: EC2Client,
  specs: Parameters<typeof createVolumes>[1],
  plan: RestoredVolume[],
  instanceId: string | undefined,
  options: EbsRestoreOptions,
): Promise<void> {
  const { AttachVolumeCommand, DetachVolumeCommand, StartInstancesCommand, StopInstancesCommand } =
    await import('@aws-sdk/client-ec2');
  const allowed = async (promise: Promise<unknown>, doing: string) => {
    try {
      await promise;
    } catch (error) {
      if ((error as { name?: string }).name === 'DryRunOperation') return;
      throw ec2Error(error, `${doing} (dry run)`);
    }
  };
  await allowed(
    createVolumes(ec2, specs.slice(0, 1), () => {}, true),
    'CreateVolume',
  );
  if (options.swap && instanceId) {
    const old = plan.find((p) => p.replaced);
    if (old)
      await allowed(
        ec2.send(new DetachVolumeCommand({ VolumeId: old.replaced, DryRun: true })),
        'DetachVolume',
      );
    // Attaching is checked with an existing volume: the new ones do not exist in a dry run.
    if (old)
      await allowed(
        ec2.send(
          new AttachVolumeCommand({
            VolumeId: old.replaced,
            InstanceId: instanceId,
            Device: old.device,
            DryRun: true,
          }),
        ),
        'AttachVolume',
      );
    if (options.stopInstance) {
      await allowed(
        ec2.send(new StopInstancesCommand({ InstanceIds: [instanceId], DryRun: true })),
        'StopInstances',
      );
      await allowed(
        ec2.send(new StartInstancesCommand({ InstanceIds: [instanceId], DryRun: true })),
        'StartInstances',
      );
    }
  }
  options.logger.info('dry run: EC2 says every call of this restore is allowed; nothing was created');
}

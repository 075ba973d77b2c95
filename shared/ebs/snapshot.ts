import { setTimeout as sleep } from 'node:timers/promises';
import type { EC2Client, Snapshot, Volume } from '@aws-sdk/client-ec2';
import { Catalog, type PendingBackup } from '../catalog/catalog.ts';
import { baseBackupId } from '../catalog/ids.ts';
import type { Manifest } from '../catalog/manifest.ts';
import { UserError } from '../errors.ts';
import { runHook } from '../hooks.ts';
import type { Logger } from '../pipeline/progress.ts';
import type { Storage } from '../storage/storage.ts';
import { version } from '../version.ts';
import { deleteSnapshots, type SnapshotRef } from './delete.ts';
import { ec2Client, ec2Error } from './ec2.ts';
import { toTags } from './volumes.ts';

/** Which volumes to snapshot. */
export type VolumeSelection =
  | { by: 'volume-ids'; volumeIds: string[] }
  | { by: 'instance-id'; instanceId: string; excludeBootVolume: boolean }
  | { by: 'volume-filters'; filters: Record<string, string> };

export interface EbsSnapshotOptions {
  /** Where the manifest goes; without one, the snapshots' tags alone identify the set. */
  storage?: Storage;
  set: string;
  region: string;
  selection: VolumeSelection;
  /** User tags on every snapshot (and copy). */
  tags: Record<string, string>;
  preCommand?: string;
  postCommand?: string;
  wait: boolean;
  copyToRegions: string[];
  kmsKeyId?: string;
  /** How often to poll snapshot progress (default 15 s). */
  pollIntervalMs?: number;
  logger: Logger;
  signal?: AbortSignal;
  now?: () => Date;
}

/** One snapshot of the set: where it came from and where its copies are. */
export interface EbsSnapshotFact {
  snapshotId: string;
  volumeId: string;
  /** The device name the volume was attached at, e.g. /dev/sdf (empty when not attached). */
  device: string;
  instanceId: string;
  zone: string;
  sizeGiB: number;
  volumeType: string;
  encrypted: boolean;
  kmsKeyId?: string;
  state: string;
  copies: { region: string; snapshotId: string; state: string }[];
}

export interface EbsFacts {
  region: string;
  selection: VolumeSelection;
  waited: boolean;
  snapshots: EbsSnapshotFact[];
}

export interface EbsSnapshotResult {
  id: string;
  manifest?: Manifest;
  facts: EbsFacts;
}

/** The EBS facts of a manifest, checked enough to use (the manifest schema keeps facts open). */
export function ebsFacts(manifest: Manifest): EbsFacts {
  const facts = manifest.facts as unknown as EbsFacts;
  if (manifest.kind !== 'ebs' || !Array.isArray(facts?.snapshots)) {
    throw new UserError(`backup: '${manifest.id}' is not an EBS backup with snapshot facts`);
  }
  return facts;
}

/** Tag keys every snapshot of a set carries. */
export const tagKeys = {
  set: 'lifeboat:set',
  backupId: 'lifeboat:backup-id',
  volume: 'lifeboat:source-volume',
  instance: 'lifeboat:source-instance',
  device: 'lifeboat:source-device',
} as const;

interface Source {
  volume: Volume;
  device: string;
  instanceId: string;
}

/**
 * Snapshots EBS volumes as one backup: an instance's volumes in one crash-consistent
 * CreateSnapshots call, or each selected volume with CreateSnapshot; every snapshot tagged
 * with the set, the backup id and its source; `pre-command`/`post-command` around the
 * snapshot call (post always runs); then, if asked, waits until every snapshot is completed,
 * copies them to other regions (tags set on the copy request) and commits a manifest. A
 * failure deletes the snapshots this run made, so nothing half-made looks like a backup.
 */
export async function snapshotEbs(options: EbsSnapshotOptions): Promise<EbsSnapshotResult> {
  const { logger } = options;
  const now = options.now ?? (() => new Date());
  if (options.copyToRegions.length && !options.wait) {
    throw new UserError('copy-to-regions: needs wait: true (a snapshot is copied only once it is completed)');
  }
  const ec2 = await ec2Client(options.region);
  const sources = await selectVolumes(ec2, options.selection);
  await options.storage?.check();
  const started = now();
  const catalog = options.storage ? new Catalog(options.storage) : undefined;
  const pending: PendingBackup | undefined = await catalog?.begin(options.set, 'full', started);
  const id = pending?.id ?? baseBackupId(started, 'full');
  logger.info(
    `backup ${options.set}/${id}: ${sources.length} volume(s) in ${options.region}: ${sources.map((s) => `${s.volume.VolumeId}${s.device ? ` (${s.device})` : ''}`).join(', ')}`,
  );
  const common = { ...options.tags, [tagKeys.set]: options.set, [tagKeys.backupId]: id };
  const made: SnapshotRef[] = [];
  let postFailure: Error | undefined;
  let committed = false;
  try {
    let snapshots: EbsSnapshotFact[];
    try {
      if (options.preCommand) await runHook('pre-command', options.preCommand, options);
      snapshots = await createSnapshots(ec2, options, sources, common, id, (snapshotId) =>
        made.push({ region: options.region, snapshotId }),
      );
    } finally {
      if (options.postCommand) {
        await runHook('post-command', options.postCommand, { ...options, signal: undefined }).catch(
          (error: Error) => {
            postFailure = error;
          },
        );
      }
    }
    if (options.wait) {
      await waitForSnapshots(ec2, options.region, snapshots, options);
      for (const region of options.copyToRegions) {
        const target = await ec2Client(region);
        const copies = await copySnapshots(target, region, snapshots, options, common);
        for (const c of copies) made.push({ region, snapshotId: c.snapshotId });
        await waitForSnapshots(target, region, copies, options);
        for (const [i, c] of copies.entries())
          snapshots[i]!.copies.push({ region, snapshotId: c.snapshotId, state: c.state });
      }
    }
    const facts: EbsFacts = {
      region: options.region,
      selection: options.selection,
      waited: options.wait,
      snapshots,
    };
    const manifest = pending ? ebsManifest(options, facts, { id, started, finished: now() }) : undefined;
    if (pending && manifest) await catalog!.commit(pending, manifest);
    committed = true;
    if (postFailure) {
      throw new UserError(
        `post-command: failed after the snapshots were taken (${postFailure.message}); the backup ${id} is complete`,
      );
    }
    return { id, manifest, facts };
  } catch (error) {
    if (!committed) {
      if (pending) await catalog!.abandon(pending).catch(() => {});
      await removeMade(made, logger);
    }
    throw error;
  }
}

/** The volumes to snapshot, each with its attachment; every id must exist. */
async function selectVolumes(ec2: EC2Client, selection: VolumeSelection): Promise<Source[]> {
  const { DescribeInstancesCommand, DescribeVolumesCommand } = await import('@aws-sdk/client-ec2');
  const describe = async (input: ConstructorParameters<typeof DescribeVolumesCommand>[0], doing: string) => {
    const volumes: Volume[] = [];
    let NextToken: string | undefined;
    do {
      const page = await ec2.send(new DescribeVolumesCommand({ ...input, NextToken })).catch((error) => {
        throw ec2Error(error, doing);
      });
      volumes.push(...(page.Volumes ?? []));
      NextToken = page.NextToken;
    } while (NextToken);
    return volumes;
  };
  const attached = (volume: Volume, instanceId?: string) => {
    const a = volume.Attachments?.find((x) => !instanceId || x.InstanceId === instanceId);
    return { volume, device: a?.Device ?? '', instanceId: a?.InstanceId ?? '' };
  };
  if (selection.by === 'volume-ids') {
    const volumes = await describe({ VolumeIds: selection.volumeIds }, 'volume-ids');
    return volumes.map((v) => attached(v));
  }
  if (selection.by === 'volume-filters') {
    const filters = Object.entries(selection.filters).map(([k, v]) => ({ Name: `tag:${k}`, Values: [v] }));
    const volumes = await describe({ Filters: filters }, 'volume-filters');
    if (volumes.length === 0) {
      throw new UserError(
        `volume-filters: no volume has the tags ${Object.entries(selection.filters)
          .map(([k, v]) => `${k}=${v}`)
          .join(', ')}`,
      );
    }
    return volumes.map((v) => attached(v));
  }
  const reply = await ec2
    .send(new DescribeInstancesCommand({ InstanceIds: [selection.instanceId] }))
    .catch((error) => {
      throw ec2Error(error, 'instance-id');
    });
  const instance = reply.Reservations?.[0]?.Instances?.[0];
  if (!instance) throw new UserError(`instance-id: '${selection.instanceId}' does not exist`);
  const ids = (instance.BlockDeviceMappings ?? [])
    .filter(
      (m) => m.Ebs?.VolumeId && !(selection.excludeBootVolume && m.DeviceName === instance.RootDeviceName),
    )
    .map((m) => m.Ebs!.VolumeId!);
  if (ids.length === 0)
    throw new UserError(`instance-id: '${selection.instanceId}' has no EBS volume to snapshot`);
  const volumes = await describe({ VolumeIds: ids }, 'instance-id');
  return volumes.map((v) => attached(v, selection.instanceId));
}

async function createSnapshots(
  ec2: EC2Client,
  options: EbsSnapshotOptions,
  sources: Source[],
  common: Record<string, string>,
  id: string,
  /** Told each snapshot id as soon as EC2 has made it, so a failure later can delete it. */
  onMade: (snapshotId: string) => void,
): Promise<EbsSnapshotFact[]> {
  const { CreateSnapshotCommand, CreateSnapshotsCommand, CreateTagsCommand } = await import(
    '@aws-sdk/client-ec2'
  );
  const description = `Lifeboat ${options.set}/${id}`;
  const sourceTags = (s: Source) => ({
    [tagKeys.volume]: s.volume.VolumeId!,
    ...(s.instanceId ? { [tagKeys.instance]: s.instanceId } : {}),
    ...(s.device ? { [tagKeys.device]: s.device } : {}),
  });
  const fact = (s: Source, snapshotId: string): EbsSnapshotFact => ({
    snapshotId,
    volumeId: s.volume.VolumeId!,
    device: s.device,
    instanceId: s.instanceId,
    zone: s.volume.AvailabilityZone ?? '',
    sizeGiB: s.volume.Size ?? 0,
    volumeType: s.volume.VolumeType ?? '',
    encrypted: Boolean(s.volume.Encrypted),
    ...(s.volume.KmsKeyId ? { kmsKeyId: s.volume.KmsKeyId } : {}),
    state: 'pending',
    copies: [],
  });
  const selection = options.selection;
  if (selection.by === 'instance-id') {
    // One call: crash-consistent across the instance's volumes, made as a set or not at all.
    const reply = await ec2
      .send(
        new CreateSnapshotsCommand({
          InstanceSpecification: {
            InstanceId: selection.instanceId,
            ExcludeBootVolume: selection.excludeBootVolume,
          },
          Description: description,
          TagSpecifications: [{ ResourceType: 'snapshot', Tags: toTags(common) }],
        }),
      )
      .catch((error) => {
        throw ec2Error(error, `CreateSnapshots of ${selection.instanceId}`);
      });
    for (const snap of reply.Snapshots ?? []) onMade(snap.SnapshotId!);
    const facts: EbsSnapshotFact[] = [];
    for (const snap of reply.Snapshots ?? []) {
      // A volume attached since the selection was read is in the set too.
      const source = sources.find((s) => s.volume.VolumeId === snap.VolumeId) ?? {
        volume: { VolumeId: snap.VolumeId, Size: snap.VolumeSize, Encrypted: snap.Encrypted },
        device: '',
        instanceId: selection.instanceId,
      };
      facts.push(fact(source, snap.SnapshotId!));
      // Per-volume tags: CreateSnapshots tags the whole set alike.
      await ec2
        .send(new CreateTagsCommand({ Resources: [snap.SnapshotId!], Tags: toTags(sourceTags(source)) }))
        .catch((error) => {
          throw ec2Error(error, `CreateTags on ${snap.SnapshotId}`);
        });
    }
    return facts;
  }
  const facts: EbsSnapshotFact[] = [];
  for (const s of sources) {
    const snap = await ec2
      .send(
        new CreateSnapshotCommand({
          VolumeId: s.volume.VolumeId,
          Description: description,
          TagSpecifications: [{ ResourceType: 'snapshot', Tags: toTags({ ...common, ...sourceTags(s) }) }],
        }),
      )
      .catch((error) => {
        throw ec2Error(error, `CreateSnapshot of ${s.volume.VolumeId}`);
      });
    onMade(snap.SnapshotId!);
    facts.push(fact(s, snap.SnapshotId!));
  }
  return facts;
}

/** Polls until every snapshot is completed, printing their own progress; `error` fails. */
async function waitForSnapshots(
  ec2: EC2Client,
  region: string,
  snapshots: { snapshotId: string; state: string }[],
  options: EbsSnapshotOptions,
): Promise<void> {
  const { DescribeSnapshotsCommand } = await import('@aws-sdk/client-ec2');
  const interval = options.pollIntervalMs ?? 15_000;
  let last = '';
  for (;;) {
    options.signal?.throwIfAborted();
    const reply = await ec2
      .send(new DescribeSnapshotsCommand({ SnapshotIds: snapshots.map((s) => s.snapshotId) }))
      .catch((error) => {
        throw ec2Error(error, `DescribeSnapshots in ${region}`);
      });
    const byId = new Map((reply.Snapshots ?? []).map((s: Snapshot) => [s.SnapshotId, s]));
    for (const s of snapshots) s.state = byId.get(s.snapshotId)?.State ?? s.state;
    const failed = snapshots.find((s) => s.state === 'error');
    if (failed) {
      const message = byId.get(failed.snapshotId)?.StateMessage;
      throw new UserError(
        `snapshot ${failed.snapshotId} in ${region} failed (state error${message ? `: ${message}` : ''}); the snapshots of this backup are deleted`,
      );
    }
    const line = snapshots
      .map(
        (s) =>
          `${s.snapshotId} ${s.state === 'completed' ? '100%' : byId.get(s.snapshotId)?.Progress || '0%'}`,
      )
      .join(', ');
    if (line !== last) options.logger.info(`${region}: ${line}`);
    last = line;
    if (snapshots.every((s) => s.state === 'completed')) return;
    // Node's timer promise rejects at once with the signal's reason when it aborts.
    await sleep(interval, undefined, { signal: options.signal });
  }
}

/** Copies every snapshot into `region` (EC2 does not copy tags: they go on the request). */
async function copySnapshots(
  target: EC2Client,
  region: string,
  snapshots: EbsSnapshotFact[],
  options: EbsSnapshotOptions,
  common: Record<string, string>,
): Promise<{ snapshotId: string; state: string }[]> {
  const { CopySnapshotCommand } = await import('@aws-sdk/client-ec2');
  const copies: { snapshotId: string; state: string }[] = [];
  for (const s of snapshots) {
    const reply = await target
      .send(
        new CopySnapshotCommand({
          SourceRegion: options.region,
          SourceSnapshotId: s.snapshotId,
          Description: `Lifeboat ${options.set} copy of ${s.snapshotId} from ${options.region}`,
          ...(options.kmsKeyId ? { Encrypted: true, KmsKeyId: options.kmsKeyId } : {}),
          TagSpecifications: [
            {
              ResourceType: 'snapshot',
              Tags: toTags({
                ...common,
                [tagKeys.volume]: s.volumeId,
                ...(s.instanceId ? { [tagKeys.instance]: s.instanceId } : {}),
                ...(s.device ? { [tagKeys.device]: s.device } : {}),
                'lifeboat:copied-from': `${options.region}/${s.snapshotId}`,
              }),
            },
          ],
        }),
      )
      .catch((error) => {
        throw ec2Error(error, `CopySnapshot of ${s.snapshotId} to ${region}`);
      });
    copies.push({ snapshotId: reply.SnapshotId!, state: 'pending' });
  }
  return copies;
}

/** Best effort: removes the snapshots a failed run made (a pending one is cancelled). */
async function removeMade(made: SnapshotRef[], logger: Logger): Promise<void> {
  try {
    const { deleted, kept } = await deleteSnapshots(made, logger);
    if (deleted.length) logger.info(`deleted the ${deleted.length} snapshot(s) this failed run made`);
    for (const k of kept) logger.warn(`could not delete ${k.snapshotId} in ${k.region}; delete it by hand`);
  } catch (error) {
    logger.warn(
      `could not delete every snapshot this failed run made (${(error as Error).message}); find them by the lifeboat:backup-id tag`,
    );
  }
}

function ebsManifest(
  options: EbsSnapshotOptions,
  facts: EbsFacts,
  at: { id: string; started: Date; finished: Date },
): Manifest {
  const volumes = facts.snapshots.map((s) => `${s.volumeId}${s.device ? ` (${s.device})` : ''}`);
  return {
    format: 1,
    id: at.id,
    set: options.set,
    kind: 'ebs',
    mode: 'full',
    startedAt: at.started.toISOString(),
    finishedAt: at.finished.toISOString(),
    tool: { name: 'lifeboat', version },
    source: {
      region: options.region,
      ...(options.selection.by === 'instance-id' ? { instanceId: options.selection.instanceId } : {}),
      volumes: facts.snapshots.map((s) => s.volumeId),
    },
    artifacts: [],
    contents: {
      included: [
        `EBS snapshots of ${volumes.join(', ')} in ${options.region}${
          options.selection.by === 'instance-id' ? ' (crash-consistent across the instance)' : ''
        }`,
        ...options.copyToRegions.map((r) => `copies in ${r}`),
      ],
      excluded:
        options.selection.by === 'instance-id' && options.selection.excludeBootVolume
          ? ['the boot volume']
          : [],
    },
    facts: facts as unknown as Record<string, unknown>,
    tags: Object.entries(options.tags).map(([k, v]) => `${k}=${v}`),
  };
}

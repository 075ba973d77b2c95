import type { Manifest } from '../catalog/manifest.ts';
import { messageOf, UserError } from '../errors.ts';
import type { Logger } from '../pipeline/progress.ts';
import { type CheckRow, failed, passed } from '../verify/checks.ts';
import { ec2Client, ec2Error } from './ec2.ts';
import { ebsFacts, tagKeys } from './snapshot.ts';
import { createVolumes, deleteVolumes, waitForVolumes } from './volumes.ts';

/** What an EBS verification leaves should it be killed: volumes to delete. */
export interface EbsLeftovers {
  type: 'volumes';
  region: string;
  volumeIds: string[];
}

export interface EbsVerifyOptions {
  manifest: Manifest;
  /** The zone to create the volumes in (default: each snapshot's source zone). */
  zone?: string;
  pollIntervalMs?: number;
  onLeftovers?: (leftovers: EbsLeftovers | undefined) => void;
  logger: Logger;
  signal?: AbortSignal;
}

export interface EbsVerifyOutcome {
  checks: CheckRow[];
  restoreSeconds: number | null;
  environment: Record<string, unknown> & { type: string; removed: boolean };
  timings: Record<string, number>;
}

/**
 * Proves an EBS backup restores: each snapshot is completed and tagged as the manifest says;
 * a volume is created from each (in its source zone) and waited for until available — that
 * time is the RTO — and its size and encryption are checked; the volumes are deleted
 * afterwards, also when a check fails.
 */
export async function verifyEbs(options: EbsVerifyOptions): Promise<EbsVerifyOutcome> {
  const { manifest, logger } = options;
  const facts = ebsFacts(manifest);
  const ec2 = await ec2Client(facts.region);
  const checks: CheckRow[] = [];
  const timings: Record<string, number> = {};
  const { DescribeSnapshotsCommand } = await import('@aws-sdk/client-ec2');
  let t = performance.now();
  const described = await ec2
    .send(new DescribeSnapshotsCommand({ SnapshotIds: facts.snapshots.map((s) => s.snapshotId) }))
    .catch((error) => ({ error: ec2Error(error, `DescribeSnapshots in ${facts.region}`) }));
  if ('error' in described) {
    checks.push(failed('snapshots', messageOf(described.error)));
    return { checks, restoreSeconds: null, environment: { type: 'ebs-volumes', removed: true }, timings };
  }
  const byId = new Map((described.Snapshots ?? []).map((s) => [s.SnapshotId, s]));
  for (const s of facts.snapshots) {
    const snap = byId.get(s.snapshotId)!;
    const tags = Object.fromEntries((snap.Tags ?? []).map((tag) => [tag.Key, tag.Value]));
    const problems = [
      snap.State !== 'completed' ? `state ${snap.State}` : '',
      tags[tagKeys.backupId] !== manifest.id
        ? `tag ${tagKeys.backupId} is '${tags[tagKeys.backupId] ?? ''}'`
        : '',
      tags[tagKeys.set] !== manifest.set ? `tag ${tagKeys.set} is '${tags[tagKeys.set] ?? ''}'` : '',
      snap.VolumeSize !== s.sizeGiB ? `${snap.VolumeSize} GiB, the manifest records ${s.sizeGiB}` : '',
    ].filter(Boolean);
    const label = `snapshot: ${s.snapshotId}${s.device ? ` (${s.device})` : ''}`;
    checks.push(
      problems.length
        ? failed(label, problems.join('; '))
        : passed(label, `completed, ${s.sizeGiB} GiB, tagged ${manifest.set}/${manifest.id}`),
    );
  }
  timings.snapshots = (performance.now() - t) / 1000;

  const made: string[] = [];
  const record = () => options.onLeftovers?.({ type: 'volumes', region: facts.region, volumeIds: [...made] });
  let restoreSeconds: number | null = null;
  t = performance.now();
  try {
    const ids = await createVolumes(
      ec2,
      facts.snapshots.map((s) => ({
        snapshotId: s.snapshotId,
        zone: options.zone ?? s.zone,
        tags: {
          [tagKeys.set]: manifest.set,
          [tagKeys.backupId]: manifest.id,
          'lifeboat:purpose': 'verify-restore',
        },
      })),
      (id) => {
        made.push(id);
        record();
      },
    );
    const volumes = await waitForVolumes(
      ec2,
      ids,
      (v) => v.State === 'available',
      'volumes from the snapshots',
      options,
    );
    restoreSeconds = (performance.now() - t) / 1000;
    for (const [i, s] of facts.snapshots.entries()) {
      const v = volumes.find((x) => x.VolumeId === ids[i])!;
      const problems = [
        v.Size !== s.sizeGiB ? `${v.Size} GiB, the manifest records ${s.sizeGiB}` : '',
        Boolean(v.Encrypted) !== s.encrypted
          ? `encrypted ${v.Encrypted}, the manifest records ${s.encrypted}`
          : '',
      ].filter(Boolean);
      const label = `volume: ${s.device || s.volumeId}`;
      checks.push(
        problems.length
          ? failed(label, problems.join('; '))
          : passed(
              label,
              `${v.VolumeId} from ${s.snapshotId} available in ${v.AvailabilityZone}: ${v.Size} GiB, ${v.Encrypted ? 'encrypted' : 'not encrypted'}`,
            ),
      );
    }
  } catch (error) {
    if (options.signal?.aborted || !(error instanceof UserError)) throw error;
    checks.push(failed('volumes from the snapshots', messageOf(error)));
  } finally {
    timings.restore = (performance.now() - t) / 1000;
    t = performance.now();
    const left = await deleteVolumes(ec2, made, logger);
    timings.teardown = (performance.now() - t) / 1000;
    if (left.length === 0) options.onLeftovers?.(undefined);
    made.splice(0, made.length, ...left);
  }
  return {
    checks,
    restoreSeconds,
    environment: {
      type: 'ebs-volumes',
      region: facts.region,
      volumes: made.length ? made : undefined,
      removed: made.length === 0,
    },
    timings,
  };
}

/** Deletes the volumes a killed verification left (the `post:` step). */
export async function removeEbsLeftovers(leftovers: EbsLeftovers, logger: Logger): Promise<void> {
  const left = await deleteVolumes(await ec2Client(leftovers.region), leftovers.volumeIds, logger);
  logger.info(`deleted ${leftovers.volumeIds.length - left.length} volume(s) left by verify-restore`);
}

import { parseBoolean, parseDuration, parseInteger } from '../action/inputs.ts';
import type { InputReader } from '../action/spec.ts';
import type { Manifest } from '../catalog/manifest.ts';
import { deleteSnapshots, snapshotsOf } from '../ebs/delete.ts';
import { restoreEbs } from '../ebs/restore.ts';
import { ebsFacts } from '../ebs/snapshot.ts';
import { type EbsLeftovers, removeEbsLeftovers, verifyEbs } from '../ebs/verify.ts';
import { defineKind, restoreOutputs } from './kind.ts';

const pollInput = (description: string) => ({ name: 'poll-interval', description, default: '5s' });
/** poll-interval, in ms. */
export const parsePollInterval = (read: InputReader) =>
  parseDuration('poll-interval', read('poll-interval'), '5s') * 1000;

/**
 * What the anomaly gates compare of an EBS backup: the volumes snapshotted and each one's size
 * ('volume-bytes:<volume id>').
 */
export function ebsMetrics(manifest: Manifest): Record<string, number> {
  const { snapshots } = ebsFacts(manifest);
  const metrics: Record<string, number> = { volumes: snapshots.length };
  for (const s of snapshots) {
    if (typeof s?.volumeId === 'string' && typeof s.sizeGiB === 'number')
      metrics[`volume-bytes:${s.volumeId}`] = s.sizeGiB * 2 ** 30;
  }
  return metrics;
}

export const ebsKind = defineKind({
  name: 'ebs',
  metrics: ebsMetrics,
  restore: {
    inputs: [
      {
        name: 'instance-id',
        description:
          "the instance whose zone the volumes go in and, with swap, that gets them (default: the backup's source instance).",
      },
      { name: 'zone', description: "the availability zone for the new volumes (default: the instance's)." },
      { name: 'volume-type', description: "the type of the new volumes (gp3, io2, …; default: EC2's)." },
      { name: 'iops', description: 'provisioned IOPS of the new volumes.' },
      { name: 'throughput', description: 'throughput (MiB/s) of new gp3 volumes.' },
      { name: 'kms-key-id', description: 'encrypt the new volumes with this KMS key.' },
      {
        name: 'swap',
        description:
          "detach the instance's volumes and attach the new ones at the same device names (rolled back if an attach fails); false only creates the volumes.",
        default: 'false',
      },
      {
        name: 'stop-instance',
        description:
          'with swap, stop the instance first and start it again afterwards (needed for the root volume).',
        default: 'false',
      },
      {
        name: 'delete-old-volumes',
        description: 'with swap, delete the replaced volumes (by default they are kept and tagged).',
        default: 'false',
      },
      pollInput('how often to ask EC2 about volume states.'),
    ],
    parse: (read, c) => ({
      instanceId: read('instance-id')?.trim() || undefined,
      zone: read('zone')?.trim() || undefined,
      volumeType: read('volume-type')?.trim() || undefined,
      iops: c.field(() => parseInteger('iops', read('iops'), { min: 100, max: 256_000 })),
      throughput: c.field(() => parseInteger('throughput', read('throughput'), { min: 125, max: 2000 })),
      kmsKeyId: read('kms-key-id')?.trim() || undefined,
      swap: c.field(() => parseBoolean('swap', read('swap'), false)),
      stopInstance: c.field(() => parseBoolean('stop-instance', read('stop-instance'), false)),
      deleteOldVolumes: c.field(() => parseBoolean('delete-old-volumes', read('delete-old-volumes'), false)),
      pollIntervalMs: c.field(() => parsePollInterval(read)),
    }),
    async run(options, manifest, context) {
      const { logger, signal, dryRun } = context;
      const result = await restoreEbs({ ...options, manifest, dryRun, logger, signal });
      const where = `${result.zone}${result.instanceId ? ` for ${result.instanceId}` : ''}`;
      logger.info(
        dryRun
          ? `dry run: ${result.volumes.length} volume(s) would be created in ${where}; nothing was changed`
          : `${result.volumes.length} volume(s) created in ${where}${result.swapped ? ', swapped in' : ''}`,
      );
      const { seconds, outputs, heading } = restoreOutputs(
        manifest,
        context,
        result.volumes.map((v) => v.volumeId).join(','),
        0,
        result,
      );
      return {
        outputs,
        summary: {
          heading,
          table: [
            ['Device', 'Snapshot', 'New volume', 'Replaced'],
            ...result.volumes.map((v) => [
              v.device || '-',
              v.snapshotId,
              v.volumeId || '(dry run)',
              v.replaced ?? '-',
            ]),
          ],
          notes: [
            `In ${where}; ${result.swapped ? `swapped in; the replaced volumes were ${result.oldVolumesDeleted ? 'deleted' : 'kept and tagged lifeboat:replaced-by'}` : 'not attached (swap: false)'}; ${seconds.toFixed(1)} s.`,
          ],
        },
      };
    },
  },
  verify: {
    checks: 'a volume from each snapshot',
    inputs: [
      {
        name: 'zone',
        description:
          "the availability zone to create the test volumes in (default: each snapshot's source zone).",
      },
      pollInput('how often to ask EC2 whether the volumes are available.'),
    ],
    parse: (read, c) => ({
      zone: read('zone')?.trim() || undefined,
      pollIntervalMs: c.field(() => parsePollInterval(read)),
    }),
    run(options, manifest, { logger, signal, leftovers, uri }) {
      logger.info(`verifying ${uri} (ebs, taken ${manifest.startedAt}): a volume from each snapshot`);
      return verifyEbs({ ...options, manifest, onLeftovers: (state) => leftovers?.(state), logger, signal });
    },
    leftovers: {
      types: ['volumes'],
      remove: (state, _read, logger) => removeEbsLeftovers(state as EbsLeftovers, logger),
    },
  },
  prune: {
    // The data are EC2 snapshots (and their copies in other regions): deleted with the backup.
    outside: {
      report: 'snapshots',
      of: (manifest) => snapshotsOf(ebsFacts(manifest)),
      async remove(refs, { set, logger }) {
        const snapshots = refs.flatMap((r) => r.ref);
        const result = await deleteSnapshots(snapshots, logger);
        if (snapshots.length) {
          logger.info(
            `${set}: deleted ${result.deleted.length} EBS snapshot(s)${result.kept.length ? `, kept ${result.kept.length} that EC2 would not delete (in use by an AMI or locked)` : ''}`,
          );
        }
        return result;
      },
    },
  },
});

import { InputCollector, parseBoolean, parseDuration } from '../action/inputs.ts';
import { defineCommand } from '../action/spec.ts';
import { type AnomalyOptions, checkAnomalies, notCompared } from '../anomaly/run.ts';
import { Catalog } from '../catalog/catalog.ts';
import { regionOf } from '../ebs/ec2.ts';
import { type EbsSnapshotOptions, snapshotEbs, type VolumeSelection } from '../ebs/snapshot.ts';
import { UserError } from '../errors.ts';
import { ebsMetrics } from '../kinds/ebs.ts';
import { splitList } from '../pipeline/encryption.ts';
import type { Storage } from '../storage/storage.ts';
import {
  anomalyInputs,
  anomalyOutputSpecs,
  backupStays,
  backupUri,
  lockInputs,
  lockRows,
  parseAnomalyOptions,
  parseBackupStorage,
  parseLock,
  parseSet,
  parseTimeout,
  setInput,
  timeoutInput,
  withAnomalies,
} from './common.ts';

interface Options extends Omit<EbsSnapshotOptions, 'logger' | 'signal' | 'storage'> {
  storage?: Storage;
  timeoutSeconds: number;
  anomaly: AnomalyOptions;
}

/** `key=value` pairs, comma or newline separated, into a map; `input` names them in errors. */
export function parseTagPairs(input: string, value: string | undefined): Record<string, string> {
  const tags: Record<string, string> = {};
  for (const pair of splitList(value)) {
    const eq = pair.indexOf('=');
    const key = eq > 0 ? pair.slice(0, eq).trim() : '';
    if (!key)
      throw new UserError(`${input}: '${pair}' is not accepted; accepted: key=value pairs, e.g. team=db`);
    if (key.toLowerCase().startsWith('aws:'))
      throw new UserError(`${input}: '${key}': tag keys starting with aws: are reserved by AWS`);
    tags[key] = pair.slice(eq + 1).trim();
  }
  return tags;
}

const volumeIdPattern = /^vol-[0-9a-f]{8,17}$/;

function parseSelection(read: (name: string) => string | undefined): VolumeSelection {
  const volumeIds = splitList(read('volume-ids'));
  const instanceId = read('instance-id')?.trim();
  const filters = parseTagPairs('volume-filters', read('volume-filters'));
  const excludeBootVolume = parseBoolean('exclude-boot-volume', read('exclude-boot-volume'), false);
  const given = [volumeIds.length > 0, Boolean(instanceId), Object.keys(filters).length > 0].filter(
    Boolean,
  ).length;
  if (given !== 1) {
    throw new UserError(
      `volume-ids, instance-id, volume-filters: give exactly one way to select volumes (${given === 0 ? 'none given' : 'more than one given'})`,
    );
  }
  if (instanceId) {
    if (!/^i-[0-9a-f]{8,17}$/.test(instanceId))
      throw new UserError(`instance-id: '${instanceId}' is not an instance id such as i-0123456789abcdef0`);
    return {
      by: 'instance-id',
      instanceId,
      excludeBootVolume,
    };
  }
  if (volumeIds.length) {
    const bad = volumeIds.find((v) => !volumeIdPattern.test(v));
    if (bad) throw new UserError(`volume-ids: '${bad}' is not a volume id such as vol-0123456789abcdef0`);
    if (excludeBootVolume) throw new UserError('exclude-boot-volume: only used with instance-id');
    return { by: 'volume-ids', volumeIds };
  }
  return { by: 'volume-filters', filters };
}

export const snapshotEbsCommand = defineCommand<Options>({
  name: 'snapshot-ebs',
  description:
    'Snapshot EBS volumes as one backup (an instance crash-consistently, or chosen volumes), tagged, waited for, optionally copied to other regions, with a manifest in the catalog.',
  inputs: [
    {
      name: 'storage',
      description:
        "Where the manifest goes (as for every backup: a folder, s3://, gs://, azblob://). Without it, the snapshots' tags alone identify the set.",
    },
    ...lockInputs.map((input) =>
      input.name === 'lock-for'
        ? {
            ...input,
            description:
              "Write the manifest (and the verification records verify-restore adds) under a retention lock for this long from the backup's start, e.g. 30d (needs storage; S3 Object Lock, or a folder's chattr +i as root; refused on GCS and Azure). It keeps the catalog entry, and so prune-retention's deletion of its snapshots, from anyone with this job's storage credentials; the EBS snapshots themselves are not locked (whoever may call ec2:DeleteSnapshot can still delete them).",
          }
        : input,
    ),
    setInput,
    { name: 'region', description: 'The AWS region of the volumes (default: AWS_REGION).' },
    { name: 'volume-ids', description: 'Volumes to snapshot, comma or newline separated (vol-…).' },
    {
      name: 'instance-id',
      description: "Snapshot all of this instance's volumes in one crash-consistent CreateSnapshots call.",
    },
    {
      name: 'exclude-boot-volume',
      description: 'With instance-id: leave out the root volume.',
      default: 'false',
    },
    {
      name: 'volume-filters',
      description: 'Snapshot the volumes with these tags, key=value pairs (all must match).',
    },
    { name: 'tags', description: 'Tags for every snapshot and copy, key=value pairs, comma separated.' },
    {
      name: 'pre-command',
      description:
        'A bash command run before the snapshots (e.g. stop the mirror); no snapshot is taken if it fails.',
    },
    {
      name: 'post-command',
      description:
        'A bash command run right after the snapshot call (e.g. start the mirror again), also when it failed.',
    },
    {
      name: 'wait',
      description:
        'Wait until every snapshot is completed, printing their progress (needed for copy-to-regions).',
      default: 'true',
    },
    { name: 'copy-to-regions', description: 'Copy every snapshot to these regions, comma separated.' },
    { name: 'kms-key-id', description: 'With copy-to-regions: the KMS key to encrypt the copies with.' },
    { name: 'poll-interval', description: 'How often to ask EC2 for snapshot progress.', default: '15s' },
    ...anomalyInputs,
    timeoutInput('2h'),
  ],
  outputs: [
    { name: 'backup-id', description: 'The id of the backup (also the lifeboat:backup-id tag).' },
    { name: 'uri', description: 'The URL of the backup folder in the catalog (empty without storage).' },
    { name: 'snapshot-ids', description: 'JSON: volume id → snapshot id.' },
    { name: 'duration-seconds', description: 'How long it took.' },
    { name: 'result', description: 'The snapshots, devices, zones, sizes and copies, as JSON.' },
    ...anomalyOutputSpecs,
  ],
  parse(read) {
    const c = new InputCollector();
    const options: Options = {
      storage: read('storage')?.trim()
        ? parseBackupStorage(read, c)
        : c.field(() => {
            if (parseLock(read))
              throw new UserError('lock-for: locks the manifest in storage; give storage too');
            return undefined;
          }),
      set: c.field(() => parseSet(read)),
      region: c.field(() => regionOf(read('region'))),
      selection: c.field(() => parseSelection(read)),
      tags: c.field(() => parseTagPairs('tags', read('tags'))),
      preCommand: read('pre-command')?.trim() || undefined,
      postCommand: read('post-command')?.trim() || undefined,
      wait: c.field(() => parseBoolean('wait', read('wait'), true)),
      copyToRegions: c.field(() => splitList(read('copy-to-regions')).map((r) => regionOf(r))),
      kmsKeyId: read('kms-key-id')?.trim() || undefined,
      pollIntervalMs: c.field(() => parseDuration('poll-interval', read('poll-interval'), '15s') * 1000),
      timeoutSeconds: c.field(() => parseTimeout(read, '2h')),
      anomaly: parseAnomalyOptions(read, c, { minRows: false }),
    };
    if (options.kmsKeyId && read('copy-to-regions') === undefined)
      c.field(() => {
        throw new UserError('kms-key-id: only used with copy-to-regions');
      });
    c.finish();
    return options;
  },
  async execute(options, { logger, signal }) {
    const started = Date.now();
    const result = await snapshotEbs({ ...options, logger, signal });
    const seconds = (Date.now() - started) / 1000;
    const uri = options.storage ? backupUri(options.storage, options.set, result.id) : '';
    const { snapshots } = result.facts;
    logger.info(
      `${options.wait ? 'completed' : 'started'}: ${snapshots.length} snapshot(s) of ${options.set}/${result.id}${uri ? `, committed ${uri}` : ' (no storage: identified by tags)'}`,
    );
    const gates =
      options.storage && result.manifest
        ? await checkAnomalies(options.anomaly, {
            catalog: new Catalog(options.storage),
            manifest: result.manifest,
            metrics: ebsMetrics,
            logger,
          })
        : notCompared(options.anomaly, 'no storage, so no catalog of earlier backups');
    return withAnomalies(
      {
        outputs: {
          'backup-id': result.id,
          uri,
          'snapshot-ids': JSON.stringify(
            Object.fromEntries(snapshots.map((s) => [s.volumeId, s.snapshotId])),
          ),
          'duration-seconds': seconds.toFixed(1),
          result: JSON.stringify(result.facts),
        },
        summary: {
          heading: `EBS backup ${options.set}/${result.id}`,
          table: [
            ['Volume', 'Device', 'Zone', 'Size', 'Snapshot', 'State', 'Copies'],
            ...snapshots.map((s) => [
              s.volumeId,
              s.device || '-',
              s.zone,
              `${s.sizeGiB} GiB`,
              s.snapshotId,
              s.state,
              s.copies.map((c) => `${c.region}: ${c.snapshotId}`).join(', ') || '-',
            ]),
          ],
          notes: [
            `${options.region}; ${uri ? `manifest at ${uri}` : 'no storage given: the snapshots are found by their lifeboat:set and lifeboat:backup-id tags'}; ${seconds.toFixed(1)} s.`,
            ...(result.manifest
              ? lockRows(result.manifest).map((row) => `${row.join(': ')} (the manifest; not the snapshots).`)
              : []),
          ],
        },
      },
      gates,
      backupStays(options.set, result.id),
    );
  },
});

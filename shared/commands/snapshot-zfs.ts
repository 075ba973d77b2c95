import { InputCollector, parseBoolean, parseInteger } from '../action/inputs.ts';
import { defineCommand } from '../action/spec.ts';
import { type AnomalyOptions, checkAnomalies, notCompared } from '../anomaly/run.ts';
import { Catalog } from '../catalog/catalog.ts';
import { UserError } from '../errors.ts';
import { zfsMetrics } from '../kinds/zfs.ts';
import { splitList } from '../pipeline/encryption.ts';
import { formatBytes } from '../pipeline/progress.ts';
import { bucketRules } from '../retention/calendar.ts';
import { hasKeepRule, type RetentionPolicy } from '../retention/plan.ts';
import { withRetentionLock } from '../storage/locking.ts';
import { openStorage } from '../storage/open.ts';
import type { Storage } from '../storage/storage.ts';
import { checkDatasets, snapshotZfs, type ZfsSnapshotOptions } from '../zfs/snapshot.ts';
import {
  anomalyInputs,
  anomalyOutputSpecs,
  artifactInputs,
  backupStays,
  backupUri,
  lockInputs,
  parseAnomalyOptions,
  parseArtifactOptions,
  parseLock,
  parseProgress,
  parseSet,
  parseStorage,
  parseTimeout,
  progressInput,
  setInput,
  timeoutInput,
  withAnomalies,
} from './common.ts';
import { countRules, parseKeepRules } from './prune-retention.ts';

interface Options extends Omit<ZfsSnapshotOptions, 'logger' | 'signal' | 'storage'> {
  storage?: Storage;
  progressIntervalMs: number;
  timeoutSeconds: number;
  anomaly: AnomalyOptions;
}

/** `70%` or `70`: a whole percentage from 1 to 100. */
function parsePercent(name: string, value: string | undefined): number | undefined {
  const v = value?.trim();
  if (!v) return undefined;
  return parseInteger(name, v.replace(/%$/, ''), { min: 1, max: 100 });
}

export const snapshotZfsCommand = defineCommand<Options>({
  name: 'snapshot-zfs',
  description:
    'Snapshot ZFS datasets as one backup (recursive, tagged with lifeboat:set and lifeboat:backup-id user properties, held), with a manifest in the catalog and local retention of the set on the host.',
  inputs: [
    {
      name: 'storage',
      description:
        "Where the manifest goes (as for every backup: a folder, s3://, gs://, azblob://); the snapshots stay on the host. Without it, the snapshots' lifeboat:set and lifeboat:backup-id properties alone identify the set.",
    },
    {
      name: 'send-to',
      description:
        "Off-site: also stream each snapshot (zfs send: full the first time, then incremental from the newest backup of the set there whose snapshot is still on this host) through compression and age into this storage's catalog (a folder, s3://, gs://, azblob://), manifest last. Given instead of storage: its manifests are the set's catalog.",
    },
    {
      name: 'send-index',
      description:
        "With send-to: clone each snapshot read-only and walk it, recording its file count, bytes and content sha256 in the manifest for verify-restore to compare (reads the data a second time; false: only the stream's guid and sha256 are checked).",
      default: 'true',
    },
    ...artifactInputs.map((input) =>
      input.name === 'tags' ? input : { ...input, description: `With send-to: ${input.description}` },
    ),
    ...lockInputs.map((input) => ({ ...input, description: `With send-to: ${input.description}` })),
    progressInput,
    setInput,
    {
      name: 'datasets',
      description: 'The ZFS datasets to snapshot, comma or newline separated, e.g. tank/db,tank/home.',
      required: true,
    },
    {
      name: 'recursive',
      description:
        'Snapshot every dataset below each given one too (zfs snapshot -r: atomic per given dataset).',
      default: 'true',
    },
    ...countRules.map((rule) => ({
      name: `keep-${rule}`,
      description: `Local retention (restic forget semantics, as prune-retention): keep-${rule} N of the set's snapshots on this host (unlimited: -1).`,
    })),
    {
      name: 'keep-within',
      description:
        "Local retention: keep every backup newer than the newest minus this duration (restic's units: y, m = months, d, h).",
    },
    ...bucketRules.map((rule) => ({
      name: `keep-within-${rule}`,
      description: `Local retention: keep-within-${rule} as in prune-retention (restic's units: y, m = months, d, h).`,
    })),
    {
      name: 'timezone',
      description: 'The IANA time zone the local retention counts hours, days, weeks, months and years in.',
      default: 'UTC',
    },
    {
      name: 'min-keep',
      description: 'Always keep at least the newest N backups on this host.',
      default: '1',
    },
    {
      name: 'max-pool-usage',
      description:
        "After the policy, while a pool is fuller than this (e.g. 70%), destroy the set's oldest snapshots (never the newest, min-keep, or ones held by others); a warning when it cannot be met.",
    },
    {
      name: 'hold',
      description:
        'Put the hold `lifeboat` on the snapshots the policy keeps (zfs destroy refuses them) and release it from those it drops.',
      default: 'true',
    },
    {
      name: 'dry-run',
      description: 'true: print the snapshots and the retention plan; take, hold and destroy nothing.',
      default: 'false',
    },
    ...anomalyInputs,
    timeoutInput('1h'),
  ],
  outputs: [
    { name: 'backup-id', description: 'The id of the backup (also the lifeboat:backup-id property).' },
    { name: 'uri', description: 'The URL of the backup folder in the catalog (empty without storage).' },
    { name: 'snapshots', description: 'JSON: the snapshots taken (full names).' },
    { name: 'destroyed', description: 'JSON: the snapshots local retention destroyed.' },
    { name: 'sent-bytes', description: 'With send-to: the bytes of the streams stored.' },
    { name: 'duration-seconds', description: 'How long it took.' },
    { name: 'result', description: 'The snapshots and the local retention report, as JSON.' },
    ...anomalyOutputSpecs,
  ],
  parse(read) {
    const c = new InputCollector();
    const policy: RetentionPolicy = {
      ...parseKeepRules(read, c),
      tags: [],
      keepVerified: 0,
      minKeep:
        c.field(() => parseInteger('min-keep', read('min-keep') || '1', { min: 1, max: 1_000_000 })) ?? 1,
      orphanGraceSeconds: 0,
    };
    const sendTo = read('send-to')?.trim();
    if (sendTo && read('storage')?.trim())
      c.field(() => {
        throw new UserError(
          'send-to: given with storage; give one: send-to stores the streams and their manifests (the catalog of the set), storage only manifests of snapshots that stay on the host',
        );
      });
    const sendIndex = c.field(() => parseBoolean('send-index', read('send-index'), true));
    const artifacts = sendTo ? parseArtifactOptions(read, c) : undefined;
    // What only a send uses is refused without one, rather than silently ignored.
    const sendOnly = ['compression-level', 'age-recipients', 'age-passphrase'].filter((n) => read(n)?.trim());
    if (!sendTo && (sendOnly.length || (read('compression')?.trim() || 'zstd') !== 'zstd'))
      c.field(() => {
        throw new UserError(
          `${sendOnly[0] ?? 'compression'}: needs send-to (the snapshots on the host are neither compressed nor encrypted by Lifeboat)`,
        );
      });
    const lock = c.field(() => parseLock(read));
    if (lock && !sendTo)
      c.field(() => {
        throw new UserError('lock-for: needs send-to (the snapshots on the host are protected by holds)');
      });
    const sendStorage = sendTo ? c.field(() => openStorage(sendTo)) : undefined;
    const options: Options = {
      storage: read('storage')?.trim() ? c.field(() => parseStorage(read)) : undefined,
      ...(sendStorage && artifacts
        ? {
            sendTo: {
              storage: lock ? withRetentionLock(sendStorage, lock) : sendStorage,
              compression: artifacts.compression,
              compressionLevel: artifacts.compressionLevel,
              encryption: artifacts.encryption,
              index: sendIndex ?? true,
            },
          }
        : {}),
      tags: splitList(read('tags')),
      progressIntervalMs: c.field(() => parseProgress(read)),
      set: c.field(() => parseSet(read)),
      datasets: c.field(() => checkDatasets(splitList(read('datasets')))),
      recursive: c.field(() => parseBoolean('recursive', read('recursive'), true)),
      // No keep rule: local retention keeps everything (max-pool-usage may still destroy).
      policy: hasKeepRule(policy) ? policy : undefined,
      maxPoolUsage: c.field(() => parsePercent('max-pool-usage', read('max-pool-usage'))),
      hold: c.field(() => parseBoolean('hold', read('hold'), true)),
      dryRun: c.field(() => parseBoolean('dry-run', read('dry-run'), false)),
      timeoutSeconds: c.field(() => parseTimeout(read, '1h')),
      anomaly: parseAnomalyOptions(read, c, { minRows: false }),
    };
    c.finish();
    return options;
  },
  async execute(options, { logger, signal }) {
    const started = Date.now();
    const sendTo = options.sendTo && { ...options.sendTo, progressIntervalMs: options.progressIntervalMs };
    const result = await snapshotZfs({ ...options, ...(sendTo ? { sendTo } : {}), logger, signal });
    const seconds = (Date.now() - started) / 1000;
    const catalogStorage = options.sendTo?.storage ?? options.storage;
    const uri = catalogStorage && !result.dryRun ? backupUri(catalogStorage, options.set, result.id) : '';
    const sent = result.manifest?.artifacts ?? [];
    const { retention } = result;
    const taken = result.facts.snapshots.map((s) => s.snapshot);
    logger.info(
      result.dryRun
        ? `dry run: nothing taken, held or destroyed; ${retention.backups.filter((b) => !b.keep).length} backup(s) would be destroyed`
        : `${taken.length} snapshot(s) of ${options.set}/${result.id}${uri ? `, committed ${uri}` : ' (no storage: identified by properties)'}; local retention destroyed ${retention.destroyed.length} snapshot(s)`,
    );
    const gates =
      catalogStorage && result.manifest && !result.dryRun
        ? await checkAnomalies(options.anomaly, {
            catalog: new Catalog(catalogStorage),
            manifest: result.manifest,
            metrics: zfsMetrics,
            logger,
          })
        : notCompared(
            options.anomaly,
            result.dryRun ? 'a dry run' : 'no storage, so no catalog of earlier backups',
          );
    const verb = (keep: boolean) => (keep ? 'keep' : result.dryRun ? 'would destroy' : 'destroyed');
    return withAnomalies(
      {
        outputs: {
          'backup-id': result.id,
          uri,
          snapshots: JSON.stringify(taken),
          'sent-bytes': String(sent.reduce((n, a) => n + a.bytes, 0)),
          destroyed: JSON.stringify(retention.destroyed),
          'duration-seconds': seconds.toFixed(1),
          result: JSON.stringify({ facts: result.facts, retention }),
        },
        summary: {
          heading: `ZFS backup ${options.set}/${result.id}${result.dryRun ? ' (dry run)' : ''}`,
          table: [
            ['Backup', 'Decision', 'Why', 'Snapshots', 'Used'],
            ...retention.backups.map((b) => [
              b.id,
              b.notDestroyed.length ? `kept ${b.notDestroyed.length} (held by others)` : verb(b.keep),
              b.keep ? b.reasons.join(', ') : (b.deleteReason ?? ''),
              String(b.snapshots.length),
              formatBytes(b.bytes),
            ]),
          ],
          notes: [
            ...(sent.length
              ? [
                  `sent ${sent.length} stream(s), ${formatBytes(sent.reduce((n, a) => n + a.bytes, 0))} stored (${result.manifest?.parent ? `incremental from ${result.manifest.parent}` : 'full'}).`,
                ]
              : []),
            `${result.dryRun ? 'dry run: nothing was taken, held, destroyed or written' : uri ? `manifest at ${uri}` : 'no storage given: the snapshots are found by their lifeboat:set and lifeboat:backup-id properties'}; ${seconds.toFixed(1)} s.`,
            ...retention.pools.map(
              (p) =>
                `${p.pool}: ${p.capacity}% used (max-pool-usage ${p.limit}%${p.met ? '' : ', not met'}).`,
            ),
            ...retention.warnings,
          ],
        },
      },
      gates,
      backupStays(options.set, result.id),
    );
  },
});

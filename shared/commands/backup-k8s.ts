import path from 'node:path';
import { pathToFileURL } from 'node:url';
import {
  InputCollector,
  parseAutoBoolean,
  parseChoice,
  parseDuration,
  parseInteger,
  warnInput,
} from '../action/inputs.ts';
import { defineCommand, type InputReader } from '../action/spec.ts';
import type { AnomalyOptions } from '../anomaly/run.ts';
import { totalBytes } from '../catalog/manifest.ts';
import { UserError } from '../errors.ts';
import { backupK8s, type K8sBackupOptions, type K8sFacts, k8sModes } from '../k8s/backup.ts';
import { KubeClient } from '../k8s/client.ts';
import { veleroDefaultTtl, veleroRootFolders } from '../k8s/velero-layout.ts';
import { k8sMetrics } from '../kinds/k8s.ts';
import { splitList } from '../pipeline/encryption.ts';
import { formatBytes } from '../pipeline/progress.ts';
import { openStorage } from '../storage/open.ts';
import { parseStorageUrl, type StorageLocation } from '../storage/url.ts';
import {
  anomalyInputs,
  anomalyOutputSpecs,
  artifactInputs,
  backupOutputs,
  backupUri,
  type CommonOptions,
  gateBackup,
  lockInputs,
  lockRows,
  parseAnomalyOptions,
  parseArtifactOptions,
  parseBackupStorage,
  parseProgress,
  parseSet,
  parseTimeout,
  progressInput,
  setInput,
  storageInput,
  timeoutInput,
} from './common.ts';

interface Options
  extends CommonOptions,
    Omit<K8sBackupOptions, 'client' | 'logger' | 'signal' | 'storage' | 'progressIntervalMs'> {
  kubeconfig?: string;
  context?: string;
  anomaly: AnomalyOptions;
}

export const backupK8sCommand = defineCommand<Options>({
  name: 'backup-k8s',
  description:
    "Back up a Kubernetes cluster's resources in Velero's archive layout (each object as the server returned it), compressed and optionally encrypted, with counts per resource and namespace.",
  inputs: [
    storageInput,
    setInput,
    {
      name: 'kubeconfig',
      description: 'A kubeconfig file (default: KUBECONFIG, ~/.kube/config, or in-cluster).',
    },
    { name: 'context', description: "The kubeconfig context (default: the file's current context)." },
    {
      name: 'mode',
      description:
        'exclude-storage (resources only), full (resources and a CSI snapshot of every PVC) or only-storage (the PVC snapshots, with the PVCs and snapshot objects needed to restore them).',
      default: 'exclude-storage',
    },
    {
      name: 'include-namespaces',
      description: 'Namespaces to back up, globs, comma separated (default: all).',
    },
    { name: 'exclude-namespaces', description: 'Namespaces to leave out, globs, comma separated.' },
    {
      name: 'include-resources',
      description: 'Resource types to back up, e.g. deployments.apps, configmaps (default: all).',
    },
    {
      name: 'exclude-resources',
      description: 'Resource types to leave out, e.g. events, events.events.k8s.io.',
    },
    {
      name: 'label-selector',
      description: 'Only objects matching this label selector, e.g. app=shop,tier!=cache.',
    },
    {
      name: 'include-cluster-resources',
      description:
        'auto (all when every namespace is included; with a namespace filter only the CRDs of its custom resources and the PVs its PVCs are bound to, as Velero), true (all) or false (none).',
      default: 'auto',
    },
    ...artifactInputs,
    ...lockInputs,
    {
      name: 'volume-snapshot-class',
      description: 'full / only-storage: the CSI VolumeSnapshotClass to snapshot the PVCs with.',
    },
    {
      name: 'poll-interval',
      description: 'full / only-storage: how often to check whether the snapshots are ready.',
      default: '2s',
    },
    { name: 'page-size', description: 'Objects per list request.', default: '500' },
    {
      name: 'velero-storage',
      description:
        "Also write the backup as Velero stores one, in the same pass, to the bucket and prefix a Velero BackupStorageLocation points at (s3://bucket/prefix, gs://…, azblob://…, a folder): backups/<name>/ with <name>.tar.gz, <name>-resource-list.json.gz and velero-backup.json (written last), so that Velero's backup sync lists it and velero restore restores it. <name> is the set and backup id as a Kubernetes name. Not encrypted (Velero cannot read age). Credentials as for storage; it must not overlap storage. prune-retention deletes it with the backup.",
    },
    {
      name: 'velero-storage-location',
      description: "velero-storage: the BackupStorageLocation's name, for the Backup's spec.storageLocation.",
      default: 'default',
    },
    {
      name: 'velero-ttl',
      description:
        "velero-storage: the Backup's TTL; once it has passed, Velero's garbage collection deletes the Velero copy (Lifeboat's backup stays). Velero's default is 720h.",
      default: veleroDefaultTtl,
    },
    ...anomalyInputs,
    timeoutInput('2h'),
    progressInput,
  ],
  outputs: [
    ...backupOutputs('archive', 'The manifest, as JSON (counts per resource and namespace).'),
    { name: 'velero-backup', description: 'velero-storage: the name of the Velero backup written.' },
    ...anomalyOutputSpecs,
  ],
  parse(read) {
    const c = new InputCollector();
    const options: Options = {
      storage: parseBackupStorage(read, c),
      set: c.field(() => parseSet(read)),
      mode: c.field(() => parseChoice('mode', read('mode'), [...k8sModes], 'exclude-storage')),
      volumeSnapshotClass: read('volume-snapshot-class')?.trim() || undefined,
      pollIntervalMs: c.field(() => parseDuration('poll-interval', read('poll-interval'), '2s') * 1000),
      kubeconfig: read('kubeconfig')?.trim() || undefined,
      context: read('context')?.trim() || undefined,
      filters: {
        includeNamespaces: splitList(read('include-namespaces')),
        excludeNamespaces: splitList(read('exclude-namespaces')),
        includeResources: splitList(read('include-resources')),
        excludeResources: splitList(read('exclude-resources')),
        labelSelector: read('label-selector')?.trim() || undefined,
        includeClusterResources: c.field(() =>
          parseAutoBoolean('include-cluster-resources', read('include-cluster-resources')),
        ),
      },
      ...parseArtifactOptions(read, c),
      pageSize: c.field(() => parseInteger('page-size', read('page-size'), { min: 1, max: 10_000 }) ?? 500),
      timeoutSeconds: c.field(() => parseTimeout(read, '2h')),
      progressIntervalMs: c.field(() => parseProgress(read)),
      velero: c.field(() => parseVelero(read)),
      anomaly: parseAnomalyOptions(read, c, { minRows: false }),
    };
    if (options.velero && options.mode && options.mode !== 'exclude-storage') {
      warnInput(
        read,
        `velero-storage: with mode ${options.mode} the Velero copy holds the resources, but Velero does not restore the volumes from Lifeboat's CSI snapshots (Lifeboat's restore does)`,
      );
    }
    if (options.mode && options.mode !== 'exclude-storage' && !options.volumeSnapshotClass) {
      c.field(() => {
        throw new UserError(
          `volume-snapshot-class: required with mode ${options.mode} (the CSI VolumeSnapshotClass to snapshot the PVCs with)`,
        );
      });
    }
    c.finish();
    return options;
  },
  async execute(options, { logger, signal }) {
    const started = Date.now();
    const client = await KubeClient.open(options.kubeconfig, options.context);
    const manifest = await backupK8s({ ...options, client, logger, signal });
    const seconds = (Date.now() - started) / 1000;
    const artifact = manifest.artifacts[0]!;
    const facts = manifest.facts as unknown as K8sFacts;
    const uri = backupUri(options.storage, manifest.set, manifest.id);
    logger.info(
      `committed ${uri}: ${facts.counts.total} objects (${formatBytes(totalBytes(manifest))} stored)`,
    );
    const byResource = Object.entries(facts.counts.byResource).sort((a, b) => b[1] - a[1]);
    return gateBackup(
      options.anomaly,
      { storage: options.storage, manifest, metrics: k8sMetrics, logger },
      {
        outputs: {
          'backup-id': manifest.id,
          uri,
          bytes: String(totalBytes(manifest)),
          sha256: artifact.sha256,
          'duration-seconds': seconds.toFixed(1),
          result: JSON.stringify(manifest),
          'velero-backup': facts.velero?.name ?? '',
        },
        summary: {
          heading: `Kubernetes backup ${manifest.set}/${manifest.id}`,
          table: [['Resource', 'Objects'], ...byResource.map(([r, n]) => [r, String(n)])],
          notes: [
            `${facts.counts.total} objects from ${facts.cluster.server} (${facts.cluster.version}), ${facts.namespaces.length} namespace(s); ${formatBytes(artifact.bytes)} stored (${artifact.compression}${artifact.encryption ? ', age-encrypted' : ', not encrypted'}); ${seconds.toFixed(1)} s.`,
            ...(facts.velero
              ? [
                  `Velero copy ${facts.velero.name} (not encrypted): backups/${facts.velero.name}/ in ${facts.velero.storage}, storage location ${facts.velero.storageLocation}; ${formatBytes(facts.velero.bytes)}; Velero deletes it after ${facts.velero.expiration}.`,
                ]
              : []),
            ...lockRows(manifest).map((row) => `${row.join(': ')}.`),
            ...(manifest.contents.excluded.length
              ? [`Left out: ${manifest.contents.excluded.join('; ')}`]
              : []),
          ],
        },
      },
    );
  },
});

/** A storage URL as recorded and reopened later: a folder as an absolute file:// URL. */
function canonicalUrl(location: StorageLocation): string {
  if (location.provider === 'fs') return pathToFileURL(location.root).href;
  const scheme = location.url.slice(0, location.url.indexOf('://'));
  return `${scheme}://${location.bucket}${location.prefix ? `/${location.prefix}` : ''}`;
}

/** Whether one location holds the other (the same, or one's prefix inside the other's). */
function overlaps(a: StorageLocation, b: StorageLocation): boolean {
  const inside = (outer: string, inner: string, sep: string) =>
    outer === '' || inner === outer || inner.startsWith(outer.endsWith(sep) ? outer : `${outer}${sep}`);
  if (a.provider === 'fs' && b.provider === 'fs') {
    const within = (outer: string, inner: string) => {
      const rel = path.relative(outer, inner);
      return rel === '' || (!rel.startsWith('..') && !path.isAbsolute(rel));
    };
    return within(a.root, b.root) || within(b.root, a.root);
  }
  if (a.provider === 'fs' || b.provider === 'fs') return false;
  if (a.provider !== b.provider || a.bucket !== b.bucket) return false;
  return inside(a.prefix, b.prefix, '/') || inside(b.prefix, a.prefix, '/');
}

const locationName = /^[a-z0-9]([-a-z0-9.]{0,61}[a-z0-9])?$/;

/** velero-storage, velero-storage-location and velero-ttl; undefined without velero-storage. */
function parseVelero(read: InputReader): Options['velero'] {
  const input = read('velero-storage')?.trim();
  const storageLocation = read('velero-storage-location')?.trim() || 'default';
  const ttlSeconds = parseDuration('velero-ttl', read('velero-ttl'), veleroDefaultTtl);
  if (!input) return undefined;
  if (!locationName.test(storageLocation)) {
    throw new UserError(
      `velero-storage-location: '${storageLocation}' is not a BackupStorageLocation name; accepted: 1-63 lowercase letters, digits, '-' and '.', starting and ending with a letter or digit (velero backup-location get lists them)`,
    );
  }
  let location: StorageLocation;
  try {
    location = parseStorageUrl(input);
  } catch (error) {
    throw new UserError(`velero-${(error as Error).message}`);
  }
  let lifeboat: StorageLocation | undefined;
  try {
    lifeboat = parseStorageUrl(read('storage') || './backups');
  } catch {
    // storage's own problem is reported by storage.
  }
  if (lifeboat && overlaps(location, lifeboat)) {
    throw new UserError(
      `velero-storage: '${location.url}' overlaps storage '${lifeboat.url}': a Velero backup storage location's root may hold only ${veleroRootFolders.map((d) => `${d}/`).join(', ')}, and Lifeboat would take Velero's folders for sets; give them different buckets or side-by-side prefixes (s3://bucket/lifeboat and s3://bucket/velero)`,
    );
  }
  return { storage: openStorage(canonicalUrl(location)), storageLocation, ttlSeconds };
}

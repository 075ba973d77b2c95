import { InputCollector, parseChoice, parseDuration, parseInteger } from '../action/inputs.ts';
import { defineCommand } from '../action/spec.ts';
import { totalBytes } from '../catalog/manifest.ts';
import { UserError } from '../errors.ts';
import { backupK8s, type K8sBackupOptions, type K8sFacts, k8sModes } from '../k8s/backup.ts';
import { KubeClient } from '../k8s/client.ts';
import { splitList } from '../pipeline/encryption.ts';
import { formatBytes } from '../pipeline/progress.ts';
import {
  artifactInputs,
  backupOutputs,
  backupUri,
  type CommonOptions,
  parseArtifactOptions,
  parseProgress,
  parseSet,
  parseStorage,
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
      description: 'auto (only when every namespace is included), true or false.',
      default: 'auto',
    },
    ...artifactInputs,
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
    timeoutInput('2h'),
    progressInput,
  ],
  outputs: backupOutputs('archive', 'The manifest, as JSON (counts per resource and namespace).'),
  parse(read) {
    const c = new InputCollector();
    const options: Options = {
      storage: c.field(() => parseStorage(read)),
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
        includeClusterResources: c.field(() => {
          const v = parseChoice(
            'include-cluster-resources',
            read('include-cluster-resources'),
            ['auto', 'true', 'false'],
            'auto',
          );
          return v === 'auto' ? 'auto' : v === 'true';
        }),
      },
      ...parseArtifactOptions(read, c),
      pageSize: c.field(() => parseInteger('page-size', read('page-size'), { min: 1, max: 10_000 }) ?? 500),
      timeoutSeconds: c.field(() => parseTimeout(read, '2h')),
      progressIntervalMs: c.field(() => parseProgress(read)),
    };
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
    return {
      outputs: {
        'backup-id': manifest.id,
        uri,
        bytes: String(totalBytes(manifest)),
        sha256: artifact.sha256,
        'duration-seconds': seconds.toFixed(1),
        result: JSON.stringify(manifest),
      },
      summary: {
        heading: `Kubernetes backup ${manifest.set}/${manifest.id}`,
        table: [['Resource', 'Objects'], ...byResource.map(([r, n]) => [r, String(n)])],
        notes: [
          `${facts.counts.total} objects from ${facts.cluster.server} (${facts.cluster.version}), ${facts.namespaces.length} namespace(s); ${formatBytes(artifact.bytes)} stored (${artifact.compression}${artifact.encryption ? ', age-encrypted' : ', not encrypted'}); ${seconds.toFixed(1)} s.`,
          ...(manifest.contents.excluded.length
            ? [`Left out: ${manifest.contents.excluded.join('; ')}`]
            : []),
        ],
      },
    };
  },
});

import * as tar from 'tar-stream';
import { Catalog } from '../catalog/catalog.ts';
import { type Manifest, manifestFormat } from '../catalog/manifest.ts';
import { UserError } from '../errors.ts';
import { globMatcher } from '../glob.ts';
import { artifactName, writeArtifact } from '../pipeline/artifact.ts';
import { Coalescer } from '../pipeline/buffers.ts';
import type { Compression } from '../pipeline/compression.ts';
import type { EncryptionKeys } from '../pipeline/encryption.ts';
import type { Logger } from '../pipeline/progress.ts';
import type { Storage } from '../storage/storage.ts';
import { version } from '../version.ts';
import { type KubeClient, KubeError } from './client.ts';
import { type ApiResource, collectionPath, discover, qualifiedName } from './discovery.ts';
import { compareForRestore } from './order.ts';
import { deleteVolumeSnapshots, snapshotVolumes, type VolumeSnapshotFact } from './volume-snapshots.ts';

/** Which objects a backup takes. Names are globs (`*`, `?`); resources are `deployments.apps` or `pods`. */
export interface K8sFilters {
  includeNamespaces: string[];
  excludeNamespaces: string[];
  includeResources: string[];
  excludeResources: string[];
  labelSelector?: string;
  /** auto: cluster-scoped resources only when every namespace is included (as Velero). */
  includeClusterResources: 'auto' | boolean;
}

export interface K8sBackupOptions {
  storage: Storage;
  set: string;
  client: KubeClient;
  filters: K8sFilters;
  compression: Compression;
  compressionLevel?: number;
  encryption?: EncryptionKeys;
  tags: string[];
  /** Objects per list page (Velero uses 500). */
  pageSize?: number;
  /** exclude-storage: resources only; full: resources and CSI snapshots of the PVCs; only-storage: the snapshots (and the PVCs and snapshot objects needed to restore them). */
  mode?: K8sMode;
  /** full / only-storage: the VolumeSnapshotClass to snapshot with. */
  volumeSnapshotClass?: string;
  pollIntervalMs?: number;
  logger: Logger;
  signal?: AbortSignal;
  progressIntervalMs?: number;
  now?: () => Date;
}

export const k8sModes = ['exclude-storage', 'full', 'only-storage'] as const;
export type K8sMode = (typeof k8sModes)[number];

/** What only-storage keeps besides the snapshots: what a restore of the volumes needs. */
const storageResources = [
  'namespaces',
  'persistentvolumeclaims',
  'volumesnapshots.snapshot.storage.k8s.io',
  'volumesnapshotcontents.snapshot.storage.k8s.io',
  'volumesnapshotclasses.snapshot.storage.k8s.io',
];

export interface K8sFacts {
  cluster: { server: string; version: string };
  filters: K8sFilters;
  /** Objects per resource (`deployments.apps`) and per namespace (`` for cluster-scoped). */
  counts: { byResource: Record<string, number>; byNamespace: Record<string, number>; total: number };
  namespaces: string[];
  /** API groups that were down during discovery: their resources are not in the backup. */
  unavailableApis: string[];
  /** full / only-storage: the CSI snapshots taken, one per PVC. */
  volumeSnapshots?: VolumeSnapshotFact[];
}

/** Labels that keep an object out of every backup: Lifeboat's own, and Velero's. */
export const optOutLabels = ['lifeboat.io/exclude-from-backup', 'velero.io/exclude-from-backup'];

/** Velero's backup format version, written to metadata/version so Velero can read the archive. */
export const veleroFormatVersion = '1.1.0';

type KubeObject = {
  apiVersion?: string;
  kind?: string;
  metadata?: { name?: string; namespace?: string; labels?: Record<string, string> };
};
type KubeList = { items: KubeObject[]; metadata?: { continue?: string } };

/** Whether a resource passes include-resources / exclude-resources (plain or qualified names). */
function resourceWanted(r: ApiResource, filters: K8sFilters): boolean {
  const names = [r.resource, qualifiedName(r)];
  const include = globMatcher(filters.includeResources);
  const exclude = globMatcher(filters.excludeResources);
  return (filters.includeResources.length === 0 || names.some(include)) && !names.some(exclude);
}

/**
 * Every object of a collection, page by page (`limit`/`continue`); when the continue token
 * has expired (410) the list starts again, and `seen` keeps objects already yielded from
 * being yielded twice.
 */
async function* listAll(
  client: KubeClient,
  path: string,
  query: Record<string, string>,
  pageSize: number,
  logger: Logger,
  signal?: AbortSignal,
): AsyncGenerator<KubeObject> {
  const seen = new Set<string>();
  let token: string | undefined;
  for (let restarts = 0; ; ) {
    const params = new URLSearchParams({
      ...query,
      limit: String(pageSize),
      ...(token ? { continue: token } : {}),
    });
    let page: KubeList;
    try {
      page = await client.get<KubeList>(`${path}?${params}`, signal);
    } catch (error) {
      if (error instanceof KubeError && error.code === 410 && restarts < 5) {
        restarts++;
        logger.warn(`${path}: the list's continue token expired (410); listing again from the start`);
        token = undefined;
        continue;
      }
      throw error;
    }
    for (const item of page.items) {
      const key = `${item.metadata?.namespace ?? ''}/${item.metadata?.name}`;
      if (seen.has(key)) continue;
      seen.add(key);
      yield item;
    }
    token = page.metadata?.continue || undefined;
    if (!token) return;
  }
}

/**
 * The object with its `apiVersion` and `kind` (first, as kubectl and Velero write them): a
 * real kube-apiserver lists items of built-in types without them (kubernetes#3030), and an
 * archived file without them cannot be applied with kubectl or read by Velero.
 */
function typed(obj: KubeObject, r: ApiResource): KubeObject {
  return { apiVersion: r.group ? `${r.group}/${r.version}` : r.version, kind: r.kind, ...obj };
}

/**
 * Backs up a cluster's resources the way Velero lays them out — `metadata/version`,
 * `resources/<resource>.<group>/namespaces/<ns>/<name>.json` and `.../cluster/<name>.json`
 * — each object exactly as the server returned it, streamed into one compressed (and
 * optionally encrypted) tar archive; the manifest records counts per resource and
 * namespace, the cluster version and the filters.
 */
export async function backupK8s(options: K8sBackupOptions): Promise<Manifest> {
  const { client, filters, logger } = options;
  const now = options.now ?? (() => new Date());
  const cluster = await client.get<{ gitVersion: string }>('/version', options.signal);
  const { resources, skipped } = await discover(client, logger, options.signal);
  const namespaceList = await client.get<KubeList>('/api/v1/namespaces', options.signal);
  const allNamespaces = namespaceList.items.map((n) => n.metadata!.name!);
  const everyNamespace =
    (filters.includeNamespaces.length === 0 || filters.includeNamespaces.includes('*')) &&
    filters.excludeNamespaces.length === 0;
  const includeNamespace = globMatcher(filters.includeNamespaces);
  const excludeNamespace = globMatcher(filters.excludeNamespaces);
  const namespaces = allNamespaces.filter(
    (n) => (filters.includeNamespaces.length === 0 || includeNamespace(n)) && !excludeNamespace(n),
  );
  if (namespaces.length === 0 && filters.includeNamespaces.length > 0) {
    throw new UserError(
      `include-namespaces: ${filters.includeNamespaces.join(', ')} matches no namespace; the cluster has: ${allNamespaces.join(', ')}`,
    );
  }
  const clusterScoped =
    filters.includeClusterResources === 'auto' ? everyNamespace : filters.includeClusterResources;
  // In restore order, so that a restore streams the archive in one pass.
  const mode = options.mode ?? 'exclude-storage';
  if (mode !== 'exclude-storage' && !options.volumeSnapshotClass)
    throw new UserError(`volume-snapshot-class: required with mode ${mode}`);
  const chosen = resources
    .filter((r) =>
      mode === 'only-storage' ? storageResources.includes(qualifiedName(r)) : resourceWanted(r, filters),
    )
    .sort((a, b) => compareForRestore(qualifiedName(a), qualifiedName(b)));
  if (!options.encryption && chosen.some((r) => r.resource === 'secrets' && r.group === '')) {
    logger.warn('Secrets are backed up without encryption: give age-recipients to encrypt the archive');
  }
  await options.storage.check();
  const catalog = new Catalog(options.storage);
  const started = now();
  const pending = await catalog.begin(options.set, mode, started);
  logger.info(
    `backup ${options.set}/${pending.id}: ${namespaces.length} namespace(s), ${chosen.length} resource type(s) from ${client.server} (${cluster.gitVersion}) → ${options.storage.url}`,
  );
  const counts: K8sFacts['counts'] = { byResource: {}, byNamespace: {}, total: 0 };
  let volumeSnapshots: VolumeSnapshotFact[] | undefined;
  if (mode !== 'exclude-storage') {
    try {
      volumeSnapshots = await snapshotVolumes({
        client,
        namespaces,
        labelSelector: filters.labelSelector,
        volumeSnapshotClass: options.volumeSnapshotClass!,
        labels: { 'lifeboat.io/set': options.set, 'lifeboat.io/backup-id': pending.id },
        pollIntervalMs: options.pollIntervalMs,
        logger,
        signal: options.signal,
      });
    } catch (error) {
      await catalog.abandon(pending).catch(() => {});
      throw error;
    }
  }
  const ours = new Set((volumeSnapshots ?? []).flatMap((v) => [`${v.namespace}/${v.snapshot}`, v.content]));
  const pack = tar.pack();
  // Objects are small: gather them into large chunks before compression.
  const archive = new Coalescer();
  pack.pipe(archive);
  const add = (name: string, text: string) =>
    new Promise<void>((resolve, reject) => {
      pack.entry({ name, mode: 0o644, mtime: started }, text, (error) => (error ? reject(error) : resolve()));
    });
  const selectedNamespaces = new Set(namespaces);
  const feed = async () => {
    await add('metadata/version', `${veleroFormatVersion}\n`);
    for (const r of chosen) {
      const snapshotObjects = r.group === 'snapshot.storage.k8s.io';
      if (
        !r.namespaced &&
        !clusterScoped &&
        r.resource !== 'namespaces' &&
        !(snapshotObjects && volumeSnapshots)
      )
        continue;
      const folder = `resources/${qualifiedName(r)}`;
      const query: Record<string, string> = filters.labelSelector
        ? { labelSelector: filters.labelSelector }
        : {};
      const paths =
        !r.namespaced || everyNamespace ? [collectionPath(r)] : namespaces.map((n) => collectionPath(r, n));
      for (const path of paths) {
        // Namespaces are taken whole for the selected ones, whatever the label selector.
        const pathQuery = r.resource === 'namespaces' && r.group === '' ? {} : query;
        for await (const obj of listAll(
          client,
          path,
          pathQuery,
          options.pageSize ?? 500,
          logger,
          options.signal,
        )) {
          const name = obj.metadata?.name ?? '';
          const ns = obj.metadata?.namespace;
          if (r.resource === 'namespaces' && r.group === '' && !selectedNamespaces.has(name)) continue;
          if (r.namespaced && !selectedNamespaces.has(ns ?? '')) continue;
          if (optOutLabels.some((label) => obj.metadata?.labels?.[label] === 'true')) continue;
          // With snapshots, only this backup's snapshot objects (and its class) go in.
          if (snapshotObjects && volumeSnapshots) {
            if (r.resource === 'volumesnapshots' && !ours.has(`${ns}/${name}`)) continue;
            if (r.resource === 'volumesnapshotcontents' && !ours.has(name)) continue;
            if (r.resource === 'volumesnapshotclasses' && name !== options.volumeSnapshotClass) continue;
          }
          await add(
            r.namespaced ? `${folder}/namespaces/${ns}/${name}.json` : `${folder}/cluster/${name}.json`,
            JSON.stringify(typed(obj, r)),
          );
          const q = qualifiedName(r);
          counts.byResource[q] = (counts.byResource[q] ?? 0) + 1;
          counts.byNamespace[ns ?? ''] = (counts.byNamespace[ns ?? ''] ?? 0) + 1;
          counts.total++;
        }
      }
    }
    pack.finalize();
  };
  const feeding = feed().catch((error) => {
    pack.destroy(error);
    archive.destroy(error);
    throw error;
  });
  const name = artifactName('resources.tar', options.compression, Boolean(options.encryption));
  let committed = false;
  try {
    const [artifact] = await Promise.all([
      writeArtifact(
        {
          storage: options.storage,
          key: pending.key(name),
          format: 'tar',
          source: archive,
          compression: options.compression,
          compressionLevel: options.compressionLevel,
          encryption: options.encryption,
          logger,
          label: 'archived',
          progressIntervalMs: options.progressIntervalMs,
          signal: options.signal,
        },
        name,
      ),
      feeding,
    ]);
    const facts: K8sFacts = {
      cluster: { server: client.server, version: cluster.gitVersion },
      filters,
      counts,
      namespaces,
      unavailableApis: skipped,
      ...(volumeSnapshots ? { volumeSnapshots } : {}),
    };
    const manifest: Manifest = {
      format: manifestFormat,
      id: pending.id,
      set: options.set,
      kind: 'k8s',
      mode,
      startedAt: started.toISOString(),
      finishedAt: now().toISOString(),
      tool: { name: 'lifeboat', version },
      source: { server: client.server, version: cluster.gitVersion, namespaces },
      artifacts: [artifact],
      contents: {
        included: [
          ...(volumeSnapshots
            ? [
                `${volumeSnapshots.length} CSI volume snapshot(s) of PVCs, class ${options.volumeSnapshotClass}`,
              ]
            : []),
          `${counts.total} objects of ${Object.keys(counts.byResource).length} resource types in ${namespaces.length} namespace(s)${clusterScoped ? ', with cluster-scoped resources' : ''}`,
        ],
        excluded: [
          ...(mode === 'exclude-storage' ? ['volume data (mode exclude-storage)'] : []),
          ...(mode === 'only-storage'
            ? ['every resource but the PVCs, their namespaces and the snapshot objects (mode only-storage)']
            : []),
          ...(clusterScoped ? [] : ['cluster-scoped resources (not every namespace is included)']),
          ...(filters.labelSelector
            ? [`objects not matching the label selector ${filters.labelSelector}`]
            : []),
          `objects labelled ${optOutLabels.map((l) => `${l}=true`).join(' or ')}`,
          ...skipped.map((api) => `${api}: its API was unavailable`),
        ],
      },
      facts: facts as unknown as Record<string, unknown>,
      tags: options.tags,
    };
    await catalog.commit(pending, manifest);
    committed = true;
    return manifest;
  } finally {
    if (!committed) {
      await catalog.abandon(pending).catch(() => {});
      if (volumeSnapshots)
        await deleteVolumeSnapshots(
          client,
          volumeSnapshots.map((v) => ({ name: v.snapshot, namespace: v.namespace })),
          logger,
        );
    }
  }
}

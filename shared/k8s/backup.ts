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
import { VeleroCopy, type VeleroCopyFacts, veleroFormatVersion } from './velero-layout.ts';
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
  /**
   * Also write the backup as Velero stores one, in the same pass, to the storage a Velero
   * BackupStorageLocation points at (see velero-layout.ts). It is not encrypted.
   */
  velero?: VeleroOptions;
}

export interface VeleroOptions {
  storage: Storage;
  /** The BackupStorageLocation's name, for the Backup's spec.storageLocation (default `default`). */
  storageLocation: string;
  /** When Velero's garbage collection may delete the copy. */
  ttlSeconds: number;
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
  /**
   * A namespace-filtered backup (include-cluster-resources auto): the cluster-scoped objects
   * its namespaced objects need, taken although cluster-scoped resources are otherwise left out.
   */
  needed?: { customResourceDefinitions: string[]; persistentVolumes: string[] };
  /** velero-storage: where the Velero copy is. */
  velero?: VeleroCopyFacts;
}

/** Labels that keep an object out of every backup: Lifeboat's own, and Velero's. */
export const optOutLabels = ['lifeboat.io/exclude-from-backup', 'velero.io/exclude-from-backup'];

/** Velero's backup format version, written to metadata/version so Velero can read the archive. */
export { veleroFormatVersion };

type KubeObject = {
  apiVersion?: string;
  kind?: string;
  metadata?: { name?: string; namespace?: string; labels?: Record<string, string> };
  spec?: { volumeName?: string };
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

const crdResource = 'customresourcedefinitions.apiextensions.k8s.io';
const isPersistentVolumes = (r: ApiResource) => r.group === '' && r.resource === 'persistentvolumes';
const isOptedOut = (obj: KubeObject) =>
  optOutLabels.some((label) => obj.metadata?.labels?.[label] === 'true');

/** The cluster-scoped objects a namespace-filtered backup's objects need, by resource type. */
interface Needed {
  /** The CRD type and the names of the CRDs needed (`widgets.example.com`), if any. */
  crds?: { type: ApiResource; names: Set<string> };
  /** The PV type and the names of the PVs the PVCs are bound to, if any. */
  pvs?: { type: ApiResource; names: Set<string> };
}

/**
 * What a namespace-filtered backup must add so that its objects restore into an empty cluster
 * (as Velero's include-cluster-resources auto): the CRD of every custom resource type that has
 * an object in the selected namespaces, and (exclude-storage; the other modes restore volumes
 * from snapshots) the PV each selected PVC is bound to (spec.volumeName). A pre-pass, because
 * the archive is in restore order and CRDs and PVs come before the namespaced objects. Only
 * exclude-resources can keep them out (include-resources and the label selector choose the
 * namespaced objects, as in Velero), and the opt-out labels.
 */
async function findNeeded(
  client: KubeClient,
  resources: ApiResource[],
  chosen: ApiResource[],
  namespaces: string[],
  options: K8sBackupOptions,
): Promise<Needed> {
  const { filters, logger, signal } = options;
  const pageSize = options.pageSize ?? 500;
  const excluded = globMatcher(filters.excludeResources);
  const allowed = (r: ApiResource) => ![r.resource, qualifiedName(r)].some(excluded);
  const query: Record<string, string> = filters.labelSelector ? { labelSelector: filters.labelSelector } : {};
  const inNamespaces = async function* (r: ApiResource) {
    for (const ns of namespaces)
      for await (const obj of listAll(client, collectionPath(r, ns), query, pageSize, logger, signal))
        if (!isOptedOut(obj)) yield obj;
  };
  const needed: Needed = {};
  const crdType = resources.find((r) => qualifiedName(r) === crdResource);
  if (crdType && allowed(crdType)) {
    const defined = new Set<string>();
    for await (const crd of listAll(client, collectionPath(crdType), {}, pageSize, logger, signal))
      defined.add(crd.metadata?.name ?? '');
    const names = new Set<string>();
    for (const r of chosen) {
      if (!r.namespaced || !defined.has(qualifiedName(r))) continue;
      for await (const _ of inNamespaces(r)) {
        names.add(qualifiedName(r));
        break;
      }
    }
    if (names.size) needed.crds = { type: crdType, names };
  }
  const pvType = resources.find(isPersistentVolumes);
  const pvcType = chosen.find((r) => r.group === '' && r.resource === 'persistentvolumeclaims');
  if ((options.mode ?? 'exclude-storage') === 'exclude-storage' && pvType && pvcType && allowed(pvType)) {
    const names = new Set<string>();
    for await (const pvc of inNamespaces(pvcType)) if (pvc.spec?.volumeName) names.add(pvc.spec.volumeName);
    if (names.size) needed.pvs = { type: pvType, names };
  }
  return needed;
}

/**
 * Backs up a cluster's resources the way Velero lays them out — `metadata/version`,
 * `resources/<resource>.<group>/namespaces/<ns>/<name>.json` and `.../cluster/<name>.json`
 * — each object exactly as the server returned it, streamed into one compressed (and
 * optionally encrypted) tar archive; the manifest records counts per resource and
 * namespace, the cluster version and the filters. With `velero`, the same objects stream in
 * the same pass into a Velero copy (velero-layout.ts), complete before the manifest commits.
 */
export async function backupK8s(options: K8sBackupOptions): Promise<Manifest> {
  const { client, filters, logger } = options;
  const now = options.now ?? (() => new Date());
  const cluster = await client.get<{ gitVersion: string; major?: string; minor?: string }>(
    '/version',
    options.signal,
  );
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
  const mode = options.mode ?? 'exclude-storage';
  if (mode !== 'exclude-storage' && !options.volumeSnapshotClass)
    throw new UserError(`volume-snapshot-class: required with mode ${mode}`);
  const chosen = resources.filter((r) =>
    mode === 'only-storage' ? storageResources.includes(qualifiedName(r)) : resourceWanted(r, filters),
  );
  // auto with a namespace filter: the CRDs and PVs the objects need; false means none (Velero).
  const addsNeeded = !clusterScoped && filters.includeClusterResources === 'auto' && mode !== 'only-storage';
  const needed = addsNeeded ? await findNeeded(client, resources, chosen, namespaces, options) : {};
  // In restore order, so that a restore streams the archive in one pass.
  const types = [
    ...new Set([...chosen, ...[needed.crds?.type, needed.pvs?.type].filter((r) => r !== undefined)]),
  ].sort((a, b) => compareForRestore(qualifiedName(a), qualifiedName(b)));
  const withSecrets = chosen.some((r) => r.resource === 'secrets' && r.group === '');
  if (!options.encryption && withSecrets) {
    logger.warn('Secrets are backed up without encryption: give age-recipients to encrypt the archive');
  }
  if (options.velero && options.encryption) {
    logger.warn(
      `velero-storage: the Velero copy in ${options.velero.storage.url} is not encrypted (Velero cannot read age-encrypted archives)${withSecrets ? ', and it holds the Secrets: protect that storage as you would the Secrets themselves' : ''}`,
    );
  }
  await options.storage.check();
  const catalog = new Catalog(options.storage);
  const started = now();
  const pending = await catalog.begin(options.set, mode, started);
  logger.info(
    `backup ${options.set}/${pending.id}: ${namespaces.length} namespace(s), ${types.length} resource type(s) from ${client.server} (${cluster.gitVersion}) → ${options.storage.url}`,
  );
  const counts: K8sFacts['counts'] = { byResource: {}, byNamespace: {}, total: 0 };
  let volumeSnapshots: VolumeSnapshotFact[] | undefined;
  let velero: VeleroCopy | undefined;
  let committed = false;
  try {
    if (options.velero) {
      velero = await VeleroCopy.prepare({
        ...options.velero,
        set: options.set,
        id: pending.id,
        started,
        logger,
        signal: options.signal,
      });
      logger.info(
        `Velero copy: ${velero.keys.dir} in ${velero.storage.url} (storage location ${options.velero.storageLocation}, gzip, not encrypted)`,
      );
    }
    if (mode !== 'exclude-storage') {
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
    }
    const ours = new Set((volumeSnapshots ?? []).flatMap((v) => [`${v.namespace}/${v.snapshot}`, v.content]));
    const pack = tar.pack();
    // Objects are small: gather them into large chunks before compression.
    const archive = new Coalescer();
    pack.pipe(archive);
    // A failure reaches the backup through the entries' callbacks and the upload.
    pack.on('error', () => {});
    const add = (name: string, text: string) =>
      new Promise<void>((resolve, reject) => {
        pack.entry({ name, mode: 0o644, mtime: started }, text, (error) =>
          error ? reject(error) : resolve(),
        );
      });
    const selectedNamespaces = new Set(namespaces);
    /** The CRDs and PVs taken because the namespaced objects need them. */
    const taken = { customResourceDefinitions: [] as string[], persistentVolumes: [] as string[] };
    const takenOf = (r: ApiResource) =>
      r === needed.crds?.type ? taken.customResourceDefinitions : taken.persistentVolumes;
    const feed = async () => {
      await Promise.all([add('metadata/version', `${veleroFormatVersion}\n`), velero?.addVersion()]);
      for (const r of types) {
        const snapshotObjects = r.group === 'snapshot.storage.k8s.io';
        // Of a cluster-scoped type left out, only what the namespaced objects need.
        const only =
          r === needed.crds?.type ? needed.crds.names : r === needed.pvs?.type ? needed.pvs.names : undefined;
        if (
          !r.namespaced &&
          !clusterScoped &&
          r.resource !== 'namespaces' &&
          !(snapshotObjects && volumeSnapshots) &&
          !only
        )
          continue;
        const folder = `resources/${qualifiedName(r)}`;
        // Namespaces are taken whole for the selected ones, whatever the label selector, and
        // so are the objects others need.
        const query: Record<string, string> =
          filters.labelSelector && !(r.resource === 'namespaces' && r.group === '') && !only
            ? { labelSelector: filters.labelSelector }
            : {};
        const paths =
          !r.namespaced || everyNamespace ? [collectionPath(r)] : namespaces.map((n) => collectionPath(r, n));
        for (const path of paths) {
          for await (const obj of listAll(
            client,
            path,
            query,
            options.pageSize ?? 500,
            logger,
            options.signal,
          )) {
            const name = obj.metadata?.name ?? '';
            const ns = obj.metadata?.namespace;
            if (r.resource === 'namespaces' && r.group === '' && !selectedNamespaces.has(name)) continue;
            if (r.namespaced && !selectedNamespaces.has(ns ?? '')) continue;
            if (only && !only.has(name)) continue;
            if (isOptedOut(obj)) continue;
            // With snapshots, only this backup's snapshot objects (and its class) go in.
            if (snapshotObjects && volumeSnapshots) {
              if (r.resource === 'volumesnapshots' && !ours.has(`${ns}/${name}`)) continue;
              if (r.resource === 'volumesnapshotcontents' && !ours.has(name)) continue;
              if (r.resource === 'volumesnapshotclasses' && name !== options.volumeSnapshotClass) continue;
            }
            const text = JSON.stringify(typed(obj, r));
            await Promise.all([
              add(
                r.namespaced ? `${folder}/namespaces/${ns}/${name}.json` : `${folder}/cluster/${name}.json`,
                text,
              ),
              velero?.addObject(r, ns, name, text),
            ]);
            if (only) takenOf(r).push(name);
            const q = qualifiedName(r);
            counts.byResource[q] = (counts.byResource[q] ?? 0) + 1;
            counts.byNamespace[ns ?? ''] = (counts.byNamespace[ns ?? ''] ?? 0) + 1;
            counts.total++;
          }
        }
        if (only) {
          const got = new Set(takenOf(r));
          const gone = [...only].filter((n) => !got.has(n));
          if (gone.length)
            logger.warn(
              `${qualifiedName(r)}: ${gone.join(', ')} needed by the backed-up objects but not taken (gone since, or labelled ${optOutLabels.map((l) => `${l}=true`).join(' or ')})`,
            );
        }
      }
      pack.finalize();
      velero?.end();
    };
    const teardown = (error: unknown) => {
      pack.destroy(error as Error);
      archive.destroy(error as Error);
      velero?.abort(error);
    };
    velero?.start();
    const feeding = feed();
    const name = artifactName('resources.tar', options.compression, Boolean(options.encryption));
    const writing = writeArtifact(
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
    );
    const storing = velero?.stored();
    const work = [writing, feeding, storing];
    let artifact: Awaited<typeof writing>;
    let stored: Awaited<typeof storing>;
    try {
      [artifact, , stored] = await Promise.all(work as [typeof writing, typeof feeding, typeof storing]);
    } catch (error) {
      // One part failed: stop the others, and wait until they have, before cleaning up.
      teardown(error);
      await Promise.allSettled(work);
      throw error;
    }
    let veleroFacts: VeleroCopyFacts | undefined;
    if (velero) {
      // The Velero copy is complete (its Backup written) before the manifest commits.
      veleroFacts = await velero.commit(
        {
          set: options.set,
          id: pending.id,
          started,
          completed: now(),
          cluster,
          includeNamespaces: filters.includeNamespaces,
          excludeNamespaces: filters.excludeNamespaces,
          includeResources: mode === 'only-storage' ? storageResources : filters.includeResources,
          excludeResources: mode === 'only-storage' ? [] : filters.excludeResources,
          labelSelector: filters.labelSelector,
          includeClusterResources: filters.includeClusterResources,
        },
        stored!,
      );
    }
    const facts: K8sFacts = {
      cluster: { server: client.server, version: cluster.gitVersion },
      filters,
      counts,
      namespaces,
      unavailableApis: skipped,
      ...(volumeSnapshots ? { volumeSnapshots } : {}),
      ...(addsNeeded ? { needed: taken } : {}),
      ...(veleroFacts ? { velero: veleroFacts } : {}),
    };
    const neededNote = addsNeeded
      ? `, with the CRDs and PVs its objects need (${taken.customResourceDefinitions.length} CRD(s), ${taken.persistentVolumes.length} PV(s))`
      : '';
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
          `${counts.total} objects of ${Object.keys(counts.byResource).length} resource types in ${namespaces.length} namespace(s)${clusterScoped ? ', with cluster-scoped resources' : neededNote}`,
          ...(veleroFacts
            ? [
                `a Velero copy (not encrypted): backups/${veleroFacts.name}/ in ${veleroFacts.storage}, storage location ${veleroFacts.storageLocation}, expires ${veleroFacts.expiration}`,
              ]
            : []),
        ],
        excluded: [
          ...(mode === 'exclude-storage' ? ['volume data (mode exclude-storage)'] : []),
          ...(mode === 'only-storage'
            ? ['every resource but the PVCs, their namespaces and the snapshot objects (mode only-storage)']
            : []),
          ...(clusterScoped
            ? []
            : [
                filters.includeClusterResources === false
                  ? 'cluster-scoped resources (include-cluster-resources: false)'
                  : addsNeeded
                    ? 'other cluster-scoped resources (not every namespace is included)'
                    : 'cluster-scoped resources (not every namespace is included)',
              ]),
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
      if (velero)
        await velero.discard().catch((error) => {
          logger.warn(
            `velero-storage ${velero!.storage.url}: the unfinished Velero copy ${velero!.keys.dir} could not be deleted (${(error as Error).message}); delete it by hand`,
          );
        });
      if (volumeSnapshots)
        await deleteVolumeSnapshots(
          client,
          volumeSnapshots.map((v) => ({ name: v.snapshot, namespace: v.namespace })),
          logger,
        );
    }
  }
}

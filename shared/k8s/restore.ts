import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import zlib from 'node:zlib';
import * as tar from 'tar-stream';
import type { Manifest } from '../catalog/manifest.ts';
import { messageOf, UserError } from '../errors.ts';
import { globMatcher } from '../glob.ts';
import { readArtifact } from '../pipeline/artifact.ts';
import type { DecryptionKeys } from '../pipeline/encryption.ts';
import type { Logger } from '../pipeline/progress.ts';
import type { Storage } from '../storage/storage.ts';
import { type KubeClient, KubeError } from './client.ts';
import { type ApiResource, collectionPath, discover, qualifiedName } from './discovery.ts';
import { compareForRestore, restorePriority } from './order.ts';
import {
  controllerOf,
  customResourceDefinitions,
  type KubeObject,
  keepLiveFields,
  prepare,
  restoredLabel,
  skipReason,
} from './restore-rules.ts';

export { restoredLabel };

export type ExistingPolicy = 'skip' | 'update' | 'recreate';

export interface K8sRestoreOptions {
  /** Lifeboat's own backups: the catalog's storage and the backup's manifest. */
  storage?: Storage;
  manifest?: Manifest;
  keys?: DecryptionKeys;
  /** Instead: a tarball written by Velero (`<backup>.tar.gz`). */
  veleroFile?: string;
  client: KubeClient;
  /** source namespace → target namespace */
  namespaceMapping: Map<string, string>;
  includeNamespaces: string[];
  excludeNamespaces: string[];
  includeResources: string[];
  excludeResources: string[];
  existing: ExistingPolicy;
  /** The server's own dry run (dryRun=All): everything is validated, nothing stored. */
  dryRun: boolean;
  /**
   * Cluster-scoped objects (namespaces aside). auto: all of them when no namespace filter is
   * given, else only those the restored objects need — the CRDs of their custom resources,
   * the PVs of their PVCs (Velero's auto); true: all; false: none.
   */
  includeClusterResources?: 'auto' | boolean;
  /** Keep every node port of a Service (default: only those the user set explicitly). */
  preserveNodePorts?: boolean;
  /** existing: recreate may delete and re-create a CRD, and with it every instance cluster-wide. */
  recreateCrds?: boolean;
  /** Restore PVs with reclaim policy Delete that have no snapshot (default: their PVCs get new volumes). */
  restorePvsWithoutSnapshot?: boolean;
  /** How long to wait for a restored CRD's resources to be served. */
  crdWaitMs?: number;
  /** How long to retry a create the API server answers with 500 ServerTimeout (default 60 s). */
  serverTimeoutRetryMs?: number;
  /**
   * verify-restore's throwaway namespaces: only the namespaces the mapping names are restored
   * (their Namespace objects renamed, their objects into the targets); cluster-scoped entries
   * are left out and objects of any other namespace refused.
   */
  onlyMappedNamespaces?: boolean;
  logger: Logger;
  signal?: AbortSignal;
  progressIntervalMs?: number;
}

/** `unvalidated`: a dry run could not send it (its namespace does not exist yet). */
export type ObjectOutcome = 'created' | 'updated' | 'recreated' | 'unvalidated' | 'skipped' | 'failed';

export interface ObjectResult {
  resource: string;
  namespace?: string;
  name: string;
  outcome: ObjectOutcome;
  /** Why it was skipped or failed. */
  reason?: string;
  /** It had a controller in the backup (an owner with controller: true): controllers may replace it. */
  controlled?: boolean;
}

export interface K8sRestoreResult {
  objects: ObjectResult[];
  counts: Record<ObjectOutcome, number>;
  /** Restored objects per resource (created, updated or recreated). */
  byResource: Record<string, number>;
  /** Objects per resource in the archive that the filters selected. */
  inBackup: Record<string, number>;
}

const snapshotContents = 'volumesnapshotcontents.snapshot.storage.k8s.io';
const volumeSnapshots = 'volumesnapshots.snapshot.storage.k8s.io';

/** A Velero backup's name: its tarball's file name without `.tar.gz`. */
export function veleroBackupName(file: string): string {
  return path.basename(file).replace(/\.tar\.gz$|\.tgz$/, '');
}

/**
 * `resources/<qualified>/namespaces/<ns>/<name>.json` or `.../cluster/<name>.json`. The
 * namespace and name are taken as they stand (empty, with a `/`, …): see pathProblem.
 */
export function parseEntry(path: string): { resource: string; namespace?: string; name: string } | undefined {
  // Velero also writes each object under `<version>-preferredversion/`: the same object.
  const m =
    /^resources\/([^/]+)\/(?:[^/]+-preferredversion\/)?(?:namespaces\/([^/]*)|cluster)\/(.*)\.json$/.exec(
      path,
    );
  return m ? { resource: m[1]!, namespace: m[2], name: m[3]! } : undefined;
}

const dnsLabel = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;
const dnsSubdomain = /^(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
/** What the API server takes as any object's name: a path segment. */
const pathSegment = /^(?!\.\.?$)[^/%]+$/;
/** Resources the API server lets have any path-segment name (`system:controller:…`). */
const pathSegmentNamed = new Set([
  'roles.rbac.authorization.k8s.io',
  'rolebindings.rbac.authorization.k8s.io',
  'clusterroles.rbac.authorization.k8s.io',
  'clusterrolebindings.rbac.authorization.k8s.io',
  'certificatesigningrequests.certificates.k8s.io',
  // `<version>.<group>`: the core group's is `v1.`.
  'apiservices.apiregistration.k8s.io',
]);

/** Why an entry's namespace or name cannot be one (the server's own rules), or undefined. */
function pathProblem(at: { resource: string; namespace?: string; name: string }): string | undefined {
  if (at.namespace !== undefined && !dnsLabel.test(at.namespace))
    return `the namespace '${at.namespace}' is not a valid namespace name (a DNS-1123 label)`;
  const [rule, what] =
    at.resource === 'namespaces'
      ? [dnsLabel, 'a DNS-1123 label']
      : pathSegmentNamed.has(at.resource)
        ? [pathSegment, "a path segment: not '.' or '..', no '/' or '%'"]
        : [dnsSubdomain, 'a DNS-1123 subdomain'];
  if (!rule.test(at.name)) return `the name '${at.name}' is not a valid ${at.resource} name (${what})`;
  return undefined;
}

/**
 * Restores a k8s backup in one pass over its archive, which backups write in restore order
 * (CRDs, namespaces, storage, RBAC, secrets, config maps, pods, …, then the rest). Each
 * object gets a result; a failure of one object does not stop the others. The archive is
 * not trusted: each object goes to the namespace its path names (mapped), and one that does
 * not fit its path — a bad namespace or name, another name or kind in the body, a
 * cluster-scoped kind under namespaces/ or a namespaced one under cluster/ — is refused.
 */
export async function restoreK8s(options: K8sRestoreOptions): Promise<K8sRestoreResult> {
  const { client, logger } = options;
  // The restore label: the backup id, or `velero-<name>` (a valid label value) for a Velero tarball.
  const backupId = options.veleroFile
    ? `velero-${veleroBackupName(options.veleroFile).replace(/[^A-Za-z0-9_.-]/g, '-')}`.slice(0, 63)
    : options.manifest!.id;
  let served = (await discover(client, logger, options.signal)).resources;
  const byName = () => new Map(served.map((r) => [qualifiedName(r), r]));
  let resources = byName();
  const results: ObjectResult[] = [];
  const counts: Record<ObjectOutcome, number> = {
    created: 0,
    updated: 0,
    recreated: 0,
    unvalidated: 0,
    skipped: 0,
    failed: 0,
  };
  const byResource: Record<string, number> = {};
  const inBackup: Record<string, number> = {};
  const ensuredNamespaces = new Set<string>();
  let lastProgress = Date.now();

  const record = (r: ObjectResult) => {
    results.push(r);
    counts[r.outcome]++;
    if (r.outcome === 'created' || r.outcome === 'updated' || r.outcome === 'recreated')
      byResource[r.resource] = (byResource[r.resource] ?? 0) + 1;
    if (r.outcome === 'failed')
      logger.warn(`failed ${r.resource} ${r.namespace ? `${r.namespace}/` : ''}${r.name}: ${r.reason}`);
    if (Date.now() - lastProgress > (options.progressIntervalMs ?? 10_000)) {
      lastProgress = Date.now();
      logger.info(
        `restored ${results.length} objects: ${Object.entries(counts)
          .map(([k, v]) => `${v} ${k}`)
          .join(', ')}`,
      );
    }
  };

  /** The resource type, waiting for it to be served when it comes from a restored CRD. */
  const resourceFor = async (name: string): Promise<ApiResource | undefined> => {
    const deadline = Date.now() + (options.crdWaitMs ?? 60_000);
    while (!resources.has(name)) {
      if (Date.now() > deadline || options.dryRun) return undefined;
      await sleep(1000, undefined, { signal: options.signal });
      served = (await discover(client, { info() {}, warn() {} }, options.signal)).resources;
      resources = byName();
    }
    return resources.get(name);
  };

  /** Creates a target namespace the backup does not hold; in a dry run, says whether it exists. */
  const ensureNamespace = async (ns: string): Promise<boolean> => {
    if (ensuredNamespaces.has(ns)) return true;
    if (options.dryRun) {
      try {
        await client.get(`/api/v1/namespaces/${encodeURIComponent(ns)}`, options.signal);
        ensuredNamespaces.add(ns);
        return true;
      } catch (error) {
        if (error instanceof KubeError && error.code === 404) return false;
        throw error;
      }
    }
    ensuredNamespaces.add(ns);
    try {
      await client.request(
        'POST',
        '/api/v1/namespaces',
        {
          apiVersion: 'v1',
          kind: 'Namespace',
          metadata: { name: ns, labels: { [restoredLabel]: backupId } },
        },
        options.signal,
      );
    } catch (error) {
      if (!(error instanceof KubeError && error.code === 409)) throw error;
    }
    return true;
  };

  /** Creates the object in `target`, the path's (mapped) namespace: the URL never comes from the object. */
  const apply = async (
    r: ApiResource,
    obj: KubeObject,
    target: string | undefined,
  ): Promise<ObjectOutcome> => {
    const dry = options.dryRun ? '?dryRun=All' : '';
    const collection = collectionPath(r, target);
    const item = `${collection}/${encodeURIComponent(obj.metadata.name)}`;
    const resource = qualifiedName(r);
    try {
      await create(`${collection}${dry}`, obj);
      return 'created';
    } catch (error) {
      if (!(error instanceof KubeError)) throw error;
      const exists =
        (error.code === 409 && error.reason === 'AlreadyExists') ||
        // The API server validates before it looks: a Service whose node port its own live
        // copy holds is 422 "provided port is already allocated", not 409.
        (error.code === 422 && (await found(item)));
      if (!exists) {
        if (error.code === 422 && /provided port is already allocated/.test(error.message))
          throw new KubeError(
            422,
            error.reason,
            `${error.message} (a node port the backup's Service sets is in use in this cluster)`,
          );
        throw error;
      }
    }
    if (options.existing === 'skip') throw new Skip('it exists (existing: skip)');
    if (options.existing === 'update') {
      const current = await client.get<KubeObject>(item, options.signal);
      try {
        await client.request('PUT', `${item}${dry}`, keepLiveFields(resource, obj, current), options.signal);
      } catch (error) {
        if (
          error instanceof KubeError &&
          error.code === 422 &&
          /immutable|may not change once set|can not be unset/.test(error.message)
        )
          throw new KubeError(
            422,
            error.reason,
            `${error.message} (existing: recreate replaces the object instead)`,
          );
        throw error;
      }
      return 'updated';
    }
    if (resource === customResourceDefinitions && !options.recreateCrds)
      throw new Skip(
        'it exists, and existing: recreate of a CRD deletes every one of its objects in the whole cluster: left as it is (recreate-crds: true allows it)',
      );
    await client.request('DELETE', `${item}${dry}`, undefined, options.signal);
    if (!options.dryRun) await waitGone(client, item, options.signal);
    await create(`${collection}${dry}`, obj);
    return 'recreated';
  };

  const found = (item: string) =>
    client.get(item, options.signal).then(
      () => true,
      (error) => {
        if (error instanceof KubeError && error.code === 404) return false;
        throw error;
      },
    );

  /**
   * POST, again while the API server answers 500 ServerTimeout (it asks to retry): a Pod
   * created right after its namespace, before the token controller gave the namespace's
   * service account a token, is refused so for a moment.
   */
  const create = async (url: string, obj: KubeObject) => {
    const deadline = Date.now() + (options.serverTimeoutRetryMs ?? 60_000);
    for (;;) {
      try {
        return await client.request('POST', url, obj, options.signal);
      } catch (error) {
        if (!(error instanceof KubeError && error.code === 500 && error.reason === 'ServerTimeout'))
          throw error;
        if (Date.now() > deadline) throw error;
        await sleep(250, undefined, { signal: options.signal });
      }
    }
  };

  // The filters, compiled once: they are asked about every object.
  const includeNamespace = globMatcher(options.includeNamespaces);
  const excludeNamespace = globMatcher(options.excludeNamespaces);
  const includeResource = globMatcher(options.includeResources);
  const excludeResource = globMatcher(options.excludeResources);
  const seen = new Set<string>();
  /** Snapshot contents of the backup, by name: what a restored VolumeSnapshot binds to. */
  const contents = new Map<string, { driver: string; snapshotHandle: string; className?: string }>();
  /** `ns/pvc` → the restored VolumeSnapshot to provision it from. */
  const pvcSnapshots = new Map<string, string>();
  /**
   * Cluster-scoped objects (namespaces aside): all, none, or only those the restored objects
   * need (auto with a namespace filter, as Velero's include-cluster-resources: auto).
   */
  const clusterScope: 'all' | 'needed' | 'none' =
    options.includeClusterResources === true
      ? 'all'
      : options.includeClusterResources === false
        ? 'none'
        : options.includeNamespaces.length === 0 && options.excludeNamespaces.length === 0
          ? 'all'
          : 'needed';
  type Held = { entry: string; text: string };
  /** CRDs held back until a custom resource of theirs is restored (clusterScope needed), by resource name. */
  const heldCrds = new Map<string, Held>();
  /** Claimed PVs, held back until their claim (`ns/name` in the backup) is restored. */
  const heldPvs = new Map<string, Held & { name: string; retain: boolean }>();
  /** PVs not restored (reclaim policy Delete, no snapshot): their PVCs get new volumes. */
  const reprovisioned = new Set<string>();

  /** Restores the held PV of a claim, if any, before the claim. */
  const releaseVolumeOf = async (claim: string, hasSnapshot: boolean) => {
    const held = heldPvs.get(claim);
    if (!held) return;
    heldPvs.delete(claim);
    if (hasSnapshot) {
      record({
        resource: 'persistentvolumes',
        name: held.name,
        outcome: 'skipped',
        reason: `its claim ${claim} is provisioned anew from the backup's VolumeSnapshot`,
      });
      return;
    }
    await handle(held.entry, held.text, true);
  };

  const handle = async (entry: string, text: string, released = false) => {
    const at = parseEntry(entry);
    if (!at) return;
    const { resource, namespace, name } = at;
    const key = `${resource}/${namespace ?? ''}/${name}`;
    if (!released) {
      if (seen.has(key)) return;
      seen.add(key);
    }
    const target =
      namespace === undefined ? undefined : (options.namespaceMapping.get(namespace) ?? namespace);
    // The bucket is not trusted: the path decides where an object goes, and an object that
    // does not fit its path is refused.
    const refuse = (problem: string) =>
      record({
        resource,
        namespace: target,
        name,
        outcome: 'failed',
        reason: `refused ${entry}: ${problem}`,
      });
    const badPath = pathProblem(at);
    if (badPath) return refuse(badPath);
    const nsForFilter = resource === 'namespaces' ? name : namespace;
    if (options.onlyMappedNamespaces) {
      if (nsForFilter === undefined) return;
      if (!options.namespaceMapping.has(nsForFilter))
        return refuse(`the namespace ${nsForFilter} is not one of the mapped namespaces`);
    }
    if (nsForFilter !== undefined) {
      if (options.includeNamespaces.length && !includeNamespace(nsForFilter)) return;
      if (excludeNamespace(nsForFilter)) return;
    }
    const plainName = resource.split('.')[0]!;
    if (options.includeResources.length && ![resource, plainName].some(includeResource)) return;
    if ([resource, plainName].some(excludeResource)) return;
    // Filed under cluster/: a namespaced kind there is refused below, not left out here.
    const clusterScoped =
      namespace === undefined && resource !== 'namespaces' && !resources.get(resource)?.namespaced;
    const source = parseObject(text);
    if (clusterScoped && !released && resource !== snapshotContents) {
      if (clusterScope === 'none') return;
      if (source && resource === customResourceDefinitions && clusterScope === 'needed') {
        heldCrds.set(name, { entry, text });
        return;
      }
      const claimRef = (source?.spec as { claimRef?: { namespace?: string; name?: string } } | undefined)
        ?.claimRef;
      if (source && resource === 'persistentvolumes' && claimRef?.name) {
        const policy = (source.spec as { persistentVolumeReclaimPolicy?: string })
          .persistentVolumeReclaimPolicy;
        heldPvs.set(`${claimRef.namespace}/${claimRef.name}`, {
          entry,
          text,
          name,
          retain: policy === undefined || policy === 'Retain',
        });
        return;
      }
      if (clusterScope === 'needed') return;
    }
    inBackup[resource] = (inBackup[resource] ?? 0) + 1;
    if (!source) return refuse('not a Kubernetes object (JSON with metadata.name)');
    if (source.metadata.name !== name)
      return refuse(`metadata.name is '${source.metadata.name}', but the path names it '${name}'`);
    const why = skipReason(resource, source);
    if (why) {
      record({ resource, namespace: target, name, outcome: 'skipped', reason: why });
      return;
    }
    const controlled = controllerOf(source) ? { controlled: true } : {};
    if (
      resource === 'persistentvolumes' &&
      !options.restorePvsWithoutSnapshot &&
      (source.spec as { persistentVolumeReclaimPolicy?: string } | undefined)
        ?.persistentVolumeReclaimPolicy === 'Delete'
    ) {
      reprovisioned.add(name);
      record({
        resource,
        name,
        outcome: 'skipped',
        reason:
          'reclaim policy Delete and no snapshot: restored, it would let the cluster delete the disk it names; its claim gets a new volume (restore-pvs-without-snapshot: true restores it)',
      });
      return;
    }
    const crd = heldCrds.get(resource);
    if (crd) {
      heldCrds.delete(resource);
      await handle(crd.entry, crd.text, true);
    }
    const r = await resourceFor(resource);
    if (!r) {
      record({
        resource,
        namespace: target,
        name,
        ...(options.dryRun
          ? {
              outcome: 'unvalidated',
              reason: `dry run: not validated, the cluster does not serve ${resource} (yet: its CRD is created by the restore)`,
            }
          : { outcome: 'failed', reason: `the cluster does not serve ${resource}` }),
      });
      return;
    }
    if (r.namespaced !== (namespace !== undefined))
      return refuse(
        r.namespaced
          ? `${resource} is namespaced, but the path files it under cluster/`
          : `${resource} is cluster-scoped, but the path files it under namespaces/${namespace}/`,
      );
    if (source.kind !== undefined && source.kind !== r.kind)
      return refuse(`the object is a ${source.kind}, but the path files it under ${resource} (${r.kind})`);
    if (resource === snapshotContents) {
      // Bound to the snapshot it was made for: re-created, statically, for the restored snapshot.
      const spec = source.spec as { driver?: string; volumeSnapshotClassName?: string };
      contents.set(name, {
        driver: spec.driver ?? '',
        snapshotHandle: String(
          (source.status as { snapshotHandle?: string } | undefined)?.snapshotHandle ?? '',
        ),
        className: spec.volumeSnapshotClassName,
      });
      record({
        resource,
        name,
        outcome: 'skipped',
        reason: 're-created for the VolumeSnapshot it belongs to',
      });
      return;
    }
    const obj = prepare(resource, source, namespace, {
      mapping: options.namespaceMapping,
      backupId,
      nodePorts: options.onlyMappedNamespaces ? 'none' : options.preserveNodePorts ? 'all' : 'explicit',
    });
    if (resource === volumeSnapshots) {
      const bound = (source.status as { boundVolumeSnapshotContentName?: string } | undefined)
        ?.boundVolumeSnapshotContentName;
      const content = bound ? contents.get(bound) : undefined;
      const pvc = (source.spec as { source?: { persistentVolumeClaimName?: string } }).source
        ?.persistentVolumeClaimName;
      if (!content?.snapshotHandle) {
        record({
          resource,
          namespace: target,
          name,
          outcome: 'failed',
          reason: `its VolumeSnapshotContent ${bound ?? '(none)'} is not in the backup`,
        });
        return;
      }
      const existing = await client
        .get(
          `/apis/snapshot.storage.k8s.io/v1/namespaces/${target}/volumesnapshots/${obj.metadata.name}`,
          options.signal,
        )
        .then(
          () => true,
          (error) => {
            if (error instanceof KubeError && error.code === 404) return false;
            throw error;
          },
        );
      if (existing && options.existing === 'skip') {
        if (pvc && namespace) pvcSnapshots.set(`${namespace}/${pvc}`, obj.metadata.name);
        record({
          resource,
          namespace: target,
          name,
          outcome: 'skipped',
          reason: 'it exists (existing: skip)',
        });
        return;
      }
      const contentName = `lb-restore-${randomBytes(6).toString('hex')}`;
      try {
        await client.request(
          'POST',
          `/apis/snapshot.storage.k8s.io/v1/volumesnapshotcontents${options.dryRun ? '?dryRun=All' : ''}`,
          {
            apiVersion: 'snapshot.storage.k8s.io/v1',
            kind: 'VolumeSnapshotContent',
            metadata: { name: contentName, labels: { [restoredLabel]: backupId } },
            spec: {
              // Retain: deleting the restored objects must never delete the backed-up snapshot.
              deletionPolicy: 'Retain',
              driver: content.driver,
              source: { snapshotHandle: content.snapshotHandle },
              ...(content.className ? { volumeSnapshotClassName: content.className } : {}),
              volumeSnapshotRef: { name: obj.metadata.name, namespace: target },
            },
          },
          options.signal,
        );
      } catch (error) {
        record({
          resource,
          namespace: target,
          name,
          outcome: 'failed',
          reason: `creating its VolumeSnapshotContent: ${messageOf(error)}`,
        });
        return;
      }
      obj.spec = { ...(obj.spec ?? {}), source: { volumeSnapshotContentName: contentName } };
      if (pvc && namespace) pvcSnapshots.set(`${namespace}/${pvc}`, obj.metadata.name);
    }
    if (resource === 'persistentvolumeclaims' && namespace) {
      const snapshot = pvcSnapshots.get(`${namespace}/${name}`);
      // Its volume first, bound anew to it (or, without a snapshot and with reclaim policy
      // Delete, not at all: the claim gets a new one).
      await releaseVolumeOf(`${namespace}/${name}`, Boolean(snapshot));
      const volumeName = (obj.spec as { volumeName?: string } | undefined)?.volumeName;
      if (volumeName && reprovisioned.has(volumeName)) delete obj.spec!.volumeName;
      if (snapshot) {
        // A new volume provisioned from the backup's snapshot.
        obj.spec = {
          ...(obj.spec ?? {}),
          dataSource: { apiGroup: 'snapshot.storage.k8s.io', kind: 'VolumeSnapshot', name: snapshot },
        };
        delete obj.spec.volumeName;
      }
    }
    try {
      if (target && !(await ensureNamespace(target))) {
        // A dry run creates nothing, so the server cannot validate objects of a namespace to come.
        record({
          resource,
          namespace: target,
          name: obj.metadata.name,
          outcome: 'unvalidated',
          reason: `dry run: not validated, the namespace ${target} does not exist yet`,
        });
        return;
      }
      record({
        resource,
        namespace: target,
        name: obj.metadata.name,
        outcome: await apply(r, obj, target),
        ...controlled,
      });
    } catch (error) {
      if (options.signal?.aborted) throw error;
      const skipped = error instanceof Skip;
      record({
        resource,
        namespace: target,
        name: obj.metadata.name,
        outcome: skipped ? 'skipped' : 'failed',
        reason: skipped ? error.message : messageOf(error),
        ...controlled,
      });
    }
  };
  /**
   * PVs whose claim was not restored: with clusterScope all, those that keep their disk
   * (Retain) are restored (Released, as they were left); the others are not, since the
   * controller would recycle or delete the disk of a volume whose claim is gone.
   */
  const settleHeldVolumes = async () => {
    for (const [claim, held] of heldPvs) {
      if (clusterScope !== 'all') continue;
      if (held.retain) await handle(held.entry, held.text, true);
      else
        record({
          resource: 'persistentvolumes',
          name: held.name,
          outcome: 'skipped',
          reason: `its claim ${claim} is not restored: bound to a missing claim, the cluster would recycle or delete its disk (reclaim policy not Retain)`,
        });
    }
    heldPvs.clear();
  };
  if (options.veleroFile) {
    // Velero's archive is not in restore order: read it once per priority resource, then
    // once for the rest (a local file; nothing is staged).
    const file = options.veleroFile;
    const open = () => fs.createReadStream(file).pipe(zlib.createGunzip());
    const present = new Set<string>();
    await forEachEntry(open(), async (entry) => {
      const at = parseEntry(entry);
      if (at) present.add(at.resource);
    });
    const ordered = [...present].sort(compareForRestore);
    const prioritized = ordered.filter((r) => restorePriority.includes(r));
    const passes = [
      ...prioritized.map((r) => (x: string) => x === r),
      (x: string) => !restorePriority.includes(x),
    ];
    for (const accept of passes) {
      await forEachEntry(open(), async (entry, text) => {
        const at = parseEntry(entry);
        if (at && accept(at.resource)) await handle(entry, text());
      });
    }
  } else {
    const manifest = options.manifest!;
    const artifact = manifest.artifacts[0]!;
    const plain = await readArtifact({
      storage: options.storage!,
      key: `${manifest.set}/${manifest.id}/${artifact.name}`,
      artifact,
      keys: options.keys,
      logger,
      label: options.dryRun ? 'checked' : 'restored',
      progressIntervalMs: options.progressIntervalMs,
      signal: options.signal,
    });
    await forEachEntry(plain, (entry, text) => handle(entry, text()));
  }
  await settleHeldVolumes();
  if (options.dryRun) {
    logger.info(
      `dry run: the objects were sent with dryRun=All; the server validated them and stored nothing${counts.unvalidated ? `; ${counts.unvalidated} could not be validated (their namespace or CRD is created by the restore itself): see the report` : ''}`,
    );
  }
  return { objects: results, counts, byResource, inBackup };
}

/** An archive entry's object, or undefined when it is no JSON object with a string metadata.name. */
function parseObject(text: string): KubeObject | undefined {
  try {
    const obj = JSON.parse(text) as KubeObject | null;
    return typeof obj?.metadata?.name === 'string' ? obj : undefined;
  } catch {
    return undefined;
  }
}

/** Reads a tar stream entry by entry, one at a time; `text()` gives the entry's content. */
async function forEachEntry(
  stream: Readable,
  visit: (name: string, text: () => string) => Promise<void>,
): Promise<void> {
  const extract = tar.extract();
  const done = new Promise<void>((resolve, reject) => {
    extract.on('entry', (header, body, next) => {
      const chunks: Buffer[] = [];
      body.on('data', (c) => chunks.push(c as Buffer));
      body.on('end', () => {
        visit(header.name, () => Buffer.concat(chunks).toString('utf8')).then(() => next(), reject);
      });
      body.on('error', reject);
    });
    extract.on('finish', resolve);
    extract.on('error', reject);
    stream.on('error', (error) => extract.destroy(error));
  });
  stream.pipe(extract);
  await done;
}

/** Marks an object skipped on purpose (not a failure). */
class Skip extends Error {}

async function waitGone(client: KubeClient, path: string, signal?: AbortSignal): Promise<void> {
  for (let i = 0; i < 120; i++) {
    try {
      await client.get(path, signal);
    } catch (error) {
      if (error instanceof KubeError && error.code === 404) return;
      throw error;
    }
    await sleep(500, undefined, { signal });
  }
  throw new UserError(`${path}: still there 60 s after it was deleted (a finalizer?); cannot recreate it`);
}

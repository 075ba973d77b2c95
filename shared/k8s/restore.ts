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
  /** How long to wait for a restored CRD's resources to be served. */
  crdWaitMs?: number;
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

export type ObjectOutcome = 'created' | 'updated' | 'recreated' | 'skipped' | 'failed';

export interface ObjectResult {
  resource: string;
  namespace?: string;
  name: string;
  outcome: ObjectOutcome;
  /** Why it was skipped or failed. */
  reason?: string;
}

export interface K8sRestoreResult {
  objects: ObjectResult[];
  counts: Record<ObjectOutcome, number>;
  /** Restored objects per resource (created, updated or recreated). */
  byResource: Record<string, number>;
  /** Objects per resource in the archive that the filters selected. */
  inBackup: Record<string, number>;
}

/** The label every restored object carries: the backup it came from. */
export const restoredLabel = 'lifeboat.io/restored-from';

const snapshotContents = 'volumesnapshotcontents.snapshot.storage.k8s.io';
const volumeSnapshots = 'volumesnapshots.snapshot.storage.k8s.io';

/** Resources never restored (as Velero): they belong to the cluster that ran them. */
const neverRestored = new Set(['nodes', 'events', 'events.events.k8s.io']);

type KubeObject = {
  apiVersion?: string;
  kind?: string;
  metadata: Record<string, unknown> & {
    name: string;
    namespace?: string;
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
  };
  spec?: Record<string, unknown>;
  status?: Record<string, unknown>;
  type?: string;
  [k: string]: unknown;
};

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

/** Why an object is not restored at all, or undefined. */
function skipReason(resource: string, obj: KubeObject): string | undefined {
  if (neverRestored.has(resource)) return `${resource} are never restored`;
  const phase = obj.status?.phase;
  if (resource === 'pods' && (phase === 'Succeeded' || phase === 'Failed'))
    return `a finished pod (${phase})`;
  const conditions = (obj.status?.conditions ?? []) as { type?: string; status?: string }[];
  if (
    resource === 'jobs.batch' &&
    conditions.some((c) => (c.type === 'Complete' || c.type === 'Failed') && c.status === 'True')
  )
    return 'a finished job';
  if (resource === 'secrets' && obj.type === 'kubernetes.io/service-account-token')
    return 'a service-account token (the cluster makes a new one)';
  return undefined;
}

/**
 * The object as it should be created: server-owned fields stripped (uid, resourceVersion,
 * generation, creationTimestamp, deletion fields, selfLink, managedFields, ownerReferences,
 * status), the per-kind fixes Velero applies, the restore label, and `metadata.namespace`
 * the archive path's namespace, mapped (none for a cluster-scoped object), whatever the
 * object says.
 */
export function prepare(
  resource: string,
  source: KubeObject,
  namespace: string | undefined,
  mapping: Map<string, string>,
  backupId: string,
): KubeObject {
  const obj = structuredClone(source);
  const meta = obj.metadata;
  for (const field of [
    'uid',
    'resourceVersion',
    'generation',
    'creationTimestamp',
    'deletionTimestamp',
    'deletionGracePeriodSeconds',
    'selfLink',
    'managedFields',
    'ownerReferences',
    'generateName',
  ])
    delete meta[field];
  delete obj.status;
  const mapNs = (ns: string | undefined) => (ns === undefined ? ns : (mapping.get(ns) ?? ns));
  if (namespace === undefined) delete meta.namespace;
  else meta.namespace = mapNs(namespace);
  if (resource === 'namespaces') meta.name = mapNs(meta.name)!;
  meta.labels = { ...(meta.labels ?? {}), [restoredLabel]: backupId };
  const spec = obj.spec ?? {};
  if (resource === 'services') {
    if (spec.clusterIP !== 'None') {
      delete spec.clusterIP;
      delete spec.clusterIPs;
    }
    for (const port of (spec.ports ?? []) as Record<string, unknown>[]) delete port.nodePort;
    delete spec.healthCheckNodePort;
  }
  if (resource === 'pods') delete spec.nodeName;
  if (resource === 'persistentvolumeclaims' && meta.annotations) {
    for (const a of ['pv.kubernetes.io/bind-completed', 'pv.kubernetes.io/bound-by-controller'])
      delete meta.annotations[a];
  }
  if (resource === 'serviceaccounts') {
    // Token secrets are made anew by the cluster; references to the old ones would dangle.
    delete obj.secrets;
  }
  if (
    resource === 'rolebindings.rbac.authorization.k8s.io' ||
    resource === 'clusterrolebindings.rbac.authorization.k8s.io'
  ) {
    for (const subject of (obj.subjects ?? []) as { namespace?: string }[])
      subject.namespace = mapNs(subject.namespace);
  }
  return obj;
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
    if (r.outcome !== 'skipped' && r.outcome !== 'failed')
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
    try {
      await client.request('POST', `${collection}${dry}`, obj, options.signal);
      return 'created';
    } catch (error) {
      if (!(error instanceof KubeError && error.code === 409 && error.reason === 'AlreadyExists'))
        throw error;
    }
    if (options.existing === 'skip') throw new Skip('it exists (existing: skip)');
    if (options.existing === 'update') {
      const current = await client.get<KubeObject>(item, options.signal);
      obj.metadata.resourceVersion = current.metadata.resourceVersion;
      await client.request('PUT', `${item}${dry}`, obj, options.signal);
      return 'updated';
    }
    await client.request('DELETE', `${item}${dry}`, undefined, options.signal);
    if (!options.dryRun) await waitGone(client, item, options.signal);
    await client.request('POST', `${collection}${dry}`, obj, options.signal);
    return 'recreated';
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
  const handle = async (entry: string, text: string) => {
    const at = parseEntry(entry);
    if (!at) return;
    const { resource, namespace, name } = at;
    const key = `${resource}/${namespace ?? ''}/${name}`;
    if (seen.has(key)) return;
    seen.add(key);
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
    inBackup[resource] = (inBackup[resource] ?? 0) + 1;
    const source = parseObject(text);
    if (!source) return refuse('not a Kubernetes object (JSON with metadata.name)');
    if (source.metadata.name !== name)
      return refuse(`metadata.name is '${source.metadata.name}', but the path names it '${name}'`);
    const why = skipReason(resource, source);
    if (why) {
      record({ resource, namespace: target, name, outcome: 'skipped', reason: why });
      return;
    }
    const r = await resourceFor(resource);
    if (!r) {
      record({
        resource,
        namespace: target,
        name,
        outcome: 'failed',
        reason: `the cluster does not serve ${resource}`,
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
    const obj = prepare(resource, source, namespace, options.namespaceMapping, backupId);
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
          outcome: 'created',
          reason: `dry run: not validated, the namespace ${target} does not exist yet`,
        });
        return;
      }
      record({ resource, namespace: target, name: obj.metadata.name, outcome: await apply(r, obj, target) });
    } catch (error) {
      if (options.signal?.aborted) throw error;
      const skipped = error instanceof Skip;
      record({
        resource,
        namespace: target,
        name: obj.metadata.name,
        outcome: skipped ? 'skipped' : 'failed',
        reason: skipped ? error.message : messageOf(error),
      });
    }
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
  if (options.dryRun) {
    logger.info('dry run: every object was sent with dryRun=All; the server validated it and stored nothing');
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

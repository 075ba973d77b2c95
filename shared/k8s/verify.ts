import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Manifest } from '../catalog/manifest.ts';
import { messageOf, UserError } from '../errors.ts';
import type { DecryptionKeys } from '../pipeline/encryption.ts';
import type { Logger } from '../pipeline/progress.ts';
import type { Storage } from '../storage/storage.ts';
import { type CheckRow, failed, passed } from '../verify/checks.ts';
import type { K8sFacts } from './backup.ts';
import { type KubeClient, KubeError } from './client.ts';
import { collectionPath, discover, qualifiedName } from './discovery.ts';
import { restoreK8s } from './restore.ts';

/** What a killed k8s verification leaves: throwaway namespaces to delete. */
export interface K8sLeftovers {
  type: 'namespaces';
  namespaces: string[];
}

export interface K8sVerifyOptions {
  storage: Storage;
  manifest: Manifest;
  keys?: DecryptionKeys;
  client: KubeClient;
  /** Wait for restored Deployments and StatefulSets to become ready, up to this long (0: do not wait). */
  readyTimeoutMs: number;
  pollIntervalMs?: number;
  onLeftovers?: (leftovers: K8sLeftovers | undefined) => void;
  logger: Logger;
  signal?: AbortSignal;
  progressIntervalMs?: number;
}

const restoredOutcomes = new Set(['created', 'updated', 'recreated']);

/** A throwaway name for a namespace: `<name>-lbv-<random>`, within the 63-character limit. */
export function throwawayNamespace(name: string, suffix: string): string {
  return `${name.slice(0, 63 - suffix.length - 5)}-lbv-${suffix}`;
}

/**
 * Proves a k8s backup restores: its namespaced objects (not the cluster's own resources) are
 * restored into throwaway namespaces (`<ns>-lbv-<random>`) of a given cluster, and nothing
 * else is created (objects of namespaces the manifest does not list, and cluster-scoped
 * kinds filed under a namespace, are refused); per resource,
 * the objects the archive holds must equal the manifest's count and must all be there after
 * the restore; Deployments and StatefulSets can be waited for until ready. The throwaway
 * namespaces are deleted afterwards, whatever happened.
 */
export async function verifyK8s(options: K8sVerifyOptions) {
  const { manifest, client, logger } = options;
  const facts = manifest.facts as unknown as K8sFacts;
  if (manifest.kind !== 'k8s' || !facts?.counts)
    throw new UserError(`backup: '${manifest.id}' is not a k8s backup with counts`);
  const suffix = randomBytes(3).toString('hex');
  const mapping = new Map(facts.namespaces.map((n) => [n, throwawayNamespace(n, suffix)]));
  const namespaces = [...mapping.values()];
  options.onLeftovers?.({ type: 'namespaces', namespaces });
  const checks: CheckRow[] = [];
  const timings: Record<string, number> = {};
  let restoreSeconds: number | null = null;
  let t = performance.now();
  try {
    const result = await restoreK8s({
      storage: options.storage,
      manifest,
      keys: options.keys,
      client,
      namespaceMapping: mapping,
      includeNamespaces: [],
      excludeNamespaces: [],
      includeResources: [],
      // Snapshots are checked in place below: restoring them would leave cluster-scoped contents behind.
      excludeResources: ['volumesnapshots.snapshot.storage.k8s.io'],
      existing: 'skip',
      dryRun: false,
      // Only the backup's namespaces, each into its throwaway one: nothing else is created.
      onlyMappedNamespaces: true,
      logger,
      signal: options.signal,
      progressIntervalMs: options.progressIntervalMs,
    });
    restoreSeconds = (performance.now() - t) / 1000;
    timings.restore = restoreSeconds;
    checks.push(
      result.counts.failed === 0
        ? passed(
            'restore',
            `${result.counts.created} objects created in ${namespaces.length} throwaway namespace(s)`,
          )
        : failed(
            'restore',
            `${result.counts.failed} object(s) failed: ${result.objects
              .filter((o) => o.outcome === 'failed')
              .slice(0, 3)
              .map((o) => `${o.resource} ${o.name}: ${o.reason}`)
              .join('; ')}`,
          ),
    );
    t = performance.now();
    const served = new Map(
      (await discover(client, { info() {}, warn() {} }, options.signal)).resources.map((r) => [
        qualifiedName(r),
        r,
      ]),
    );
    for (const [resource, inBackup] of Object.entries(result.inBackup).sort()) {
      const r = served.get(resource);
      if (!r?.namespaced) continue;
      const expected = facts.counts.byResource[resource];
      const mine = result.objects.filter((o) => o.resource === resource);
      const restored = mine.filter((o) => restoredOutcomes.has(o.outcome));
      // What a controller owned in the backup (a ReplicaSet's Pods, a Deployment's
      // ReplicaSets) the controllers may replace or adopt: restored, but not required to stay.
      const required = restored.filter((o) => !o.controlled);
      const present = new Set<string>();
      for (const ns of new Set(required.map((o) => o.namespace!))) {
        const list = await client.get<{ items: { metadata: { name: string } }[] }>(
          collectionPath(r, ns),
          options.signal,
        );
        for (const item of list.items) present.add(`${ns}/${item.metadata.name}`);
      }
      const missing = required.filter((o) => !present.has(`${o.namespace}/${o.name}`));
      const label = `objects: ${resource}`;
      const skippedHere = mine.filter((o) => o.outcome === 'skipped').length;
      const controlled = restored.length - required.length;
      const problems = [
        expected !== undefined && inBackup !== expected
          ? `the archive holds ${inBackup}, the manifest records ${expected}`
          : '',
        missing.length
          ? `${missing.length} of ${required.length} restored are not in the cluster (${missing
              .slice(0, 3)
              .map((o) => `${o.namespace}/${o.name}`)
              .join(', ')})`
          : '',
      ].filter(Boolean);
      checks.push(
        problems.length
          ? failed(label, problems.join('; '))
          : passed(
              label,
              `${inBackup} in the backup, ${required.length} restored and found${controlled ? `, ${controlled} owned by controllers (restored, left to them)` : ''}${skippedHere ? `, ${skippedHere} skipped by rule` : ''}`,
            ),
      );
    }
    for (const v of facts.volumeSnapshots ?? []) {
      const label = `volume snapshot: ${v.namespace}/${v.pvc}`;
      try {
        const snap = await client.get<{ status?: { readyToUse?: boolean; error?: { message?: string } } }>(
          `/apis/snapshot.storage.k8s.io/v1/namespaces/${v.namespace}/volumesnapshots/${v.snapshot}`,
          options.signal,
        );
        checks.push(
          snap.status?.readyToUse
            ? passed(label, `${v.snapshot} is ready to use (${v.restoreSize ?? 'size unknown'})`)
            : failed(label, `${v.snapshot} is not ready: ${snap.status?.error?.message ?? 'no error given'}`),
        );
      } catch (error) {
        checks.push(failed(label, `${v.snapshot}: ${messageOf(error)}`));
      }
    }
    if (options.readyTimeoutMs > 0) checks.push(...(await waitReady(options, namespaces)));
    timings.checks = (performance.now() - t) / 1000;
  } catch (error) {
    if (options.signal?.aborted || !(error instanceof UserError || error instanceof KubeError)) throw error;
    checks.push(failed('restore', messageOf(error)));
  } finally {
    t = performance.now();
    const left = await deleteNamespaces(client, namespaces, logger);
    timings.teardown = (performance.now() - t) / 1000;
    if (left.length === 0) options.onLeftovers?.(undefined);
  }
  return {
    checks,
    restoreSeconds,
    environment: { type: 'k8s-namespaces', server: client.server, namespaces, removed: true },
    timings,
  };
}

/** Each restored Deployment and StatefulSet ready (readyReplicas = replicas) within the timeout: one row each. */
async function waitReady(options: K8sVerifyOptions, namespaces: string[]): Promise<CheckRow[]> {
  const { client } = options;
  const deadline = Date.now() + options.readyTimeoutMs;
  const kinds = [
    { path: 'deployments', label: 'deployment' },
    { path: 'statefulsets', label: 'statefulset' },
  ];
  type Workload = {
    metadata: { name: string; namespace: string };
    spec?: { replicas?: number };
    status?: { readyReplicas?: number };
  };
  const pending = new Map<string, Workload>();
  const rows: CheckRow[] = [];
  for (;;) {
    pending.clear();
    for (const ns of namespaces) {
      for (const k of kinds) {
        const list = await client.get<{ items: Workload[] }>(
          `/apis/apps/v1/namespaces/${ns}/${k.path}`,
          options.signal,
        );
        for (const w of list.items) {
          const want = w.spec?.replicas ?? 1;
          if ((w.status?.readyReplicas ?? 0) < want)
            pending.set(`${k.label} ${w.metadata.namespace}/${w.metadata.name}`, w);
        }
      }
    }
    if (pending.size === 0 || Date.now() > deadline) break;
    await sleep(options.pollIntervalMs ?? 5000, undefined, { signal: options.signal });
  }
  for (const [name, w] of pending) {
    rows.push(
      failed(
        `ready: ${name}`,
        `${w.status?.readyReplicas ?? 0}/${w.spec?.replicas ?? 1} ready after ${Math.round(options.readyTimeoutMs / 1000)} s`,
      ),
    );
  }
  if (rows.length === 0) rows.push(passed('ready', 'every Deployment and StatefulSet is ready'));
  return rows;
}

/** Deletes the throwaway namespaces (their objects go with them); returns those it could not delete. */
export async function deleteNamespaces(
  client: KubeClient,
  namespaces: string[],
  logger: Logger,
): Promise<string[]> {
  const left: string[] = [];
  for (const ns of namespaces) {
    try {
      await client.request('DELETE', `/api/v1/namespaces/${encodeURIComponent(ns)}`);
    } catch (error) {
      if (error instanceof KubeError && error.code === 404) continue;
      left.push(ns);
      logger.warn(`could not delete the namespace ${ns}: ${messageOf(error)}; delete it by hand`);
    }
  }
  return left;
}

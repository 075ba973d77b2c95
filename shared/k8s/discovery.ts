import type { Logger } from '../pipeline/progress.ts';
import { type KubeClient, KubeError } from './client.ts';

/** A resource type the backup can list, get, create and delete. */
export interface ApiResource {
  group: string;
  version: string;
  /** Plural name, e.g. deployments. */
  resource: string;
  kind: string;
  namespaced: boolean;
}

/** `deployments.apps`, `pods` (the core group has no suffix): Velero's folder name. */
export const qualifiedName = (r: { resource: string; group: string }) =>
  r.group ? `${r.resource}.${r.group}` : r.resource;

/** The path of a resource's collection, in a namespace or across all of them. */
export function collectionPath(r: ApiResource, namespace?: string): string {
  const base = r.group ? `/apis/${r.group}/${r.version}` : `/api/${r.version}`;
  return namespace
    ? `${base}/namespaces/${encodeURIComponent(namespace)}/${r.resource}`
    : `${base}/${r.resource}`;
}

interface ResourceList {
  resources: { name: string; namespaced: boolean; kind: string; verbs: string[] }[];
}

const needed = ['list', 'get', 'create', 'delete'];

/**
 * Every resource type that can be listed, got, created and deleted, at each group's
 * preferred version; subresources (pods/status) are skipped, a kind served under two groups
 * (events in core and events.k8s.io) is kept once, the first seen (core first), and a group
 * whose API is down (an aggregated API) is skipped with a warning instead of failing.
 */
export async function discover(
  client: KubeClient,
  logger: Logger,
  signal?: AbortSignal,
): Promise<{ resources: ApiResource[]; skipped: string[] }> {
  const lists: { group: string; version: string; path: string }[] = [];
  const core = await client.get<{ versions: string[] }>('/api', signal);
  for (const v of core.versions) lists.push({ group: '', version: v, path: `/api/${v}` });
  const groups = await client.get<{
    groups: { name: string; preferredVersion?: { version: string }; versions: { version: string }[] }[];
  }>('/apis', signal);
  for (const g of groups.groups) {
    const version = g.preferredVersion?.version ?? g.versions[0]?.version;
    if (version) lists.push({ group: g.name, version, path: `/apis/${g.name}/${version}` });
  }
  const resources: ApiResource[] = [];
  const skipped: string[] = [];
  const seen = new Set<string>();
  for (const list of lists) {
    let answer: ResourceList;
    try {
      answer = await client.get<ResourceList>(list.path, signal);
    } catch (error) {
      if (!(error instanceof KubeError)) throw error;
      const what = `${list.group || 'core'}/${list.version}`;
      logger.warn(
        `discovery: ${what} is unavailable (${error.code} ${error.reason}); its resources are not backed up`,
      );
      skipped.push(what);
      continue;
    }
    for (const r of answer.resources) {
      if (r.name.includes('/')) continue;
      if (!needed.every((v) => r.verbs.includes(v))) continue;
      const identity = `${r.name}:${r.kind}`;
      if (seen.has(identity)) continue;
      seen.add(identity);
      resources.push({
        group: list.group,
        version: list.version,
        resource: r.name,
        kind: r.kind,
        namespaced: r.namespaced,
      });
    }
  }
  return { resources, skipped };
}

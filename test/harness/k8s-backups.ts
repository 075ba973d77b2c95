/**
 * k8s backups for the tests, shared by the fake kube-apiserver's tests and the real control
 * plane's: an archive's entries, a backup crafted by whoever owns the bucket, a listing of what
 * users made in a cluster, and the hostile-backup suite, run against either server so that both
 * must give the same results.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import { before, describe, test } from 'node:test';
import zlib from 'node:zlib';
import * as tar from 'tar-stream';
import { Catalog } from '../../shared/catalog/catalog.ts';
import type { Manifest } from '../../shared/catalog/manifest.ts';
import type { K8sFacts, K8sFilters } from '../../shared/k8s/backup.ts';
import type { KubeClient } from '../../shared/k8s/client.ts';
import { collectionPath, discover } from '../../shared/k8s/discovery.ts';
import { restoredLabel, restoreK8s } from '../../shared/k8s/restore.ts';
import { verifyK8s } from '../../shared/k8s/verify.ts';
import { artifactName, writeArtifact } from '../../shared/pipeline/artifact.ts';
import type { Logger } from '../../shared/pipeline/progress.ts';
import { openStorage } from '../../shared/storage/open.ts';
import { testManifest } from './catalog.ts';

export const allFilters: K8sFilters = {
  includeNamespaces: [],
  excludeNamespaces: [],
  includeResources: [],
  excludeResources: [],
  includeClusterResources: 'auto',
};

/** The archive's entries, name → text, of a backup stored in the folder `backups`. */
export async function archiveEntries(backups: string, manifest: Manifest): Promise<Map<string, string>> {
  const file = path.join(backups, manifest.set, manifest.id, manifest.artifacts[0]!.name);
  const plain = zlib.zstdDecompressSync(await fs.readFile(file));
  const out = new Map<string, string>();
  const extract = tar.extract();
  const done = new Promise<void>((resolve, reject) => {
    extract.on('entry', (header, stream, next) => {
      const chunks: Buffer[] = [];
      stream.on('data', (c) => chunks.push(c as Buffer));
      stream.on('end', () => {
        out.set(header.name, Buffer.concat(chunks).toString('utf8'));
        next();
      });
    });
    extract.on('finish', resolve);
    extract.on('error', reject);
  });
  Readable.from([plain]).pipe(extract);
  await done;
  return out;
}

/**
 * A k8s backup committed to the catalog in the folder `backups` with exactly these archive
 * entries, as whoever owns the bucket can write one: the artifact's size and sha256, the counts
 * per resource and namespace (from the paths) and the namespaces (from the Namespace entries)
 * all match. `cluster` is what the facts say the backup came from.
 */
export async function craftedBackup(
  backups: string,
  cluster: K8sFacts['cluster'],
  set: string,
  files: [string, unknown][],
  logger: Logger,
): Promise<Manifest> {
  const storage = openStorage(backups);
  const catalog = new Catalog(storage);
  const pending = await catalog.begin(set, 'exclude-storage', new Date());
  const pack = tar.pack();
  for (const [name, body] of files)
    pack.entry({ name }, typeof body === 'string' ? body : JSON.stringify(body));
  pack.finalize();
  const chunks: Buffer[] = [];
  for await (const c of pack) chunks.push(c as Buffer);
  const name = artifactName('resources.tar', 'zstd', false);
  const artifact = await writeArtifact(
    {
      storage,
      key: pending.key(name),
      format: 'tar',
      source: Readable.from([Buffer.concat(chunks)]),
      compression: 'zstd',
      logger,
      label: 'archived',
    },
    name,
  );
  const counts: K8sFacts['counts'] = { byResource: {}, byNamespace: {}, total: 0 };
  const namespaces: string[] = [];
  for (const [entry] of files) {
    const [top, resource, scope, ns] = entry.split('/');
    if (top !== 'resources' || !resource) continue;
    if (resource === 'namespaces') namespaces.push(path.basename(entry, '.json'));
    const namespace = scope === 'namespaces' ? ns! : '';
    counts.byResource[resource] = (counts.byResource[resource] ?? 0) + 1;
    counts.byNamespace[namespace] = (counts.byNamespace[namespace] ?? 0) + 1;
    counts.total++;
  }
  const facts: K8sFacts = {
    cluster,
    filters: allFilters,
    counts,
    namespaces,
    unavailableApis: [],
  };
  const manifest = testManifest({
    id: pending.id,
    set,
    kind: 'k8s',
    mode: 'exclude-storage',
    artifacts: [artifact],
    facts: facts as unknown as Record<string, unknown>,
  });
  await catalog.commit(pending, manifest);
  return manifest;
}

interface Listed {
  metadata: {
    name: string;
    namespace?: string;
    labels?: Record<string, string>;
    managedFields?: { manager?: string }[];
  };
  type?: string;
  status?: { phase?: string };
}

/** The control plane's own writers, as field managers. */
const controlPlane = new Set(['kube-apiserver', 'kube-controller-manager']);

/**
 * Whether the control plane made the object by itself: what its controllers put in every new
 * namespace (the `default` service account, which carries no managedFields; token Secrets;
 * `kube-root-ca.crt`) and whatever only kube-apiserver or kube-controller-manager wrote
 * (bootstrap RBAC, EndpointSlices, ReplicaSets, …). A restored object (the restore label) never is.
 */
function controlPlaneMade(resource: string, o: Listed): boolean {
  if (o.metadata.labels?.[restoredLabel] !== undefined) return false;
  if (resource === 'serviceaccounts' && o.metadata.name === 'default') return true;
  if (resource === 'secrets' && o.type === 'kubernetes.io/service-account-token') return true;
  if (resource === 'configmaps' && o.metadata.name === 'kube-root-ca.crt') return true;
  const managers = (o.metadata.managedFields ?? []).map((f) => f.manager ?? '');
  return managers.length > 0 && managers.every((m) => controlPlane.has(m));
}

/**
 * What users made in a real cluster, as `group/resource/namespace/name` keys (the fake's keys):
 * every object of every listable resource except events and what the control plane made by
 * itself (see controlPlaneMade). Namespace deletion is asynchronous on a real server: it first
 * waits (up to `settleMs`) until no namespace is Terminating.
 */
export async function userObjectKeys(client: KubeClient, settleMs = 60_000): Promise<string[]> {
  const deadline = Date.now() + settleMs;
  for (;;) {
    const namespaces = await client.get<{ items: Listed[] }>('/api/v1/namespaces');
    const terminating = namespaces.items.filter((n) => n.status?.phase === 'Terminating');
    if (terminating.length === 0) break;
    if (Date.now() > deadline)
      throw new Error(
        `namespaces still Terminating after ${settleMs} ms: ${terminating.map((n) => n.metadata.name).join(', ')}`,
      );
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  const { resources } = await discover(client, { info() {}, warn() {} });
  const keys: string[] = [];
  for (const r of resources) {
    if (r.resource === 'events') continue;
    const list = await client.get<{ items: Listed[] }>(collectionPath(r));
    for (const o of list.items)
      if (!controlPlaneMade(r.resource, o))
        keys.push(`${r.group}/${r.resource}/${o.metadata.namespace ?? ''}/${o.metadata.name}`);
  }
  return keys.sort();
}

/** The server a suite runs against: the fake or a real control plane. */
export interface KubeTarget {
  client: KubeClient;
  /** The folder the suite's backups are stored in. */
  backups: string;
  cluster: K8sFacts['cluster'];
  logger: Logger;
  /** `group/resource/namespace/name` of every object users made (the fake: all it holds). */
  objectKeys(): Promise<string[]>;
}

/**
 * The hostile-backup suite: a bucket owner's archive files objects under paths that disagree
 * with what they say; the path decides, and what would escape it is refused. `serverName`
 * names the server in the titles. The namespace `shop` must exist.
 */
export function describeHostileBackup(title: string, serverName: string, target: () => KubeTarget): void {
  describe(title, () => {
    const namespace = (name: string) => ({ apiVersion: 'v1', kind: 'Namespace', metadata: { name } });
    const configmap = (name: string, ns?: string) => ({
      apiVersion: 'v1',
      kind: 'ConfigMap',
      metadata: { name, ...(ns ? { namespace: ns } : {}) },
      data: { a: '1' },
    });
    const toClusterAdmin = (name: string) => ({
      apiVersion: 'rbac.authorization.k8s.io/v1',
      kind: 'ClusterRoleBinding',
      metadata: { name, namespace: 'app' },
      roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: 'cluster-admin' },
      subjects: [{ kind: 'ServiceAccount', name: 'default', namespace: 'app' }],
    });
    const pwn = 'resources/clusterrolebindings.rbac.authorization.k8s.io/namespaces/app/pwn.json';
    /** Filed under namespaces/app: a config map, one naming kube-system, a cluster-admin binding, … */
    const hostile: [string, unknown][] = [
      ['metadata/version', '1.1.0\n'],
      ['resources/namespaces/cluster/app.json', namespace('app')],
      [pwn, toClusterAdmin('pwn')],
      ['resources/configmaps/namespaces/app/settings.json', configmap('settings', 'app')],
      ['resources/configmaps/namespaces/app/planted.json', configmap('planted', 'kube-system')],
      ['resources/configmaps/namespaces/app/sneaky.json', toClusterAdmin('sneaky')],
      ['resources/configmaps/namespaces/app/renamed.json', configmap('kube-proxy', 'app')],
      ['resources/configmaps/cluster/loose.json', configmap('loose', 'kube-system')],
    ];
    const refusals = (ns: string) => [
      `clusterrolebindings.rbac.authorization.k8s.io ${ns}/pwn: refused ${pwn}: clusterrolebindings.rbac.authorization.k8s.io is cluster-scoped, but the path files it under namespaces/app/`,
      `configmaps ${ns}/sneaky: refused resources/configmaps/namespaces/app/sneaky.json: the object is a ClusterRoleBinding, but the path files it under configmaps (ConfigMap)`,
      `configmaps ${ns}/renamed: refused resources/configmaps/namespaces/app/renamed.json: metadata.name is 'kube-proxy', but the path names it 'renamed'`,
      'configmaps /loose: refused resources/configmaps/cluster/loose.json: configmaps is namespaced, but the path files it under cluster/',
    ];
    const crafted = (set: string, files: [string, unknown][]) => {
      const t = target();
      return craftedBackup(t.backups, t.cluster, set, files, t.logger);
    };

    async function restoreHostile(manifest: Manifest, extra: Partial<Parameters<typeof restoreK8s>[0]>) {
      const t = target();
      return restoreK8s({
        storage: openStorage(t.backups),
        manifest,
        client: t.client,
        namespaceMapping: new Map(),
        includeNamespaces: [],
        excludeNamespaces: [],
        includeResources: [],
        excludeResources: [],
        existing: 'skip',
        dryRun: false,
        crdWaitMs: 0,
        logger: t.logger,
        ...extra,
      });
    }
    const failures = (result: Awaited<ReturnType<typeof restoreK8s>>) =>
      result.objects
        .filter((o) => o.outcome === 'failed')
        .map((o) => `${o.resource} ${o.namespace ?? ''}/${o.name}: ${o.reason}`);
    /** Runs `run`; gives the objects it left in the cluster, by group/resource/namespace/name. */
    async function leftBy<T>(run: () => Promise<T>): Promise<[T, string[]]> {
      const before = new Set(await target().objectKeys());
      const outcome = await run();
      return [outcome, (await target().objectKeys()).filter((k) => !before.has(k)).sort()];
    }
    const names = async (url: string) =>
      (await target().client.get<{ items: { metadata: { name: string } }[] }>(url)).items
        .map((c) => c.metadata.name)
        .sort();
    const kubeSystemConfigMaps = () => names('/api/v1/namespaces/kube-system/configmaps');
    const clusterRoleBindings = () => names('/apis/rbac.authorization.k8s.io/v1/clusterrolebindings');
    /** kube-system's config maps and the role bindings before the suite ([] on the fake). */
    const baseline = { configMaps: [] as string[], bindings: [] as string[] };
    before(async () => {
      baseline.configMaps = await kubeSystemConfigMaps();
      baseline.bindings = await clusterRoleBindings();
    });
    /** What a bucket owner aimed at: kube-system's config maps and the cluster's role bindings, listed. */
    async function assertNothingPlanted() {
      assert.deepEqual(await kubeSystemConfigMaps(), baseline.configMaps);
      assert.deepEqual(await clusterRoleBindings(), baseline.bindings);
    }

    test(`${serverName} answers creates as kube-apiserver does: the URL decides the namespace`, async () => {
      const { client } = target();
      const refused = async (url: string, body: unknown) => {
        const error = await client.request('POST', url, body).then(
          () => assert.fail(`POST ${url} was accepted`),
          (e: unknown) => e as Error,
        );
        return error.message;
      };
      assert.equal(
        await refused('/api/v1/namespaces/shop/configmaps', configmap('x', 'kube-system')),
        'POST /api/v1/namespaces/shop/configmaps: 400 BadRequest: the namespace of the provided object does not match the namespace sent on the request',
      );
      assert.equal(
        await refused('/api/v1/configmaps', configmap('x', 'kube-system')),
        'POST /api/v1/configmaps: 405 MethodNotAllowed: the server does not allow this method on the requested resource',
      );
      assert.equal(
        await refused(
          '/apis/rbac.authorization.k8s.io/v1/namespaces/shop/clusterrolebindings',
          toClusterAdmin('x'),
        ),
        'POST /apis/rbac.authorization.k8s.io/v1/namespaces/shop/clusterrolebindings: 404 NotFound: the server could not find the requested resource',
      );
    });

    test('restore with include-namespaces: objects land in their path namespace, cluster-scoped kinds under namespaces/ are refused', async () => {
      const manifest = await crafted('hostile-include', hostile);
      const [result, left] = await leftBy(() => restoreHostile(manifest, { includeNamespaces: ['app'] }));
      assert.deepEqual(left, ['/configmaps/app/planted', '/configmaps/app/settings', '/namespaces//app']);
      const planted = await target().client.get<{ metadata: { namespace: string } }>(
        '/api/v1/namespaces/app/configmaps/planted',
      );
      assert.equal(planted.metadata.namespace, 'app');
      assert.deepEqual(failures(result), refusals('app'));
      assert.equal(result.counts.failed, 4);
      await assertNothingPlanted();
    });

    test('restore with namespace-mapping: every namespaced object goes to the mapped namespace of its path', async () => {
      const manifest = await crafted('hostile-mapping', hostile);
      const [result, left] = await leftBy(() =>
        restoreHostile(manifest, { namespaceMapping: new Map([['app', 'app-mapped']]) }),
      );
      assert.deepEqual(left, [
        '/configmaps/app-mapped/planted',
        '/configmaps/app-mapped/settings',
        '/namespaces//app-mapped',
      ]);
      assert.deepEqual(failures(result), refusals('app-mapped'));
      await assertNothingPlanted();
    });

    test('path components: a namespace or name that is empty, `..`, has a `/` or is no DNS-1123 name is refused', async () => {
      const manifest = await crafted('hostile-paths', [
        ['resources/namespaces/cluster/app.json', namespace('app')],
        ['resources/configmaps/namespaces/../evil.json', configmap('evil', 'app')],
        ['resources/configmaps/namespaces//empty.json', configmap('empty', 'app')],
        ['resources/configmaps/namespaces/Kube-System/upper.json', configmap('upper', 'app')],
        ['resources/configmaps/namespaces/app/a/b.json', configmap('a/b', 'app')],
        ['resources/configmaps/namespaces/app/...json', configmap('..', 'app')],
        ['resources/configmaps/namespaces/app/Not_DNS.json', configmap('Not_DNS', 'app')],
        // RBAC names are path segments on the server (system:…): valid.
        [
          'resources/roles.rbac.authorization.k8s.io/namespaces/app/system:leader-locking.json',
          {
            apiVersion: 'rbac.authorization.k8s.io/v1',
            kind: 'Role',
            metadata: { name: 'system:leader-locking', namespace: 'app' },
            rules: [],
          },
        ],
      ]);
      const [result, left] = await leftBy(() =>
        restoreHostile(manifest, { namespaceMapping: new Map([['app', 'app-paths']]) }),
      );
      assert.deepEqual(left, [
        '/namespaces//app-paths',
        'rbac.authorization.k8s.io/roles/app-paths/system:leader-locking',
      ]);
      const dns = '(a DNS-1123 label)';
      assert.deepEqual(failures(result), [
        `configmaps ../evil: refused resources/configmaps/namespaces/../evil.json: the namespace '..' is not a valid namespace name ${dns}`,
        `configmaps /empty: refused resources/configmaps/namespaces//empty.json: the namespace '' is not a valid namespace name ${dns}`,
        `configmaps Kube-System/upper: refused resources/configmaps/namespaces/Kube-System/upper.json: the namespace 'Kube-System' is not a valid namespace name ${dns}`,
        "configmaps app-paths/a/b: refused resources/configmaps/namespaces/app/a/b.json: the name 'a/b' is not a valid configmaps name (a DNS-1123 subdomain)",
        "configmaps app-paths/..: refused resources/configmaps/namespaces/app/...json: the name '..' is not a valid configmaps name (a DNS-1123 subdomain)",
        "configmaps app-paths/Not_DNS: refused resources/configmaps/namespaces/app/Not_DNS.json: the name 'Not_DNS' is not a valid configmaps name (a DNS-1123 subdomain)",
      ]);
      await assertNothingPlanted();
    });

    test("verify-restore: only namespaced objects of the backup's namespaces, into the throwaway ones; nothing left behind", async () => {
      const manifest = await crafted('hostile-verify', [
        ['resources/namespaces/cluster/app.json', namespace('app')],
        [pwn, toClusterAdmin('pwn')],
        ['resources/configmaps/namespaces/app/settings.json', configmap('settings', 'app')],
        ['resources/configmaps/namespaces/app/planted.json', configmap('planted', 'kube-system')],
        ['resources/configmaps/namespaces/kube-system/injected.json', configmap('injected', 'kube-system')],
      ]);
      const t = target();
      const [outcome, left] = await leftBy(() =>
        verifyK8s({
          storage: openStorage(t.backups),
          manifest,
          client: t.client,
          readyTimeoutMs: 0,
          logger: t.logger,
        }),
      );
      assert.deepEqual(left, [], 'nothing is left behind');
      const [throwaway] = outcome.environment.namespaces as string[];
      assert.match(throwaway!, /^app-lbv-[0-9a-f]{6}$/);
      const restore = outcome.checks.find((c) => c.name === 'restore')!;
      assert.equal(restore.status, 'failed');
      assert.equal(
        restore.detail,
        `2 object(s) failed: clusterrolebindings.rbac.authorization.k8s.io pwn: refused ${pwn}: clusterrolebindings.rbac.authorization.k8s.io is cluster-scoped, but the path files it under namespaces/app/; configmaps injected: refused resources/configmaps/namespaces/kube-system/injected.json: the namespace kube-system is not one of the mapped namespaces`,
      );
      assert.ok(!(await t.objectKeys()).some((k) => k.includes('-lbv-')));
      await assertNothingPlanted();
    });
  });
}

/**
 * backup-k8s and restore-k8s against a real control plane (etcd + kube-apiserver +
 * kube-controller-manager v1.20.2, test/harness/kube-cluster.ts): the hostile-backup suite of
 * k8s.test.ts must give the same results as on the fake, and a plain round trip of a ConfigMap,
 * a Secret, Services and a Deployment into a mapped namespace must work. Skipped, saying why,
 * when the binaries are not built (bash scripts/kube-binaries.sh, as root, once).
 */
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { Manifest } from '../../shared/catalog/manifest.ts';
import { backupK8s } from '../../shared/k8s/backup.ts';
import { KubeClient } from '../../shared/k8s/client.ts';
import { type K8sRestoreResult, restoredLabel, restoreK8s } from '../../shared/k8s/restore.ts';
import { openStorage } from '../../shared/storage/open.ts';
import { allFilters, archiveEntries, describeHostileBackup, userObjectKeys } from '../harness/k8s-backups.ts';
import { type KubeCluster, kubeBinaries, startKubeCluster } from '../harness/kube-cluster.ts';
import { tempDir } from '../harness/servers.ts';

const found = kubeBinaries();
if (!found.binaries)
  console.log(
    `# k8s-real: skipped, no real Kubernetes control plane: ${found.reason}; the fake's tests still run`,
  );
const skip = found.binaries ? false : `no real Kubernetes control plane: ${found.reason}`;

let cluster: KubeCluster;
let client: KubeClient;
let work: string;
let version: string;
const warnings: string[] = [];
const logger = { info() {}, warn: (m: string) => warnings.push(m) };
const timings: Record<string, number> = {};

/** kube-apiserver's answer to a Pod created before the namespace's service account has its token. */
const noTokenYet = /500 ServerTimeout: No API token found for service account "default"/;

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

type Obj = {
  apiVersion?: string;
  kind?: string;
  metadata: {
    name: string;
    namespace?: string;
    uid?: string;
    labels?: Record<string, string>;
    ownerReferences?: unknown[];
  };
  spec?: Record<string, unknown>;
  data?: Record<string, string>;
  binaryData?: Record<string, string>;
  type?: string;
};

describe('a real control plane (kube-apiserver v1.20.2)', { skip }, () => {
  before(async () => {
    const t0 = Date.now();
    cluster = await startKubeCluster();
    timings.clusterStart = Date.now() - t0;
    client = await KubeClient.open(cluster.kubeconfig);
    version = (await client.get<{ gitVersion: string }>('/version')).gitVersion;
    work = await tempDir('k8s-real');
    await client.request('POST', '/api/v1/namespaces', { metadata: { name: 'shop' } });
  });

  after(async () => {
    const t0 = Date.now();
    await cluster?.stop();
    timings.clusterStop = Date.now() - t0;
    if (work) await fs.rm(work, { recursive: true, force: true });
    if (cluster)
      console.log(
        `# k8s-real: cluster ${JSON.stringify(cluster.timings)} ms after start; started in ${timings.clusterStart} ms, stopped in ${timings.clusterStop} ms`,
      );
  });

  test('the server is the real one', () => {
    assert.match(version, /^v1\.20\./);
    assert.match(cluster.server, /^https:\/\/127\.0\.0\.1:\d+$/);
  });

  describeHostileBackup(
    'a hostile backup: the archive path decides where each object goes (the same results as on the fake)',
    'the real kube-apiserver',
    () => ({
      client,
      backups: path.join(work, 'backups'),
      cluster: { server: cluster.server, version },
      logger,
      objectKeys: () => userObjectKeys(client),
    }),
  );

  describe('a plain backup-k8s → restore-k8s round trip into a mapped namespace', () => {
    const ns = 'store';
    const into = 'store-restored';
    let manifest: Manifest;
    let archive: Map<string, string>;
    let result: K8sRestoreResult;
    const source: Record<string, Obj> = {};
    const url = (namespace: string, kind: string, name: string) =>
      ({
        configmap: `/api/v1/namespaces/${namespace}/configmaps/${name}`,
        secret: `/api/v1/namespaces/${namespace}/secrets/${name}`,
        service: `/api/v1/namespaces/${namespace}/services/${name}`,
        deployment: `/apis/apps/v1/namespaces/${namespace}/deployments/${name}`,
      })[kind]!;
    const objects: [kind: string, name: string, collection: string, body: Obj][] = [
      [
        'configmap',
        'settings',
        `/api/v1/namespaces/${ns}/configmaps`,
        {
          metadata: { name: 'settings', labels: { app: 'web' } },
          data: { 'app.conf': 'mode = fast\n', emoji: '🐳' },
          binaryData: { blob: Buffer.from([0, 1, 2, 255]).toString('base64') },
        },
      ],
      [
        'secret',
        'db-password',
        `/api/v1/namespaces/${ns}/secrets`,
        { metadata: { name: 'db-password' }, type: 'Opaque', data: { password: 'c2VjcmV0' } },
      ],
      [
        'service',
        'web',
        `/api/v1/namespaces/${ns}/services`,
        {
          metadata: { name: 'web', labels: { app: 'web' } },
          spec: { selector: { app: 'web' }, ports: [{ name: 'http', port: 80, targetPort: 8080 }] },
        },
      ],
      [
        'service',
        'web-nodeport',
        `/api/v1/namespaces/${ns}/services`,
        {
          metadata: { name: 'web-nodeport' },
          spec: { type: 'NodePort', selector: { app: 'web' }, ports: [{ port: 80, targetPort: 8080 }] },
        },
      ],
      [
        'service',
        'db',
        `/api/v1/namespaces/${ns}/services`,
        { metadata: { name: 'db' }, spec: { clusterIP: 'None', ports: [{ port: 5432 }] } },
      ],
      [
        'deployment',
        'web',
        `/apis/apps/v1/namespaces/${ns}/deployments`,
        {
          metadata: { name: 'web', labels: { app: 'web' } },
          spec: {
            replicas: 2,
            selector: { matchLabels: { app: 'web' } },
            template: {
              metadata: { labels: { app: 'web' } },
              spec: {
                containers: [
                  {
                    name: 'web',
                    image: 'nginx:1.25',
                    ports: [{ containerPort: 8080 }],
                    envFrom: [{ configMapRef: { name: 'settings' } }],
                  },
                ],
              },
            },
          },
        },
      ],
    ];

    before(async () => {
      await client.request('POST', '/api/v1/namespaces', { metadata: { name: ns } });
      for (const [kind, name, collection, body] of objects) {
        await client.request('POST', collection, body);
        source[`${kind}/${name}`] = await client.get<Obj>(url(ns, kind, name));
      }
      // The controllers' own objects exist before the backup: the Deployment's ReplicaSet and
      // Pods, the Services' Endpoints and EndpointSlices, the namespace's service account.
      const deadline = Date.now() + 30_000;
      for (;;) {
        const rs = await client.get<{ items: unknown[] }>(`/apis/apps/v1/namespaces/${ns}/replicasets`);
        const pods = await client.get<{ items: unknown[] }>(`/api/v1/namespaces/${ns}/pods`);
        const sa = await client.get<{ items: unknown[] }>(`/api/v1/namespaces/${ns}/serviceaccounts`);
        if ((rs.items.length > 0 && pods.items.length === 2 && sa.items.length > 0) || Date.now() > deadline)
          break;
        await sleep(200);
      }
      for (const [kind, name] of objects)
        source[`${kind}/${name}`] = await client.get<Obj>(url(ns, kind, name));
      const t0 = Date.now();
      manifest = await backupK8s({
        storage: openStorage(path.join(work, 'backups')),
        set: 'round-trip',
        client,
        filters: { ...allFilters, includeNamespaces: [ns] },
        compression: 'zstd',
        tags: [],
        logger,
      });
      timings.backup = Date.now() - t0;
      archive = await archiveEntries(path.join(work, 'backups'), manifest);
      const t1 = Date.now();
      result = await restoreK8s({
        storage: openStorage(path.join(work, 'backups')),
        manifest,
        client,
        namespaceMapping: new Map([[ns, into]]),
        includeNamespaces: [],
        excludeNamespaces: [],
        includeResources: [],
        excludeResources: [],
        existing: 'skip',
        dryRun: false,
        crdWaitMs: 5000,
        logger,
      });
      timings.restore = Date.now() - t1;
      console.log(
        `# k8s-real round trip: backup ${timings.backup} ms, restore ${timings.restore} ms; ${JSON.stringify(result.counts)}; ` +
          result.objects
            .filter(
              (o) =>
                o.outcome !== 'created' ||
                !['configmaps', 'secrets', 'services', 'deployments.apps'].includes(o.resource),
            )
            .map(
              (o) =>
                `${o.outcome} ${o.resource} ${o.namespace ?? ''}/${o.name}${o.reason ? `: ${o.reason}` : ''}`,
            )
            .join(' | '),
      );
    });

    const archived = (kind: string, name: string) => {
      const entry = {
        configmap: 'configmaps',
        secret: 'secrets',
        service: 'services',
        deployment: 'deployments.apps',
      }[kind]!;
      const text = archive.get(`resources/${entry}/namespaces/${ns}/${name}.json`);
      assert.ok(text, `${entry}/${name} is in the archive`);
      return JSON.parse(text) as Obj & Record<string, unknown>;
    };

    test('the backup holds each object as the API server returned it', () => {
      assert.ok(archive.has(`resources/namespaces/cluster/${ns}.json`));
      for (const [kind, name] of objects) {
        const {
          apiVersion: _v,
          kind: _k,
          ...live
        } = structuredClone(source[`${kind}/${name}`]!) as Obj & Record<string, unknown>;
        const saved = archived(kind, name);
        delete saved.apiVersion;
        delete saved.kind;
        if (kind === 'deployment') {
          // Its controller moves the status (and so the resourceVersion) on between the two reads.
          for (const o of [saved, live] as Record<string, Record<string, unknown>>[]) {
            delete o.status;
            delete o.metadata!.resourceVersion;
            delete o.metadata!.managedFields;
          }
        }
        assert.deepEqual(saved, live, `${kind}/${name}`);
      }
    });

    test("each archived object names its apiVersion and kind, as Velero's archives do", () => {
      for (const [kind, name] of objects) {
        const saved = archived(kind, name);
        const live = source[`${kind}/${name}`]!;
        assert.deepEqual(
          { apiVersion: saved.apiVersion, kind: saved.kind },
          { apiVersion: live.apiVersion, kind: live.kind },
          `${kind}/${name}`,
        );
      }
    });

    test('restore-k8s creates every object without a failure', () => {
      assert.deepEqual(
        result.objects
          .filter((o) => o.outcome === 'failed')
          .map((o) => `${o.resource} ${o.namespace ?? ''}/${o.name}: ${o.reason}`),
        [],
      );
      for (const r of ['configmaps', 'secrets', 'services', 'deployments.apps'])
        assert.ok((result.byResource[r] ?? 0) > 0, `${r} restored: ${JSON.stringify(result.byResource)}`);
    });

    test('the ConfigMap and the Secret: the same data, new uid, the restore label', async () => {
      for (const key of ['configmap/settings', 'secret/db-password']) {
        const [kind, name] = key.split('/') as [string, string];
        const restored = await client.get<Obj>(url(into, kind, name));
        const original = source[key]!;
        assert.deepEqual(restored.data, original.data, key);
        assert.deepEqual(restored.binaryData, original.binaryData, key);
        assert.equal(restored.type, original.type, key);
        assert.notEqual(restored.metadata.uid, original.metadata.uid);
        assert.equal(restored.metadata.labels?.[restoredLabel], manifest.id);
        assert.equal(restored.metadata.namespace, into);
      }
    });

    test('the Services: the same ports and selector, a cluster IP and node port of their own, headless kept headless', async () => {
      for (const name of ['web', 'web-nodeport']) {
        const restored = await client.get<Obj>(url(into, 'service', name));
        const original = source[`service/${name}`]!;
        const spec = restored.spec as {
          clusterIP: string;
          selector: unknown;
          type: string;
          ports: unknown[];
        };
        const was = original.spec as typeof spec;
        assert.deepEqual(spec.selector, was.selector, name);
        assert.equal(spec.type, was.type, name);
        assert.notEqual(spec.clusterIP, was.clusterIP, `${name} gets a new cluster IP`);
        const portsOf = (ports: unknown[]) =>
          (ports as Record<string, unknown>[]).map(({ nodePort: _, ...p }) => p);
        assert.deepEqual(portsOf(spec.ports), portsOf(was.ports), name);
      }
      const db = await client.get<Obj>(url(into, 'service', 'db'));
      assert.equal((db.spec as { clusterIP: string }).clusterIP, 'None');
    });

    test('the Deployment: the same spec, and the controllers run it (a ReplicaSet, 2 Pods)', async () => {
      const restored = await client.get<Obj>(url(into, 'deployment', 'web'));
      assert.deepEqual(restored.spec, source['deployment/web']!.spec);
      assert.equal(restored.metadata.labels?.[restoredLabel], manifest.id);
      // What the controllers make of it: one ReplicaSet owned by the restored Deployment, two Pods.
      const deadline = Date.now() + 30_000;
      let owned: Obj[] = [];
      let pods: Obj[] = [];
      for (;;) {
        const rs = await client.get<{ items: Obj[] }>(`/apis/apps/v1/namespaces/${into}/replicasets`);
        owned = rs.items.filter((r) =>
          (r.metadata.ownerReferences as { uid: string }[] | undefined)?.some(
            (o) => o.uid === restored.metadata.uid,
          ),
        );
        pods = (await client.get<{ items: Obj[] }>(`/api/v1/namespaces/${into}/pods`)).items;
        if ((owned.length === 1 && pods.length === 2) || Date.now() > deadline) break;
        await sleep(200);
      }
      const rsNames = (
        await client.get<{ items: Obj[] }>(`/apis/apps/v1/namespaces/${into}/replicasets`)
      ).items.map((r) => `${r.metadata.name} owned=${(r.metadata.ownerReferences ?? []).length > 0}`);
      assert.equal(owned.length, 1, `ReplicaSets: ${rsNames.join(', ')}`);
      assert.equal(
        pods.length,
        2,
        `Pods: ${pods.map((p) => `${p.metadata.name} owned=${(p.metadata.ownerReferences ?? []).length > 0}`).join(', ')}`,
      );
    });

    test('restoring again skips what exists, and fails nothing', async () => {
      const again = await restoreK8s({
        storage: openStorage(path.join(work, 'backups')),
        manifest,
        client,
        namespaceMapping: new Map([[ns, into]]),
        includeNamespaces: [],
        excludeNamespaces: [],
        includeResources: [],
        excludeResources: [],
        existing: 'skip',
        dryRun: false,
        crdWaitMs: 5000,
        logger,
      });
      assert.deepEqual(
        again.objects
          .filter((o) => o.outcome === 'failed')
          .map((o) => `${o.resource} ${o.namespace ?? ''}/${o.name}: ${o.reason}`),
        [],
      );
      assert.equal(
        again.counts.created,
        0,
        JSON.stringify(again.objects.filter((o) => o.outcome === 'created')),
      );
    });
  });

  // Until the token controller has run, kube-apiserver refuses them (500 ServerTimeout: No API
  // token found for service account "default"): restore-k8s retries what the server asks to.
  test('Pods restored into a namespace the restore itself just created', async () => {
    await client.request('POST', '/api/v1/namespaces', { metadata: { name: 'solo' } });
    for (let i = 0; i < 3; i++) {
      const pod = {
        metadata: { name: `job-${i}` },
        spec: { containers: [{ name: 'c', image: 'busybox:1.36' }] },
      };
      for (let tries = 0; ; tries++) {
        try {
          await client.request('POST', '/api/v1/namespaces/solo/pods', pod);
          break;
        } catch (error) {
          if (tries > 100 || !noTokenYet.test(String(error))) throw error;
          await sleep(100);
        }
      }
    }
    const manifest = await backupK8s({
      storage: openStorage(path.join(work, 'backups')),
      set: 'pods',
      client,
      filters: { ...allFilters, includeNamespaces: ['solo'], includeResources: ['namespaces', 'pods'] },
      compression: 'zstd',
      tags: [],
      logger,
    });
    const result = await restoreK8s({
      storage: openStorage(path.join(work, 'backups')),
      manifest,
      client,
      namespaceMapping: new Map([['solo', 'solo-restored']]),
      includeNamespaces: [],
      excludeNamespaces: [],
      includeResources: [],
      excludeResources: [],
      existing: 'skip',
      dryRun: false,
      crdWaitMs: 5000,
      logger,
    });
    assert.deepEqual(
      result.objects.filter((o) => o.outcome === 'failed').map((o) => `${o.resource} ${o.name}: ${o.reason}`),
      [],
    );
    assert.equal(result.byResource.pods, 3);
  });
});

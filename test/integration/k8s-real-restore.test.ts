/**
 * restore-k8s and verify-restore on a real control plane (kube-apiserver +
 * kube-controller-manager v1.20.2, test/harness/kube-cluster.ts), for what the fake hid: Jobs,
 * node ports, volumes and their binding, objects controllers make, `existing: update`,
 * cluster-scoped objects under a namespace filter, dry runs that cannot validate, Velero's own
 * objects and service-account token Secrets. One cluster-wide backup of an ordinary namespace,
 * then restores of it as an operator would run them. Skipped, saying why, when the binaries are
 * not built (bash scripts/kube-binaries.sh, as root, once).
 */
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { Manifest } from '../../shared/catalog/manifest.ts';
import { backupK8s } from '../../shared/k8s/backup.ts';
import { KubeClient } from '../../shared/k8s/client.ts';
import {
  type K8sRestoreOptions,
  type K8sRestoreResult,
  restoredLabel,
  restoreK8s,
} from '../../shared/k8s/restore.ts';
import { verifyK8s } from '../../shared/k8s/verify.ts';
import { openStorage } from '../../shared/storage/open.ts';
import { allFilters } from '../harness/k8s-backups.ts';
import { eventually, type KubeCluster, kubeBinaries, startKubeCluster } from '../harness/kube-cluster.ts';
import { tempDir } from '../harness/servers.ts';

const found = kubeBinaries();
if (!found.binaries)
  console.log(`# k8s-real-restore: skipped, no real Kubernetes control plane: ${found.reason}`);
const skip = found.binaries ? false : `no real Kubernetes control plane: ${found.reason}`;

type Obj = {
  apiVersion?: string;
  kind?: string;
  metadata: {
    name: string;
    namespace?: string;
    uid?: string;
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
    ownerReferences?: { kind: string; uid: string }[];
  };
  spec?: Record<string, unknown>;
  status?: Record<string, unknown>;
  data?: Record<string, string>;
  type?: string;
};

let cluster: KubeCluster;
let client: KubeClient;
let work: string;
let manifest: Manifest;
const warnings: string[] = [];
const logger = { info() {}, warn: (m: string) => warnings.push(m) };

const gone = async (url: string) => {
  await client.request('DELETE', url).catch(() => {});
  await eventually(`${url} deleted`, () =>
    client.get(url).then(
      () => undefined,
      () => true,
    ),
  );
};

const restore = (extra: Partial<K8sRestoreOptions>): Promise<K8sRestoreResult> =>
  restoreK8s({
    storage: openStorage(path.join(work, 'backups')),
    manifest,
    client,
    namespaceMapping: new Map([['app', 'app2']]),
    includeNamespaces: ['app'],
    excludeNamespaces: [],
    includeResources: [],
    excludeResources: [],
    existing: 'skip',
    dryRun: false,
    crdWaitMs: 20_000,
    logger,
    ...extra,
  });

const failures = (result: K8sRestoreResult) =>
  result.objects
    .filter((o) => o.outcome === 'failed')
    .map((o) => `${o.resource} ${o.namespace ?? ''}/${o.name}: ${o.reason}`);
const outcome = (result: K8sRestoreResult, resource: string, name: string) =>
  result.objects.find((o) => o.resource === resource && o.name === name);

const crd = (plural: string, kind: string, group = 'example.com') => ({
  apiVersion: 'apiextensions.k8s.io/v1',
  kind: 'CustomResourceDefinition',
  metadata: { name: `${plural}.${group}` },
  spec: {
    group,
    scope: 'Namespaced',
    names: { plural, singular: kind.toLowerCase(), kind, listKind: `${kind}List` },
    versions: [
      {
        name: 'v1',
        served: true,
        storage: true,
        schema: { openAPIV3Schema: { type: 'object', 'x-kubernetes-preserve-unknown-fields': true } },
      },
    ],
  },
});

const hostPathVolume = (name: string, policy: string, claim: string) => ({
  metadata: { name },
  spec: {
    capacity: { storage: '1Gi' },
    accessModes: ['ReadWriteOnce'],
    persistentVolumeReclaimPolicy: policy,
    storageClassName: 'manual',
    hostPath: { path: `/tmp/lifeboat-k8s-test/${name}` },
    claimRef: { namespace: 'app', name: claim },
  },
});
const claim = (name: string, volume: string) => ({
  metadata: { name },
  spec: {
    accessModes: ['ReadWriteOnce'],
    storageClassName: 'manual',
    volumeName: volume,
    resources: { requests: { storage: '1Gi' } },
  },
});

describe('restores on a real control plane (kube-apiserver v1.20.2)', { skip }, () => {
  let dryRun: K8sRestoreResult;
  let first: K8sRestoreResult;
  const before_: Record<string, Obj> = {};

  before(async () => {
    cluster = await startKubeCluster();
    client = await KubeClient.open(cluster.kubeconfig);
    work = await tempDir('k8s-real-restore');
    const post = (url: string, body: unknown) => client.request<Obj>('POST', url, body);
    await post('/api/v1/namespaces', { metadata: { name: 'app' } });
    await post('/apis/apiextensions.k8s.io/v1/customresourcedefinitions', crd('widgets', 'Widget'));
    await post('/apis/apiextensions.k8s.io/v1/customresourcedefinitions', crd('gadgets', 'Gadget'));
    await post(
      '/apis/apiextensions.k8s.io/v1/customresourcedefinitions',
      crd('restores', 'Restore', 'velero.io'),
    );
    await eventually('the CRDs served', async () => {
      for (const g of ['example.com', 'velero.io'])
        await client.get(`/apis/${g}/v1`).catch(() => {
          throw new Error(`${g} not served`);
        });
      return true;
    });
    await post('/apis/example.com/v1/namespaces/app/widgets', {
      apiVersion: 'example.com/v1',
      kind: 'Widget',
      metadata: { name: 'w1' },
      spec: { size: 3 },
    });
    await post('/apis/velero.io/v1/namespaces/app/restores', {
      apiVersion: 'velero.io/v1',
      kind: 'Restore',
      metadata: { name: 'nightly-restore' },
      spec: { backupName: 'nightly' },
    });
    // A Job: its controller labels it with its uid and makes its Pod (Pending: no scheduler).
    await post('/apis/batch/v1/namespaces/app/jobs', {
      metadata: { name: 'migrate' },
      spec: {
        backoffLimit: 0,
        template: {
          spec: { restartPolicy: 'Never', containers: [{ name: 'm', image: 'busybox:1.36' }] },
        },
      },
    });
    // A Service with one node port set by the user and one the API server allocated.
    await post('/api/v1/namespaces/app/services', {
      metadata: { name: 'edge', labels: { app: 'web' } },
      spec: {
        type: 'NodePort',
        selector: { app: 'web' },
        ports: [
          { name: 'http', port: 80, nodePort: 30123 },
          { name: 'admin', port: 81 },
        ],
      },
    });
    await post('/api/v1/namespaces/app/services', {
      metadata: { name: 'web', labels: { app: 'web' } },
      spec: { selector: { app: 'web' }, ports: [{ port: 8080 }] },
    });
    await post('/apis/apps/v1/namespaces/app/deployments', {
      metadata: { name: 'web' },
      spec: {
        replicas: 2,
        selector: { matchLabels: { app: 'web' } },
        template: {
          metadata: { labels: { app: 'web' } },
          spec: { containers: [{ name: 'web', image: 'nginx:1.25' }] },
        },
      },
    });
    // Volumes: one kept on release (Retain), one the cluster deletes (Delete).
    await post('/api/v1/persistentvolumes', hostPathVolume('pv-keep', 'Retain', 'data'));
    await post('/api/v1/persistentvolumes', hostPathVolume('pv-drop', 'Delete', 'scratch'));
    await post('/api/v1/namespaces/app/persistentvolumeclaims', claim('data', 'pv-keep'));
    await post('/api/v1/namespaces/app/persistentvolumeclaims', claim('scratch', 'pv-drop'));
    // A service account with its controller-made token, and a token Secret its user made.
    await post('/api/v1/namespaces/app/serviceaccounts', { metadata: { name: 'robot' } });
    await post('/api/v1/namespaces/app/secrets', {
      metadata: { name: 'robot-ci-token', annotations: { 'kubernetes.io/service-account.name': 'robot' } },
      type: 'kubernetes.io/service-account-token',
    });
    // What the controllers make, before the backup: bindings, the Job's Pod, the ReplicaSet and
    // its Pods, the token Secrets, the Services' EndpointSlices.
    await eventually('the cluster settled', async () => {
      const pvcs = await client.get<{ items: Obj[] }>('/api/v1/namespaces/app/persistentvolumeclaims');
      const pods = await client.get<{ items: Obj[] }>('/api/v1/namespaces/app/pods');
      const secrets = await client.get<{ items: Obj[] }>('/api/v1/namespaces/app/secrets');
      const slices = await client.get<{ items: Obj[] }>(
        '/apis/discovery.k8s.io/v1beta1/namespaces/app/endpointslices',
      );
      const bound = pvcs.items.every((p) => p.status?.phase === 'Bound');
      const tokens = secrets.items.filter((s) => /^robot-token-/.test(s.metadata.name)).length;
      const userToken = secrets.items.find((s) => s.metadata.name === 'robot-ci-token')?.data?.token;
      return bound && pods.items.length === 3 && tokens === 1 && userToken && slices.items.length >= 2
        ? true
        : undefined;
    });
    for (const [key, url] of [
      ['job', '/apis/batch/v1/namespaces/app/jobs/migrate'],
      ['edge', '/api/v1/namespaces/app/services/edge'],
    ] as const)
      before_[key] = await client.get<Obj>(url);
    manifest = await backupK8s({
      storage: openStorage(path.join(work, 'backups')),
      set: 'cluster',
      client,
      filters: allFilters,
      compression: 'zstd',
      tags: [],
      logger,
    });
    // The dry run first, into a namespace that does not exist yet.
    dryRun = await restore({ dryRun: true });
    // Then the losses the restore repairs: the Service holding the node port, and the volumes.
    await gone('/api/v1/namespaces/app/services/edge');
    for (const c of ['data', 'scratch']) await gone(`/api/v1/namespaces/app/persistentvolumeclaims/${c}`);
    for (const v of ['pv-keep', 'pv-drop']) await gone(`/api/v1/persistentvolumes/${v}`);
    first = await restore({});
  });

  after(async () => {
    await cluster?.stop();
    if (work) await fs.rm(work, { recursive: true, force: true });
  });

  test('the restore of one namespace fails nothing', () => {
    assert.deepEqual(failures(first), []);
  });

  test('H: a dry run into a namespace still to be made says its objects are not validated, not created', () => {
    assert.deepEqual(failures(dryRun), []);
    const namespaced = dryRun.objects.filter((o) => o.namespace === 'app2' && o.resource !== 'namespaces');
    assert.ok(namespaced.length > 5, JSON.stringify(dryRun.counts));
    for (const o of namespaced)
      if (o.outcome !== 'skipped') assert.equal(o.outcome, 'unvalidated', `${o.resource} ${o.name}`);
    assert.ok(dryRun.counts.unvalidated > 0);
    assert.equal(dryRun.byResource.configmaps, undefined, 'nothing counted as restored');
  });

  test('B: the Job is restored with labels of its own uid; its Pod is left to it', async () => {
    const job = outcome(first, 'jobs.batch', 'migrate');
    assert.equal(job?.outcome, 'created', JSON.stringify(job));
    const restored = await client.get<Obj>('/apis/batch/v1/namespaces/app2/jobs/migrate');
    const labels = (restored.spec!.template as Obj).metadata.labels!;
    assert.equal(labels['controller-uid'], restored.metadata.uid);
    assert.notEqual(labels['controller-uid'], before_.job!.metadata.uid);
    const jobPods = first.objects.filter((o) => o.resource === 'pods' && /^migrate-/.test(o.name));
    assert.equal(jobPods.length, 1);
    assert.equal(jobPods[0]!.outcome, 'skipped');
    assert.match(jobPods[0]!.reason!, /made by the Job migrate/);
    const pods = await eventually('the restored Job makes its Pod', async () => {
      const list = await client.get<{ items: Obj[] }>(
        '/api/v1/namespaces/app2/pods?labelSelector=job-name%3Dmigrate',
      );
      return list.items.length ? list.items : undefined;
    });
    assert.deepEqual(
      pods.map((p) => p.metadata.ownerReferences?.[0]?.uid),
      [restored.metadata.uid],
    );
  });

  test('C: the node port the user set survives; the allocated one is allocated anew', async () => {
    const edge = await client.get<Obj>('/api/v1/namespaces/app2/services/edge');
    const ports = edge.spec!.ports as { name: string; nodePort: number }[];
    const was = before_.edge!.spec!.ports as { name: string; nodePort: number }[];
    assert.equal(ports.find((p) => p.name === 'http')?.nodePort, 30123);
    const admin = ports.find((p) => p.name === 'admin')!.nodePort;
    assert.ok(admin > 0);
    // The original's allocated port was free again (its Service deleted): a new one is not a copy
    // of it by rule, so only check it is allocated.
    assert.ok(was.find((p) => p.name === 'admin')!.nodePort > 0);
  });

  test('C: preserve-node-ports keeps the allocated ones too', async () => {
    await gone('/api/v1/namespaces/app2/services/edge');
    const was = before_.edge!.spec!.ports as { name: string; nodePort: number }[];
    // The port the first restore allocated is released with its Service; the original's is free.
    const again = await restore({ includeResources: ['services'], preserveNodePorts: true });
    assert.deepEqual(failures(again), []);
    const edge = await client.get<Obj>('/api/v1/namespaces/app2/services/edge');
    assert.deepEqual(
      (edge.spec!.ports as { name: string; nodePort: number }[]).map((p) => [p.name, p.nodePort]),
      was.map((p) => [p.name, p.nodePort]),
    );
  });

  test('D: the Retain volume is bound anew to its restored claim in the mapped namespace', async () => {
    const pv = await eventually('pv-keep Bound', async () => {
      const v = await client.get<Obj>('/api/v1/persistentvolumes/pv-keep');
      return v.status?.phase === 'Bound' ? v : undefined;
    });
    const ref = pv.spec!.claimRef as { namespace: string; name: string; uid: string };
    assert.equal(ref.namespace, 'app2');
    assert.equal(ref.name, 'data');
    const pvc = await client.get<Obj>('/api/v1/namespaces/app2/persistentvolumeclaims/data');
    assert.equal(ref.uid, pvc.metadata.uid);
    await eventually('data Bound', async () => {
      const c = await client.get<Obj>('/api/v1/namespaces/app2/persistentvolumeclaims/data');
      return c.status?.phase === 'Bound' ? true : undefined;
    });
  });

  test('D: the Delete volume without a snapshot is not restored; its claim waits for a new volume', async () => {
    const pv = outcome(first, 'persistentvolumes', 'pv-drop');
    assert.equal(pv?.outcome, 'skipped');
    assert.match(pv!.reason!, /reclaim policy Delete and no snapshot/);
    await assert.rejects(client.get('/api/v1/persistentvolumes/pv-drop'), /404/);
    const pvc = await client.get<Obj>('/api/v1/namespaces/app2/persistentvolumeclaims/scratch');
    assert.equal(pvc.spec!.volumeName, undefined);
  });

  test('G: with a namespace filter, cluster-scoped objects are left alone but for the CRD and PVs it needs', async () => {
    const clusterScoped = first.objects.filter(
      (o) => o.namespace === undefined && o.resource !== 'namespaces',
    );
    assert.deepEqual(clusterScoped.map((o) => `${o.resource}/${o.name}:${o.outcome}`).sort(), [
      'customresourcedefinitions.apiextensions.k8s.io/widgets.example.com:skipped',
      'persistentvolumes/pv-drop:skipped',
      'persistentvolumes/pv-keep:created',
    ]);
    const roles = await client.get<{ items: Obj[] }>('/apis/rbac.authorization.k8s.io/v1/clusterroles');
    assert.equal(roles.items.filter((r) => r.metadata.labels?.[restoredLabel]).length, 0);
    const w = await client.get<Obj>('/apis/example.com/v1/namespaces/app2/widgets/w1');
    assert.deepEqual(w.spec, { size: 3 });
  });

  test('G: existing: recreate leaves an existing CRD alone unless recreate-crds is given', async () => {
    const result = await restore({
      includeNamespaces: [],
      namespaceMapping: new Map(),
      includeResources: ['customresourcedefinitions.apiextensions.k8s.io'],
      existing: 'recreate',
    });
    assert.deepEqual(failures(result), []);
    const widgets = outcome(result, 'customresourcedefinitions.apiextensions.k8s.io', 'widgets.example.com');
    assert.equal(widgets?.outcome, 'skipped');
    assert.match(widgets!.reason!, /recreate-crds: true/);
    await client.get('/apis/example.com/v1/namespaces/app/widgets/w1');
  });

  test("I: Velero's Restore is not restored; the token controller's Secret is not, the user's is, with a new token", async () => {
    const velero = outcome(first, 'restores.velero.io', 'nightly-restore');
    assert.equal(velero?.outcome, 'skipped');
    await assert.rejects(client.get('/apis/velero.io/v1/namespaces/app2/restores/nightly-restore'), /404/);
    const tokens = first.objects.filter((o) => o.resource === 'secrets' && /^robot-token-/.test(o.name));
    assert.equal(tokens.length, 1);
    assert.equal(tokens[0]!.outcome, 'skipped');
    assert.equal(outcome(first, 'secrets', 'robot-ci-token')?.outcome, 'created');
    const source = await client.get<Obj>('/api/v1/namespaces/app/secrets/robot-ci-token');
    const restored = await eventually('the user token Secret gets a token', async () => {
      const s = await client.get<Obj>('/api/v1/namespaces/app2/secrets/robot-ci-token');
      return s.data?.token ? s : undefined;
    });
    assert.notEqual(restored.data!.token, source.data!.token);
  });

  test('the Deployment’s Pods restore into the namespace the restore made (no token race)', () => {
    const pods = first.objects.filter((o) => o.resource === 'pods' && /^web-/.test(o.name));
    assert.equal(pods.length, 2);
    for (const p of pods) assert.equal(p.outcome, 'created', JSON.stringify(p));
  });

  test('F: existing: update of everything restored keeps what the live objects own', async () => {
    const edge = await client.get<Obj>('/api/v1/namespaces/app2/services/edge');
    const again = await restore({ existing: 'update' });
    assert.deepEqual(failures(again), []);
    assert.ok(again.counts.updated > 10, JSON.stringify(again.counts));
    const after_ = await client.get<Obj>('/api/v1/namespaces/app2/services/edge');
    assert.equal(after_.spec!.clusterIP, edge.spec!.clusterIP);
    assert.deepEqual(after_.spec!.ports, edge.spec!.ports);
    const pvc = await client.get<Obj>('/api/v1/namespaces/app2/persistentvolumeclaims/data');
    assert.equal(pvc.spec!.volumeName, 'pv-keep');
  });

  test('E: verify-restore passes on a real cluster: what controllers make is not counted', async () => {
    const result = await verifyK8s({
      storage: openStorage(path.join(work, 'backups')),
      manifest,
      client,
      readyTimeoutMs: 0,
      logger,
    });
    const bad = result.checks.filter((c) => c.status === 'failed');
    assert.deepEqual(bad, []);
    const slices = result.checks.find((c) => c.name === 'objects: endpointslices.discovery.k8s.io');
    assert.ok(slices, result.checks.map((c) => c.name).join(', '));
  });
});

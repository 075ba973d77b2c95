/**
 * Keeps the fake kube-apiserver honest: @kubernetes/client-node's typed clients (generated
 * from the Kubernetes OpenAPI) must read its discovery, lists, objects and Status errors as
 * they read a real server's. (What it answers is held to the real server's answers by
 * kube-agree.test.ts; here, what only the fake can show.)
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import {
  ApiException,
  ApiextensionsV1Api,
  ApisApi,
  AppsV1Api,
  CoreApi,
  CoreV1Api,
  KubeConfig,
  PatchStrategy,
  setHeaderOptions,
} from '@kubernetes/client-node';
import { type FakeKube, fakeKubeconfig, startFakeKube } from '../fakes/kube-apiserver.ts';

let fake: FakeKube;
let kc: KubeConfig;

before(async () => {
  fake = await startFakeKube();
  kc = new KubeConfig();
  kc.loadFromString(fakeKubeconfig(fake.url));
});
after(() => fake?.stop());

async function failure(promise: Promise<unknown>): Promise<ApiException<string>> {
  try {
    await promise;
  } catch (error) {
    assert.ok(error instanceof ApiException, `an ApiException, got ${error}`);
    return error as ApiException<string>;
  }
  throw new Error('expected an API error');
}

test('discovery, lists with limit and continue, and 410 for an expired token', async () => {
  const core = kc.makeApiClient(CoreV1Api);
  assert.deepEqual((await kc.makeApiClient(CoreApi).getAPIVersions()).versions, ['v1']);
  const groups = await kc.makeApiClient(ApisApi).getAPIVersions();
  assert.ok(groups.groups.some((g) => g.name === 'apps' && g.preferredVersion?.version === 'v1'));
  const resources = await core.getAPIResources();
  assert.ok(resources.resources.some((r) => r.name === 'pods' && r.namespaced && r.verbs.includes('list')));
  assert.ok(
    resources.resources.some((r) => r.name === 'pods/status'),
    'subresources are listed, as for real',
  );

  await core.createNamespace({ body: { metadata: { name: 'shop' } } });
  for (let i = 0; i < 5; i++)
    await core.createNamespacedConfigMap({
      namespace: 'shop',
      body: { metadata: { name: `cm-${i}`, labels: { i: String(i % 2) } }, data: { i: String(i) } },
    });
  const first = await core.listNamespacedConfigMap({ namespace: 'shop', limit: 2 });
  assert.equal(first.items.length, 2);
  assert.ok(first.metadata?._continue);
  assert.equal(first.metadata?.remainingItemCount, 3);
  const second = await core.listNamespacedConfigMap({
    namespace: 'shop',
    limit: 2,
    _continue: first.metadata!._continue,
  });
  assert.deepEqual(
    second.items.map((c) => c.metadata?.name),
    ['cm-2', 'cm-3'],
  );
  assert.equal(
    (await core.listNamespacedConfigMap({ namespace: 'shop', labelSelector: 'i=1' })).items.length,
    2,
  );
  fake.expireTokensBefore = Date.now() + 1;
  const expired = await failure(
    core.listNamespacedConfigMap({ namespace: 'shop', limit: 2, _continue: second.metadata!._continue }),
  );
  assert.equal(expired.code, 410);
  assert.match(String(expired.body), /"reason":"Expired"/);
  fake.expireTokensBefore = 0;
});

test('create, get, update, delete, dry run and their Status errors', async () => {
  const core = kc.makeApiClient(CoreV1Api);
  await core.createNamespace({ body: { metadata: { name: 'crud' } } });
  const made = await core.createNamespacedConfigMap({
    namespace: 'crud',
    body: { metadata: { name: 'a' }, data: { k: 'v' } },
  });
  assert.ok(made.metadata?.uid && made.metadata.resourceVersion && made.metadata.creationTimestamp);
  const exists = await failure(
    core.createNamespacedConfigMap({ namespace: 'crud', body: { metadata: { name: 'a' } } }),
  );
  assert.equal(exists.code, 409);
  assert.match(String(exists.body), /"reason":"AlreadyExists"/);
  const missing = await failure(core.readNamespacedConfigMap({ namespace: 'crud', name: 'nope' }));
  assert.equal(missing.code, 404);
  const noNamespace = await failure(
    core.createNamespacedConfigMap({ namespace: 'ghost', body: { metadata: { name: 'a' } } }),
  );
  assert.equal(noNamespace.code, 404);
  await core.createNamespacedConfigMap({
    namespace: 'crud',
    body: { metadata: { name: 'dry' } },
    dryRun: 'All',
  });
  assert.equal(
    (await failure(core.readNamespacedConfigMap({ namespace: 'crud', name: 'dry' }))).code,
    404,
    'a dry run stores nothing',
  );
  const stale = await failure(
    core.replaceNamespacedConfigMap({
      namespace: 'crud',
      name: 'a',
      body: { metadata: { name: 'a', resourceVersion: '1' }, data: {} },
    }),
  );
  assert.equal(stale.code, 409);
  const updated = await core.replaceNamespacedConfigMap({
    namespace: 'crud',
    name: 'a',
    body: { ...made, data: { k: 'w' } },
  });
  assert.equal(updated.data?.k, 'w');
  await core.deleteNamespacedConfigMap({ namespace: 'crud', name: 'a' });
  assert.equal((await failure(core.readNamespacedConfigMap({ namespace: 'crud', name: 'a' }))).code, 404);
});

test('a CRD makes its group served; an aggregated API can be down', async () => {
  const ext = kc.makeApiClient(ApiextensionsV1Api);
  await ext.createCustomResourceDefinition({
    body: {
      metadata: { name: 'widgets.example.com' },
      spec: {
        group: 'example.com',
        scope: 'Namespaced',
        names: { plural: 'widgets', singular: 'widget', kind: 'Widget' },
        versions: [
          { name: 'v1', served: true, storage: true, schema: { openAPIV3Schema: { type: 'object' } } },
        ],
      },
    },
  });
  const groups = await kc.makeApiClient(ApisApi).getAPIVersions();
  assert.ok(groups.groups.some((g) => g.name === 'example.com'));
  const apps = kc.makeApiClient(AppsV1Api);
  assert.ok((await apps.getAPIResources()).resources.some((r) => r.name === 'deployments/scale'));
  fake.aggregatedDown = true;
  const res = await fetch(`${fake.url}/apis/metrics.k8s.io/v1beta1`);
  assert.equal(res.status, 503);
  fake.aggregatedDown = false;
});

test('typed clients patch as they would a real server, and read what its controllers did', async () => {
  const core = kc.makeApiClient(CoreV1Api);
  await core.createNamespace({ body: { metadata: { name: 'typed' } } });
  const svc = await core.createNamespacedService({
    namespace: 'typed',
    body: { metadata: { name: 'web' }, spec: { type: 'NodePort', ports: [{ port: 80 }] } },
  });
  assert.match(svc.spec?.clusterIP ?? '', /^10\.96\.\d+\.\d+$/, 'a cluster IP is allocated');
  assert.ok((svc.spec?.ports?.[0]?.nodePort ?? 0) >= 30000, 'and a node port');
  // The typed client's default patch is a JSON patch.
  const moved = await failure(
    core.patchNamespacedService({
      namespace: 'typed',
      name: 'web',
      body: [{ op: 'replace', path: '/spec/clusterIP', value: '10.96.200.200' }],
    }),
  );
  assert.equal(moved.code, 422);
  assert.match(
    String(moved.body),
    /spec.clusterIP.*: Invalid value: \[\]string\{\\"10.96.200.200\\"\}: may not change once set/,
  );
  await core.createNamespacedConfigMap({
    namespace: 'typed',
    body: { metadata: { name: 'cm', labels: { app: 'a' } }, data: { a: '1' } },
  });
  const merged = await core.patchNamespacedConfigMap(
    { namespace: 'typed', name: 'cm', body: { data: { b: '2' } } },
    setHeaderOptions('Content-Type', PatchStrategy.StrategicMergePatch),
  );
  assert.deepEqual(merged.data, { a: '1', b: '2' });
  const listed = await core.listNamespacedConfigMap({ namespace: 'typed', labelSelector: 'app in (a,b)' });
  assert.deepEqual(
    listed.items.map((c) => [c.metadata?.name, c.kind]),
    [['cm', undefined]],
    'list items carry no kind',
  );
  // A Delete volume under /tmp whose claim is gone is deleted by the hostPath deleter (never
  // tried on the real control plane: its controller would remove the folder on this machine).
  await core.createPersistentVolume({
    body: {
      metadata: { name: 'tmp-volume' },
      spec: {
        capacity: { storage: '1Gi' },
        accessModes: ['ReadWriteOnce'],
        persistentVolumeReclaimPolicy: 'Delete',
        hostPath: { path: '/tmp/lifeboat-fake-volume' },
        claimRef: { namespace: 'typed', name: 'gone', uid: '0d1e2f3a-0000-4000-8000-000000000000' },
      },
    },
  });
  const volumes = await core.listPersistentVolume();
  assert.ok(!volumes.items.some((v) => v.metadata?.name === 'tmp-volume'), 'reclaimed: deleted');
});

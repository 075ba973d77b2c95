/**
 * backup-k8s against the fake kube-apiserver: discovery (subresources skipped, duplicate
 * events kept once, a down aggregated API warned about), Velero's archive layout with each
 * object byte-for-byte as served, filters, paging with an expired continue token, and the
 * manifest's counts.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import zlib from 'node:zlib';
import * as tar from 'tar-stream';
import { Catalog } from '../../shared/catalog/catalog.ts';
import type { Manifest } from '../../shared/catalog/manifest.ts';
import { backupK8s, type K8sFacts, type K8sFilters } from '../../shared/k8s/backup.ts';
import { KubeClient } from '../../shared/k8s/client.ts';
import { restoredLabel, restoreK8s } from '../../shared/k8s/restore.ts';
import { verifyK8s } from '../../shared/k8s/verify.ts';
import { openStorage } from '../../shared/storage/open.ts';
import { type FakeKube, fakeKubeconfig, startFakeKube } from '../fakes/kube-apiserver.ts';
import { allFilters, archiveEntries, describeHostileBackup } from '../harness/k8s-backups.ts';
import { tempDir } from '../harness/servers.ts';

let fake: FakeKube;
let work: string;
let client: KubeClient;
const warnings: string[] = [];
const logger = { info() {}, warn: (m: string) => warnings.push(m) };

before(async () => {
  fake = await startFakeKube();
  work = await tempDir('k8s');
  const kubeconfig = path.join(work, 'kubeconfig');
  await fs.writeFile(kubeconfig, fakeKubeconfig(fake.url));
  client = await KubeClient.open(kubeconfig);
  fake.seed('', 'namespaces', [
    { metadata: { name: 'shop' } },
    { metadata: { name: 'shop-staging' } },
    { metadata: { name: 'kube-system' } },
  ]);
  fake.seed('apps', 'deployments', [
    {
      metadata: { name: 'web', namespace: 'shop', labels: { app: 'web' } },
      spec: { replicas: 3, extra: { 'unknown-field': [1, { deep: true }] } },
    },
    { metadata: { name: 'api', namespace: 'shop-staging', labels: { app: 'api' } }, spec: { replicas: 1 } },
    { metadata: { name: 'coredns', namespace: 'kube-system' }, spec: {} },
  ]);
  fake.seed(
    '',
    'configmaps',
    Array.from({ length: 7 }, (_, i) => ({
      metadata: { name: `cm-${i}`, namespace: 'shop', labels: { app: i % 2 ? 'web' : 'db' } },
      data: { i: String(i), emoji: '🐳' },
    })),
  );
  fake.seed('', 'configmaps', [
    {
      metadata: { name: 'scratch', namespace: 'shop', labels: { 'lifeboat.io/exclude-from-backup': 'true' } },
      data: {},
    },
  ]);
  fake.seed('', 'secrets', [
    { metadata: { name: 'db-password', namespace: 'shop' }, type: 'Opaque', data: { password: 'c2VjcmV0' } },
  ]);
  fake.seed('', 'events', [{ metadata: { name: 'web.1', namespace: 'shop' }, reason: 'Scheduled' }]);
  fake.seed('rbac.authorization.k8s.io', 'clusterroles', [{ metadata: { name: 'reader' }, rules: [] }]);
  fake.seed('apiextensions.k8s.io', 'customresourcedefinitions', [
    {
      metadata: { name: 'widgets.example.com' },
      spec: {
        group: 'example.com',
        scope: 'Namespaced',
        names: { plural: 'widgets', singular: 'widget', kind: 'Widget' },
        versions: [{ name: 'v1', served: true, storage: true }],
      },
    },
  ]);
  fake.seed('example.com', 'widgets', [
    { metadata: { name: 'blue', namespace: 'shop' }, spec: { size: 'L' } },
  ]);
});

after(async () => {
  await fake?.stop();
  await fs.rm(work, { recursive: true, force: true });
});

async function backup(set: string, filters: Partial<K8sFilters> = {}, extra: { pageSize?: number } = {}) {
  return backupK8s({
    storage: openStorage(path.join(work, 'backups')),
    set,
    client,
    filters: { ...allFilters, ...filters },
    compression: 'zstd',
    tags: [],
    logger,
    ...extra,
  });
}

/** The archive's entries, name → text. */
const entries = (manifest: Manifest) => archiveEntries(path.join(work, 'backups'), manifest);

describe('a whole-cluster backup', () => {
  let manifest: Manifest;
  let archive: Map<string, string>;
  before(async () => {
    fake.aggregatedDown = true;
    warnings.length = 0;
    manifest = await backup('cluster');
    fake.aggregatedDown = false;
    archive = await entries(manifest);
  });

  test("follows Velero's layout, each object exactly as the server returned it", () => {
    assert.equal(archive.get('metadata/version'), '1.1.0\n');
    const web = archive.get('resources/deployments.apps/namespaces/shop/web.json')!;
    assert.deepEqual(JSON.parse(web), fake.objects.get('apps/deployments/shop/web'));
    assert.ok(web.includes('"unknown-field":[1,{"deep":true}]'), 'no field lost to a typed model');
    assert.ok(archive.has('resources/namespaces/cluster/shop.json'));
    assert.ok(archive.has('resources/clusterroles.rbac.authorization.k8s.io/cluster/reader.json'));
    assert.ok(
      archive.has(
        'resources/customresourcedefinitions.apiextensions.k8s.io/cluster/widgets.example.com.json',
      ),
    );
    assert.ok(archive.has('resources/widgets.example.com/namespaces/shop/blue.json'), 'custom resources too');
    assert.ok(archive.has('resources/configmaps/namespaces/shop/cm-0.json'));
    assert.equal(JSON.parse(archive.get('resources/configmaps/namespaces/shop/cm-3.json')!).data.emoji, '🐳');
  });

  test('subresources are skipped, events kept once, the opt-out label honoured', () => {
    assert.ok(![...archive.keys()].some((k) => k.includes('/status') || k.includes('scale')));
    assert.ok(archive.has('resources/events/namespaces/shop/web.1.json'));
    assert.ok(![...archive.keys()].some((k) => k.startsWith('resources/events.events.k8s.io/')));
    assert.ok(!archive.has('resources/configmaps/namespaces/shop/scratch.json'));
  });

  test('the manifest counts objects per resource and namespace, and names what was left out', () => {
    const facts = manifest.facts as unknown as K8sFacts;
    assert.equal(manifest.kind, 'k8s');
    assert.equal(manifest.mode, 'exclude-storage');
    assert.match(manifest.id, /-backup-exclude-storage$/);
    assert.equal(facts.counts.byResource['deployments.apps'], 3);
    assert.equal(facts.counts.byResource.configmaps, 7);
    assert.equal(facts.counts.byNamespace.shop, 1 + 7 + 1 + 1 + 1);
    assert.equal(facts.counts.total, [...archive.keys()].length - 1);
    assert.equal(facts.cluster.version, 'v1.31.2-fake');
    assert.deepEqual(facts.unavailableApis, ['metrics.k8s.io/v1beta1']);
    assert.ok(manifest.contents.excluded.some((e) => e.includes('metrics.k8s.io/v1beta1')));
  });

  test('warns about the down aggregated API and about unencrypted Secrets', () => {
    assert.ok(warnings.some((w) => /metrics\.k8s\.io\/v1beta1 is unavailable \(503/.test(w)));
    assert.ok(warnings.some((w) => /Secrets are backed up without encryption/.test(w)));
  });
});

describe('filters and paging', () => {
  test('namespaces by glob: no cluster-scoped resources but the selected Namespace objects and the CRD of their custom resources', async () => {
    const archive = await entries(
      await backup('shops', { includeNamespaces: ['shop*'], excludeNamespaces: ['*-staging'] }),
    );
    const keys = [...archive.keys()];
    assert.ok(keys.includes('resources/namespaces/cluster/shop.json'));
    assert.ok(!keys.includes('resources/namespaces/cluster/kube-system.json'));
    assert.deepEqual(
      keys.filter((k) => k.includes('/cluster/') && !k.startsWith('resources/namespaces/')),
      ['resources/customresourcedefinitions.apiextensions.k8s.io/cluster/widgets.example.com.json'],
    );
    assert.ok(
      !keys.some((k) => k.includes('/namespaces/shop-staging/') || k.includes('/namespaces/kube-system/')),
    );
  });

  test('resources and a label selector', async () => {
    const archive = await entries(
      await backup('web-only', {
        includeResources: ['configmaps', 'deployments.apps'],
        labelSelector: 'app=web',
      }),
    );
    const objects = [...archive.keys()].filter(
      (k) => k.startsWith('resources/') && !k.startsWith('resources/namespaces/'),
    );
    assert.deepEqual(objects.sort(), [
      'resources/configmaps/namespaces/shop/cm-1.json',
      'resources/configmaps/namespaces/shop/cm-3.json',
      'resources/configmaps/namespaces/shop/cm-5.json',
      'resources/deployments.apps/namespaces/shop/web.json',
    ]);
    const noEvents = await entries(await backup('no-events', { excludeResources: ['events', 'secrets'] }));
    assert.ok(
      ![...noEvents.keys()].some(
        (k) => k.startsWith('resources/events/') || k.startsWith('resources/secrets/'),
      ),
    );
  });

  test('pages of 2, and a continue token that expires mid-list, still give every object once', async () => {
    fake.requests.length = 0;
    fake.expireNextContinue = true;
    warnings.length = 0;
    const manifest = await backup('paged', { includeResources: ['configmaps'] }, { pageSize: 2 });
    const archive = await entries(manifest);
    assert.equal([...archive.keys()].filter((k) => k.startsWith('resources/configmaps/')).length, 7);
    assert.equal((manifest.facts as unknown as K8sFacts).counts.byResource.configmaps, 7);
    assert.ok(fake.requests.some((r) => /configmaps\?limit=2&continue=/.test(r)));
    assert.ok(warnings.some((w) => /continue token expired \(410\); listing again/.test(w)));
  });

  test('a namespace glob that matches nothing is refused, naming the namespaces there are', async () => {
    await assert.rejects(
      backup('none', { includeNamespaces: ['prod-*'] }),
      /include-namespaces: prod-\* matches no namespace; the cluster has: .*shop/,
    );
  });
});

describe('restore', () => {
  let manifest: Manifest;
  before(async () => {
    fake.seed('', 'services', [
      {
        metadata: { name: 'web', namespace: 'shop' },
        spec: {
          type: 'NodePort',
          clusterIP: '10.96.0.12',
          clusterIPs: ['10.96.0.12'],
          ports: [{ port: 80, nodePort: 30080 }],
        },
      },
      { metadata: { name: 'db', namespace: 'shop' }, spec: { clusterIP: 'None', ports: [{ port: 5432 }] } },
    ]);
    fake.seed('', 'pods', [
      {
        metadata: {
          name: 'web-1',
          namespace: 'shop',
          ownerReferences: [{ kind: 'ReplicaSet', name: 'web-x' }],
        },
        spec: { nodeName: 'node-3' },
        status: { phase: 'Running' },
      },
      { metadata: { name: 'migrate-1', namespace: 'shop' }, spec: {}, status: { phase: 'Succeeded' } },
    ]);
    fake.seed('', 'secrets', [
      {
        // As the token controller names and annotates them.
        metadata: {
          name: 'default-token-x7k2p',
          namespace: 'shop',
          annotations: { 'kubernetes.io/service-account.name': 'default' },
        },
        type: 'kubernetes.io/service-account-token',
        data: {},
      },
    ]);
    fake.seed('batch', 'jobs', [
      {
        metadata: { name: 'done', namespace: 'shop' },
        spec: {},
        status: { conditions: [{ type: 'Complete', status: 'True' }] },
      },
    ]);
    manifest = await backup('for-restore', { includeNamespaces: ['shop'] });
  });

  async function restore(extra: Partial<Parameters<typeof restoreK8s>[0]> = {}, into = client) {
    return restoreK8s({
      storage: openStorage(path.join(work, 'backups')),
      manifest,
      client: into,
      namespaceMapping: new Map([['shop', 'shop-restored']]),
      includeNamespaces: [],
      excludeNamespaces: [],
      includeResources: [],
      excludeResources: [],
      existing: 'skip',
      dryRun: false,
      crdWaitMs: 5000,
      logger,
      ...extra,
    });
  }

  test('into a mapped namespace: server fields stripped, per-kind fixes, the restore label, skips with reasons', async () => {
    const result = await restore();
    assert.equal(
      result.counts.failed,
      0,
      JSON.stringify(result.objects.filter((o) => o.outcome === 'failed')),
    );
    const web = fake.objects.get('apps/deployments/shop-restored/web')!;
    const source = fake.objects.get('apps/deployments/shop/web')!;
    assert.notEqual(web.metadata.uid, source.metadata.uid);
    assert.deepEqual(web.spec, source.spec);
    assert.equal(web.metadata.labels![restoredLabel], manifest.id);
    const svc = fake.objects.get('/services/shop-restored/web')!;
    // The cluster allocates them anew (the backup's were allocated by the old one).
    assert.notEqual((svc.spec as { clusterIP?: string }).clusterIP, '10.96.0.12');
    assert.notEqual((svc.spec as { ports: { nodePort?: number }[] }).ports[0]!.nodePort, 30080);
    assert.equal(
      (fake.objects.get('/services/shop-restored/db')!.spec as { clusterIP: string }).clusterIP,
      'None',
    );
    const pod = fake.objects.get('/pods/shop-restored/web-1')!;
    assert.equal((pod.spec as { nodeName?: string }).nodeName, undefined);
    assert.equal(pod.metadata.ownerReferences, undefined);
    assert.equal(pod.status, undefined);
    const reasons = Object.fromEntries(
      result.objects.filter((o) => o.outcome === 'skipped').map((o) => [`${o.resource}/${o.name}`, o.reason]),
    );
    assert.match(reasons['pods/migrate-1']!, /finished pod/);
    assert.match(reasons['jobs.batch/done']!, /finished job/);
    assert.match(reasons['secrets/default-token-x7k2p']!, /service-account token/);
    assert.match(reasons['events/web.1']!, /never restored/);
    assert.ok(fake.objects.has('/namespaces//shop-restored'));
    assert.equal(result.byResource['deployments.apps'], 1);
  });

  test('existing objects: skipped, updated or recreated as asked', async () => {
    const again = await restore();
    assert.equal(again.counts.created, 0);
    assert.ok(
      again.objects.some(
        (o) => o.resource === 'configmaps' && o.outcome === 'skipped' && /exists/.test(o.reason!),
      ),
    );
    const updated = await restore({ existing: 'update', includeResources: ['configmaps'] });
    assert.equal(updated.counts.updated, 7);
    const uid = fake.objects.get('/configmaps/shop-restored/cm-0')!.metadata.uid;
    const recreated = await restore({ existing: 'recreate', includeResources: ['configmaps'] });
    assert.equal(recreated.counts.recreated, 7);
    assert.notEqual(fake.objects.get('/configmaps/shop-restored/cm-0')!.metadata.uid, uid);
  });

  test("a dry run uses the server's own dry run and stores nothing", async () => {
    const before = fake.objects.size;
    const result = await restore({ namespaceMapping: new Map([['shop', 'shop-dry']]), dryRun: true });
    assert.equal(fake.objects.size, before);
    assert.ok(fake.requests.some((r) => r.startsWith('POST /api/v1/namespaces?dryRun=All')));
    assert.equal(result.counts.failed, 0);
    assert.ok(
      result.objects.some((o) =>
        /not validated, the namespace shop-dry does not exist yet/.test(o.reason ?? ''),
      ),
    );
  });

  test('into an empty cluster: the CRD first, then its objects once the API serves them', async () => {
    const empty = await startFakeKube();
    try {
      const kubeconfig = path.join(work, 'empty-kubeconfig');
      await fs.writeFile(kubeconfig, fakeKubeconfig(empty.url));
      const whole = await backup('whole', {});
      manifest = whole;
      const result = await restore({ namespaceMapping: new Map() }, await KubeClient.open(kubeconfig));
      assert.equal(
        result.counts.failed,
        0,
        JSON.stringify(result.objects.filter((o) => o.outcome === 'failed')),
      );
      assert.ok(empty.objects.has('example.com/widgets/shop/blue'));
      const order = result.objects.map((o) => o.resource);
      assert.equal(order[0], 'customresourcedefinitions.apiextensions.k8s.io');
      assert.ok(order.indexOf('namespaces') < order.indexOf('configmaps'));
      assert.ok(order.indexOf('configmaps') < order.indexOf('deployments.apps'));
    } finally {
      await empty.stop();
    }
  });
});

describe('verify-restore of a k8s backup', () => {
  async function verify(manifest: Manifest, readyTimeoutMs = 0) {
    return verifyK8s({
      storage: openStorage(path.join(work, 'backups')),
      manifest,
      client,
      readyTimeoutMs,
      pollIntervalMs: 50,
      logger,
    });
  }
  const throwaway = () =>
    [...fake.objects.keys()].filter((k) => k.startsWith('/namespaces//') && k.includes('-lbv-'));

  test('restored into throwaway namespaces, counted per kind, then deleted', async () => {
    const manifest = await backup('to-verify', { includeNamespaces: ['shop-staging'] });
    const outcome = await verify(manifest);
    assert.ok(
      outcome.checks.every((c) => c.status === 'passed'),
      JSON.stringify(outcome.checks),
    );
    assert.deepEqual(
      outcome.checks.map((c) => c.name),
      ['restore', 'objects: deployments.apps', 'objects: serviceaccounts'].filter((n) =>
        outcome.checks.some((c) => c.name === n),
      ),
    );
    assert.match(
      outcome.checks.find((c) => c.name === 'objects: deployments.apps')!.detail,
      /1 in the backup, 1 restored and found/,
    );
    assert.match((outcome.environment.namespaces as string[])[0]!, /^shop-staging-lbv-[0-9a-f]{6}$/);
    assert.ok(outcome.restoreSeconds !== null);
    assert.deepEqual(throwaway(), [], 'the throwaway namespaces are deleted');
    assert.ok(![...fake.objects.keys()].some((k) => k.includes('-lbv-')), 'and their objects with them');
  });

  test('a manifest count the archive does not match, and workloads not ready in time, are failed checks', async () => {
    const manifest = await backup('not-ready', { includeNamespaces: ['shop-staging'] });
    const edited = structuredClone(manifest);
    (edited.facts as unknown as K8sFacts).counts.byResource['deployments.apps'] = 2;
    const outcome = await verify(edited, 300);
    const byName = Object.fromEntries(outcome.checks.map((c) => [c.name, c]));
    assert.equal(byName['objects: deployments.apps']!.status, 'failed');
    assert.match(byName['objects: deployments.apps']!.detail, /the archive holds 1, the manifest records 2/);
    const ready = outcome.checks.find((c) => c.name.startsWith('ready: deployment shop-staging-lbv-'))!;
    assert.equal(ready.status, 'failed');
    assert.match(ready.detail, /0\/1 ready after 0 s/);
    assert.deepEqual(throwaway(), []);
  });
});

test('a tarball written by Velero restores in priority order, each object once', async () => {
  const empty = await startFakeKube();
  try {
    const kubeconfig = path.join(work, 'velero-kubeconfig');
    await fs.writeFile(kubeconfig, fakeKubeconfig(empty.url));
    // Velero's layout, in Velero's (alphabetical, not restore) order, with the
    // <version>-preferredversion copies Velero also writes.
    const deployment = {
      apiVersion: 'apps/v1',
      kind: 'Deployment',
      metadata: { name: 'web', namespace: 'prod', uid: 'u1', resourceVersion: '9' },
      spec: { replicas: 2 },
      status: { readyReplicas: 2 },
    };
    const configmap = {
      apiVersion: 'v1',
      kind: 'ConfigMap',
      metadata: { name: 'settings', namespace: 'prod' },
      data: { a: '1' },
    };
    const namespace = { apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'prod' } };
    const files: [string, unknown][] = [
      ['velero-backup.json', { kind: 'Backup', metadata: { name: 'nightly-20261120' } }],
      ['metadata/version', '1.1.0'],
      ['resources/configmaps/namespaces/prod/settings.json', configmap],
      ['resources/configmaps/v1-preferredversion/namespaces/prod/settings.json', configmap],
      ['resources/deployments.apps/namespaces/prod/web.json', deployment],
      ['resources/deployments.apps/v1-preferredversion/namespaces/prod/web.json', deployment],
      ['resources/namespaces/cluster/prod.json', namespace],
      ['resources/namespaces/v1-preferredversion/cluster/prod.json', namespace],
    ];
    const pack = tar.pack();
    for (const [name, body] of files)
      pack.entry({ name }, typeof body === 'string' ? body : JSON.stringify(body));
    pack.finalize();
    const chunks: Buffer[] = [];
    for await (const c of pack.pipe(zlib.createGzip())) chunks.push(c as Buffer);
    const tarball = path.join(work, 'nightly-20261120.tar.gz');
    await fs.writeFile(tarball, Buffer.concat(chunks));

    const result = await restoreK8s({
      veleroFile: tarball,
      client: await KubeClient.open(kubeconfig),
      namespaceMapping: new Map([['prod', 'prod-restore-test']]),
      includeNamespaces: [],
      excludeNamespaces: [],
      includeResources: [],
      excludeResources: [],
      existing: 'skip',
      dryRun: false,
      logger,
    });
    assert.deepEqual(
      result.objects.map((o) => `${o.resource} ${o.outcome}`),
      ['namespaces created', 'configmaps created', 'deployments.apps created'],
    );
    const web = empty.objects.get('apps/deployments/prod-restore-test/web')!;
    assert.equal(web.metadata.uid !== 'u1', true);
    assert.equal(web.status, undefined);
    assert.equal(web.metadata.labels![restoredLabel], 'velero-nightly-20261120');
  } finally {
    await empty.stop();
  }
});

describe('CSI volume snapshots (modes full and only-storage)', () => {
  const snapshotsNow = () =>
    [...fake.objects.keys()].filter((k) => k.startsWith('snapshot.storage.k8s.io/volumesnapshots/'));
  before(() => {
    fake.seed('', 'namespaces', [{ metadata: { name: 'data' } }]);
    fake.seed('', 'persistentvolumeclaims', [
      {
        metadata: { name: 'pg-data', namespace: 'data' },
        spec: { volumeName: 'pv-1', resources: { requests: { storage: '20Gi' } } },
      },
      {
        metadata: { name: 'cache', namespace: 'data' },
        spec: { volumeName: 'pv-2', resources: { requests: { storage: '5Gi' } } },
      },
    ]);
    fake.seed('', 'configmaps', [{ metadata: { name: 'app', namespace: 'data' }, data: {} }]);
    fake.seed('snapshot.storage.k8s.io', 'volumesnapshotclasses', [
      { metadata: { name: 'csi-snapclass' }, driver: 'ebs.csi.aws.com', deletionPolicy: 'Retain' },
      { metadata: { name: 'broken' }, driver: 'broken.csi.example.com', deletionPolicy: 'Delete' },
    ]);
  });

  async function snapshotBackup(set: string, mode: 'full' | 'only-storage', volumeSnapshotClass: string) {
    return backupK8s({
      storage: openStorage(path.join(work, 'backups')),
      set,
      client,
      filters: { ...allFilters, includeNamespaces: ['data'] },
      compression: 'zstd',
      tags: [],
      mode,
      volumeSnapshotClass,
      pollIntervalMs: 10,
      logger,
    });
  }

  test('full: a snapshot of every PVC, waited for, recorded, and in the archive with its content', async () => {
    const manifest = await snapshotBackup('with-volumes', 'full', 'csi-snapclass');
    const facts = manifest.facts as unknown as K8sFacts;
    assert.equal(manifest.mode, 'full');
    assert.deepEqual(facts.volumeSnapshots!.map((v) => [v.pvc, v.restoreSize]).sort(), [
      ['cache', '5Gi'],
      ['pg-data', '20Gi'],
    ]);
    assert.ok(facts.volumeSnapshots!.every((v) => v.content.startsWith('snapcontent-')));
    const archive = await entries(manifest);
    for (const v of facts.volumeSnapshots!) {
      assert.ok(
        archive.has(`resources/volumesnapshots.snapshot.storage.k8s.io/namespaces/data/${v.snapshot}.json`),
      );
      assert.ok(
        archive.has(`resources/volumesnapshotcontents.snapshot.storage.k8s.io/cluster/${v.content}.json`),
      );
    }
    assert.ok(archive.has('resources/configmaps/namespaces/data/app.json'));
    assert.ok(
      archive.has('resources/volumesnapshotclasses.snapshot.storage.k8s.io/cluster/csi-snapclass.json'),
    );
    assert.ok(!archive.has('resources/volumesnapshotclasses.snapshot.storage.k8s.io/cluster/broken.json'));
  });

  test('only-storage: the snapshots with just what restoring them needs', async () => {
    const manifest = await snapshotBackup('volumes-only', 'only-storage', 'csi-snapclass');
    const kinds = new Set(
      [...(await entries(manifest)).keys()]
        .filter((k) => k.startsWith('resources/'))
        .map((k) => k.split('/')[1]),
    );
    assert.deepEqual([...kinds].sort(), [
      'namespaces',
      'persistentvolumeclaims',
      'volumesnapshotclasses.snapshot.storage.k8s.io',
      'volumesnapshotcontents.snapshot.storage.k8s.io',
      'volumesnapshots.snapshot.storage.k8s.io',
    ]);
    assert.match(manifest.id, /-backup-only-storage$/);
  });

  test('a snapshot that fails: the backup fails naming the PVC, its snapshots are deleted, nothing is committed', async () => {
    const before = snapshotsNow().length;
    await assert.rejects(
      snapshotBackup('broken-volumes', 'full', 'broken'),
      /volume snapshot of PVC data\/\S+ failed: failed to take snapshot of the volume: .*disk is busy/,
    );
    assert.equal(snapshotsNow().length, before, 'no snapshot of this backup is left');
    const catalog = new Catalog(openStorage(path.join(work, 'backups')));
    assert.deepEqual(await catalog.listBackups('broken-volumes'), []);
    await assert.rejects(
      snapshotBackup('no-class', 'full', 'nope'),
      /volume-snapshot-class: 'nope' does not exist/,
    );
  });

  test('restore into another namespace: new Retain contents bound statically, PVCs provisioned from the snapshots', async () => {
    const manifest = await snapshotBackup('to-restore-volumes', 'full', 'csi-snapclass');
    const result = await restoreK8s({
      storage: openStorage(path.join(work, 'backups')),
      manifest,
      client,
      namespaceMapping: new Map([['data', 'data-restored']]),
      includeNamespaces: [],
      excludeNamespaces: [],
      includeResources: [],
      excludeResources: [],
      existing: 'skip',
      dryRun: false,
      logger,
    });
    assert.equal(
      result.counts.failed,
      0,
      JSON.stringify(result.objects.filter((o) => o.outcome === 'failed')),
    );
    const facts = manifest.facts as unknown as K8sFacts;
    const pg = facts.volumeSnapshots!.find((v) => v.pvc === 'pg-data')!;
    const pvc = fake.objects.get('/persistentvolumeclaims/data-restored/pg-data')!;
    const spec = pvc.spec as { dataSource?: { kind: string; name: string }; volumeName?: string };
    assert.deepEqual(spec.dataSource, {
      apiGroup: 'snapshot.storage.k8s.io',
      kind: 'VolumeSnapshot',
      name: pg.snapshot,
    });
    assert.equal(spec.volumeName, undefined);
    const snap = fake.objects.get(`snapshot.storage.k8s.io/volumesnapshots/data-restored/${pg.snapshot}`)!;
    const contentName = (snap.spec as { source: { volumeSnapshotContentName: string } }).source
      .volumeSnapshotContentName;
    const content = fake.objects.get(`snapshot.storage.k8s.io/volumesnapshotcontents//${contentName}`)!;
    const original = fake.objects.get(`snapshot.storage.k8s.io/volumesnapshotcontents//${pg.content}`)!;
    const cspec = content.spec as {
      deletionPolicy: string;
      source: { snapshotHandle: string };
      volumeSnapshotRef: { namespace: string };
    };
    assert.equal(cspec.deletionPolicy, 'Retain');
    assert.equal(cspec.source.snapshotHandle, (original.status as { snapshotHandle: string }).snapshotHandle);
    assert.equal(cspec.volumeSnapshotRef.namespace, 'data-restored');
  });
});

test('verify-restore of a full backup checks each volume snapshot in place', async () => {
  const manifest = await backupK8s({
    storage: openStorage(path.join(work, 'backups')),
    set: 'verify-volumes',
    client,
    filters: { ...allFilters, includeNamespaces: ['data'] },
    compression: 'zstd',
    tags: [],
    mode: 'full',
    volumeSnapshotClass: 'csi-snapclass',
    pollIntervalMs: 10,
    logger,
  });
  const facts = manifest.facts as unknown as K8sFacts;
  const outcome = await verifyK8s({
    storage: openStorage(path.join(work, 'backups')),
    manifest,
    client,
    readyTimeoutMs: 0,
    logger,
  });
  const rows = outcome.checks.filter((c) => c.name.startsWith('volume snapshot: '));
  assert.equal(rows.length, 2, JSON.stringify(rows));
  assert.ok(
    rows.every((r) => r.status === 'passed'),
    JSON.stringify(outcome.checks),
  );
  // A snapshot deleted since the backup is a failed check.
  fake.objects.delete(`snapshot.storage.k8s.io/volumesnapshots/data/${facts.volumeSnapshots![0]!.snapshot}`);
  const after = await verifyK8s({
    storage: openStorage(path.join(work, 'backups')),
    manifest,
    client,
    readyTimeoutMs: 0,
    logger,
  });
  assert.ok(
    after.checks.some(
      (c) => c.name.startsWith('volume snapshot: ') && c.status === 'failed' && /404/.test(c.detail),
    ),
  );
});

describeHostileBackup(
  'a hostile backup: the archive path decides where each object goes',
  'the fake',
  () => ({
    client,
    backups: path.join(work, 'backups'),
    cluster: { server: fake.url, version: 'v1.31.2-fake' },
    logger,
    objectKeys: async () => [...fake.objects.keys()],
  }),
);

/**
 * backup-k8s with velero-storage, and what a namespace-filtered backup adds (the CRDs and PVs
 * its objects need), on the fake kube-apiserver and, when its binaries are built, a real
 * control plane (test/harness/kube-cluster.ts; skipped, saying why, otherwise).
 *
 * The Velero copy goes to a folder and to an S3 server (fauxqs, under a nested prefix): the
 * layout is checked exactly (three files under backups/<name>/ and nothing else at the root,
 * gzip, every entry mode 0755, the `<version>-preferredversion` twin of each object, the
 * resource list, the Backup object), velero-backup.json is written after the archive and the
 * resource list and before Lifeboat's manifest, and Lifeboat's own restore of the Velero
 * tarball restores it. A failing run leaves neither a Velero Backup nor a committed Lifeboat
 * backup; prune deletes the Velero copy with the backup.
 */
import assert from 'node:assert/strict';
import { createWriteStream } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { after, before, describe, test } from 'node:test';
import zlib from 'node:zlib';
import { generateIdentity } from 'age-encryption';
import * as tar from 'tar-stream';
import { makeReader } from '../../shared/action/run.ts';
import { Catalog } from '../../shared/catalog/catalog.ts';
import type { Manifest } from '../../shared/catalog/manifest.ts';
import { backupK8sCommand } from '../../shared/commands/backup-k8s.ts';
import { backupK8s, type K8sBackupOptions, type K8sFacts, type K8sFilters } from '../../shared/k8s/backup.ts';
import { KubeClient, KubeError } from '../../shared/k8s/client.ts';
import { restoreK8s } from '../../shared/k8s/restore.ts';
import { structuredSelector, veleroKeys, veleroNameFor } from '../../shared/k8s/velero-layout.ts';
import { recipientOf } from '../../shared/pipeline/encryption.ts';
import type { Logger } from '../../shared/pipeline/progress.ts';
import { prune } from '../../shared/retention/prune.ts';
import { openStorage } from '../../shared/storage/open.ts';
import type { Storage } from '../../shared/storage/storage.ts';
import { type FakeKube, fakeKubeconfig, startFakeKube } from '../fakes/kube-apiserver.ts';
import { allFilters, archiveEntries } from '../harness/k8s-backups.ts';
import { eventually, type KubeCluster, kubeBinaries, startKubeCluster } from '../harness/kube-cluster.ts';
import { startFauxqs, startFolder, type TestServer, tempDir } from '../harness/servers.ts';

const found = kubeBinaries();
if (!found.binaries)
  console.log(
    `# k8s-velero: the real control plane part is skipped: ${found.reason}; the fake's tests still run`,
  );
const skipReal = found.binaries ? false : `no real Kubernetes control plane: ${found.reason}`;

const timings: Record<string, number> = {};
let work: string;
let fake: FakeKube;
let fakeClient: KubeClient;
const extraFakes: FakeKube[] = [];
before(async () => {
  work = await tempDir('k8s-velero');
  fake = await startFakeKube();
  const kubeconfig = path.join(work, 'fake-kubeconfig');
  await fs.writeFile(kubeconfig, fakeKubeconfig(fake.url));
  fakeClient = await KubeClient.open(kubeconfig);
  await seed(fakeClient);
});
after(async () => {
  await fake?.stop();
  for (const f of extraFakes) await f.stop();
  await fs.rm(work, { recursive: true, force: true });
  console.log(`# k8s-velero timings (ms): ${JSON.stringify(timings)}`);
});

type Obj = {
  apiVersion?: string;
  kind?: string;
  metadata: {
    name: string;
    namespace?: string;
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
  };
  spec?: Record<string, unknown>;
  status?: Record<string, unknown>;
  [k: string]: unknown;
};

const gone = async (client: KubeClient, url: string) =>
  client.get(url).then(
    () => undefined,
    (error: unknown) => (error instanceof KubeError && error.code === 404 ? true : undefined),
  );

const crd = (plural: string, kind: string) => ({
  apiVersion: 'apiextensions.k8s.io/v1',
  kind: 'CustomResourceDefinition',
  metadata: { name: `${plural}.example.com` },
  spec: {
    group: 'example.com',
    scope: 'Namespaced',
    names: { plural, singular: plural.slice(0, -1), kind, listKind: `${kind}List` },
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

const volume = (name: string) => ({
  apiVersion: 'v1',
  kind: 'PersistentVolume',
  metadata: { name },
  spec: {
    capacity: { storage: '1Gi' },
    accessModes: ['ReadWriteOnce'],
    persistentVolumeReclaimPolicy: 'Retain',
    storageClassName: 'manual',
    hostPath: { path: `/tmp/lifeboat-k8s-velero/${name}` },
  },
});

/**
 * What every server holds for the suite: namespace `shop` with a config map, a Secret, a
 * Widget (CRD widgets.example.com) and a PVC bound to the hostPath PV `pv-shop`; namespace
 * `other` with a Gadget (CRD gadgets.example.com); and the PV `pv-spare`, bound to nothing.
 */
async function seed(client: KubeClient): Promise<void> {
  const post = (url: string, body: unknown) => client.request('POST', url, body);
  for (const name of ['shop', 'other']) await post('/api/v1/namespaces', { metadata: { name } });
  await post('/apis/apiextensions.k8s.io/v1/customresourcedefinitions', crd('widgets', 'Widget'));
  await post('/apis/apiextensions.k8s.io/v1/customresourcedefinitions', crd('gadgets', 'Gadget'));
  await eventually('the CRDs served', async () => {
    const list = await client.get<{ resources: { name: string }[] }>('/apis/example.com/v1');
    const names = list.resources.map((r) => r.name);
    return names.includes('widgets') && names.includes('gadgets') ? true : undefined;
  });
  await eventually('a Widget created', () =>
    post('/apis/example.com/v1/namespaces/shop/widgets', {
      apiVersion: 'example.com/v1',
      kind: 'Widget',
      metadata: { name: 'blue' },
      spec: { size: 'L' },
    }),
  );
  await post('/apis/example.com/v1/namespaces/other/gadgets', {
    apiVersion: 'example.com/v1',
    kind: 'Gadget',
    metadata: { name: 'g1' },
    spec: {},
  });
  await post('/api/v1/persistentvolumes', volume('pv-shop'));
  await post('/api/v1/persistentvolumes', volume('pv-spare'));
  await post('/api/v1/namespaces/shop/persistentvolumeclaims', {
    metadata: { name: 'data' },
    spec: {
      accessModes: ['ReadWriteOnce'],
      storageClassName: 'manual',
      volumeName: 'pv-shop',
      resources: { requests: { storage: '1Gi' } },
    },
  });
  await post('/api/v1/namespaces/shop/configmaps', {
    metadata: { name: 'settings', labels: { app: 'web' } },
    data: { mode: 'fast', emoji: '🐳' },
  });
  await post('/api/v1/namespaces/shop/secrets', {
    metadata: { name: 'db-password' },
    type: 'Opaque',
    data: { password: 'c2VjcmV0' },
  });
}

/** A storage whose calls pass through `overrides` first (each gets the real storage). */
function wrapped(storage: Storage, overrides: Partial<Record<keyof Storage, unknown>>): Storage {
  return new Proxy(storage, {
    get(target, prop, receiver) {
      const own = overrides[prop as keyof Storage];
      if (own !== undefined) return own;
      const value = Reflect.get(target, prop, receiver);
      return typeof value === 'function' ? value.bind(target) : value;
    },
  });
}

/** Records each completed write as `<label> <key>`, in order. */
function recording(storage: Storage, label: string, log: string[]): Storage {
  return wrapped(storage, {
    putStream: async (key: string, body: Readable, signal?: AbortSignal) => {
      await storage.putStream(key, body, signal);
      log.push(`${label} ${key}`);
    },
    putBytes: async (key: string, body: Uint8Array, options?: { ifAbsent?: boolean }) => {
      await storage.putBytes(key, body, options);
      log.push(`${label} ${key}`);
    },
  });
}

async function keysOf(storage: Storage, prefix = ''): Promise<string[]> {
  const keys: string[] = [];
  for await (const item of storage.list(prefix)) keys.push(item.key);
  return keys.sort();
}

async function bytesOf(storage: Storage, key: string): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of await storage.get(key)) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

interface TarEntry {
  name: string;
  mode: number;
  type: string;
  text: string;
}

async function tarEntries(plain: Buffer): Promise<TarEntry[]> {
  const out: TarEntry[] = [];
  const extract = tar.extract();
  const done = new Promise<void>((resolve, reject) => {
    extract.on('entry', (header, stream, next) => {
      const chunks: Buffer[] = [];
      stream.on('data', (c) => chunks.push(c as Buffer));
      stream.on('end', () => {
        out.push({
          name: header.name,
          mode: header.mode ?? 0,
          type: header.type ?? '',
          text: Buffer.concat(chunks).toString('utf8'),
        });
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

const quiet = (): Logger & { warnings: string[] } => {
  const warnings: string[] = [];
  return { info() {}, warn: (m: string) => warnings.push(m), warnings };
};

interface Target {
  client: KubeClient;
  /** A cluster without the suite's objects: a fresh fake, or the real one emptied of them. */
  emptyCluster(): Promise<KubeClient>;
}

function options(client: KubeClient, storage: Storage, set: string, extra: Partial<K8sBackupOptions> = {}) {
  return {
    storage,
    set,
    client,
    filters: { ...allFilters, includeNamespaces: ['shop'], excludeResources: ['events'] } as K8sFilters,
    compression: 'zstd' as const,
    tags: [],
    logger: quiet(),
    ...extra,
  };
}

/** The same suite against the fake and the real control plane. */
function describeServer(serverName: string, skip: false | string, target: () => Target) {
  describe(serverName, { skip }, () => {
    const deps = {} as { manifest: Manifest; backups: string };
    describe('J: a namespace-filtered backup takes what its objects need', () => {
      let manifest: Manifest;
      let archive: Map<string, string>;
      let backups: string;
      before(async () => {
        backups = path.join(work, `${serverName.replace(/\W+/g, '-')}-deps`);
        const t0 = Date.now();
        manifest = await backupK8s(options(target().client, openStorage(backups), 'deps'));
        deps.manifest = manifest;
        deps.backups = backups;
        timings[`${serverName}: namespace backup`] = Date.now() - t0;
        archive = await archiveEntries(backups, manifest);
      });

      test('the CRDs of its custom resources and the PVs of its PVCs, nothing unrelated', () => {
        const cluster = [...archive.keys()].filter(
          (k) => k.includes('/cluster/') && !k.startsWith('resources/namespaces/'),
        );
        assert.deepEqual(cluster, [
          'resources/customresourcedefinitions.apiextensions.k8s.io/cluster/widgets.example.com.json',
          'resources/persistentvolumes/cluster/pv-shop.json',
        ]);
        assert.ok(archive.has('resources/widgets.example.com/namespaces/shop/blue.json'));
        assert.ok(archive.has('resources/persistentvolumeclaims/namespaces/shop/data.json'));
        assert.ok(![...archive.keys()].some((k) => k.includes('gadgets') || k.includes('/other/')));
        const pv = JSON.parse(archive.get('resources/persistentvolumes/cluster/pv-shop.json')!) as Obj;
        assert.equal(pv.kind, 'PersistentVolume');
        assert.equal(pv.apiVersion, 'v1');
      });

      test('in restore order: CRDs and PVs before the namespaced objects', () => {
        const keys = [...archive.keys()];
        const at = (k: string) => keys.indexOf(k);
        const firstNamespaced = keys.findIndex(
          (k) => k.includes('/namespaces/') && !k.startsWith('resources/namespaces/'),
        );
        assert.ok(
          at('resources/customresourcedefinitions.apiextensions.k8s.io/cluster/widgets.example.com.json') <
            firstNamespaced,
        );
        assert.ok(at('resources/persistentvolumes/cluster/pv-shop.json') < firstNamespaced);
        assert.ok(
          at('resources/persistentvolumes/cluster/pv-shop.json') <
            at('resources/persistentvolumeclaims/namespaces/shop/data.json'),
        );
      });

      test('counted, and named in the facts and the contents', () => {
        const facts = manifest.facts as unknown as K8sFacts;
        assert.equal(facts.counts.byResource['customresourcedefinitions.apiextensions.k8s.io'], 1);
        assert.equal(facts.counts.byResource.persistentvolumes, 1);
        assert.equal(facts.counts.byNamespace[''], 3, 'the namespace, the CRD and the PV');
        assert.deepEqual(facts.needed, {
          customResourceDefinitions: ['widgets.example.com'],
          persistentVolumes: ['pv-shop'],
        });
        assert.equal(facts.counts.total, [...archive.keys()].length - 1);
        assert.ok(
          manifest.contents.included.some((l) =>
            /with the CRDs and PVs its objects need \(1 CRD\(s\), 1 PV\(s\)\)/.test(l),
          ),
          manifest.contents.included.join('; '),
        );
        assert.ok(
          manifest.contents.excluded.includes(
            'other cluster-scoped resources (not every namespace is included)',
          ),
        );
      });

      test('include-cluster-resources: false takes none of them; exclude-resources keeps one out; include-resources does not', async () => {
        const storage = openStorage(backups);
        const none = await archiveEntries(
          backups,
          await backupK8s({
            ...options(target().client, storage, 'deps-none'),
            filters: { ...allFilters, includeNamespaces: ['shop'], includeClusterResources: false },
          }),
        );
        assert.deepEqual(
          [...none.keys()].filter((k) => k.includes('/cluster/') && !k.startsWith('resources/namespaces/')),
          [],
        );
        assert.ok(none.has('resources/widgets.example.com/namespaces/shop/blue.json'));
        const noPv = await backupK8s({
          ...options(target().client, storage, 'deps-no-pv'),
          filters: { ...allFilters, includeNamespaces: ['shop'], excludeResources: ['persistentvolumes'] },
        });
        const noPvKeys = [...(await archiveEntries(backups, noPv)).keys()];
        assert.ok(!noPvKeys.some((k) => k.startsWith('resources/persistentvolumes/')));
        assert.ok(
          noPvKeys.some((k) => k.startsWith('resources/customresourcedefinitions.apiextensions.k8s.io/')),
        );
        const widgetsOnly = await backupK8s({
          ...options(target().client, storage, 'deps-widgets'),
          filters: { ...allFilters, includeNamespaces: ['shop'], includeResources: ['widgets.example.com'] },
        });
        assert.deepEqual([...(await archiveEntries(backups, widgetsOnly)).keys()].sort(), [
          'metadata/version',
          'resources/customresourcedefinitions.apiextensions.k8s.io/cluster/widgets.example.com.json',
          'resources/widgets.example.com/namespaces/shop/blue.json',
        ]);
      });
    });

    for (const [storageName, start] of [
      ['a folder', startFolder],
      ['S3 (fauxqs, nested prefix)', startFauxqs],
    ] as const) {
      describe(`a Velero copy in ${storageName}`, () => {
        let server: TestServer;
        let velero: Storage;
        let backups: string;
        let manifest: Manifest;
        let archive: Map<string, string>;
        let name: string;
        const log: string[] = [];
        const started = new Date();
        before(async () => {
          server = await start();
          velero = openStorage(server.url, { ...process.env, ...server.env });
          backups = path.join(work, `${serverName.replace(/\W+/g, '-')}-${server.name}`);
          const t0 = Date.now();
          manifest = await backupK8s(
            options(target().client, recording(openStorage(backups), 'lifeboat', log), 'velero', {
              velero: {
                storage: recording(velero, 'velero', log),
                storageLocation: 'primary',
                ttlSeconds: 3600,
              },
              now: () => started,
            }),
          );
          timings[`${serverName} → ${server.name}: backup with a Velero copy`] = Date.now() - t0;
          archive = await archiveEntries(backups, manifest);
          name = veleroNameFor('velero', manifest.id);
        });
        after(() => server?.stop());

        test('three files under backups/<name>/, nothing else at the root', async () => {
          assert.equal(name, `velero-${manifest.id}`);
          const keys = veleroKeys(name);
          assert.deepEqual(await keysOf(velero), [keys.archive, keys.resourceList, keys.metadata].sort());
          assert.deepEqual(await velero.listDirs(''), ['backups/']);
          const facts = (manifest.facts as unknown as K8sFacts).velero!;
          assert.equal(facts.name, name);
          assert.equal(facts.storage, server.url);
          assert.equal(facts.storageLocation, 'primary');
          const stored = await bytesOf(velero, keys.archive);
          assert.equal(facts.bytes, stored.length);
        });

        test('the archive: gzip, every entry a file of mode 0755, each object also under <version>-preferredversion', async () => {
          const gz = await bytesOf(velero, veleroKeys(name).archive);
          assert.deepEqual([...gz.subarray(0, 2)], [0x1f, 0x8b], 'gzip');
          const entries = await tarEntries(zlib.gunzipSync(gz));
          for (const e of entries) {
            assert.equal(e.type, 'file', e.name);
            assert.equal(e.mode, 0o755, e.name);
          }
          const byName = new Map(entries.map((e) => [e.name, e.text]));
          assert.equal(entries[0]!.name, 'metadata/version');
          assert.equal(byName.get('metadata/version'), '1.1.0\n');
          const expected = new Map<string, string>([['metadata/version', '1.1.0\n']]);
          for (const [key, text] of archive) {
            if (key === 'metadata/version') continue;
            const [, resource, ...rest] = key.split('/');
            const version = (JSON.parse(text) as Obj).apiVersion!.split('/').at(-1);
            expected.set(key, text);
            expected.set(`resources/${resource}/${version}-preferredversion/${rest.join('/')}`, text);
          }
          assert.deepEqual(new Map([...byName].sort()), new Map([...expected].sort()));
          assert.ok(
            byName.has('resources/widgets.example.com/v1-preferredversion/namespaces/shop/blue.json'),
          );
          assert.ok(byName.has('resources/persistentvolumes/v1-preferredversion/cluster/pv-shop.json'));
          assert.equal(entries.length, 1 + 2 * (archive.size - 1));
        });

        test('the resource list: {"<group>/<version>/<Kind>": [sorted ns/name or name]}, gzip', async () => {
          const gz = await bytesOf(velero, veleroKeys(name).resourceList);
          const text = zlib.gunzipSync(gz).toString('utf8');
          const list = JSON.parse(text) as Record<string, string[]>;
          const expected: Record<string, string[]> = {};
          for (const [key, body] of archive) {
            if (key === 'metadata/version') continue;
            const obj = JSON.parse(body) as Obj;
            const type = `${obj.apiVersion}/${obj.kind}`;
            const ns = key.split('/')[2] === 'namespaces' ? key.split('/')[3] : undefined;
            expected[type] = [
              ...(expected[type] ?? []),
              ns ? `${ns}/${obj.metadata.name}` : obj.metadata.name,
            ];
          }
          const sorted = Object.fromEntries(
            Object.keys(expected)
              .sort()
              .map((k) => [k, expected[k]!.sort()]),
          );
          assert.equal(text, `${JSON.stringify(sorted)}\n`);
          assert.ok(list['v1/ConfigMap']!.includes('shop/settings'));
          assert.deepEqual(list['example.com/v1/Widget'], ['shop/blue']);
          assert.deepEqual(list['apiextensions.k8s.io/v1/CustomResourceDefinition'], ['widgets.example.com']);
          assert.deepEqual(list['v1/PersistentVolume'], ['pv-shop']);
          assert.deepEqual(list['v1/Namespace'], ['shop']);
        });

        test('velero-backup.json: a velero.io/v1 Backup, Completed, format 1.1.0, with our filters', async () => {
          const backup = JSON.parse((await bytesOf(velero, veleroKeys(name).metadata)).toString('utf8'));
          const facts = manifest.facts as unknown as K8sFacts;
          assert.equal(backup.apiVersion, 'velero.io/v1');
          assert.equal(backup.kind, 'Backup');
          assert.equal(backup.metadata.name, name);
          assert.equal(backup.metadata.labels['velero.io/storage-location'], 'primary');
          assert.equal(backup.metadata.annotations['lifeboat.io/set'], 'velero');
          assert.equal(backup.metadata.annotations['lifeboat.io/backup-id'], manifest.id);
          assert.equal(
            backup.metadata.annotations['velero.io/source-cluster-k8s-gitversion'],
            facts.cluster.version,
          );
          assert.match(backup.metadata.annotations['velero.io/source-cluster-k8s-major-version'], /^\d+$/);
          assert.deepEqual(backup.spec.includedNamespaces, ['shop']);
          assert.deepEqual(backup.spec.excludedResources, ['events']);
          assert.equal(backup.spec.includedResources, undefined);
          assert.equal(backup.spec.includeClusterResources, undefined, 'auto is Velero’s nil');
          assert.equal(backup.spec.storageLocation, 'primary');
          assert.equal(backup.spec.ttl, '1h0m0s');
          assert.equal(backup.spec.snapshotVolumes, false);
          assert.equal(backup.status.phase, 'Completed');
          assert.equal(backup.status.formatVersion, '1.1.0');
          assert.equal(backup.status.version, 1);
          const second = (d: Date) => d.toISOString().replace(/\.\d+Z$/, 'Z');
          assert.equal(backup.status.startTimestamp, second(started));
          assert.equal(backup.status.completionTimestamp, second(started));
          assert.equal(backup.status.expiration, second(new Date(started.getTime() + 3600_000)));
          assert.deepEqual(backup.status.progress, {
            totalItems: facts.counts.total,
            itemsBackedUp: facts.counts.total,
          });
          assert.equal(facts.velero!.expiration, backup.status.expiration);
        });

        test("written last: the archive, the resource list, velero-backup.json, then Lifeboat's manifest", async () => {
          const keys = veleroKeys(name);
          const order = log.filter((l) => l.startsWith('velero ') || l.endsWith('/manifest.json'));
          assert.deepEqual(order, [
            `velero ${keys.archive}`,
            `velero ${keys.resourceList}`,
            `velero ${keys.metadata}`,
            `lifeboat velero/${manifest.id}/manifest.json`,
          ]);
          const times = await Promise.all(
            [keys.archive, keys.resourceList, keys.metadata].map(async (k) =>
              (await velero.head(k))!.modified.getTime(),
            ),
          );
          assert.ok(times[2]! >= times[0]! && times[2]! >= times[1]!, `mtimes ${times}`);
        });

        test("Lifeboat's own restore of the Velero tarball restores it", async () => {
          const file = path.join(work, `${server.name}-${serverName.replace(/\W+/g, '-')}`, `${name}.tar.gz`);
          await fs.mkdir(path.dirname(file), { recursive: true });
          await pipeline(await velero.get(veleroKeys(name).archive), createWriteStream(file));
          const into = `shop-${server.name === 'fs' ? 'fs' : 's3'}`;
          const t0 = Date.now();
          const result = await restoreK8s({
            veleroFile: file,
            client: target().client,
            namespaceMapping: new Map([['shop', into]]),
            includeNamespaces: ['shop'],
            excludeNamespaces: [],
            includeResources: [],
            excludeResources: [],
            existing: 'skip',
            dryRun: false,
            crdWaitMs: 30_000,
            logger: quiet(),
          });
          timings[`${serverName} ← ${server.name}: restore of the Velero tarball`] = Date.now() - t0;
          assert.deepEqual(
            result.objects.filter((o) => o.outcome === 'failed'),
            [],
          );
          const settings = await target().client.get<Obj & { data: Record<string, string> }>(
            `/api/v1/namespaces/${into}/configmaps/settings`,
          );
          assert.equal(settings.data.emoji, '🐳');
          const widget = await target().client.get<Obj>(
            `/apis/example.com/v1/namespaces/${into}/widgets/blue`,
          );
          assert.deepEqual(widget.spec, { size: 'L' });
          // Each object once, though the tarball holds it twice.
          assert.equal(
            result.objects.filter((o) => o.resource === 'configmaps' && o.name === 'settings').length,
            1,
          );
        });
      });
    }

    describe('J: into an empty cluster (last: on the real server it deletes the suite’s objects)', () => {
      test('restores into an empty cluster: the CRD before its Widget, the PV with its PVC', async () => {
        const t0 = Date.now();
        const empty = await target().emptyCluster();
        timings[`${serverName}: emptying the cluster`] = Date.now() - t0;
        const t1 = Date.now();
        const result = await restoreK8s({
          storage: openStorage(deps.backups),
          manifest: deps.manifest,
          client: empty,
          namespaceMapping: new Map(),
          includeNamespaces: [],
          excludeNamespaces: [],
          includeResources: [],
          excludeResources: [],
          existing: 'skip',
          dryRun: false,
          crdWaitMs: 60_000,
          logger: quiet(),
        });
        timings[`${serverName}: restore into the empty cluster`] = Date.now() - t1;
        const failed = result.objects.filter((o) => o.outcome === 'failed');
        assert.deepEqual(failed, []);
        const widget = await empty.get<Obj>('/apis/example.com/v1/namespaces/shop/widgets/blue');
        assert.deepEqual(widget.spec, { size: 'L' });
        await empty.get('/api/v1/persistentvolumes/pv-shop');
        const pvc = await empty.get<Obj>('/api/v1/namespaces/shop/persistentvolumeclaims/data');
        assert.equal(pvc.spec?.volumeName, 'pv-shop');
        assert.ok(
          await gone(empty, '/api/v1/persistentvolumes/pv-spare'),
          'the unrelated PV is not restored',
        );
        assert.ok(
          await gone(empty, '/apis/apiextensions.k8s.io/v1/customresourcedefinitions/gadgets.example.com'),
          'the unrelated CRD is not restored',
        );
      });
    });
  });
}

// ---- the fake ----
describeServer('the fake kube-apiserver', false, () => ({
  client: fakeClient,
  async emptyCluster() {
    const empty = await startFakeKube();
    extraFakes.push(empty);
    const kubeconfig = path.join(work, `empty-kubeconfig-${extraFakes.length}`);
    await fs.writeFile(kubeconfig, fakeKubeconfig(empty.url));
    return KubeClient.open(kubeconfig);
  },
}));

// ---- a real control plane ----
let cluster: KubeCluster | undefined;
let realClient: KubeClient;
describe('a real control plane', { skip: skipReal }, () => {
  before(async () => {
    const t0 = Date.now();
    cluster = await startKubeCluster();
    timings['real: cluster start'] = Date.now() - t0;
    realClient = await KubeClient.open(cluster.kubeconfig);
    const t1 = Date.now();
    await seed(realClient);
    timings['real: seed'] = Date.now() - t1;
  });
  after(async () => {
    await cluster?.stop();
  });

  test('the server is the real one, and binds the PVC to its PV', async () => {
    const version = await realClient.get<{ gitVersion: string }>('/version');
    assert.match(version.gitVersion, /^v1\.20\./);
    const pvc = await eventually('the PVC bound', async () => {
      const got = await realClient.get<Obj>('/api/v1/namespaces/shop/persistentvolumeclaims/data');
      return got.status?.phase === 'Bound' ? got : undefined;
    });
    assert.equal(pvc.spec?.volumeName, 'pv-shop');
  });

  describeServer('kube-apiserver v1.20.2', false, () => ({
    client: realClient,
    /** Deletes the suite's objects from the real cluster and waits until they are gone. */
    async emptyCluster() {
      const del = (url: string) => realClient.request('DELETE', url).catch(() => {});
      for (const ns of ['shop', 'other', 'shop-fs', 'shop-s3']) await del(`/api/v1/namespaces/${ns}`);
      for (const c of ['widgets', 'gadgets'])
        await del(`/apis/apiextensions.k8s.io/v1/customresourcedefinitions/${c}.example.com`);
      for (const pv of ['pv-shop', 'pv-spare']) await del(`/api/v1/persistentvolumes/${pv}`);
      await eventually(
        'the namespaces, CRDs and PVs gone',
        async () => {
          for (const url of [
            '/api/v1/namespaces/shop',
            '/api/v1/namespaces/other',
            '/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.example.com',
            '/apis/apiextensions.k8s.io/v1/customresourcedefinitions/gadgets.example.com',
            '/api/v1/persistentvolumes/pv-shop',
            '/api/v1/persistentvolumes/pv-spare',
          ])
            if (!(await gone(realClient, url))) return undefined;
          return true;
        },
        120_000,
      );
      return realClient;
    },
  }));
});

// ---- failures, prune, inputs: storage-side, on the fake ----
describe('a failing run commits nothing, in either place', () => {
  const lifeboatCommitted = async (storage: Storage, set: string) =>
    (await new Catalog(storage).listBackups(set)).filter((b) => b.committed).map((b) => b.id);

  test('the velero storage unwritable (backups is a file): no velero-backup.json, no committed backup', async () => {
    const root = path.join(work, 'unwritable-velero');
    await fs.mkdir(root, { recursive: true });
    await fs.writeFile(path.join(root, 'backups'), 'not a folder');
    const lifeboat = openStorage(path.join(work, 'fail-1'));
    await assert.rejects(
      backupK8s(
        options(fakeClient, lifeboat, 'fail', {
          velero: { storage: openStorage(root), storageLocation: 'default', ttlSeconds: 3600 },
        }),
      ),
      /is a file, not a folder|ENOTDIR|EEXIST/,
    );
    assert.deepEqual(await lifeboatCommitted(lifeboat, 'fail'), []);
    assert.deepEqual(await keysOf(lifeboat), [], 'the unfinished Lifeboat backup is removed');
    assert.deepEqual(await fs.readdir(root), ['backups']);
  });

  test('velero-backup.json refused: the archive and resource list deleted, no committed backup', async () => {
    const root = path.join(work, 'velero-2');
    const real = openStorage(root);
    const velero = wrapped(real, {
      putBytes: async (key: string, body: Uint8Array, opts?: { ifAbsent?: boolean }) => {
        if (key.endsWith('/velero-backup.json')) throw new Error('the bucket refused velero-backup.json');
        return real.putBytes(key, body, opts);
      },
    });
    const lifeboat = openStorage(path.join(work, 'fail-2'));
    await assert.rejects(
      backupK8s(
        options(fakeClient, lifeboat, 'fail', {
          velero: { storage: velero, storageLocation: 'default', ttlSeconds: 3600 },
        }),
      ),
      /refused velero-backup.json/,
    );
    assert.deepEqual(await keysOf(real), []);
    assert.deepEqual(await fs.readdir(root), [], 'no empty folders left');
    assert.deepEqual(await lifeboatCommitted(lifeboat, 'fail'), []);
  });

  test("Lifeboat's archive upload failing mid-stream: the Velero copy deleted", async () => {
    const root = path.join(work, 'velero-3');
    const velero = openStorage(root);
    const real = openStorage(path.join(work, 'fail-3'));
    const lifeboat = wrapped(real, {
      putStream: async (key: string, body: Readable) => {
        for await (const _ of body) throw new Error('the Lifeboat bucket dropped the upload');
        return real.putStream(key, body);
      },
    });
    await assert.rejects(
      backupK8s(
        options(fakeClient, lifeboat, 'fail', {
          velero: { storage: velero, storageLocation: 'default', ttlSeconds: 3600 },
        }),
      ),
      /dropped the upload/,
    );
    assert.deepEqual(await keysOf(velero), []);
    assert.deepEqual(await lifeboatCommitted(real, 'fail'), []);
  });

  test('a Velero backup of the same name already there is refused and left alone', async () => {
    const velero = openStorage(path.join(work, 'velero-4'));
    const at = new Date(Date.UTC(2026, 0, 5, 4, 30));
    const first = await backupK8s(
      options(fakeClient, openStorage(path.join(work, 'same-a')), 'same', {
        velero: { storage: velero, storageLocation: 'default', ttlSeconds: 3600 },
        now: () => at,
      }),
    );
    const before = await keysOf(velero);
    const second = openStorage(path.join(work, 'same-b'));
    await assert.rejects(
      backupK8s(
        options(fakeClient, second, 'same', {
          velero: { storage: velero, storageLocation: 'default', ttlSeconds: 3600 },
          now: () => at,
        }),
      ),
      new RegExp(`a Velero backup named same-${first.id} is there; it is not overwritten`),
    );
    assert.deepEqual(await keysOf(velero), before);
    assert.deepEqual(await lifeboatCommitted(second, 'same'), []);
  });
});

describe('prune-retention deletes the Velero copies of the backups it deletes', () => {
  test('two of three copies deleted with their backups; one gone already is a warning; a foreign one is left', async () => {
    const lifeboat = openStorage(path.join(work, 'prune-lifeboat'));
    const veleroRoot = path.join(work, 'prune-velero');
    const velero = openStorage(veleroRoot);
    const ids: string[] = [];
    for (const day of [1, 2, 3, 4]) {
      const manifest = await backupK8s(
        options(fakeClient, lifeboat, 'nightly', {
          velero: { storage: velero, storageLocation: 'default', ttlSeconds: 3600 },
          now: () => new Date(Date.UTC(2026, 1, day, 3, 15)),
        }),
      );
      ids.push(manifest.id);
    }
    const names = ids.map((id) => veleroNameFor('nightly', id));
    // Day 2's copy was deleted by Velero's garbage collection; day 3's velero-backup.json is not ours.
    await velero.delete(await keysOf(velero, `backups/${names[1]}/`));
    const foreign = veleroKeys(names[2]!).metadata;
    const tampered = JSON.parse((await bytesOf(velero, foreign)).toString('utf8'));
    tampered.metadata.annotations['lifeboat.io/backup-id'] = 'someone-else';
    await velero.delete([foreign]);
    await velero.putBytes(foreign, Buffer.from(JSON.stringify(tampered)));
    const logger = quiet();
    const report = await prune({
      storage: lifeboat,
      sets: ['nightly'],
      policy: { last: 1, tags: [], timezone: 'UTC', keepVerified: 0, minKeep: 1, orphanGraceSeconds: 86_400 },
      dryRun: false,
      logger,
      now: () => new Date(Date.UTC(2026, 1, 5)),
    });
    const set = report.sets[0]!;
    assert.deepEqual(set.deletedBackups.sort(), ids.slice(0, 3).sort());
    assert.deepEqual(set.veleroCopies.deleted, [`${veleroRoot} backups/${names[0]}/`]);
    assert.deepEqual(set.veleroCopies.missing, [`${veleroRoot} backups/${names[1]}/`]);
    assert.deepEqual(set.veleroCopies.left, [`${veleroRoot} backups/${names[2]}/`]);
    assert.ok(logger.warnings.some((w) => w.includes(`backups/${names[1]}/ is gone already`)));
    assert.ok(logger.warnings.some((w) => w.includes('is not the Velero copy Lifeboat wrote')));
    assert.deepEqual(
      await velero.listDirs('backups/'),
      [`backups/${names[2]}/`, `backups/${names[3]}/`].sort(),
    );
    assert.equal((await keysOf(velero, `backups/${names[3]}/`)).length, 3, 'the kept backup keeps its copy');
  });

  test('on S3: the copy under a nested prefix is deleted', async () => {
    const server = await startFauxqs();
    try {
      const env = { ...process.env, ...server.env };
      const velero = openStorage(server.url, env);
      const lifeboat = openStorage(path.join(work, 'prune-s3'));
      for (const day of [1, 2])
        await backupK8s(
          options(fakeClient, lifeboat, 'nightly', {
            velero: { storage: velero, storageLocation: 'default', ttlSeconds: 3600 },
            now: () => new Date(Date.UTC(2026, 1, day, 3, 15)),
          }),
        );
      const report = await prune({
        storage: lifeboat,
        sets: ['nightly'],
        policy: {
          last: 1,
          tags: [],
          timezone: 'UTC',
          keepVerified: 0,
          minKeep: 1,
          orphanGraceSeconds: 86_400,
        },
        dryRun: false,
        logger: quiet(),
        now: () => new Date(Date.UTC(2026, 1, 5)),
        openVeleroStorage: (url) => openStorage(url, env),
      });
      assert.equal(report.sets[0]!.veleroCopies.deleted.length, 1);
      assert.equal((await keysOf(velero)).length, 3);
    } finally {
      await server.stop();
    }
  });
});

describe('encryption and inputs', () => {
  test('with age-recipients: a warning that the Velero copy is not encrypted and holds the Secrets', async () => {
    const logger = quiet();
    const velero = openStorage(path.join(work, 'velero-enc'));
    const manifest = await backupK8s(
      options(fakeClient, openStorage(path.join(work, 'enc')), 'enc', {
        encryption: { recipients: [await recipientOf(await generateIdentity())] },
        velero: { storage: velero, storageLocation: 'default', ttlSeconds: 3600 },
        logger,
      }),
    );
    assert.match(manifest.artifacts[0]!.name, /\.age$/);
    assert.ok(
      logger.warnings.some((w) => /Velero copy .* is not encrypted .*and it holds the Secrets/.test(w)),
      logger.warnings.join('\n'),
    );
    const name = veleroNameFor('enc', manifest.id);
    const entries = await tarEntries(zlib.gunzipSync(await bytesOf(velero, veleroKeys(name).archive)));
    assert.ok(entries.some((e) => e.name === 'resources/secrets/namespaces/shop/db-password.json'));
  });

  const parse = (given: Record<string, string>) =>
    backupK8sCommand.parse(makeReader(backupK8sCommand as never, (spec) => given[spec.name] ?? spec.default));

  test('velero-storage: recorded as an absolute URL; overlapping storage and bad location names refused', () => {
    const folder = path.join(work, 'cmd-velero');
    const options = parse({
      set: 'demo',
      storage: path.join(work, 'cmd-lifeboat'),
      'velero-storage': folder,
    });
    assert.equal(options.velero!.storage.url, `file://${folder}`);
    assert.equal(options.velero!.storageLocation, 'default');
    assert.equal(options.velero!.ttlSeconds, 720 * 3600);
    assert.equal(parse({ set: 'demo' }).velero, undefined);
    assert.equal(
      parse({ set: 'demo', storage: 's3://bucket/lifeboat', 'velero-storage': 's3://bucket/velero/' }).velero!
        .storage.url,
      's3://bucket/velero',
    );
    for (const [storage, veleroStorage] of [
      ['s3://bucket/lifeboat', 's3://bucket'],
      ['s3://bucket', 's3://bucket/velero'],
      ['s3://bucket/a', 's3://bucket/a/'],
      [path.join(work, 'x'), path.join(work, 'x', 'velero')],
    ])
      assert.throws(
        () => parse({ set: 'demo', storage: storage!, 'velero-storage': veleroStorage! }),
        /velero-storage: .* overlaps storage/,
        `${storage} / ${veleroStorage}`,
      );
    assert.ok(
      parse({ set: 'demo', storage: 's3://bucket/lifeboat', 'velero-storage': 's3://bucket/lifeboat-velero' })
        .velero,
    );
    assert.throws(
      () =>
        parse({ set: 'demo', 'velero-storage': 's3://bucket/v', 'velero-storage-location': 'Not_A_Name' }),
      /velero-storage-location: 'Not_A_Name' is not a BackupStorageLocation name/,
    );
  });

  test('names: the set and id as a DNS-1123 label of at most 63; selectors in structured form', () => {
    assert.equal(
      veleroNameFor('prod.k8s_a', '2026-11-21-0315-backup-exclude-storage'),
      'prod-k8s-a-2026-11-21-0315-backup-exclude-storage',
    );
    const long = veleroNameFor('a'.repeat(40), '2026-11-21-0315-backup-exclude-storage-2');
    assert.equal(long.length, 63);
    assert.match(long, /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/);
    assert.notEqual(long, veleroNameFor('a'.repeat(40), '2026-11-21-0315-backup-exclude-storage-3'));
    assert.deepEqual(structuredSelector('app=web,tier!=cache,env in (a, b),!legacy,owner'), {
      matchLabels: { app: 'web' },
      matchExpressions: [
        { key: 'tier', operator: 'NotIn', values: ['cache'] },
        { key: 'env', operator: 'In', values: ['a', 'b'] },
        { key: 'legacy', operator: 'DoesNotExist' },
        { key: 'owner', operator: 'Exists' },
      ],
    });
  });
});

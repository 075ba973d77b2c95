/**
 * A stateful fake of kube-apiserver for what Lifeboat uses, served over plain HTTP — no API
 * server can run on this machine. It answers as the real one does:
 *
 * - discovery: /api, /api/v1, /apis, /apis/<group>/<version> (APIResourceList with verbs,
 *   namespaced, kind; subresources such as pods/status listed as the real server lists them);
 *   core, apps, batch, rbac, networking, storage, apiextensions, events.k8s.io (events served
 *   twice, as for real), an aggregated group that can be down (503), and a CRD group
 *   (example.com) that is served only once its CustomResourceDefinition exists;
 * - lists with labelSelector, limit and continue (opaque tokens; 410 Expired when a test
 *   expires them), across namespaces or in one;
 * - get (404), create (409 AlreadyExists; 404 when the namespace is missing; 400 when the
 *   body names another namespace than the URL; 405 for a namespaced kind posted without one;
 *   a cluster-scoped kind under /namespaces/ is 404), update (409 on a stale
 *   resourceVersion), delete; `dryRun=All` validates without storing;
 * - server-set fields: uid, resourceVersion, creationTimestamp, generation;
 * - a CSI snapshot controller: each read of a VolumeSnapshot moves it on — first not ready,
 *   then bound to a new VolumeSnapshotContent and ready with the PVC's size — or to
 *   `status.error` when its class's driver is `broken.csi.example.com` or the PVC is missing.
 *
 * Errors are `Status` objects with the real reason and code.
 */
import { randomUUID } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';

export interface FakeResource {
  group: string;
  version: string;
  resource: string;
  kind: string;
  namespaced: boolean;
  verbs: string[];
}

type KubeObject = {
  apiVersion?: string;
  kind?: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string>; [k: string]: unknown };
  [k: string]: unknown;
};

const all = ['create', 'delete', 'deletecollection', 'get', 'list', 'patch', 'update', 'watch'];
const builtIn: FakeResource[] = [
  ['', 'v1', 'namespaces', 'Namespace', false],
  ['', 'v1', 'pods', 'Pod', true],
  ['', 'v1', 'services', 'Service', true],
  ['', 'v1', 'configmaps', 'ConfigMap', true],
  ['', 'v1', 'secrets', 'Secret', true],
  ['', 'v1', 'serviceaccounts', 'ServiceAccount', true],
  ['', 'v1', 'persistentvolumeclaims', 'PersistentVolumeClaim', true],
  ['', 'v1', 'persistentvolumes', 'PersistentVolume', false],
  ['', 'v1', 'endpoints', 'Endpoints', true],
  ['', 'v1', 'events', 'Event', true],
  ['', 'v1', 'nodes', 'Node', false],
  ['apps', 'v1', 'deployments', 'Deployment', true],
  ['apps', 'v1', 'statefulsets', 'StatefulSet', true],
  ['apps', 'v1', 'replicasets', 'ReplicaSet', true],
  ['batch', 'v1', 'jobs', 'Job', true],
  ['batch', 'v1', 'cronjobs', 'CronJob', true],
  ['rbac.authorization.k8s.io', 'v1', 'roles', 'Role', true],
  ['rbac.authorization.k8s.io', 'v1', 'rolebindings', 'RoleBinding', true],
  ['rbac.authorization.k8s.io', 'v1', 'clusterroles', 'ClusterRole', false],
  ['rbac.authorization.k8s.io', 'v1', 'clusterrolebindings', 'ClusterRoleBinding', false],
  ['networking.k8s.io', 'v1', 'ingresses', 'Ingress', true],
  ['networking.k8s.io', 'v1', 'networkpolicies', 'NetworkPolicy', true],
  ['storage.k8s.io', 'v1', 'storageclasses', 'StorageClass', false],
  ['apiextensions.k8s.io', 'v1', 'customresourcedefinitions', 'CustomResourceDefinition', false],
  ['snapshot.storage.k8s.io', 'v1', 'volumesnapshotclasses', 'VolumeSnapshotClass', false],
  ['snapshot.storage.k8s.io', 'v1', 'volumesnapshots', 'VolumeSnapshot', true],
  ['snapshot.storage.k8s.io', 'v1', 'volumesnapshotcontents', 'VolumeSnapshotContent', false],
  ['events.k8s.io', 'v1', 'events', 'Event', true],
].map(([group, version, resource, kind, namespaced]) => ({
  group: group as string,
  version: version as string,
  resource: resource as string,
  kind: kind as string,
  namespaced: namespaced as boolean,
  verbs: all,
}));

/** Subresources the real server lists in discovery: a backup must skip them. */
const subresources = [
  { group: '', resource: 'pods/status', kind: 'Pod' },
  { group: '', resource: 'pods/log', kind: 'Pod' },
  { group: 'apps', resource: 'deployments/scale', kind: 'Scale' },
];

export interface FakeKube {
  url: string;
  /** Every object, by `group/resource/namespace/name` (namespace empty for cluster scope). */
  objects: Map<string, KubeObject>;
  /** The aggregated metrics.k8s.io API answers 503 while this is set. */
  aggregatedDown: boolean;
  /** Continue tokens issued before this moment answer 410 Expired. */
  expireTokensBefore: number;
  /** The next list request with a continue token answers 410 Expired (once). */
  expireNextContinue: boolean;
  /** Requests, as `METHOD path?query`. */
  requests: string[];
  /** Adds objects as they would be after a create (server fields set). */
  seed(group: string, resource: string, objects: KubeObject[]): void;
  stop(): Promise<void>;
}

export async function startFakeKube(): Promise<FakeKube> {
  const objects = new Map<string, KubeObject>();
  let resourceVersion = 1000;
  const state = {
    aggregatedDown: false,
    expireTokensBefore: 0,
    expireNextContinue: false,
    requests: [] as string[],
  };

  /** CRD-defined resources: served once their CustomResourceDefinition exists. */
  const served = (): FakeResource[] => {
    const custom: FakeResource[] = [];
    for (const [key, crd] of objects) {
      if (!key.startsWith('apiextensions.k8s.io/customresourcedefinitions/')) continue;
      const spec = crd.spec as {
        group: string;
        names: { plural: string; kind: string };
        scope: string;
        versions: { name: string; served: boolean }[];
      };
      for (const v of spec.versions.filter((x) => x.served)) {
        custom.push({
          group: spec.group,
          version: v.name,
          resource: spec.names.plural,
          kind: spec.names.kind,
          namespaced: spec.scope === 'Namespaced',
          verbs: all,
        });
      }
    }
    return [...builtIn, ...custom];
  };

  const keyOf = (group: string, resource: string, namespace: string | undefined, name: string) =>
    `${group}/${resource}/${namespace ?? ''}/${name}`;

  const status = (code: number, reason: string, message: string, details?: object) => ({
    kind: 'Status',
    apiVersion: 'v1',
    metadata: {},
    status: 'Failure',
    message,
    reason,
    ...(details ? { details } : {}),
    code,
  });

  const stamp = (obj: KubeObject, r: FakeResource) => {
    resourceVersion++;
    obj.apiVersion = r.group ? `${r.group}/${r.version}` : r.version;
    obj.kind = r.kind;
    obj.metadata.uid ??= randomUUID();
    obj.metadata.creationTimestamp ??= new Date().toISOString().replace(/\.\d+Z$/, 'Z');
    obj.metadata.resourceVersion = String(resourceVersion);
    obj.metadata.generation = ((obj.metadata.generation as number) ?? 0) + 1;
    return obj;
  };

  const matches = (obj: KubeObject, selector: string | null) => {
    if (!selector) return true;
    const labels = obj.metadata.labels ?? {};
    return selector.split(',').every((term) => {
      const t = term.trim();
      const ne = /^([^!=]+)!=(.*)$/.exec(t);
      if (ne) return labels[ne[1]!] !== ne[2];
      const eq = /^([^=]+)==?(.*)$/.exec(t);
      if (eq) return labels[eq[1]!] === eq[2];
      if (t.startsWith('!')) return !(t.slice(1) in labels);
      return t in labels;
    });
  };

  const server = http.createServer((req, res) => {
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (d) => (body += d));
    req.on('end', () => {
      const url = new URL(req.url ?? '/', 'http://fake');
      state.requests.push(`${req.method} ${url.pathname}${url.search}`);
      const send = (code: number, payload: unknown) => {
        res.writeHead(code, { 'content-type': 'application/json' });
        res.end(JSON.stringify(payload));
      };
      try {
        const answer = route(req.method ?? 'GET', url, body);
        send(answer.code, answer.body);
      } catch (error) {
        send(500, status(500, 'InternalError', String(error)));
      }
    });
  });

  function route(method: string, url: URL, body: string): { code: number; body: unknown } {
    const parts = url.pathname.split('/').filter(Boolean);
    const ok = (b: unknown) => ({ code: 200, body: b });
    // Discovery.
    if (method === 'GET' && url.pathname === '/version')
      return ok({ major: '1', minor: '31', gitVersion: 'v1.31.2-fake', platform: 'linux/amd64' });
    if (method === 'GET' && url.pathname === '/api') return ok({ kind: 'APIVersions', versions: ['v1'] });
    if (method === 'GET' && url.pathname === '/apis') {
      const groups = new Map<string, string[]>();
      for (const r of served())
        if (r.group) groups.set(r.group, [...new Set([...(groups.get(r.group) ?? []), r.version])]);
      groups.set('metrics.k8s.io', ['v1beta1']);
      return ok({
        kind: 'APIGroupList',
        apiVersion: 'v1',
        groups: [...groups].map(([name, versions]) => ({
          name,
          versions: versions.map((v) => ({ groupVersion: `${name}/${v}`, version: v })),
          preferredVersion: { groupVersion: `${name}/${versions[0]}`, version: versions[0] },
        })),
      });
    }
    const core = parts[0] === 'api';
    const group = core ? '' : (parts[1] ?? '');
    const version = core ? parts[1] : parts[2];
    const rest = parts.slice(core ? 2 : 3);
    if (!core && parts[0] !== 'apis')
      return { code: 404, body: status(404, 'NotFound', 'the server could not find the requested resource') };
    if (group === 'metrics.k8s.io') {
      if (state.aggregatedDown)
        return {
          code: 503,
          body: status(503, 'ServiceUnavailable', 'the server is currently unable to handle the request'),
        };
      return ok({
        kind: 'APIResourceList',
        apiVersion: 'v1',
        groupVersion: 'metrics.k8s.io/v1beta1',
        resources: [{ name: 'pods', namespaced: true, kind: 'PodMetrics', verbs: ['get', 'list'] }],
      });
    }
    const inGroup = served().filter((r) => r.group === group && r.version === version);
    if (rest.length === 0 && method === 'GET') {
      if (inGroup.length === 0)
        return {
          code: 404,
          body: status(404, 'NotFound', 'the server could not find the requested resource'),
        };
      return ok({
        kind: 'APIResourceList',
        apiVersion: 'v1',
        groupVersion: group ? `${group}/${version}` : version,
        resources: [
          ...inGroup.map((r) => ({
            name: r.resource,
            singularName: '',
            namespaced: r.namespaced,
            kind: r.kind,
            verbs: r.verbs,
          })),
          ...subresources
            .filter((s) => s.group === group)
            .map((s) => ({
              name: s.resource,
              singularName: '',
              namespaced: true,
              kind: s.kind,
              verbs: ['get', 'patch', 'update'],
            })),
        ],
      });
    }
    // Resource paths: [namespaces/<ns>/]<resource>[/<name>]
    let namespace: string | undefined;
    let path = rest;
    if (path[0] === 'namespaces' && path.length >= 3) {
      namespace = path[1];
      path = path.slice(2);
    }
    const [resourceName, name] = path as [string, string | undefined];
    const r = inGroup.find((x) => x.resource === resourceName);
    if (!r)
      return { code: 404, body: status(404, 'NotFound', 'the server could not find the requested resource') };
    if (namespace && !r.namespaced)
      return { code: 404, body: status(404, 'NotFound', 'the server could not find the requested resource') };
    const dryRun = url.searchParams.get('dryRun') === 'All';
    const qualified = group ? `${r.resource}.${group}` : r.resource;
    const notFound = (n: string) => ({
      code: 404,
      body: status(404, 'NotFound', `${qualified} "${n}" not found`, { name: n, group, kind: r.resource }),
    });

    if (!name && method === 'GET') {
      const selector = url.searchParams.get('labelSelector');
      const limit = Number(url.searchParams.get('limit') ?? 0);
      const token = url.searchParams.get('continue');
      let offset = 0;
      let listVersion = String(resourceVersion);
      if (token) {
        const decoded = JSON.parse(Buffer.from(token, 'base64').toString('utf8')) as {
          offset: number;
          rv: string;
          issued: number;
        };
        if (decoded.issued < state.expireTokensBefore || state.expireNextContinue) {
          state.expireNextContinue = false;
          return {
            code: 410,
            body: status(
              410,
              'Expired',
              'The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.',
            ),
          };
        }
        offset = decoded.offset;
        listVersion = decoded.rv;
      }
      const items = [...objects.entries()]
        .filter(
          ([k]) =>
            k.startsWith(`${group}/${r.resource}/`) &&
            (namespace === undefined || k.split('/')[2] === namespace),
        )
        .map(([, o]) => o)
        .filter((o) => matches(o, selector))
        .sort((a, b) =>
          `${a.metadata.namespace ?? ''}/${a.metadata.name}`.localeCompare(
            `${b.metadata.namespace ?? ''}/${b.metadata.name}`,
          ),
        );
      const page = limit > 0 ? items.slice(offset, offset + limit) : items.slice(offset);
      const more = limit > 0 && offset + limit < items.length;
      const metadata: Record<string, unknown> = { resourceVersion: listVersion };
      if (more) {
        metadata.continue = Buffer.from(
          JSON.stringify({ offset: offset + limit, rv: listVersion, issued: Date.now() }),
        ).toString('base64');
        metadata.remainingItemCount = items.length - offset - limit;
      }
      return ok({
        kind: `${r.kind}List`,
        apiVersion: r.group ? `${r.group}/${r.version}` : r.version,
        metadata,
        items: page,
      });
    }
    if (method === 'GET' && r.resource === 'volumesnapshots') reconcileSnapshots();
    if (name && method === 'GET') {
      const obj = objects.get(keyOf(group, r.resource, namespace, name));
      return obj ? ok(obj) : notFound(name);
    }
    if (!name && method === 'POST') {
      const obj = JSON.parse(body) as KubeObject;
      const objName = obj.metadata?.name;
      if (!objName)
        return {
          code: 422,
          body: status(
            422,
            'Invalid',
            `${r.kind} is invalid: metadata.name: Required value: name or generateName is required`,
          ),
        };
      if (r.namespaced) {
        // As for real: a namespaced kind is created only under /namespaces/<ns>/ (the
        // all-namespaces collection lists, nothing more), and the body may not name another.
        if (!namespace)
          return {
            code: 405,
            body: status(
              405,
              'MethodNotAllowed',
              'the server does not allow this method on the requested resource',
            ),
          };
        if (obj.metadata.namespace && obj.metadata.namespace !== namespace)
          return {
            code: 400,
            body: status(
              400,
              'BadRequest',
              'the namespace of the provided object does not match the namespace sent on the request',
            ),
          };
        if (!objects.has(keyOf('', 'namespaces', undefined, namespace)))
          return {
            code: 404,
            body: status(404, 'NotFound', `namespaces "${namespace}" not found`, {
              name: namespace,
              kind: 'namespaces',
            }),
          };
        obj.metadata.namespace = namespace;
      } else delete obj.metadata.namespace; // a cluster-scoped object has none, whatever the body says
      const key = keyOf(group, r.resource, r.namespaced ? obj.metadata.namespace : undefined, objName);
      if (objects.has(key))
        return {
          code: 409,
          body: status(409, 'AlreadyExists', `${qualified} "${objName}" already exists`, {
            name: objName,
            group,
            kind: r.resource,
          }),
        };
      for (const field of ['uid', 'resourceVersion', 'creationTimestamp', 'generation'])
        delete obj.metadata[field];
      stamp(obj, r);
      if (!dryRun) objects.set(key, obj);
      return { code: 201, body: obj };
    }
    if (name && method === 'PUT') {
      const key = keyOf(group, r.resource, namespace, name);
      const current = objects.get(key);
      if (!current) return notFound(name);
      const obj = JSON.parse(body) as KubeObject;
      if (obj.metadata.resourceVersion && obj.metadata.resourceVersion !== current.metadata.resourceVersion) {
        return {
          code: 409,
          body: status(
            409,
            'Conflict',
            `Operation cannot be fulfilled on ${qualified} "${name}": the object has been modified; please apply your changes to the latest version and try again`,
          ),
        };
      }
      obj.metadata.uid = current.metadata.uid;
      obj.metadata.creationTimestamp = current.metadata.creationTimestamp;
      obj.metadata.generation = current.metadata.generation;
      stamp(obj, r);
      if (!dryRun) objects.set(key, obj);
      return ok(obj);
    }
    if (name && method === 'DELETE') {
      const key = keyOf(group, r.resource, namespace, name);
      const current = objects.get(key);
      if (!current) return notFound(name);
      if (!dryRun) {
        objects.delete(key);
        if (r.resource === 'namespaces')
          for (const k of [...objects.keys()]) if (k.split('/')[2] === name) objects.delete(k);
      }
      return ok({
        kind: 'Status',
        apiVersion: 'v1',
        metadata: {},
        status: 'Success',
        details: { name, group, kind: r.resource },
      });
    }
    return {
      code: 405,
      body: status(
        405,
        'MethodNotAllowed',
        `the server does not allow this method on the requested resource`,
      ),
    };
  }

  /** The snapshot controller: one step for every VolumeSnapshot not yet ready. */
  function reconcileSnapshots() {
    const snapshotGroup = builtIn.find((x) => x.resource === 'volumesnapshotcontents')!;
    for (const [key, snap] of objects) {
      if (!key.startsWith('snapshot.storage.k8s.io/volumesnapshots/')) continue;
      const status = (snap.status ?? {}) as Record<string, unknown>;
      if (status.readyToUse === true || status.error) continue;
      const spec = snap.spec as {
        volumeSnapshotClassName?: string;
        source?: { persistentVolumeClaimName?: string; volumeSnapshotContentName?: string };
      };
      const preBound = spec.source?.volumeSnapshotContentName;
      if (preBound) {
        // Static binding to an existing content (a restore): ready once the content exists.
        const content = objects.get(
          keyOf('snapshot.storage.k8s.io', 'volumesnapshotcontents', undefined, preBound),
        );
        snap.status = content
          ? { boundVolumeSnapshotContentName: preBound, readyToUse: true, restoreSize: '1Gi' }
          : { readyToUse: false, error: { message: `VolumeSnapshotContent "${preBound}" not found` } };
        continue;
      }
      const cls = objects.get(
        keyOf(
          'snapshot.storage.k8s.io',
          'volumesnapshotclasses',
          undefined,
          spec.volumeSnapshotClassName ?? '',
        ),
      );
      const pvc = objects.get(
        keyOf(
          '',
          'persistentvolumeclaims',
          snap.metadata.namespace,
          spec.source?.persistentVolumeClaimName ?? '',
        ),
      );
      const fail = (message: string) => {
        snap.status = { readyToUse: false, error: { message, time: new Date().toISOString() } };
      };
      if (!cls) fail(`VolumeSnapshotClass "${spec.volumeSnapshotClassName}" not found`);
      else if (!pvc)
        fail(
          `failed to get input parameters to create snapshot: PersistentVolumeClaim "${spec.source?.persistentVolumeClaimName}" not found`,
        );
      else if (cls.driver === 'broken.csi.example.com')
        fail('failed to take snapshot of the volume: rpc error: code = Internal desc = disk is busy');
      else if (status.readyToUse === undefined) snap.status = { readyToUse: false };
      else {
        const contentName = `snapcontent-${snap.metadata.uid}`;
        const content = {
          metadata: { name: contentName },
          spec: {
            deletionPolicy: cls.deletionPolicy ?? 'Delete',
            driver: cls.driver,
            source: { volumeHandle: `vol-${pvc.metadata.uid}` },
            volumeSnapshotClassName: cls.metadata.name,
            volumeSnapshotRef: {
              kind: 'VolumeSnapshot',
              name: snap.metadata.name,
              namespace: snap.metadata.namespace,
              uid: snap.metadata.uid,
            },
          },
          status: { readyToUse: true, snapshotHandle: `snap-${randomUUID()}`, restoreSize: 1073741824 },
        } as KubeObject;
        stamp(content, snapshotGroup);
        objects.set(
          keyOf('snapshot.storage.k8s.io', 'volumesnapshotcontents', undefined, contentName),
          content,
        );
        const size =
          (pvc.spec as { resources?: { requests?: { storage?: string } } })?.resources?.requests?.storage ??
          '1Gi';
        snap.status = {
          boundVolumeSnapshotContentName: contentName,
          creationTime: new Date().toISOString(),
          readyToUse: true,
          restoreSize: size,
        };
      }
    }
  }

  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  const fake: FakeKube = {
    url: `http://127.0.0.1:${port}`,
    objects,
    get aggregatedDown() {
      return state.aggregatedDown;
    },
    set aggregatedDown(v: boolean) {
      state.aggregatedDown = v;
    },
    get expireTokensBefore() {
      return state.expireTokensBefore;
    },
    set expireTokensBefore(v: number) {
      state.expireTokensBefore = v;
    },
    get expireNextContinue() {
      return state.expireNextContinue;
    },
    set expireNextContinue(v: boolean) {
      state.expireNextContinue = v;
    },
    requests: state.requests,
    seed(group, resource, list) {
      const r = served().find((x) => x.group === group && x.resource === resource);
      if (!r) throw new Error(`fake kube: no resource ${group}/${resource}`);
      for (const obj of list) {
        stamp(obj, r);
        objects.set(
          keyOf(group, resource, r.namespaced ? obj.metadata.namespace : undefined, obj.metadata.name),
          obj,
        );
      }
    },
    stop: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
  return fake;
}

/** A kubeconfig that points a client at the fake (plain HTTP, a token). */
export function fakeKubeconfig(url: string): string {
  return [
    'apiVersion: v1',
    'kind: Config',
    'clusters:',
    `- name: fake\n  cluster:\n    server: ${url}\n    insecure-skip-tls-verify: true`,
    'users:',
    '- name: tester\n  user:\n    token: fake-token',
    'contexts:',
    '- name: fake\n  context:\n    cluster: fake\n    user: tester',
    'current-context: fake',
    '',
  ].join('\n');
}

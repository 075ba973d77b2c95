/**
 * A stateful fake of kube-apiserver (and of the few kube-controller-manager controllers
 * Lifeboat meets) for what Lifeboat uses, served over plain HTTP. It answers as the real one
 * (v1.20, checked against it by test/integration/kube-agree.test.ts) does:
 *
 * - discovery: /api, /api/v1, /apis, /apis/<group>/<version> (APIResourceList with verbs,
 *   namespaced, kind; subresources such as pods/status listed as the real server lists them);
 *   core, apps, batch, rbac, networking, storage, apiextensions, events.k8s.io (events served
 *   twice, as for real), an aggregated group that can be down (503), and CRD groups that are
 *   served only while their CustomResourceDefinition exists (a group served by nothing is a
 *   plain-text `404 page not found`, as for real);
 * - lists with labelSelector (the real grammar: `=`, `==`, `!=`, `in`, `notin`, `k`, `!k`, `>`,
 *   `<`, comma-joined; a malformed one is 400 with the real message), limit and continue
 *   (opaque tokens; 410 Expired when a test expires them), across namespaces or in one. Items of
 *   built-in kinds carry no apiVersion/kind (the list does); custom resources' items do;
 * - get (404), create (409 AlreadyExists; 404 when the namespace is missing; 400 when the
 *   body names another namespace than the URL, or is not JSON; 405 for a namespaced kind posted
 *   without one; a cluster-scoped kind under /namespaces/ is 404), update (409 on a stale
 *   resourceVersion, 400 when the body names another object), delete (a Status, or the object
 *   itself for pods, namespaces, CRDs and objects with finalizers, as for real), and PATCH:
 *   merge, JSON (RFC 6902) and, for built-in kinds, strategic merge (lists of containers,
 *   volumes, env, ports … merged by their key); 415 for other types. `dryRun=All` validates
 *   and answers the same, storing and deleting nothing;
 * - server-set fields: uid, resourceVersion, creationTimestamp; generation only for the kinds
 *   that have one (apps, networking, CRDs and custom resources), bumped when the spec changes;
 * - Services: a cluster IP (10.96.0.0/16) and node ports (30000-32767) allocated on create, 422
 *   for one already taken; an update that drops or changes the cluster IP is 422 as for real
 *   (`spec.clusterIPs[0]: … primary clusterIP can not be unset` / `may not change once set`),
 *   one that drops a node port gets a new one; an update without resourceVersion is 422;
 * - Jobs: without `manualSelector`, the selector and the template's `controller-uid` and
 *   `job-name` labels are generated from the new uid; stale ones are 422 Invalid with the real
 *   causes (`… labels[controller-uid]: … must be '<uid>'`, `spec.selector: … \`selector\` not
 *   auto-generated`, `… \`selector\` does not match template \`labels\``);
 * - deleting a CustomResourceDefinition deletes its objects and the group stops being served;
 * - the PV controller, run on each read of PVs or PVCs: a claim binds to the volume its
 *   `volumeName` names when that volume's claimRef is empty or names it (without uid, or with
 *   its uid), else it stays Pending; a claim without volumeName binds to the smallest Available
 *   volume that fits (both then annotated bound-by-controller); a volume whose claimRef names a
 *   missing claim (or another uid) is Released, and with reclaim policy Delete then Failed with
 *   the real message (no deleter plugin; hostPath outside /tmp), deleted (hostPath under
 *   /tmp), or left Released for an external provisioner; a Bound claim whose volume is gone is
 *   Lost. Both get their protection finalizer on create; their status is the controller's;
 * - a CSI snapshot controller: each read of a VolumeSnapshot moves it on — first not ready,
 *   then bound to a new VolumeSnapshotContent and ready with the PVC's size — or to
 *   `status.error` when its class's driver is `broken.csi.example.com` or the PVC is missing.
 *
 * Errors are `Status` objects with the real reason, code, message and (for 422) causes. Not
 * modelled: admission defaults beyond the above, other kinds' status (stored as sent), the
 * objects controllers make in a new namespace (kube-root-ca.crt, the default service account),
 * the `kubernetes` Service, namespace termination (a namespace goes at once, with its objects),
 * the Recycle reclaim policy (the volume stays Released), server-side apply (415).
 */
import { randomInt, randomUUID } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';

export interface FakeResource {
  group: string;
  version: string;
  resource: string;
  kind: string;
  namespaced: boolean;
  verbs: string[];
  /** Served by a CustomResourceDefinition (in a real cluster): list items keep apiVersion/kind. */
  custom?: boolean;
}

type KubeObject = {
  apiVersion?: string;
  kind?: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string>; [k: string]: unknown };
  [k: string]: unknown;
};
// biome-ignore lint/suspicious/noExplicitAny: request bodies and stored objects are free-form JSON
type Json = any;
type Answer = { code: number; body: unknown };
/** A body or patch result that is the server's refusal rather than an object. */
const refused = (x: KubeObject | Answer): x is Answer => !('metadata' in x);

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
  // The external snapshotter's kinds are CRDs in a real cluster.
  custom: group === 'snapshot.storage.k8s.io',
}));

/** Subresources the real server lists in discovery: a backup must skip them. */
const subresources = [
  { group: '', resource: 'pods/status', kind: 'Pod' },
  { group: '', resource: 'pods/log', kind: 'Pod' },
  { group: 'apps', resource: 'deployments/scale', kind: 'Scale' },
];

/** Kinds with metadata.generation on v1.20 (custom resources and CRDs too). */
const withGeneration = new Set(['apps', 'networking.k8s.io', 'apiextensions.k8s.io']);

const serviceRange = '10.96.0.0/16';
const nodePortRange = [30000, 32767] as const;

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
    for (const crd of byPrefix('apiextensions.k8s.io/customresourcedefinitions/')) {
      const spec = crd.spec as Json;
      for (const v of (spec.versions as { name: string; served: boolean }[]).filter((x) => x.served)) {
        custom.push({
          group: spec.group,
          version: v.name,
          resource: spec.names.plural,
          kind: spec.names.kind,
          namespaced: spec.scope === 'Namespaced',
          verbs: all,
          custom: true,
        });
      }
    }
    return [...builtIn, ...custom];
  };

  const keyOf = (group: string, resource: string, namespace: string | undefined, name: string) =>
    `${group}/${resource}/${namespace ?? ''}/${name}`;
  function byPrefix(prefix: string): KubeObject[] {
    return [...objects].filter(([k]) => k.startsWith(prefix)).map(([, o]) => o);
  }
  const now = () => new Date().toISOString().replace(/\.\d+Z$/, 'Z');

  const stamp = (obj: KubeObject, r: FakeResource) => {
    resourceVersion++;
    obj.apiVersion = r.group ? `${r.group}/${r.version}` : r.version;
    obj.kind = r.kind;
    obj.metadata.uid ??= randomUUID();
    obj.metadata.creationTimestamp ??= now();
    obj.metadata.resourceVersion = String(resourceVersion);
    if (r.custom || withGeneration.has(r.group)) obj.metadata.generation ??= 1;
    return obj;
  };
  /** A controller's write: a new resourceVersion, nothing else. */
  const touch = (obj: KubeObject) => {
    obj.metadata.resourceVersion = String(++resourceVersion);
  };

  const server = http.createServer((req, res) => {
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (d) => (body += d));
    req.on('end', () => {
      const url = new URL(req.url ?? '/', 'http://fake');
      state.requests.push(`${req.method} ${url.pathname}${url.search}`);
      const send = (code: number, payload: unknown) => {
        const text = typeof payload === 'string';
        res.writeHead(code, { 'content-type': text ? 'text/plain; charset=utf-8' : 'application/json' });
        res.end(text ? payload : JSON.stringify(payload));
      };
      try {
        const contentType = (req.headers['content-type'] ?? '').split(';')[0]!.trim();
        const answer = route(req.method ?? 'GET', url, body, contentType);
        send(answer.code, answer.body);
      } catch (error) {
        send(500, status(500, 'InternalError', String(error)));
      }
    });
  });

  function route(method: string, url: URL, body: string, contentType: string): Answer {
    const parts = url.pathname.split('/').filter(Boolean);
    const ok = (b: unknown) => ({ code: 200, body: b });
    const notServed = { code: 404, body: '404 page not found\n' };
    const noResource = {
      code: 404,
      body: status(404, 'NotFound', 'the server could not find the requested resource'),
    };
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
    if (!core && parts[0] !== 'apis') return noResource;
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
    const everything = served();
    // A group nothing serves (a deleted CRD's) has no handler at all: Go's plain-text 404.
    if (!core && !everything.some((r) => r.group === group)) return notServed;
    const inGroup = everything.filter((r) => r.group === group && r.version === version);
    if (rest.length === 0 && method === 'GET') {
      if (inGroup.length === 0) return noResource;
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
    if (!r) return noResource;
    if (namespace && !r.namespaced) return noResource;
    const dryRun = url.searchParams.get('dryRun') === 'All';
    const qualified = group ? `${r.resource}.${group}` : r.resource;
    const details = (n: string, extra: object = {}) => ({
      name: n,
      ...(group ? { group } : {}),
      kind: r.resource,
      ...extra,
    });
    const notFound = (n: string) => ({
      code: 404,
      body: status(404, 'NotFound', `${qualified} "${n}" not found`, details(n)),
    });
    if (r.resource === 'persistentvolumes' || r.resource === 'persistentvolumeclaims') reconcileVolumes();

    if (!name && method === 'GET') {
      let requirements: Requirement[];
      try {
        requirements = parseSelector(url.searchParams.get('labelSelector') ?? '');
      } catch (error) {
        return { code: 400, body: status(400, 'BadRequest', (error as Error).message) };
      }
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
        .filter((o) => requirements.every((q) => q.matches(o.metadata.labels ?? {})))
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
      } else if (r.custom) metadata.continue = ''; // as the real server writes custom resources' lists
      return ok({
        kind: `${r.kind}List`,
        apiVersion: r.group ? `${r.group}/${r.version}` : r.version,
        metadata,
        // Built-in kinds' items carry no apiVersion/kind (the list does); custom resources' do.
        items: r.custom ? page : page.map(({ apiVersion: _, kind: __, ...item }) => item),
      });
    }
    if (method === 'GET' && r.resource === 'volumesnapshots') reconcileSnapshots();
    if (name && method === 'GET') {
      const obj = objects.get(keyOf(group, r.resource, namespace, name));
      return obj ? ok(obj) : notFound(name);
    }
    const parsed = (): KubeObject | Answer => {
      try {
        const obj = JSON.parse(body) as KubeObject;
        if (obj && typeof obj === 'object' && !Array.isArray(obj))
          return { ...obj, metadata: obj.metadata ?? {} };
      } catch {}
      return {
        code: 400,
        body: status(
          400,
          'BadRequest',
          `the object provided is unrecognized (must be of type ${r.kind}): couldn't get version/kind; json parse error`,
        ),
      };
    };
    if (!name && method === 'POST') {
      const obj = parsed();
      if (refused(obj)) return obj;
      const objName = obj.metadata.name;
      if (!objName)
        return invalid(r, '', [
          {
            field: 'metadata.name',
            reason: 'FieldValueRequired',
            message: 'Required value: name or generateName is required',
          },
        ]);
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
          body: status(409, 'AlreadyExists', `${qualified} "${objName}" already exists`, details(objName)),
        };
      for (const field of ['uid', 'resourceVersion', 'creationTimestamp', 'generation'])
        delete obj.metadata[field];
      stamp(obj, r);
      const causes = admitCreate(r, obj);
      if (causes.length) return invalid(r, objName, causes);
      if (!dryRun) objects.set(key, obj);
      return { code: 201, body: obj };
    }
    if (name && (method === 'PUT' || method === 'PATCH')) {
      const key = keyOf(group, r.resource, namespace, name);
      const current = objects.get(key);
      if (!current) return notFound(name);
      let obj: KubeObject;
      if (method === 'PUT') {
        const put = parsed();
        if (refused(put)) return put;
        obj = put;
      } else {
        const patched = patch(r, current, body, contentType);
        if (refused(patched)) return patched;
        obj = patched;
      }
      if (obj.metadata.name !== name)
        return {
          code: 400,
          body: status(
            400,
            'BadRequest',
            `the name of the object (${obj.metadata.name ?? ''}) does not match the name on the URL (${name})`,
          ),
        };
      if (obj.metadata.resourceVersion && obj.metadata.resourceVersion !== current.metadata.resourceVersion) {
        return {
          code: 409,
          body: status(
            409,
            'Conflict',
            `Operation cannot be fulfilled on ${qualified} "${name}": the object has been modified; please apply your changes to the latest version and try again`,
            details(name),
          ),
        };
      }
      const causes = admitUpdate(r, obj, current);
      if (causes.length) return invalid(r, name, causes);
      obj.metadata.uid = current.metadata.uid;
      obj.metadata.creationTimestamp = current.metadata.creationTimestamp;
      if (current.metadata.namespace) obj.metadata.namespace = current.metadata.namespace;
      // Generation counts changes of what the object asks for (not metadata, not status).
      if (current.metadata.generation !== undefined)
        obj.metadata.generation =
          (current.metadata.generation as number) +
          (canonical(desired(obj)) === canonical(desired(current)) ? 0 : 1);
      else delete obj.metadata.generation;
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
        if (r.resource === 'customresourcedefinitions') {
          const spec = current.spec as Json;
          for (const k of [...objects.keys()])
            if (k.startsWith(`${spec.group}/${spec.names.plural}/`)) objects.delete(k);
        }
      }
      // Objects that go through finalization (and pods) come back with their deletion stamped.
      const finalizers = (current.metadata.finalizers as string[] | undefined) ?? [];
      if (
        r.resource === 'customresourcedefinitions' ||
        r.resource === 'namespaces' ||
        r.resource === 'pods' ||
        finalizers.length
      ) {
        const gone = structuredClone(current);
        gone.metadata.deletionTimestamp = now();
        gone.metadata.deletionGracePeriodSeconds = 0;
        if (r.resource === 'customresourcedefinitions')
          gone.metadata.finalizers = [...finalizers, 'customresourcecleanup.apiextensions.k8s.io'];
        if (r.resource === 'namespaces') gone.status = { phase: 'Terminating' };
        return ok(gone);
      }
      return ok({
        kind: 'Status',
        apiVersion: 'v1',
        metadata: {},
        status: 'Success',
        details: details(name, { uid: current.metadata.uid }),
      });
    }
    return {
      code: 405,
      body: status(
        405,
        'MethodNotAllowed',
        'the server does not allow this method on the requested resource',
      ),
    };
  }

  /** What the real create path adds and checks (defaults, allocations, generated selectors). */
  function admitCreate(r: FakeResource, obj: KubeObject): Cause[] {
    if (r.resource === 'services') return allocateService(obj, undefined);
    if (r.resource === 'jobs' && r.group === 'batch') return generateJobSelector(obj);
    if (r.resource === 'namespaces') {
      obj.spec = { finalizers: ['kubernetes'] };
      obj.status = { phase: 'Active' };
    }
    if (r.resource === 'persistentvolumes' || r.resource === 'persistentvolumeclaims') {
      obj.spec ??= {};
      const spec = obj.spec as Json;
      obj.metadata.finalizers = [
        r.resource === 'persistentvolumes' ? 'kubernetes.io/pv-protection' : 'kubernetes.io/pvc-protection',
      ];
      spec.volumeMode ??= 'Filesystem';
      if (r.resource === 'persistentvolumes') spec.persistentVolumeReclaimPolicy ??= 'Retain';
      obj.status = { phase: 'Pending' };
    }
    return [];
  }

  function admitUpdate(r: FakeResource, obj: KubeObject, current: KubeObject): Cause[] {
    if (r.resource === 'persistentvolumes' || r.resource === 'persistentvolumeclaims')
      obj.status = current.status; // the controller's, through the status subresource only
    if (r.resource !== 'services') return [];
    const causes: Cause[] = [];
    if (!obj.metadata.resourceVersion) {
      // A Service is never updated unconditionally (the real server names this twice).
      const cause: Cause = {
        field: 'metadata.resourceVersion',
        message: 'Invalid value: "": must be specified for an update',
      };
      causes.push(cause, cause);
    }
    return [...causes, ...allocateService(obj, current)];
  }

  /**
   * A Service's defaults, cluster IP and node ports, as the real registry allocates and checks
   * them on create (`old` undefined) and on update.
   */
  function allocateService(obj: KubeObject, old: KubeObject | undefined): Cause[] {
    obj.spec ??= {};
    const spec = obj.spec as Json;
    const was = old?.spec as Json;
    const others = byPrefix('/services/').filter((s) => s.metadata.uid !== old?.metadata.uid);
    spec.type ??= 'ClusterIP';
    spec.sessionAffinity ??= 'None';
    for (const port of (spec.ports ?? []) as Json[]) {
      port.protocol ??= 'TCP';
      port.targetPort ??= port.port;
    }
    const causes =
      spec.type === 'ExternalName' || was?.type === 'ExternalName'
        ? []
        : old
          ? keepClusterIP(spec, was)
          : allocateClusterIP(spec, new Set(others.map((s) => (s.spec as Json).clusterIP)));
    if (spec.type === 'NodePort' || spec.type === 'LoadBalancer') {
      spec.externalTrafficPolicy ??= 'Cluster';
      // The old object's ports stay taken until the update is stored: a dropped one is not reused.
      const portsOf = (s: Json) => ((s?.ports ?? []) as Json[]).map((p) => p.nodePort as number);
      const taken = new Set([...others, ...(old ? [old] : [])].flatMap((s) => portsOf(s.spec)));
      const own = new Set(portsOf(was));
      ((spec.ports ?? []) as Json[]).forEach((port, i) => {
        if (port.nodePort === undefined) {
          do port.nodePort = randomInt(nodePortRange[0], nodePortRange[1] + 1);
          while (taken.has(port.nodePort));
        } else {
          const why =
            port.nodePort < nodePortRange[0] || port.nodePort > nodePortRange[1]
              ? `provided port is not in the valid range. The range of valid ports is ${nodePortRange.join('-')}`
              : taken.has(port.nodePort) && !own.has(port.nodePort)
                ? 'provided port is already allocated'
                : '';
          if (why)
            causes.push({
              field: `spec.ports[${i}].nodePort`,
              message: `Invalid value: ${port.nodePort}: ${why}`,
            });
        }
        taken.add(port.nodePort);
      });
    }
    obj.status = old ? old.status : { loadBalancer: {} };
    return causes;
  }

  /** batch/v1 Job create on v1.20: generateSelector, then ValidateGeneratedSelector and ValidateJobSpec. */
  function generateJobSelector(obj: KubeObject): Cause[] {
    const spec = obj.spec as Json;
    const uid = obj.metadata.uid as string;
    const name = obj.metadata.name;
    spec.template ??= {};
    spec.template.metadata ??= {};
    spec.template.metadata.labels ??= {};
    const labels = spec.template.metadata.labels as Record<string, string>;
    const causes: Cause[] = [];
    if (spec.manualSelector !== true) {
      labels['job-name'] ??= name;
      labels['controller-uid'] ??= uid;
      spec.selector ??= {};
      spec.selector.matchLabels ??= {};
      spec.selector.matchLabels['controller-uid'] ??= uid;
      for (const [label, want] of [
        ['controller-uid', uid],
        ['job-name', name],
      ] as const)
        if (labels[label] !== want)
          causes.push({
            field: `spec.template.metadata.labels[${label}]`,
            message: `Invalid value: ${goMap(labels)}: must be '${want}'`,
          });
      if (!selectorMatches(spec.selector, { 'controller-uid': uid, 'job-name': name }))
        causes.push({
          field: 'spec.selector',
          message: `Invalid value: ${goSelector(spec.selector)}: \`selector\` not auto-generated`,
        });
    }
    if (spec.selector && !selectorMatches(spec.selector, labels))
      causes.push({
        field: 'spec.template.metadata.labels',
        message: `Invalid value: ${goMap(labels)}: \`selector\` does not match template \`labels\``,
      });
    if (!Object.keys(obj.metadata.labels ?? {}).length) obj.metadata.labels = { ...labels };
    return causes;
  }

  /** PATCH: the patched object, or the real server's answer to a patch it refuses. */
  function patch(
    r: FakeResource,
    current: KubeObject,
    body: string,
    contentType: string,
  ): KubeObject | Answer {
    const types = ['application/json-patch+json', 'application/merge-patch+json'];
    if (!r.custom) types.push('application/strategic-merge-patch+json');
    if (!types.includes(contentType))
      return {
        code: 415,
        body: r.custom
          ? status(
              415,
              'UnsupportedMediaType',
              'the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml',
            )
          : status(415, 'UnsupportedMediaType', '415: Unsupported Media Type', {}),
      };
    let doc: Json;
    try {
      doc = JSON.parse(body);
    } catch (error) {
      return contentType === 'application/merge-patch+json'
        ? { code: 500, body: { ...status(500, '', 'Invalid JSON Patch'), reason: undefined } }
        : { code: 400, body: status(400, 'BadRequest', (error as Error).message) };
    }
    const json = contentType === 'application/json-patch+json';
    if (json && !Array.isArray(doc))
      return {
        code: 400,
        body: status(
          400,
          'BadRequest',
          'json: cannot unmarshal object into Go value of type jsonpatch.Patch',
        ),
      };
    const base = structuredClone(current) as Json;
    const result = json
      ? jsonPatch(base, doc)
      : mergePatch(base, doc, contentType === 'application/strategic-merge-patch+json');
    const rejected = (message: string, details?: object) => ({
      code: 422,
      body: status(422, 'Invalid', message, details),
    });
    if (result === undefined)
      return rejected('the server rejected our request due to an error in our request', {});
    if (!isObject(result) || !isObject(result.metadata))
      return rejected(
        ` "" is invalid: patch: Invalid value: ${JSON.stringify(body)}: couldn't get version/kind`,
      );
    return result as KubeObject;
  }

  /**
   * kube-controller-manager's PV binder, one pass: volumes whose claim is gone are released and
   * reclaimed, then claims bind (to the volume they name, or the smallest that fits).
   */
  function reconcileVolumes() {
    const volumes = new Map(byPrefix('/persistentvolumes/').map((v) => [v.metadata.name, v]));
    const claims = byPrefix('/persistentvolumeclaims/');
    for (const o of [...volumes.values(), ...claims]) o.spec ??= {};
    const refersTo = (ref: Json, claim: KubeObject) =>
      ref &&
      ref.namespace === claim.metadata.namespace &&
      ref.name === claim.metadata.name &&
      (!ref.uid || ref.uid === claim.metadata.uid);
    const fits = (pv: KubeObject, claim: KubeObject) => {
      const want = claim.spec as Json;
      const has = pv.spec as Json;
      return (
        bytes(has.capacity?.storage) >= bytes(want.resources?.requests?.storage) &&
        (has.storageClassName ?? '') === (want.storageClassName ?? '') &&
        (has.volumeMode ?? 'Filesystem') === (want.volumeMode ?? 'Filesystem') &&
        ((want.accessModes ?? []) as string[]).every((m) => (has.accessModes ?? []).includes(m))
      );
    };
    const setStatus = (obj: KubeObject, value: Json) => {
      if (JSON.stringify(obj.status) === JSON.stringify(value)) return;
      obj.status = value;
      touch(obj);
    };
    for (const pv of volumes.values()) {
      const spec = pv.spec as Json;
      const phase = (pv.status as Json)?.phase;
      const ref = spec.claimRef;
      if (!ref?.uid) {
        setStatus(pv, { phase: 'Available' });
        continue;
      }
      const claim = claims.find(
        (c) => c.metadata.namespace === ref.namespace && c.metadata.name === ref.name,
      );
      if (claim && claim.metadata.uid === ref.uid) {
        setStatus(pv, { phase: 'Bound' });
        continue;
      }
      if (phase === 'Released' || phase === 'Failed') continue;
      // Bound to a claim that is gone: released, then reclaimed as its policy says.
      const provisioner = (pv.metadata.annotations as Record<string, string> | undefined)?.[
        'pv.kubernetes.io/provisioned-by'
      ];
      if (
        spec.persistentVolumeReclaimPolicy !== 'Delete' ||
        (provisioner && !provisioner.startsWith('kubernetes.io/'))
      )
        setStatus(pv, { phase: 'Released' });
      else if (/^\/tmp\/.+/.test(spec.hostPath?.path ?? '')) {
        objects.delete(keyOf('', 'persistentvolumes', undefined, pv.metadata.name));
        volumes.delete(pv.metadata.name);
      } else
        setStatus(pv, {
          phase: 'Failed',
          message: spec.hostPath
            ? `host_path deleter only supports /tmp/.+ but received provided ${spec.hostPath.path}`
            : `Error getting deleter volume plugin for volume "${pv.metadata.name}": no deletable volume plugin matched`,
        });
    }
    for (const claim of claims) {
      const spec = claim.spec as Json;
      const phase = (claim.status as Json)?.phase;
      if (phase === 'Bound' || phase === 'Lost') {
        if (!volumes.has(spec.volumeName)) setStatus(claim, { phase: 'Lost' });
        continue;
      }
      let pv: KubeObject | undefined;
      if (spec.volumeName) {
        pv = volumes.get(spec.volumeName);
        const ref = (pv?.spec as Json)?.claimRef;
        if (pv && (ref ? !refersTo(ref, claim) : !fits(pv, claim))) pv = undefined;
      } else {
        const candidates = [...volumes.values()].filter((v) => fits(v, claim));
        pv =
          candidates.find((v) => refersTo((v.spec as Json).claimRef, claim)) ??
          candidates
            .filter((v) => !(v.spec as Json).claimRef && (v.status as Json)?.phase === 'Available')
            .sort(
              (a, b) => bytes((a.spec as Json).capacity?.storage) - bytes((b.spec as Json).capacity?.storage),
            )[0];
      }
      if (!pv) {
        setStatus(claim, { phase: 'Pending' });
        continue;
      }
      const pvSpec = pv.spec as Json;
      const annotate = (obj: KubeObject, values: Record<string, string>) => {
        obj.metadata.annotations = { ...((obj.metadata.annotations as object) ?? {}), ...values };
      };
      if (!refersTo(pvSpec.claimRef, claim)) annotate(pv, { 'pv.kubernetes.io/bound-by-controller': 'yes' });
      pvSpec.claimRef = {
        kind: 'PersistentVolumeClaim',
        namespace: claim.metadata.namespace,
        name: claim.metadata.name,
        uid: claim.metadata.uid,
        apiVersion: 'v1',
        resourceVersion: claim.metadata.resourceVersion,
      };
      pv.status = { phase: 'Bound' };
      touch(pv);
      annotate(claim, {
        'pv.kubernetes.io/bind-completed': 'yes',
        ...(spec.volumeName ? {} : { 'pv.kubernetes.io/bound-by-controller': 'yes' }),
      });
      spec.volumeName = pv.metadata.name;
      claim.status = { phase: 'Bound', accessModes: pvSpec.accessModes, capacity: pvSpec.capacity };
      touch(claim);
    }
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

function status(code: number, reason: string, message: string, details?: object) {
  return {
    kind: 'Status',
    apiVersion: 'v1',
    metadata: {},
    status: 'Failure',
    message,
    reason,
    ...(details ? { details } : {}),
    code,
  };
}

/** One field error of a 422, as apimachinery's field.Error. */
interface Cause {
  field: string;
  reason?: 'FieldValueInvalid' | 'FieldValueRequired';
  /** The error's body: `Invalid value: <Go value>: <detail>`. */
  message: string;
}

/** 422 Invalid as the real server words it: `<Kind>[.<group>] "<name>" is invalid: …`, with causes. */
function invalid(r: FakeResource, name: string, causes: Cause[]): Answer {
  const lines = [...new Set(causes.map((c) => `${c.field}: ${c.message}`))];
  const kind = r.group ? `${r.kind}.${r.group}` : r.kind;
  return {
    code: 422,
    body: status(
      422,
      'Invalid',
      `${kind} "${name}" is invalid: ${lines.length === 1 ? lines[0] : `[${lines.join(', ')}]`}`,
      {
        ...(name ? { name } : {}),
        ...(r.group ? { group: r.group } : {}),
        kind: r.kind,
        causes: causes.map((c) => ({
          reason: c.reason ?? 'FieldValueInvalid',
          message: c.message,
          field: c.field,
        })),
      },
    ),
  };
}

/** A new Service's cluster IP: the one asked for (in range and free), else a free one. */
function allocateClusterIP(spec: Json, taken: Set<string>): Cause[] {
  if (spec.clusterIP && !spec.clusterIPs?.length) spec.clusterIPs = [spec.clusterIP];
  if (!spec.clusterIP) {
    do spec.clusterIP = `10.96.${randomInt(256)}.${randomInt(1, 255)}`;
    while (taken.has(spec.clusterIP) || spec.clusterIP === '10.96.0.1');
    spec.clusterIPs = [spec.clusterIP];
    return [];
  }
  if (spec.clusterIP === 'None') return [];
  const why = !/^10\.96\.\d{1,3}\.\d{1,3}$/.test(spec.clusterIP)
    ? `provided IP is not in the valid range. The range of valid IPs is ${serviceRange}`
    : taken.has(spec.clusterIP)
      ? 'provided IP is already allocated'
      : '';
  return why
    ? [
        {
          field: 'spec.clusterIPs',
          message: `Invalid value: ${goStrings(spec.clusterIPs)}: failed to allocated ip:${spec.clusterIP} with error:${why}`,
        },
      ]
    : [];
}

/**
 * An updated Service keeps its cluster IP: v1.20's NormalizeClusterIPs (clusterIPs follow an
 * unchanged clusterIP), then validateUpgradeDowngradeClusterIPs and the clusterIPs check.
 */
function keepClusterIP(spec: Json, was: Json): Cause[] {
  const wasIPs = (was.clusterIPs ?? []) as string[];
  const same = (a?: string[], b?: string[]) => JSON.stringify(a ?? []) === JSON.stringify(b ?? []);
  if (wasIPs.length && !spec.clusterIPs?.length && (was.clusterIP ?? '') === (spec.clusterIP ?? ''))
    spec.clusterIPs = wasIPs;
  if ((was.clusterIP ?? '') !== (spec.clusterIP ?? '')) {
    if (was.clusterIP && !spec.clusterIP && same(wasIPs, spec.clusterIPs)) delete spec.clusterIPs;
    if (same(wasIPs, spec.clusterIPs)) spec.clusterIPs = [spec.clusterIP];
  }
  const ips = (spec.clusterIPs ?? []) as string[];
  const causes: Cause[] = [];
  const invalid = (i: number, detail: string) =>
    causes.push({
      field: `spec.clusterIPs[${i}]`,
      message: `Invalid value: ${goStrings(spec.clusterIPs)}: ${detail}`,
    });
  if (!(was.clusterIP === 'None' && spec.clusterIP === 'None')) {
    if (wasIPs.length === ips.length)
      wasIPs.forEach((ip, i) => {
        if (ip !== ips[i]) invalid(i, 'may not change once set');
      });
    else if (wasIPs.length > ips.length && !ips.length) invalid(0, 'primary clusterIP can not be unset');
    else if (wasIPs.length && ips[0] !== wasIPs[0]) invalid(0, 'may not change once set');
  }
  if (spec.clusterIP && !ips.length)
    causes.push({ field: 'spec.clusterIPs', reason: 'FieldValueRequired', message: 'Required value' });
  return causes;
}

// Go's %#v of the values the real validation messages print.
const goMap = (m: Record<string, string> | undefined) =>
  m
    ? `map[string]string{${Object.keys(m)
        .sort()
        .map((k) => `${JSON.stringify(k)}:${JSON.stringify(m[k])}`)
        .join(', ')}}`
    : 'map[string]string(nil)';
const goStrings = (a: string[] | undefined) =>
  a?.length ? `[]string{${a.map((s) => JSON.stringify(s)).join(', ')}}` : '[]string(nil)';
const goSelector = (s: Json) =>
  `v1.LabelSelector{MatchLabels:${goMap(s.matchLabels)}, MatchExpressions:${
    s.matchExpressions
      ? `[]v1.LabelSelectorRequirement{${(s.matchExpressions as Json[])
          .map(
            (e) =>
              `v1.LabelSelectorRequirement{Key:${JSON.stringify(e.key)}, Operator:${JSON.stringify(e.operator)}, Values:${goStrings(e.values)}}`,
          )
          .join(', ')}}`
      : '[]v1.LabelSelectorRequirement(nil)'
  }}`;

/** A metav1.LabelSelector (matchLabels, matchExpressions) against labels. */
function selectorMatches(selector: Json, labels: Record<string, string>): boolean {
  for (const [k, v] of Object.entries((selector.matchLabels ?? {}) as Record<string, string>))
    if (labels[k] !== v) return false;
  return ((selector.matchExpressions ?? []) as Json[]).every((e) => {
    const has = e.key in labels;
    const among = has && (e.values ?? []).includes(labels[e.key]);
    return { In: among, NotIn: !among, Exists: has, DoesNotExist: !has }[e.operator as string] ?? false;
  });
}

interface Requirement {
  matches(labels: Record<string, string>): boolean;
}

const nameRule = '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]';
const valueRule = '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?';
const subdomainRule = '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*';

/**
 * A label selector in the grammar of k8s.io/apimachinery/pkg/labels (v1.20's parser, with its
 * error messages): comma-joined requirements `k`, `!k`, `k=v`, `k==v`, `k!=v`, `k in (a,b)`,
 * `k notin (a)`, `k>1`, `k<1`. Throws what the real server answers with 400.
 */
function parseSelector(text: string): Requirement[] {
  const special = '=!(),><';
  const tokens: { tok: string; lit: string }[] = [];
  for (let i = 0; ; ) {
    while (i < text.length && ' \t\r\n'.includes(text[i]!)) i++;
    if (i >= text.length) {
      tokens.push({ tok: 'end', lit: '' });
      break;
    }
    if (special.includes(text[i]!)) {
      const two = text.slice(i, i + 2);
      const lit = two === '!=' || two === '==' ? two : text[i]!;
      tokens.push({ tok: lit, lit });
      i += lit.length;
      continue;
    }
    let j = i;
    while (j < text.length && !' \t\r\n'.includes(text[j]!) && !special.includes(text[j]!)) j++;
    const lit = text.slice(i, j);
    tokens.push({ tok: lit === 'in' || lit === 'notin' ? lit : 'id', lit });
    i = j;
  }
  let pos = 0;
  // In "values" context (everywhere but the operator) `in` and `notin` are plain identifiers.
  const look = (values = true) => {
    const t = tokens[pos]!;
    return values && (t.tok === 'in' || t.tok === 'notin') ? { tok: 'id', lit: t.lit } : t;
  };
  const take = (values = true) => {
    const t = look(values);
    pos++;
    return t;
  };
  const fail = (message: string): never => {
    throw new Error(message);
  };
  const checkKey = (key: string) => {
    const parts = key.split('/');
    const errs: string[] = [];
    const label = parts.length === 1 ? parts[0]! : parts.length === 2 ? parts[1]! : undefined;
    if (label === undefined)
      errs.push(
        `a qualified name must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '${nameRule}') with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')`,
      );
    else {
      if (parts.length === 2 && !parts[0]) errs.push('prefix part must be non-empty');
      else if (parts.length === 2 && !new RegExp(`^${subdomainRule}$`).test(parts[0]!))
        errs.push(
          `prefix part a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '${subdomainRule}')`,
        );
      if (!label) errs.push('name part must be non-empty');
      else if (label.length > 63) errs.push('name part must be no more than 63 characters');
      if (label && !new RegExp(`^${nameRule}$`).test(label))
        errs.push(
          `name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '${nameRule}')`,
        );
    }
    if (errs.length) fail(`invalid label key "${key}": ${errs.join('; ')}`);
  };
  const checkValue = (key: string, value: string) => {
    const errs: string[] = [];
    if (value.length > 63) errs.push('must be no more than 63 characters');
    if (!new RegExp(`^${valueRule}$`).test(value))
      errs.push(
        `a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '${valueRule}')`,
      );
    if (errs.length) fail(`invalid label value: "${value}": at key: "${key}": ${errs.join('; ')}`);
  };
  const valueList = (): string[] => {
    const open = take();
    if (open.tok !== '(') fail(`found '${open.lit}' expected: '('`);
    const first = look();
    if (first.tok === ')') {
      take();
      return [''];
    }
    if (first.tok !== 'id' && first.tok !== ',')
      fail(`found '${first.lit}', expected: ',', ')' or identifier`);
    const values = new Set<string>();
    for (;;) {
      const t = take();
      if (t.tok === 'id') {
        values.add(t.lit);
        const next = look();
        if (next.tok === ')') break;
        if (next.tok !== ',') fail(`found '${next.lit}', expected: ',' or ')'`);
      } else if (t.tok === ',') {
        if (values.size === 0) values.add('');
        const next = look();
        if (next.tok === ')') {
          values.add('');
          break;
        }
        if (next.tok === ',') {
          take();
          values.add('');
        }
      } else fail(`found '${t.lit}', expected: ',', or identifier`);
    }
    take(); // ')'
    return [...values];
  };
  const requirement = (): Requirement => {
    let t = take();
    const negated = t.tok === '!';
    if (negated) t = take();
    if (t.tok !== 'id') fail(`found '${t.lit}', expected: identifier`);
    const key = t.lit;
    checkKey(key);
    if (negated) return { matches: (l) => !(key in l) };
    if (look().tok === 'end' || look().tok === ',') return { matches: (l) => key in l };
    const op = take(false);
    if (!['in', 'notin', '=', '==', '!=', '>', '<'].includes(op.tok))
      fail(`found '${op.lit}', expected: '=', '!=', '==', 'in', notin'`);
    let values: string[];
    if (op.tok === 'in' || op.tok === 'notin') values = valueList();
    else if (look().tok === 'end' || look().tok === ',') values = [''];
    else {
      const v = take();
      if (v.tok !== 'id') fail(`found '${v.lit}', expected: identifier`);
      values = [v.lit];
    }
    if ((op.tok === '>' || op.tok === '<') && !/^[-+]?\d+$/.test(values[0]!))
      fail(`for 'Gt', 'Lt' operators, the value must be an integer`);
    for (const v of values) checkValue(key, v);
    const among = (l: Record<string, string>) => key in l && values.includes(l[key]!);
    if (op.tok === 'notin' || op.tok === '!=') return { matches: (l) => !among(l) };
    if (op.tok === '>' || op.tok === '<') {
      const bound = Number(values[0]);
      return {
        matches: (l) =>
          key in l &&
          /^[-+]?\d+$/.test(l[key]!) &&
          (op.tok === '>' ? Number(l[key]) > bound : Number(l[key]) < bound),
      };
    }
    return { matches: among };
  };
  const requirements: Requirement[] = [];
  for (;;) {
    const t = look();
    if (t.tok === 'end') return requirements;
    if (t.tok !== 'id' && t.tok !== '!')
      fail(`found '${t.lit}', expected: !, identifier, or 'end of string'`);
    try {
      requirements.push(requirement());
    } catch (error) {
      fail(`unable to parse requirement: ${(error as Error).message}`);
    }
    const next = take();
    if (next.tok === 'end') return requirements;
    if (next.tok !== ',') fail(`found '${next.lit}', expected: ',' or 'end of string'`);
    const after = look();
    if (after.tok !== 'id' && after.tok !== '!') fail(`found '${after.lit}', expected: identifier after ','`);
  }
}

/** What an object asks for: all but its type, metadata and status. */
const desired = ({ apiVersion: _, kind: __, metadata: ___, status: ____, ...rest }: KubeObject) => rest;
/** JSON with sorted keys: equal for equal values, whatever the order the client wrote. */
const canonical = (v: unknown): string =>
  Array.isArray(v)
    ? `[${v.map(canonical).join(',')}]`
    : isObject(v)
      ? `{${Object.keys(v)
          .sort()
          .map((k) => `${JSON.stringify(k)}:${canonical(v[k])}`)
          .join(',')}}`
      : JSON.stringify(v);

const isObject = (v: unknown): v is Record<string, Json> =>
  typeof v === 'object' && v !== null && !Array.isArray(v);

/** Lists a strategic merge patch merges by a key (the built-in kinds' patchMergeKey) instead of replacing. */
const mergeKeys: Record<string, string> = {
  containers: 'name',
  initContainers: 'name',
  ephemeralContainers: 'name',
  env: 'name',
  volumes: 'name',
  imagePullSecrets: 'name',
  volumeMounts: 'mountPath',
  volumeDevices: 'devicePath',
};

/**
 * RFC 7386 merge patch (null deletes); `strategic`, kube's strategic merge patch for built-in
 * kinds: the lists above merged item by item by their key (`$patch: delete` removes one), ports
 * by `containerPort` (a pod's) or `port` (a Service's), `$patch: replace` replaces a map, other
 * `$` directives ignored.
 */
function mergePatch(target: Json, patch: Json, strategic: boolean): Json {
  if (!isObject(patch)) return patch;
  if (strategic && patch.$patch === 'replace') {
    const { $patch: _, ...rest } = patch;
    return rest;
  }
  const out: Json = isObject(target) ? { ...target } : {};
  for (const [k, v] of Object.entries(patch)) {
    if (strategic && k.startsWith('$')) continue;
    if (v === null) delete out[k];
    else if (strategic && Array.isArray(v) && Array.isArray(out[k]) && (mergeKeys[k] || k === 'ports')) {
      const by =
        mergeKeys[k] ?? (v.some((p: Json) => p?.containerPort !== undefined) ? 'containerPort' : 'port');
      const merged = [...(out[k] as Json[])];
      for (const item of v) {
        const at = merged.findIndex((m) => m?.[by] === item?.[by]);
        if (item?.$patch === 'delete') {
          if (at >= 0) merged.splice(at, 1);
        } else if (at >= 0) merged[at] = mergePatch(merged[at], item, true);
        else merged.push(mergePatch({}, item, true));
      }
      out[k] = merged;
    } else out[k] = mergePatch(out[k], v, strategic);
  }
  return out;
}

/** RFC 6902 JSON patch; undefined when an operation fails (the real server's 422). */
function jsonPatch(doc: Json, ops: Json[]): Json | undefined {
  const pointer = (p: unknown) =>
    typeof p === 'string' && (p === '' || p.startsWith('/'))
      ? p
          .split('/')
          .slice(1)
          .map((s) => s.replace(/~1/g, '/').replace(/~0/g, '~'))
      : undefined;
  const parentOf = (root: Json, path: string[]) => {
    let at = root;
    for (const s of path.slice(0, -1)) {
      if (!isObject(at) && !Array.isArray(at)) return undefined;
      at = (at as Json)[s];
    }
    return isObject(at) || Array.isArray(at) ? at : undefined;
  };
  const get = (root: Json, path: string[]) => {
    const parent = parentOf(root, path);
    const last = path.at(-1)!;
    return parent && Object.hasOwn(parent, last) ? { value: (parent as Json)[last] } : undefined;
  };
  const remove = (root: Json, path: string[]) => {
    const parent = parentOf(root, path);
    const last = path.at(-1)!;
    if (!parent || !Object.hasOwn(parent, last)) return false;
    if (Array.isArray(parent)) parent.splice(Number(last), 1);
    else delete parent[last];
    return true;
  };
  const add = (root: Json, path: string[], value: Json) => {
    const parent = parentOf(root, path);
    const last = path.at(-1)!;
    if (!parent) return false;
    if (Array.isArray(parent)) {
      const i = last === '-' ? parent.length : Number(last);
      if (!Number.isInteger(i) || i < 0 || i > parent.length) return false;
      parent.splice(i, 0, value);
    } else parent[last] = value;
    return true;
  };
  for (const op of ops) {
    const path = pointer(op?.path);
    if (!path?.length) return undefined;
    const from = pointer(op.from);
    switch (op.op) {
      case 'add':
        if (!add(doc, path, structuredClone(op.value))) return undefined;
        break;
      case 'remove':
        if (!remove(doc, path)) return undefined;
        break;
      case 'replace':
        if (!get(doc, path) || !remove(doc, path) || !add(doc, path, structuredClone(op.value)))
          return undefined;
        break;
      case 'test':
        if (JSON.stringify(get(doc, path)?.value) !== JSON.stringify(op.value)) return undefined;
        break;
      case 'move':
      case 'copy': {
        const found = from?.length ? get(doc, from) : undefined;
        if (!found || (op.op === 'move' && !remove(doc, from!))) return undefined;
        if (!add(doc, path, structuredClone(found.value))) return undefined;
        break;
      }
      default:
        return undefined;
    }
  }
  return doc;
}

/** A resource.Quantity's bytes ("1Gi", "500M", "1e3"); 0 when absent. */
function bytes(quantity: string | number | undefined): number {
  if (quantity === undefined) return 0;
  const m = /^([0-9.eE+-]+?)(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E|m)?$/.exec(String(quantity));
  if (!m) return 0;
  const scale: Record<string, number> = {
    Ki: 2 ** 10,
    Mi: 2 ** 20,
    Gi: 2 ** 30,
    Ti: 2 ** 40,
    Pi: 2 ** 50,
    Ei: 2 ** 60,
    k: 1e3,
    M: 1e6,
    G: 1e9,
    T: 1e12,
    P: 1e15,
    E: 1e18,
    m: 1e-3,
  };
  return Number(m[1]) * (m[2] ? scale[m[2]]! : 1);
}

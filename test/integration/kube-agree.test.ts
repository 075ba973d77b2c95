/**
 * The fake kube-apiserver must answer as the real one does: the same scenarios run, unchanged,
 * against the fake (test/fakes/kube-apiserver.ts) and a real control plane (etcd +
 * kube-apiserver + kube-controller-manager v1.20.2, test/harness/kube-cluster.ts), and each
 * scenario's outcome — status codes, reasons, messages (uids and allocated addresses masked)
 * and the resulting state — must equal what the real server was seen to answer, on both.
 * Requests are raw HTTP (any content type, any body), not Lifeboat's client. The real half is
 * skipped, saying why, when the binaries are not built (bash scripts/kube-binaries.sh).
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import fs from 'node:fs/promises';
import http from 'node:http';
import https from 'node:https';
import { after, before, describe, test } from 'node:test';
import { type FakeKube, startFakeKube } from '../fakes/kube-apiserver.ts';
import { type KubeCluster, kubeBinaries, startKubeCluster } from '../harness/kube-cluster.ts';

// biome-ignore lint/suspicious/noExplicitAny: answers are free-form JSON
type Json = any;

interface Reply {
  code: number;
  /** The Status's reason; for a body that is no Status, the HTTP status text (as KubeClient reports it). */
  reason: string;
  message: string;
  body: Json;
}

interface Target {
  call(method: string, path: string, body?: unknown, contentType?: string): Promise<Reply>;
  /** How long a controller's end state must hold before it counts (the fake's is there at once). */
  settleMs: number;
}

function connect(server: string, settleMs: number, token?: string, ca?: Buffer): Target {
  const call = (method: string, path: string, body?: unknown, contentType = 'application/json') =>
    new Promise<Reply>((resolve, reject) => {
      const url = new URL(server + path);
      const payload =
        body === undefined ? undefined : Buffer.from(typeof body === 'string' ? body : JSON.stringify(body));
      const req = (url.protocol === 'https:' ? https : http).request(
        url,
        {
          method,
          ca,
          headers: {
            accept: 'application/json',
            ...(token ? { authorization: `Bearer ${token}` } : {}),
            ...(payload ? { 'content-type': contentType, 'content-length': String(payload.length) } : {}),
          },
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => {
            const text = Buffer.concat(chunks).toString('utf8');
            const code = res.statusCode ?? 0;
            let json: Json;
            try {
              json = JSON.parse(text);
            } catch {}
            const isStatus = json?.kind === 'Status';
            resolve({
              code,
              reason: isStatus ? (json.reason ?? '') : code >= 400 ? (res.statusMessage ?? '') : '',
              message: isStatus ? json.message : code >= 400 ? text.trim() : '',
              body: json ?? text,
            });
          });
          res.on('error', reject);
        },
      );
      req.on('error', reject);
      req.end(payload);
    });
  return { call, settleMs };
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const uuid = /[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/g;
/** A message with uids (which differ on every run) masked, and the given values named. */
const mask = (text: string, names: Record<string, string | number> = {}) => {
  let out = text.replace(uuid, '<uid>');
  for (const [name, value] of Object.entries(names)) out = out.split(String(value)).join(`<${name}>`);
  return out;
};
/** JSON with sorted keys (Go writes maps sorted; the order is no part of the answer). */
const sorted = (v: unknown): string =>
  Array.isArray(v)
    ? `[${v.map(sorted).join(',')}]`
    : v && typeof v === 'object'
      ? `{${Object.keys(v)
          .sort()
          .map((k) => `${JSON.stringify(k)}:${sorted((v as Json)[k])}`)
          .join(',')}}`
      : String(JSON.stringify(v));
/** code, reason and the masked message of an answer, on one line. */
const brief = (r: Reply, names?: Record<string, string | number>) =>
  `${r.code}${r.reason ? ` ${r.reason}` : ''}${r.message ? `: ${mask(r.message, names)}` : ''}`;

/** Reads until `read()` gives `expected`, then (for a real controller) once more after settleMs. */
async function settle(t: Target, read: () => Promise<unknown>, expected: unknown, ms = 20_000) {
  const deadline = Date.now() + ms;
  let seen = await read();
  while (!isDeepStrictEqual(seen, expected) && Date.now() < deadline) {
    await sleep(250);
    seen = await read();
  }
  if (t.settleMs && isDeepStrictEqual(seen, expected)) {
    await sleep(t.settleMs);
    seen = await read();
  }
  return seen;
}
function isDeepStrictEqual(a: unknown, b: unknown) {
  try {
    assert.deepStrictEqual(a, b);
    return true;
  } catch {
    return false;
  }
}

/** Polls until `ok` holds for the answer (a CRD's API coming up, or going away). */
async function until(t: Target, path: string, ok: (r: Reply) => boolean, ms = 20_000): Promise<Reply> {
  const deadline = Date.now() + ms;
  for (;;) {
    const r = await t.call('GET', path);
    if (ok(r) || Date.now() > deadline) return r;
    await sleep(200);
  }
}

const crd = (group: string, plural: string, kind: string) => ({
  metadata: { name: `${plural}.${group}` },
  spec: {
    group,
    scope: 'Namespaced',
    names: { plural, singular: plural.replace(/s$/, ''), kind },
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

async function namespace(t: Target, ns: string) {
  const r = await t.call('POST', '/api/v1/namespaces', { metadata: { name: ns } });
  assert.equal(r.code, 201, brief(r));
}

interface Scenario {
  name: string;
  run(t: Target, ns: string): Promise<unknown>;
  /** What the real kube-apiserver v1.20.2 answered. */
  expected: unknown;
}

const scenarios: Scenario[] = [
  {
    name: "list items of built-in kinds carry no apiVersion/kind (the list does); custom resources' items do",
    async run(t, ns) {
      await t.call('POST', `/api/v1/namespaces/${ns}/configmaps`, { metadata: { name: 'one' }, data: {} });
      const typeMeta = (o: Json) => ({ apiVersion: o.apiVersion, kind: o.kind });
      const itemKeys = (list: Json, name: string) =>
        Object.keys(list.items.find((i: Json) => i.metadata.name === name)).filter(
          (k) => k === 'apiVersion' || k === 'kind',
        );
      const one = await t.call('GET', `/api/v1/namespaces/${ns}/configmaps/one`);
      const list = await t.call('GET', `/api/v1/namespaces/${ns}/configmaps`);
      const made = await t.call(
        'POST',
        '/apis/apiextensions.k8s.io/v1/customresourcedefinitions',
        crd('agree.example.com', 'widgets', 'Widget'),
      );
      const collection = `/apis/agree.example.com/v1/namespaces/${ns}/widgets`;
      await until(t, collection, (r) => r.code === 200);
      const widget = await t.call('POST', collection, {
        apiVersion: 'agree.example.com/v1',
        kind: 'Widget',
        metadata: { name: 'w1' },
        spec: { size: 'L' },
      });
      const widgets = await t.call('GET', collection);
      return {
        get: typeMeta(one.body),
        list: typeMeta(list.body),
        listItem: itemKeys(list.body, 'one'),
        listMetadata: Object.keys(list.body.metadata).sort(),
        crd: made.code,
        widget: [widget.code, typeMeta(widget.body)],
        widgetList: typeMeta(widgets.body),
        widgetListItem: itemKeys(widgets.body, 'w1'),
        widgetListMetadata: Object.keys(widgets.body.metadata).sort(),
      };
    },
    expected: {
      get: { apiVersion: 'v1', kind: 'ConfigMap' },
      list: { apiVersion: 'v1', kind: 'ConfigMapList' },
      listItem: [],
      listMetadata: ['resourceVersion'],
      crd: 201,
      widget: [201, { apiVersion: 'agree.example.com/v1', kind: 'Widget' }],
      widgetList: { apiVersion: 'agree.example.com/v1', kind: 'WidgetList' },
      widgetListItem: ['apiVersion', 'kind'],
      widgetListMetadata: ['continue', 'resourceVersion'],
    },
  },
  {
    name: 'a Job whose selector or template labels carry a stale controller-uid is 422 Invalid; a fresh one gets its own',
    async run(t, ns) {
      const stale = randomUUID();
      const job = (name: string, spec: Json, labels: Record<string, string>) => ({
        metadata: { name },
        spec: {
          ...spec,
          template: {
            metadata: { labels },
            spec: { restartPolicy: 'Never', containers: [{ name: 'c', image: 'busybox' }] },
          },
        },
      });
      const post = (body: unknown) => t.call('POST', `/apis/batch/v1/namespaces/${ns}/jobs`, body);
      const causes = (r: Reply) => (r.body.details?.causes ?? []).map((c: Json) => `${c.reason} ${c.field}`);
      const both = await post(
        job(
          'both',
          { selector: { matchLabels: { 'controller-uid': stale } } },
          { 'controller-uid': stale, 'job-name': 'both' },
        ),
      );
      const labelsOnly = await post(job('labels', {}, { 'controller-uid': stale, 'job-name': 'labels' }));
      const renamed = await post(job('renamed', {}, { 'job-name': 'old-name' }));
      const manual = await post(
        job(
          'manual',
          { manualSelector: true, selector: { matchLabels: { 'controller-uid': stale } } },
          { 'controller-uid': stale },
        ),
      );
      const fresh = await post(job('fresh', {}, { app: 'batch' }));
      const uid = fresh.body.metadata?.uid;
      return {
        both: [brief(both), causes(both)],
        labelsOnly: [brief(labelsOnly), causes(labelsOnly)],
        renamed: [brief(renamed), causes(renamed)],
        manual: [manual.code, mask(sorted(manual.body.spec?.selector))],
        fresh: [
          fresh.code,
          mask(sorted(fresh.body.spec?.selector), { uid }),
          mask(sorted(fresh.body.spec?.template?.metadata?.labels), { uid }),
          mask(sorted(fresh.body.metadata?.labels), { uid }),
        ],
      };
    },
    expected: {
      both: [
        '422 Invalid: Job.batch "both" is invalid: [spec.template.metadata.labels[controller-uid]: Invalid value: map[string]string{"controller-uid":"<uid>", "job-name":"both"}: must be \'<uid>\', spec.selector: Invalid value: v1.LabelSelector{MatchLabels:map[string]string{"controller-uid":"<uid>"}, MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: `selector` not auto-generated]',
        [
          'FieldValueInvalid spec.template.metadata.labels[controller-uid]',
          'FieldValueInvalid spec.selector',
        ],
      ],
      labelsOnly: [
        '422 Invalid: Job.batch "labels" is invalid: [spec.template.metadata.labels[controller-uid]: Invalid value: map[string]string{"controller-uid":"<uid>", "job-name":"labels"}: must be \'<uid>\', spec.template.metadata.labels: Invalid value: map[string]string{"controller-uid":"<uid>", "job-name":"labels"}: `selector` does not match template `labels`]',
        [
          'FieldValueInvalid spec.template.metadata.labels[controller-uid]',
          'FieldValueInvalid spec.template.metadata.labels',
        ],
      ],
      renamed: [
        '422 Invalid: Job.batch "renamed" is invalid: spec.template.metadata.labels[job-name]: Invalid value: map[string]string{"controller-uid":"<uid>", "job-name":"old-name"}: must be \'renamed\'',
        ['FieldValueInvalid spec.template.metadata.labels[job-name]'],
      ],
      manual: [201, '{"matchLabels":{"controller-uid":"<uid>"}}'],
      fresh: [
        201,
        '{"matchLabels":{"controller-uid":"<uid>"}}',
        '{"app":"batch","controller-uid":"<uid>","job-name":"fresh"}',
        '{"app":"batch","controller-uid":"<uid>","job-name":"fresh"}',
      ],
    },
  },
  {
    name: "PVs bind to the claims their claimRef names (not another uid's); a missing claim's PV is released, then reclaimed",
    async run(t, ns) {
      const pv = (name: string, extra: Json, claimRef?: Json, annotations?: Record<string, string>) => ({
        metadata: { name, ...(annotations ? { annotations } : {}) },
        spec: {
          capacity: { storage: extra.size ?? '1Gi' },
          accessModes: ['ReadWriteOnce'],
          persistentVolumeReclaimPolicy: extra.policy ?? 'Retain',
          ...(extra.source ?? { csi: { driver: 'ebs.csi.aws.com', volumeHandle: `vol-${name}` } }),
          ...(claimRef ? { claimRef: { namespace: ns, ...claimRef } } : {}),
        },
      });
      const pvc = (name: string, size: string, volumeName?: string) => ({
        metadata: { name },
        spec: {
          accessModes: ['ReadWriteOnce'],
          resources: { requests: { storage: size } },
          ...(volumeName ? { volumeName } : {}),
        },
      });
      const made: number[] = [];
      const pvs = (body: unknown) =>
        t.call('POST', '/api/v1/persistentvolumes', body).then((r) => made.push(r.code));
      const pvcs = (body: unknown) =>
        t
          .call('POST', `/api/v1/namespaces/${ns}/persistentvolumeclaims`, body)
          .then((r) => made.push(r.code));
      await pvs(pv('agree-stale', {}, { name: 'stale', uid: randomUUID() }));
      await pvcs(pvc('stale', '1Gi', 'agree-stale'));
      await pvs(pv('agree-open', {}, { name: 'open' }));
      await pvcs(pvc('open', '1Gi', 'agree-open'));
      await pvcs(pvc('early', '1Gi', 'agree-late'));
      await pvs(pv('agree-late', {}, { name: 'early' }));
      await pvs(pv('agree-free', { size: '2Gi' }));
      await pvcs(pvc('any', '1Gi'));
      await pvs(pv('agree-small', { size: '100Mi' }));
      await pvcs(pvc('too-big', '1Gi', 'agree-small'));
      const gone = { name: 'gone', uid: randomUUID() };
      await pvs(pv('agree-delete-csi', { policy: 'Delete' }, gone));
      await pvs(
        pv(
          'agree-delete-hostpath',
          { policy: 'Delete', source: { hostPath: { path: '/nonexistent/lifeboat' } } },
          gone,
        ),
      );
      await pvs(
        pv('agree-delete-external', { policy: 'Delete' }, gone, {
          'pv.kubernetes.io/provisioned-by': 'ebs.csi.aws.com',
        }),
      );
      const read = async () => {
        const volumes = (await t.call('GET', '/api/v1/persistentvolumes')).body.items as Json[];
        const claims = (await t.call('GET', `/api/v1/namespaces/${ns}/persistentvolumeclaims`)).body
          .items as Json[];
        const uids = new Map(claims.map((c) => [c.metadata.name, c.metadata.uid]));
        const flags = (o: Json) =>
          Object.keys(o.metadata.annotations ?? {})
            .filter((a) => a.startsWith('pv.kubernetes.io/b'))
            .sort();
        return {
          volumes: Object.fromEntries(
            volumes
              .filter((v) => v.metadata.name.startsWith('agree-'))
              .map((v) => {
                const ref = v.spec.claimRef;
                const claim = !ref
                  ? '-'
                  : `${ref.name}${!ref.uid ? '' : ref.uid === uids.get(ref.name) ? ' (its uid)' : ' (another uid)'}`;
                return [
                  v.metadata.name,
                  [v.status?.phase, claim, ...flags(v), ...(v.status?.message ? [v.status.message] : [])],
                ];
              }),
          ),
          claims: Object.fromEntries(
            claims.map((c) => [c.metadata.name, [c.status?.phase, c.spec.volumeName ?? '-', ...flags(c)]]),
          ),
        };
      };
      const expected = (this as Scenario).expected as Json;
      return {
        made,
        ...((await settle(t, read, { volumes: expected.volumes, claims: expected.claims })) as object),
      };
    },
    expected: {
      made: [201, 201, 201, 201, 201, 201, 201, 201, 201, 201, 201, 201, 201],
      volumes: {
        'agree-delete-csi': [
          'Failed',
          'gone (another uid)',
          'Error getting deleter volume plugin for volume "agree-delete-csi": no deletable volume plugin matched',
        ],
        'agree-delete-external': ['Released', 'gone (another uid)'],
        'agree-delete-hostpath': [
          'Failed',
          'gone (another uid)',
          'host_path deleter only supports /tmp/.+ but received provided /nonexistent/lifeboat',
        ],
        'agree-free': ['Bound', 'any (its uid)', 'pv.kubernetes.io/bound-by-controller'],
        'agree-late': ['Bound', 'early (its uid)'],
        'agree-open': ['Bound', 'open (its uid)'],
        'agree-small': ['Available', '-'],
        'agree-stale': ['Released', 'stale (another uid)'],
      },
      claims: {
        any: [
          'Bound',
          'agree-free',
          'pv.kubernetes.io/bind-completed',
          'pv.kubernetes.io/bound-by-controller',
        ],
        early: ['Bound', 'agree-late', 'pv.kubernetes.io/bind-completed'],
        open: ['Bound', 'agree-open', 'pv.kubernetes.io/bind-completed'],
        stale: ['Pending', 'agree-stale'],
        'too-big': ['Pending', 'agree-small'],
      },
    },
  },
  {
    name: 'a Service keeps its cluster IP: an update that drops or changes it is 422; a dropped node port is allocated anew',
    async run(t, ns) {
      const base = `/api/v1/namespaces/${ns}/services`;
      const made = await t.call('POST', base, {
        metadata: { name: 'web' },
        spec: { type: 'NodePort', selector: { app: 'web' }, ports: [{ port: 80 }] },
      });
      const spec = made.body.spec;
      const ip = spec.clusterIP as string;
      const port = spec.ports[0].nodePort as number;
      const other = ip === '10.96.250.250' ? '10.96.250.251' : '10.96.250.250';
      const names = { ip, port, other };
      const rv = made.body.metadata.resourceVersion;
      const put = (s: Json, resourceVersion: string | undefined = rv) =>
        t.call('PUT', `${base}/web`, {
          metadata: { name: 'web', ...(resourceVersion ? { resourceVersion } : {}) },
          spec: { type: 'NodePort', selector: { app: 'web' }, ...s },
        });
      const noIP = await put({ ports: [{ port: 80, nodePort: port }] });
      const changed = await put({
        clusterIP: other,
        clusterIPs: [other],
        ports: [{ port: 80, nodePort: port }],
      });
      const changedOne = await put({ clusterIP: other, ports: [{ port: 80, nodePort: port }] });
      const noVersion = await put({ clusterIP: ip, ports: [{ port: 80, nodePort: port }] }, '');
      const patched = await t.call(
        'PATCH',
        `${base}/web`,
        { spec: { clusterIP: null } },
        'application/merge-patch+json',
      );
      const kept = await put({ clusterIP: ip, ports: [{ port: 80 }] });
      const newPort = kept.body.spec?.ports?.[0]?.nodePort;
      const dup = await t.call('POST', base, {
        metadata: { name: 'dup' },
        spec: { clusterIP: ip, ports: [{ port: 80 }] },
      });
      const dupPort = await t.call('POST', base, {
        metadata: { name: 'dup-port' },
        spec: { type: 'NodePort', ports: [{ port: 80, nodePort: newPort }] },
      });
      const low = await t.call('POST', base, {
        metadata: { name: 'low' },
        spec: { type: 'NodePort', ports: [{ port: 80, nodePort: 80 }] },
      });
      const far = await t.call('POST', base, {
        metadata: { name: 'far' },
        spec: { clusterIP: '10.1.2.3', ports: [{ port: 80 }] },
      });
      const headless = await t.call('POST', base, {
        metadata: { name: 'headless' },
        spec: { clusterIP: 'None', ports: [{ port: 5432 }] },
      });
      const inRange = (n: number) => n >= 30000 && n <= 32767;
      return {
        made: [made.code, /^10\.96\.\d+\.\d+$/.test(ip), spec.clusterIPs, inRange(port)].map((v) =>
          typeof v === 'object' ? mask(sorted(v), names) : v,
        ),
        defaults: [
          spec.sessionAffinity,
          spec.externalTrafficPolicy,
          spec.ports[0].protocol,
          spec.ports[0].targetPort,
        ],
        noIP: brief(noIP, names),
        changed: brief(changed, names),
        changedOne: brief(changedOne, names),
        noVersion: [brief(noVersion, names), noVersion.body.details?.causes?.length],
        patched: brief(patched, names),
        kept: [
          kept.code,
          mask(sorted(kept.body.spec?.clusterIPs), names),
          newPort !== port && inRange(newPort),
        ],
        dup: brief(dup, names),
        dupPort: brief(dupPort, { ...names, newPort }),
        // Only values the test sent and the server's fixed ranges: nothing allocated to mask (an
        // allocated node port of 30000 would otherwise mask the range's own first port).
        low: brief(low),
        far: brief(far),
        headless: [headless.code, headless.body.spec?.clusterIPs],
      };
    },
    expected: {
      made: [201, true, '["<ip>"]', true],
      defaults: ['None', 'Cluster', 'TCP', 80],
      noIP: '422 Invalid: Service "web" is invalid: spec.clusterIPs[0]: Invalid value: []string(nil): primary clusterIP can not be unset',
      changed:
        '422 Invalid: Service "web" is invalid: spec.clusterIPs[0]: Invalid value: []string{"<other>"}: may not change once set',
      changedOne:
        '422 Invalid: Service "web" is invalid: [spec.clusterIPs[0]: Invalid value: []string(nil): primary clusterIP can not be unset, spec.clusterIPs: Required value]',
      noVersion: [
        '422 Invalid: Service "web" is invalid: metadata.resourceVersion: Invalid value: "": must be specified for an update',
        2,
      ],
      patched:
        '422 Invalid: Service "web" is invalid: spec.clusterIPs[0]: Invalid value: []string(nil): primary clusterIP can not be unset',
      kept: [200, '["<ip>"]', true],
      dup: '422 Invalid: Service "dup" is invalid: spec.clusterIPs: Invalid value: []string{"<ip>"}: failed to allocated ip:<ip> with error:provided IP is already allocated',
      dupPort:
        '422 Invalid: Service "dup-port" is invalid: spec.ports[0].nodePort: Invalid value: <newPort>: provided port is already allocated',
      low: '422 Invalid: Service "low" is invalid: spec.ports[0].nodePort: Invalid value: 80: provided port is not in the valid range. The range of valid ports is 30000-32767',
      far: '422 Invalid: Service "far" is invalid: spec.clusterIPs: Invalid value: []string{"10.1.2.3"}: failed to allocated ip:10.1.2.3 with error:provided IP is not in the valid range. The range of valid IPs is 10.96.0.0/16',
      headless: [201, ['None']],
    },
  },
  {
    name: 'deleting a CustomResourceDefinition deletes its objects, and its group stops being served',
    async run(t, ns) {
      const definition = crd('agree-gone.example.com', 'gadgets', 'Gadget');
      const crdPath = '/apis/apiextensions.k8s.io/v1/customresourcedefinitions';
      const collection = `/apis/agree-gone.example.com/v1/namespaces/${ns}/gadgets`;
      await t.call('POST', crdPath, definition);
      await until(t, collection, (r) => r.code === 200);
      for (const name of ['g1', 'g2'])
        await t.call('POST', collection, {
          apiVersion: 'agree-gone.example.com/v1',
          kind: 'Gadget',
          metadata: { name },
        });
      const before = (await t.call('GET', collection)).body.items.length;
      const deleted = await t.call('DELETE', `${crdPath}/gadgets.agree-gone.example.com`);
      const gone = await until(t, `${crdPath}/gadgets.agree-gone.example.com`, (r) => r.code === 404);
      const list = await until(t, collection, (r) => r.code === 404);
      // Discovery follows the deletion a moment later on a real kube-apiserver (its discovery
      // controller is asynchronous): the group must stop being served within the wait.
      const served = (r: Reply) => r.body.groups.some((g: Json) => g.name === 'agree-gone.example.com');
      const discovery = await until(t, '/apis', (r) => r.code === 200 && !served(r));
      await t.call('POST', crdPath, definition);
      const again = await until(t, collection, (r) => r.code === 200);
      return {
        before,
        deleted: [
          deleted.code,
          deleted.body.kind,
          typeof deleted.body.metadata?.deletionTimestamp,
          deleted.body.metadata?.finalizers,
        ],
        crd: brief(gone),
        list: brief(list),
        served: served(discovery),
        recreated: again.body.items.length,
      };
    },
    expected: {
      before: 2,
      deleted: [200, 'CustomResourceDefinition', 'string', ['customresourcecleanup.apiextensions.k8s.io']],
      crd: '404 NotFound: customresourcedefinitions.apiextensions.k8s.io "gadgets.agree-gone.example.com" not found',
      list: '404 Not Found: 404 page not found',
      served: false,
      recreated: 0,
    },
  },
  {
    name: 'dryRun=All on DELETE deletes nothing and answers as the deletion would',
    async run(t, ns) {
      const cm = `/api/v1/namespaces/${ns}/configmaps`;
      const made = await t.call('POST', cm, { metadata: { name: 'keep' }, data: { a: '1' } });
      const uid = made.body.metadata.uid;
      const answer = (r: Reply) =>
        r.body.kind === 'Status'
          ? [r.code, r.body.status, mask(sorted(r.body.details), { uid })]
          : [r.code, r.body.kind, typeof r.body.metadata?.deletionTimestamp, r.body.status?.phase ?? '-'];
      const dry = await t.call('DELETE', `${cm}/keep?dryRun=All`);
      const still = await t.call('GET', `${cm}/keep`);
      const missing = await t.call('DELETE', `${cm}/nope?dryRun=All`);
      await t.call('POST', `/apis/apps/v1/namespaces/${ns}/deployments`, {
        metadata: { name: 'web' },
        spec: {
          selector: { matchLabels: { app: 'web' } },
          template: {
            metadata: { labels: { app: 'web' } },
            spec: { containers: [{ name: 'c', image: 'nginx' }] },
          },
        },
      });
      const deployment = await t.call('DELETE', `/apis/apps/v1/namespaces/${ns}/deployments/web?dryRun=All`);
      const claims = `/api/v1/namespaces/${ns}/persistentvolumeclaims`;
      await t.call('POST', claims, {
        metadata: { name: 'held' },
        spec: { accessModes: ['ReadWriteOnce'], resources: { requests: { storage: '1Gi' } } },
      });
      const claim = await t.call('DELETE', `${claims}/held?dryRun=All`);
      const claimAfter = await t.call('GET', `${claims}/held`);
      const nsDry = await t.call('DELETE', `/api/v1/namespaces/${ns}?dryRun=All`);
      const nsAfter = await t.call('GET', `/api/v1/namespaces/${ns}`);
      const real = await t.call('DELETE', `${cm}/keep`);
      const gone = await t.call('GET', `${cm}/keep`);
      return {
        dry: answer(dry),
        still: [still.code, still.body.metadata?.uid === uid],
        missing: brief(missing),
        deployment: answer(deployment),
        claim: answer(claim),
        claimAfter: [
          claimAfter.code,
          typeof claimAfter.body.metadata?.deletionTimestamp,
          claimAfter.body.metadata?.finalizers,
        ],
        namespace: answer(nsDry),
        namespaceAfter: [nsAfter.code, nsAfter.body.status?.phase, nsAfter.body.spec?.finalizers],
        real: answer(real),
        gone: brief(gone),
      };
    },
    expected: {
      dry: [200, 'Success', '{"kind":"configmaps","name":"keep","uid":"<uid>"}'],
      still: [200, true],
      missing: '404 NotFound: configmaps "nope" not found',
      deployment: [200, 'Success', '{"group":"apps","kind":"deployments","name":"web","uid":"<uid>"}'],
      claim: [200, 'PersistentVolumeClaim', 'string', 'Pending'],
      claimAfter: [200, 'undefined', ['kubernetes.io/pvc-protection']],
      namespace: [200, 'Namespace', 'string', 'Terminating'],
      namespaceAfter: [200, 'Active', ['kubernetes']],
      real: [200, 'Success', '{"kind":"configmaps","name":"keep","uid":"<uid>"}'],
      gone: '404 NotFound: configmaps "keep" not found',
    },
  },
  {
    name: 'set-based and equality label selectors select as the real server does; malformed ones are 400',
    async run(t, ns) {
      const cm = `/api/v1/namespaces/${ns}/configmaps`;
      const objects: [string, Record<string, string>][] = [
        ['a', { app: 'a', rank: '1' }],
        ['b', { app: 'b', rank: '10' }],
        ['x', { app: 'x', tier: 'web' }],
        ['plain', { tier: 'db' }],
        ['blank', { app: '' }],
      ];
      for (const [name, labels] of objects) await t.call('POST', cm, { metadata: { name, labels } });
      const ours = new Set(objects.map(([n]) => n));
      const select = async (selector: string) => {
        const r = await t.call('GET', `${cm}?labelSelector=${encodeURIComponent(selector)}`);
        return r.code === 200
          ? (r.body.items as Json[])
              .map((i) => i.metadata.name)
              .filter((n) => ours.has(n))
              .sort()
              .join(' ')
          : brief(r);
      };
      const selectors = [
        'app in (a,b)',
        'app in ( a , b )',
        'app notin (x)',
        'app',
        '!app',
        'app=a',
        'app==b',
        'app!=a',
        'app,app notin (a)',
        'app notin (a),!tier',
        'app=',
        'app in ()',
        'app in (a,)',
        'rank>2',
        'rank<2',
        'app in (a',
        'a b',
        'app=a=b',
        '-bad',
        '!',
        ',app',
        'app,',
        'rank>x',
        'app=a b',
        'app=-x',
        'app notin a',
      ];
      const out: Record<string, string> = {};
      for (const s of selectors) out[s] = await select(s);
      return out;
    },
    expected: {
      'app in (a,b)': 'a b',
      'app in ( a , b )': 'a b',
      'app notin (x)': 'a b blank plain',
      app: 'a b blank x',
      '!app': 'plain',
      'app=a': 'a',
      'app==b': 'b',
      'app!=a': 'b blank plain x',
      'app,app notin (a)': 'b blank x',
      'app notin (a),!tier': 'b blank',
      'app=': 'blank',
      'app in ()': 'blank',
      'app in (a,)': 'a blank',
      'rank>2': 'b',
      'rank<2': 'a',
      'app in (a': "400 BadRequest: unable to parse requirement: found '', expected: ',' or ')'",
      'a b':
        "400 BadRequest: unable to parse requirement: found 'b', expected: '=', '!=', '==', 'in', notin'",
      'app=a=b': "400 BadRequest: found '=', expected: ',' or 'end of string'",
      '-bad':
        "400 BadRequest: unable to parse requirement: invalid label key \"-bad\": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')",
      '!': "400 BadRequest: unable to parse requirement: found '', expected: identifier",
      ',app': "400 BadRequest: found ',', expected: !, identifier, or 'end of string'",
      'app,': "400 BadRequest: found '', expected: identifier after ','",
      'rank>x':
        "400 BadRequest: unable to parse requirement: for 'Gt', 'Lt' operators, the value must be an integer",
      'app=a b': "400 BadRequest: found 'b', expected: ',' or 'end of string'",
      'app=-x':
        "400 BadRequest: unable to parse requirement: invalid label value: \"-x\": at key: \"app\": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')",
      'app notin a': "400 BadRequest: unable to parse requirement: found 'a' expected: '('",
    },
  },
  {
    name: 'PATCH: strategic merge (built-in kinds), merge and JSON patch, and their 400/404/409/415/422',
    async run(t, ns) {
      const path = `/apis/apps/v1/namespaces/${ns}/deployments`;
      await t.call('POST', path, {
        metadata: { name: 'web', labels: { app: 'web' } },
        spec: {
          replicas: 1,
          selector: { matchLabels: { app: 'web' } },
          template: {
            metadata: { labels: { app: 'web' } },
            spec: {
              containers: [
                { name: 'a', image: 'nginx:1' },
                { name: 'b', image: 'redis:6' },
              ],
            },
          },
        },
      });
      const patch = (body: unknown, type: string, name = 'web') =>
        t.call('PATCH', `${path}/${name}`, body, type);
      const state = (r: Reply) =>
        r.code === 200
          ? [
              r.body.metadata.generation,
              r.body.spec.replicas,
              (r.body.spec.template.spec.containers as Json[]).map((c) => `${c.name}=${c.image}`).join(' '),
              sorted(r.body.metadata.labels),
            ]
          : brief(r);
      const merge = 'application/merge-patch+json';
      const json = 'application/json-patch+json';
      const steps: Record<string, unknown> = {};
      steps.strategic = state(
        await patch(
          { spec: { template: { spec: { containers: [{ name: 'b', image: 'redis:7' }] } } } },
          'application/strategic-merge-patch+json',
        ),
      );
      steps.merge = state(
        await patch(
          { spec: { template: { spec: { containers: [{ name: 'b', image: 'redis:8' }] } } } },
          merge,
        ),
      );
      steps.labelsOnly = state(await patch({ metadata: { labels: { tier: 'fe' } } }, merge));
      steps.json = state(
        await patch(
          [
            { op: 'replace', path: '/spec/replicas', value: 3 },
            { op: 'add', path: '/metadata/labels/x', value: 'y' },
            { op: 'remove', path: '/metadata/labels/tier' },
          ],
          json,
        ),
      );
      steps.jsonTestFails = state(await patch([{ op: 'test', path: '/spec/replicas', value: 5 }], json));
      steps.jsonRemoveMissing = state(await patch([{ op: 'remove', path: '/spec/nothing' }], json));
      steps.jsonNotAList = state(await patch({ spec: {} }, json));
      steps.mergeNotJSON = state(await patch('{not json', merge));
      steps.stale = state(await patch({ metadata: { resourceVersion: '1' }, spec: { replicas: 2 } }, merge));
      steps.missing = state(await patch({ spec: {} }, merge, 'nope'));
      steps.renamed = state(await patch({ metadata: { name: 'other' } }, merge));
      steps.plainJSON = state(await patch({ spec: {} }, 'application/json'));
      steps.text = state(await patch('spec: {}', 'text/plain'));
      steps.unchanged = state(await t.call('GET', `${path}/web`));
      await t.call(
        'POST',
        '/apis/apiextensions.k8s.io/v1/customresourcedefinitions',
        crd('agree-patch.example.com', 'knobs', 'Knob'),
      );
      const knobs = `/apis/agree-patch.example.com/v1/namespaces/${ns}/knobs`;
      await until(t, knobs, (r) => r.code === 200);
      await t.call('POST', knobs, {
        apiVersion: 'agree-patch.example.com/v1',
        kind: 'Knob',
        metadata: { name: 'k' },
        spec: { size: 1, keep: true },
      });
      const knob = (r: Reply) =>
        r.code === 200 ? [r.body.metadata.generation, sorted(r.body.spec)] : brief(r);
      steps.customStrategic = knob(
        await t.call('PATCH', `${knobs}/k`, { spec: { size: 2 } }, 'application/strategic-merge-patch+json'),
      );
      steps.customMerge = knob(await t.call('PATCH', `${knobs}/k`, { spec: { size: 2, keep: null } }, merge));
      steps.customJSON = knob(
        await t.call('PATCH', `${knobs}/k`, [{ op: 'add', path: '/spec/extra', value: [1] }], json),
      );
      return steps;
    },
    expected: {
      strategic: [2, 1, 'a=nginx:1 b=redis:7', '{"app":"web"}'],
      merge: [3, 1, 'b=redis:8', '{"app":"web"}'],
      labelsOnly: [3, 1, 'b=redis:8', '{"app":"web","tier":"fe"}'],
      json: [4, 3, 'b=redis:8', '{"app":"web","x":"y"}'],
      jsonTestFails: '422 Invalid: the server rejected our request due to an error in our request',
      jsonRemoveMissing: '422 Invalid: the server rejected our request due to an error in our request',
      jsonNotAList: '400 BadRequest: json: cannot unmarshal object into Go value of type jsonpatch.Patch',
      mergeNotJSON: '500: Invalid JSON Patch',
      stale:
        '409 Conflict: Operation cannot be fulfilled on deployments.apps "web": the object has been modified; please apply your changes to the latest version and try again',
      missing: '404 NotFound: deployments.apps "nope" not found',
      renamed: '400 BadRequest: the name of the object (other) does not match the name on the URL (web)',
      plainJSON: '415 UnsupportedMediaType: 415: Unsupported Media Type',
      text: '415 UnsupportedMediaType: 415: Unsupported Media Type',
      unchanged: [4, 3, 'b=redis:8', '{"app":"web","x":"y"}'],
      customStrategic:
        '415 UnsupportedMediaType: the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml',
      customMerge: [2, '{"size":2}'],
      customJSON: [3, '{"extra":[1],"size":2}'],
    },
  },
];

const found = kubeBinaries();
if (!found.binaries) console.log(`# kube-agree: real control plane skipped: ${found.reason}`);

function describeTarget(
  name: string,
  options: { skip: string | false },
  open: () => Promise<{ target: Target; stop(): Promise<void> }>,
) {
  describe(name, options, () => {
    let target: Target;
    let stop: (() => Promise<void>) | undefined;
    const seconds = (since: number) => `${((Date.now() - since) / 1000).toFixed(1)} s`;
    let started = '';
    let t0 = 0;
    before(async () => {
      const t = Date.now();
      ({ target, stop } = await open());
      started = seconds(t);
      t0 = Date.now();
    });
    after(async () => {
      const ran = seconds(t0);
      await stop?.();
      console.log(`# kube-agree: ${name}: started in ${started}, the scenarios took ${ran}`);
    });
    scenarios.forEach((scenario, i) => {
      test(scenario.name, async () => {
        const ns = `agree-${i}`;
        await namespace(target, ns);
        assert.deepStrictEqual(await scenario.run.call(scenario, target, ns), scenario.expected);
      });
    });
  });
}

describeTarget('the fake kube-apiserver', { skip: false }, async () => {
  const fake: FakeKube = await startFakeKube();
  return { target: connect(fake.url, 0), stop: () => fake.stop() };
});

describeTarget(
  'a real control plane (kube-apiserver v1.20.2)',
  { skip: found.binaries ? false : `no real control plane: ${found.reason}` },
  async () => {
    const cluster: KubeCluster = await startKubeCluster({ binaries: found.binaries });
    const ca = await fs.readFile(cluster.caFile);
    return { target: connect(cluster.server, 2500, cluster.token, ca), stop: () => cluster.stop() };
  },
);

/**
 * restore-k8s's per-kind rules on objects as a real kube-apiserver v1.20 returns them (the
 * integration tests of test/integration/k8s-real-restore.test.ts run them on one).
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { type KubeObject, keepLiveFields, prepare, skipReason } from '../../shared/k8s/restore-rules.ts';

const options = { mapping: new Map([['app', 'app2']]), backupId: '2026-12-01-0315-backup-exclude-storage' };

const service = (extra: Partial<KubeObject['metadata']> = {}): KubeObject => ({
  apiVersion: 'v1',
  kind: 'Service',
  metadata: { name: 'edge', namespace: 'app', uid: 'u1', resourceVersion: '9', ...extra },
  spec: {
    type: 'NodePort',
    clusterIP: '10.0.0.7',
    clusterIPs: ['10.0.0.7'],
    ports: [
      { name: 'http', port: 80, protocol: 'TCP', nodePort: 30123 },
      { name: 'admin', port: 81, protocol: 'TCP', nodePort: 31999 },
    ],
  },
});
const nodePorts = (o: KubeObject) => (o.spec!.ports as { nodePort?: number }[]).map((p) => p.nodePort);

test('node ports: allocated ones go, those in last-applied-configuration stay', () => {
  assert.deepEqual(nodePorts(prepare('services', service(), 'app', options)), [undefined, undefined]);
  const applied = service({
    annotations: {
      'kubectl.kubernetes.io/last-applied-configuration': JSON.stringify({
        spec: { ports: [{ name: 'http', port: 80, nodePort: 30123 }] },
      }),
    },
  });
  const out = prepare('services', applied, 'app', options);
  assert.deepEqual(nodePorts(out), [30123, undefined]);
  assert.equal(out.spec!.clusterIP, undefined);
  assert.equal(out.metadata.namespace, 'app2');
});

test('node ports: those a manager owns in managedFields stay; preserve-node-ports keeps all', () => {
  const managed = service({
    managedFields: [
      {
        fieldsV1: {
          'f:spec': {
            'f:ports': {
              '.': {},
              'k:{"port":80,"protocol":"TCP"}': { '.': {}, 'f:name': {}, 'f:nodePort': {}, 'f:port': {} },
              'k:{"port":81,"protocol":"TCP"}': { '.': {}, 'f:name': {}, 'f:port': {} },
            },
          },
        },
      },
    ],
  });
  assert.deepEqual(nodePorts(prepare('services', managed, 'app', options)), [30123, undefined]);
  assert.deepEqual(
    nodePorts(prepare('services', service(), 'app', { ...options, nodePorts: 'all' })),
    [30123, 31999],
  );
});

test("Jobs lose the old Job's controller-uid labels; their Pods are not restored", () => {
  const job: KubeObject = {
    metadata: { name: 'migrate', namespace: 'app' },
    spec: {
      selector: { matchLabels: { 'controller-uid': 'old' } },
      template: { metadata: { labels: { 'controller-uid': 'old', 'job-name': 'migrate' } } },
    },
  };
  const out = prepare('jobs.batch', job, 'app', options);
  assert.deepEqual((out.spec!.selector as { matchLabels: object }).matchLabels, {});
  assert.deepEqual((out.spec!.template as { metadata: { labels: object } }).metadata.labels, {
    'job-name': 'migrate',
  });
  const pod: KubeObject = {
    metadata: { name: 'migrate-x', ownerReferences: [{ kind: 'Job', name: 'migrate', controller: true }] },
  };
  assert.match(skipReason('pods', pod)!, /made by the Job migrate/);
  assert.equal(skipReason('pods', { metadata: { name: 'solo' } }), undefined);
});

test('PVs: the claim keeps its name, loses its uid, and its namespace is mapped', () => {
  const pv: KubeObject = {
    metadata: { name: 'pv1', annotations: { 'pv.kubernetes.io/bound-by-controller': 'yes' } },
    spec: {
      claimRef: {
        kind: 'PersistentVolumeClaim',
        namespace: 'app',
        name: 'data',
        uid: 'u',
        resourceVersion: '3',
      },
    },
  };
  const out = prepare('persistentvolumes', pv, undefined, options);
  assert.deepEqual(out.spec!.claimRef, { kind: 'PersistentVolumeClaim', namespace: 'app2', name: 'data' });
  assert.deepEqual(out.metadata.annotations, {});
});

test('token Secrets: the controller-made one is skipped, a user-made one restored without its token', () => {
  const token = (name: string): KubeObject => ({
    metadata: {
      name,
      annotations: {
        'kubernetes.io/service-account.name': 'robot',
        'kubernetes.io/service-account.uid': 'u',
      },
    },
    type: 'kubernetes.io/service-account-token',
    data: { token: 'dG9r', 'ca.crt': 'Y2E=', namespace: 'YXBw' },
  });
  assert.match(skipReason('secrets', token('robot-token-x7k2p'))!, /token controller/);
  assert.equal(skipReason('secrets', token('robot-ci-token')), undefined);
  const out = prepare('secrets', token('robot-ci-token'), 'app', options);
  assert.deepEqual(out.data, { namespace: 'YXBw' });
  assert.deepEqual(out.metadata.annotations, { 'kubernetes.io/service-account.name': 'robot' });
});

test("Velero's objects and the old cluster's machines are never restored", () => {
  for (const r of [
    'restores.velero.io',
    'backups.velero.io',
    'schedules.velero.io',
    'volumeattachments.storage.k8s.io',
  ])
    assert.ok(skipReason(r, { metadata: { name: 'x' } }), r);
});

test('existing: update keeps the live cluster IPs and allocated node ports, a PVC spec but its size', () => {
  const live = service();
  const desired = prepare('services', service(), 'app', options);
  const out = keepLiveFields('services', desired, live);
  assert.equal(out.spec!.clusterIP, '10.0.0.7');
  assert.deepEqual(nodePorts(out), [30123, 31999]);
  assert.equal(out.metadata.resourceVersion, '9');
  const pvc = (size: string, volumeName?: string): KubeObject => ({
    metadata: { name: 'data', resourceVersion: '5' },
    spec: { volumeName, storageClassName: 'manual', resources: { requests: { storage: size } } },
  });
  const merged = keepLiveFields('persistentvolumeclaims', pvc('2Gi'), pvc('1Gi', 'pv1'));
  assert.deepEqual(merged.spec, {
    volumeName: 'pv1',
    storageClassName: 'manual',
    resources: { requests: { storage: '2Gi' } },
  });
});

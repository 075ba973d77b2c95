/**
 * backup-k8s, restore and verify-restore through the built bundle, as a runner runs them:
 * against the project's real control plane (kube-apiserver + kube-controller-manager v1.20.2,
 * test/harness/kube-cluster.ts) when its binaries are built, else — saying so — against the
 * fake kube-apiserver; or, when LIFEBOAT_E2E_KUBECONFIG names a cluster's kubeconfig (the
 * e2e-kind workflow), against that cluster. Objects are created through the API in a
 * namespace of this run, backed up, and read back from the archive with standard tools.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs/promises';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { KubeClient } from '../../shared/k8s/client.ts';
import { type FakeKube, fakeKubeconfig, startFakeKube } from '../fakes/kube-apiserver.ts';
import { type KubeCluster, kubeBinaries, startKubeCluster } from '../harness/kube-cluster.ts';
import { errorLines, runAction, runCli } from '../harness/runner.ts';
import { tempDir } from '../harness/servers.ts';

let fake: FakeKube | undefined;
let real: KubeCluster | undefined;
let work: string;
let kubeconfig: string;
const namespace = `lifeboat-e2e-${process.pid}`;

before(async () => {
  work = await tempDir('k8s-e2e');
  kubeconfig = process.env.LIFEBOAT_E2E_KUBECONFIG ?? path.join(work, 'kubeconfig');
  if (!process.env.LIFEBOAT_E2E_KUBECONFIG) {
    const found = kubeBinaries();
    if (found.binaries) {
      real = await startKubeCluster();
      kubeconfig = real.kubeconfig;
    } else {
      console.log(`# e2e k8s: against the fake kube-apiserver, no real control plane: ${found.reason}`);
      fake = await startFakeKube();
      await fs.writeFile(kubeconfig, fakeKubeconfig(fake.url));
    }
  }
  const client = await KubeClient.open(kubeconfig);
  await client.request('POST', '/api/v1/namespaces', {
    apiVersion: 'v1',
    kind: 'Namespace',
    metadata: { name: namespace },
  });
  for (let i = 0; i < 5; i++) {
    await client.request('POST', `/api/v1/namespaces/${namespace}/configmaps`, {
      apiVersion: 'v1',
      kind: 'ConfigMap',
      metadata: { name: `settings-${i}`, labels: { app: 'shop' } },
      data: { i: String(i) },
    });
  }
  await client.request('POST', `/apis/apps/v1/namespaces/${namespace}/deployments`, {
    apiVersion: 'apps/v1',
    kind: 'Deployment',
    metadata: { name: 'web', labels: { app: 'shop' } },
    spec: {
      replicas: 0,
      selector: { matchLabels: { app: 'shop' } },
      template: {
        metadata: { labels: { app: 'shop' } },
        spec: { containers: [{ name: 'web', image: 'nginx:1.27' }] },
      },
    },
  });
});

after(async () => {
  if (process.env.LIFEBOAT_E2E_KUBECONFIG) {
    const client = await KubeClient.open(kubeconfig);
    await client.request('DELETE', `/api/v1/namespaces/${namespace}`).catch(() => {});
  }
  await fake?.stop();
  await real?.stop();
  await fs.rm(work, { recursive: true, force: true });
});

test('the action backs up a namespace; tar and zstd read the archive back', async () => {
  const storage = path.join(work, 'backups');
  const run = await runAction(
    'backup-k8s',
    { storage, set: 'cluster', kubeconfig, 'include-namespaces': namespace, 'page-size': '2' },
    {},
  );
  assert.equal(run.code, 0, run.stdout);
  assert.match(run.stdout, /Secrets are backed up without encryption/);
  const manifest = JSON.parse(run.outputs.result!);
  assert.equal(manifest.facts.counts.byResource.configmaps >= 5, true);
  assert.equal(manifest.facts.counts.byResource['deployments.apps'], 1);
  const file = path.join(storage, 'cluster', run.outputs['backup-id']!, 'resources.tar.zst');
  const listing = execFileSync('bash', ['-c', `zstd -dc "$0" | tar -t`, file], { encoding: 'utf8' }).split(
    '\n',
  );
  assert.ok(listing.includes('metadata/version'));
  assert.ok(listing.includes(`resources/deployments.apps/namespaces/${namespace}/web.json`));
  assert.ok(listing.includes(`resources/namespaces/cluster/${namespace}.json`));
  const web = JSON.parse(
    execFileSync(
      'bash',
      [
        '-c',
        `zstd -dc "$0" | tar -xO "$1"`,
        file,
        `resources/deployments.apps/namespaces/${namespace}/web.json`,
      ],
      {
        encoding: 'utf8',
      },
    ),
  );
  assert.equal(web.kind, 'Deployment');
  assert.equal(web.spec.template.spec.containers[0].image, 'nginx:1.27');
  assert.match(run.summary, /deployments\.apps/);
});

test('restore through the CLI into a mapped namespace: a dry run first, then for real', async () => {
  const storage = path.join(work, 'backups');
  const target = `${namespace}-restored`;
  const client = await KubeClient.open(kubeconfig);
  const common = [
    'restore',
    '--storage',
    storage,
    '--set',
    'cluster',
    '--kubeconfig',
    kubeconfig,
    '--namespace-mapping',
    `${namespace}=${target}`,
  ];
  const dry = await runCli(
    [...common, '--dry-run', '--json', '--report-file', path.join(work, 'dry.json')],
    {},
  );
  assert.equal(dry.code, 0, dry.stderr);
  await assert.rejects(client.get(`/api/v1/namespaces/${target}`), /404/);
  const real = await runCli([...common, '--json', '--report-file', path.join(work, 'real.json')], {});
  assert.equal(real.code, 0, real.stderr);
  const report = JSON.parse(await fs.readFile(path.join(work, 'real.json'), 'utf8'));
  assert.equal(report.counts.failed, 0);
  assert.ok(
    report.objects.some(
      (o: { resource: string; outcome: string }) =>
        o.resource === 'deployments.apps' && o.outcome === 'created',
    ),
  );
  const web = await client.get<{ metadata: { labels: Record<string, string> } }>(
    `/apis/apps/v1/namespaces/${target}/deployments/web`,
  );
  assert.match(web.metadata.labels['lifeboat.io/restored-from']!, /-backup-exclude-storage$/);
  if (process.env.LIFEBOAT_E2E_KUBECONFIG)
    await client.request('DELETE', `/api/v1/namespaces/${target}`).catch(() => {});
});

test('verify-restore: throwaway namespaces, counts, readiness, cleanup', async () => {
  const storage = path.join(work, 'backups');
  const run = await runAction(
    'verify-restore',
    {
      storage,
      set: 'cluster',
      kubeconfig,
      'wait-ready': '2m',
      'poll-interval': '1s',
      'report-file': path.join(work, 'verify.json'),
    },
    {},
  );
  assert.equal(run.code, 0, run.stdout);
  assert.equal(run.outputs.passed, 'true');
  assert.match(run.summary, /objects: deployments\.apps/);
  assert.equal(run.state.leftovers, '', 'the throwaway namespaces are gone');
  const client = await KubeClient.open(kubeconfig);
  const list = await client.get<{ items: { metadata: { name: string; deletionTimestamp?: string } }[] }>(
    '/api/v1/namespaces',
  );
  assert.ok(!list.items.some((n) => n.metadata.name.includes('-lbv-') && !n.metadata.deletionTimestamp));
});

test('a Velero tarball restores through the CLI, without a set', async () => {
  const source = `${namespace}-velero`;
  const target = `${source}-restored`;
  const dir = path.join(work, 'velero');
  await fs.mkdir(path.join(dir, 'resources/configmaps/namespaces', source), { recursive: true });
  await fs.mkdir(path.join(dir, 'resources/namespaces/cluster'), { recursive: true });
  await fs.mkdir(path.join(dir, 'metadata'), { recursive: true });
  await fs.writeFile(path.join(dir, 'metadata/version'), '1.1.0');
  await fs.writeFile(
    path.join(dir, 'resources/configmaps/namespaces', source, 'from-velero.json'),
    JSON.stringify({
      apiVersion: 'v1',
      kind: 'ConfigMap',
      metadata: { name: 'from-velero', namespace: source, uid: 'x' },
      data: { a: '1' },
    }),
  );
  await fs.writeFile(
    path.join(dir, 'resources/namespaces/cluster', `${source}.json`),
    JSON.stringify({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: source } }),
  );
  const tarball = path.join(work, 'velero-nightly.tar.gz');
  execFileSync('tar', ['-czf', tarball, '-C', dir, 'metadata', 'resources']);
  const run = await runCli(
    [
      'restore',
      '--velero-backup',
      tarball,
      '--kubeconfig',
      kubeconfig,
      '--namespace-mapping',
      `${source}=${target}`,
      '--report-file',
      path.join(work, 'velero.json'),
    ],
    {},
  );
  assert.equal(run.code, 0, run.stderr);
  assert.match(run.stdout, /Restore of the Velero backup velero-nightly/);
  const client = await KubeClient.open(kubeconfig);
  const cm = await client.get<{ data: Record<string, string> }>(
    `/api/v1/namespaces/${target}/configmaps/from-velero`,
  );
  assert.equal(cm.data.a, '1');
  if (process.env.LIFEBOAT_E2E_KUBECONFIG)
    await client.request('DELETE', `/api/v1/namespaces/${target}`).catch(() => {});
});

test('an unreachable cluster and a snapshot mode without its class each get one line', async () => {
  const missing = await runAction('backup-k8s', { set: 'x', kubeconfig: path.join(work, 'nope') }, {});
  assert.equal(missing.code, 1);
  assert.match(errorLines(missing)[0]!, /kubeconfig: no kubeconfig at .*nope/);
  const mode = await runAction('backup-k8s', { set: 'x', kubeconfig, mode: 'only-storage' }, {});
  assert.equal(mode.code, 1);
  assert.match(errorLines(mode)[0]!, /volume-snapshot-class: required with mode only-storage/);
});

/**
 * backup-k8s throughput and memory: exports N objects (default 20,000) with the built CLI,
 * in pages of 500, from the fake kube-apiserver, or with --real from the real control plane
 * (test/harness/kube-cluster.ts: kube-apiserver, etcd; built by scripts/kube-binaries.sh).
 *
 *   bash scripts/dev.sh build && node bench/k8s.ts [objects] [--real]
 *
 * Prints objects per second and the CLI's peak RSS. (No peer runs here: Velero needs a
 * real cluster and its own server.)
 */
import fs from 'node:fs/promises';
import https from 'node:https';
import path from 'node:path';
import { forEachLimit } from '../shared/storage/storage.ts';
import { fakeKubeconfig, startFakeKube } from '../test/fakes/kube-apiserver.ts';
import { startKubeCluster } from '../test/harness/kube-cluster.ts';
import { measure } from '../test/harness/measure.ts';
import { tempDir } from '../test/harness/servers.ts';
import { recordFigure } from './figures.ts';

const real = process.argv.includes('--real');
const count = Number(process.argv.slice(2).find((a) => /^\d+$/.test(a)) ?? 20_000);
const namespaces = 20;
const namespace = (i: number) => ({ metadata: { name: `team-${i}` } });
const configMap = (i: number) => ({
  metadata: { name: `config-${i}`, namespace: `team-${i % namespaces}`, labels: { app: `app-${i % 97}` } },
  data: { 'settings.yaml': `replicas: ${i % 7}\nfeature: ${'x'.repeat(600)}\n` },
});
const work = await tempDir('bench-k8s');
const kubeconfig = path.join(work, 'kubeconfig');
let stop: () => Promise<void>;
if (real) {
  const cluster = await startKubeCluster();
  stop = cluster.stop;
  await fs.copyFile(cluster.kubeconfig, kubeconfig);
  const agent = new https.Agent({ ca: await fs.readFile(cluster.caFile), keepAlive: true, maxSockets: 16 });
  const post = (apiPath: string, body: object) =>
    new Promise<void>((resolve, reject) => {
      const request = https.request(`${cluster.server}${apiPath}`, {
        method: 'POST',
        agent,
        headers: { authorization: `Bearer ${cluster.token}`, 'content-type': 'application/json' },
      });
      request.on('response', (response) => {
        response.resume();
        response.on('end', () =>
          response.statusCode === 201
            ? resolve()
            : reject(new Error(`POST ${apiPath}: HTTP ${response.statusCode}`)),
        );
      });
      request.on('error', reject);
      request.end(JSON.stringify(body));
    });
  const t = performance.now();
  for (let i = 0; i < namespaces; i++) await post('/api/v1/namespaces', namespace(i));
  const items = Array.from({ length: count }, (_, i) => i);
  await forEachLimit(items, 16, (i) =>
    post(`/api/v1/namespaces/team-${i % namespaces}/configmaps`, configMap(i)),
  );
  console.error(`created ${count} ConfigMaps in ${((performance.now() - t) / 1000).toFixed(1)} s`);
  agent.destroy();
} else {
  const fake = await startFakeKube();
  stop = fake.stop;
  fake.seed(
    '',
    'namespaces',
    Array.from({ length: namespaces }, (_, i) => namespace(i)),
  );
  fake.seed(
    '',
    'configmaps',
    Array.from({ length: count }, (_, i) => configMap(i)),
  );
  await fs.writeFile(kubeconfig, fakeKubeconfig(fake.url));
}
try {
  const run = await measure(
    [
      'backup-k8s',
      '--storage',
      path.join(work, 'backups'),
      '--set',
      'bench',
      '--kubeconfig',
      kubeconfig,
      '--json',
    ],
    {},
    { cwd: work },
  );
  if (run.code !== 0) throw new Error(run.stderr.slice(-800));
  const manifest = JSON.parse(run.stdout).result;
  const total = manifest.facts.counts.total;
  recordFigure({
    key: 'k8s-export',
    value: total / run.seconds,
    unit: 'objects/s',
    detail: `${total.toLocaleString('en')} objects, ${real ? 'real control plane' : 'fake API server'}`,
  });
  console.log(
    `backup-k8s (${real ? 'real control plane' : 'fake API server'}): ${total} objects in ${run.seconds.toFixed(1)} s = ${Math.round(total / run.seconds)} objects/s; peak RSS ${(run.peakRssBytes / 1024 ** 2).toFixed(0)} MiB; archive ${(manifest.artifacts[0].bytes / 1024 ** 2).toFixed(1)} MiB stored (${(manifest.artifacts[0].contentBytes / 1024 ** 2).toFixed(1)} MiB of tar)`,
  );
} finally {
  await stop();
  await fs.rm(work, { recursive: true, force: true });
}

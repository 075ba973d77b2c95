/**
 * backup-k8s throughput and memory: exports N objects (default 20,000) from the fake
 * kube-apiserver with the built CLI, in pages of 500.
 *
 *   bash scripts/dev.sh build && node bench/k8s.ts [objects]
 *
 * Prints objects per second and the CLI's peak RSS. (No peer runs here: Velero needs a
 * real cluster and its own server.)
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import { fakeKubeconfig, startFakeKube } from '../test/fakes/kube-apiserver.ts';
import { measure } from '../test/harness/measure.ts';
import { tempDir } from '../test/harness/servers.ts';

const count = Number(process.argv[2] ?? 20_000);
const work = await tempDir('bench-k8s');
const fake = await startFakeKube();
try {
  const namespaces = 20;
  fake.seed(
    '',
    'namespaces',
    Array.from({ length: namespaces }, (_, i) => ({ metadata: { name: `team-${i}` } })),
  );
  fake.seed(
    '',
    'configmaps',
    Array.from({ length: count }, (_, i) => ({
      metadata: {
        name: `config-${i}`,
        namespace: `team-${i % namespaces}`,
        labels: { app: `app-${i % 97}` },
      },
      data: { 'settings.yaml': `replicas: ${i % 7}\nfeature: ${'x'.repeat(600)}\n` },
    })),
  );
  const kubeconfig = path.join(work, 'kubeconfig');
  await fs.writeFile(kubeconfig, fakeKubeconfig(fake.url));
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
  console.log(
    `backup-k8s: ${total} objects in ${run.seconds.toFixed(1)} s = ${Math.round(total / run.seconds)} objects/s; peak RSS ${(run.peakRssBytes / 1024 ** 2).toFixed(0)} MiB; archive ${(manifest.artifacts[0].bytes / 1024 ** 2).toFixed(1)} MiB stored (${(manifest.artifacts[0].contentBytes / 1024 ** 2).toFixed(1)} MiB of tar)`,
  );
} finally {
  await fake.stop();
  await fs.rm(work, { recursive: true, force: true });
}

/**
 * Retention at scale.
 *
 *   node bench/retention.ts [backups to plan, default 100000]
 *
 * 1. Planning: 100,000 backups (hourly for eleven years; 1,000,000: hourly for 114 years) under a typical policy, in UTC and
 *    in a zone with DST. Target: under 2 s.
 * 2. Calls: a set of 2,000 small backups in an S3 server (fauxqs, on 127.0.0.1), pruned to
 *    keep-last 100; the server counts the requests it receives, by kind, per 1,000 backups.
 */
import { randomBytes } from 'node:crypto';
import { baseBackupId } from '../shared/catalog/ids.ts';
import { silentLogger } from '../shared/pipeline/progress.ts';
import { planRetention, type RetentionPolicy } from '../shared/retention/plan.ts';
import { prune } from '../shared/retention/prune.ts';
import { openStorage } from '../shared/storage/open.ts';
import { forEachLimit } from '../shared/storage/storage.ts';
import { testManifest } from '../test/harness/catalog.ts';
import { recordFigure } from './figures.ts';

const policy: RetentionPolicy = {
  last: 24,
  hourly: 48,
  daily: 30,
  weekly: 12,
  monthly: 24,
  yearly: 10,
  withinSeconds: 7 * 86_400,
  tags: ['pinned'],
  timezone: 'UTC',
  keepVerified: 1,
  minKeep: 1,
  maxTotalBytes: 5e12,
  orphanGraceSeconds: 86_400,
};

const count = Number(process.argv[2] ?? 100_000);
const start = Date.UTC(2016, 0, 1);
const backups = Array.from({ length: count }, (_, i) => ({
  id: `b${i}`,
  time: new Date(start + i * 3_600_000),
  bytes: 1e8,
  tags: i % 5000 === 0 ? ['pinned'] : [],
  verified: i % 97 === 0 ? true : undefined,
}));
const now = new Date(start + count * 3_600_000);
for (const timezone of ['UTC', 'Europe/Berlin']) {
  const t = performance.now();
  const plan = planRetention(backups, [], { ...policy, timezone }, now);
  const seconds = (performance.now() - t) / 1000;
  console.log(
    `planning ${count} backups (${timezone}): ${seconds.toFixed(2)} s, keeps ${plan.backups.filter((b) => b.keep).length}`,
  );
  recordFigure({
    key: 'prune-plan',
    value: seconds,
    unit: 's',
    detail: `${count.toLocaleString('en')} backups, ${timezone}`,
  });
}

// Calls against a real S3 implementation, counted by the server.
const { buildApp } = await import('fauxqs');
const app = buildApp({ logger: false });
const calls = new Map<string, number>();
let counting = false;
app.addHook('onRequest', async (request: { method: string; url: string }) => {
  if (!counting) return;
  const url = new URL(request.url, 'http://x');
  const kind =
    request.method === 'POST' && url.searchParams.has('delete')
      ? 'DeleteObjects'
      : request.method === 'GET' && url.searchParams.has('list-type')
        ? 'ListObjectsV2'
        : `${request.method} ${url.pathname.split('/').length > 2 ? 'object' : 'bucket'}`;
  calls.set(kind, (calls.get(kind) ?? 0) + 1);
});
await app.listen({ port: 0, host: '127.0.0.1' });
const port = (app.server.address() as { port: number }).port;
const env = {
  ...process.env,
  AWS_ENDPOINT_URL_S3: `http://127.0.0.1:${port}`,
  AWS_ACCESS_KEY_ID: 'x',
  AWS_SECRET_ACCESS_KEY: 'x',
  AWS_REGION: 'us-east-1',
};
const { S3Client, CreateBucketCommand } = await import('@aws-sdk/client-s3');
const bucket = `lb-${randomBytes(4).toString('hex')}`;
await new S3Client({
  endpoint: env.AWS_ENDPOINT_URL_S3,
  region: 'us-east-1',
  forcePathStyle: true,
  credentials: { accessKeyId: 'x', secretAccessKey: 'x' },
}).send(new CreateBucketCommand({ Bucket: bucket }));
const storage = openStorage(`s3://${bucket}/bench`, env);
const sets = 2000;
const manifest = (id: string) => JSON.stringify(testManifest({ id, set: 'big' }));
const ids = Array.from({ length: sets }, (_, i) => baseBackupId(new Date(start + i * 3_600_000), 'full'));
await forEachLimit(ids, 32, async (id) => {
  await storage.putBytes(`big/${id}/files.tar.zst`, Buffer.from('x'));
  await storage.putBytes(`big/${id}/manifest.json`, Buffer.from(manifest(id)));
});
counting = true;
const t = performance.now();
const report = await prune({
  storage,
  sets: ['big'],
  policy: {
    ...policy,
    last: 100,
    hourly: undefined,
    daily: undefined,
    weekly: undefined,
    monthly: undefined,
    yearly: undefined,
    withinSeconds: undefined,
    tags: [],
    maxTotalBytes: undefined,
  },
  dryRun: false,
  logger: silentLogger,
  now: () => now,
});
const seconds = (performance.now() - t) / 1000;
counting = false;
const deleted = report.sets[0]!.deletedBackups.length;
console.log(
  `pruned ${deleted} of ${sets} backups (${2 * sets} objects) in ${seconds.toFixed(2)} s; requests the server received:`,
);
for (const [kind, n] of [...calls].sort())
  console.log(`  ${kind}: ${n} (${((n / sets) * 1000).toFixed(1)} per 1000 backups)`);
await app.close();

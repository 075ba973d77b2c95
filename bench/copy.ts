/**
 * copy throughput and memory between every pair of storages, with rclone copying the same
 * object where it can reach both ends.
 *
 *   bash scripts/dev.sh build && node --openssl-legacy-provider bench/copy.ts [MiB]
 *
 * One backup of one incompressible file (default 256 MiB, `--compression none`) goes into a
 * folder, then `lifeboat copy` (the built CLI, a child process) copies it from the folder to
 * each server (a folder, s3rver, fauxqs, Azurite, the GCS emulator, Ceph radosgw when
 * installed; all on 127.0.0.1, the target's variables as LIFEBOAT_TO_*), and from each server
 * to every other; each copy is deleted once measured, and Ceph is started afresh for each
 * partner (its OSD holds 1 GiB, and radosgw frees deleted objects only hours later). Prints
 * MiB/s of the whole command (listing, marker, re-hash, manifest) and its peak RSS.
 */
import { spawnSync } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { Catalog } from '../shared/catalog/catalog.ts';
import { openStorage } from '../shared/storage/open.ts';
import { generated } from '../test/harness/data.ts';
import { type Measured, measure } from '../test/harness/measure.ts';
import {
  cephInstalled,
  startCeph,
  storageServers,
  type TestServer,
  tempDir,
} from '../test/harness/servers.ts';

const mib = Number(process.argv[2] ?? 256);
const bytes = mib * 1024 ** 2;
const rows: string[][] = [['from', 'to', 'tool', 'MiB/s', 'peak RSS MiB']];
const row = (from: string, to: string, tool: string, run: Measured) => {
  if (run.code !== 0) throw new Error(`${tool} ${from} → ${to} failed: ${run.stderr.slice(-600)}`);
  rows.push([
    from,
    to,
    tool,
    (mib / run.seconds).toFixed(0),
    tool === 'lifeboat' ? (run.peakRssBytes / 1024 ** 2).toFixed(0) : '',
  ]);
};
const url = (server: TestServer, sub: string) =>
  server.name === 'fs' ? path.join(server.url, sub) : `${server.url}-${sub}`;
const asTarget = (env: Record<string, string>) =>
  Object.fromEntries(Object.entries(env).map(([k, v]) => [`LIFEBOAT_TO_${k}`, v]));

/** An rclone remote (from variables, no config file) for the S3 servers and folders. */
function rclone(
  name: string,
  server: TestServer,
  sub: string,
): { remote: string; env: Record<string, string> } | undefined {
  if (server.name === 'fs') return { remote: url(server, sub), env: {} };
  if (!server.env.AWS_ENDPOINT_URL_S3) return undefined; // rclone 1.60 reaches neither Azurite on its port nor the GCS emulator
  const [bucket, prefix] = url(server, sub)
    .slice('s3://'.length)
    .split(/\/(.*)/s);
  const v = `RCLONE_CONFIG_${name.toUpperCase()}_`;
  return {
    remote: `${name}:${bucket}/${prefix}`,
    env: {
      [`${v}TYPE`]: 's3',
      [`${v}PROVIDER`]: 'Other',
      [`${v}ENDPOINT`]: server.env.AWS_ENDPOINT_URL_S3,
      [`${v}ACCESS_KEY_ID`]: server.env.AWS_ACCESS_KEY_ID!,
      [`${v}SECRET_ACCESS_KEY`]: server.env.AWS_SECRET_ACCESS_KEY!,
      [`${v}FORCE_PATH_STYLE`]: 'true',
      RCLONE_S3_CHUNK_SIZE: '8M',
      RCLONE_S3_UPLOAD_CONCURRENCY: '4',
    },
  };
}

async function removeCopy(server: TestServer, sub: string): Promise<void> {
  const catalog = new Catalog(openStorage(url(server, sub), server.env));
  await catalog.deleteBackups(await catalog.listBackups('bench'));
}

const work = await tempDir('bench-copy');
const servers: TestServer[] = [];
try {
  const source = path.join(work, 'source');
  await fs.mkdir(source);
  await pipeline(generated(bytes, 7), createWriteStream(path.join(source, 'data.bin')));
  const origin = path.join(work, 'origin');
  const made = await measure(
    [
      'backup-files',
      '--storage',
      origin,
      '--set',
      'bench',
      '--source',
      source,
      '--compression',
      'none',
      '--json',
    ],
    {},
  );
  if (made.code !== 0) throw new Error(made.stderr);
  const { id, artifacts } = JSON.parse(made.stdout).result;
  const artifact = artifacts[0].name;
  console.error(`data: ${mib} MiB incompressible, one backup in ${origin}`);
  const hasRclone = spawnSync('sh', ['-c', 'command -v rclone']).status === 0;
  const copy = (from: string, to: string, env: Record<string, string>) =>
    measure(['copy', '--storage', from, '--to-storage', to, '--set', 'bench'], env);

  /** lifeboat copy, then rclone copyto of the same object where it reaches both; each deleted after. */
  async function pair(from: TestServer, to: TestServer): Promise<void> {
    console.error(`${from.name} → ${to.name}…`);
    const run = await copy(url(from, 'hub'), url(to, 'copy'), { ...from.env, ...asTarget(to.env) });
    row(from.name, to.name, 'lifeboat', run);
    await removeCopy(to, 'copy');
    const a = hasRclone ? rclone('src', from, 'hub') : undefined;
    const b = hasRclone ? rclone('dst', to, 'peer') : undefined;
    if (!a || !b) return;
    const key = `bench/${id}/${artifact}`;
    const peer = await measure(
      ['copyto', `${a.remote}/${key}`, `${b.remote}/${key}`],
      { ...a.env, ...b.env, HOME: work },
      { command: 'rclone' },
    );
    if (peer.code === 0) row(from.name, to.name, 'rclone', peer);
    else console.error(`rclone ${from.name} → ${to.name} failed: ${peer.stderr.trim().split('\n').at(-1)}`);
    await removeCopy(to, 'peer');
    if (to.name === 'fs') await fs.rm(url(to, 'peer'), { recursive: true, force: true });
  }
  const seed = async (server: TestServer) => {
    const run = await copy(origin, url(server, 'hub'), asTarget(server.env));
    if (run.code !== 0) throw new Error(`seeding ${server.name}: ${run.stderr.slice(-600)}`);
  };

  for (const [, start] of storageServers) servers.push(await start());
  for (const server of servers) await seed(server);
  for (const from of servers) for (const to of servers) if (from !== to) await pair(from, to);
  // Ceph's OSD holds 1 GiB and radosgw frees deleted objects hours later: a fresh one per partner.
  for (const other of cephInstalled ? servers : []) {
    const ceph = await startCeph();
    try {
      await seed(ceph);
      await pair(other, ceph);
      await pair(ceph, other);
    } finally {
      await ceph.stop();
    }
  }
} finally {
  for (const server of servers) await server.stop();
  await fs.rm(work, { recursive: true, force: true });
}

const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
for (const [i, r] of rows.entries()) {
  console.log(`| ${r.map((c, j) => c.padEnd(widths[j]!)).join(' | ')} |`);
  if (i === 0) console.log(`| ${widths.map((w) => '-'.repeat(w)).join(' | ')} |`);
}

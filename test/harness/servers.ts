/**
 * Real storage servers for the tests, each started on 127.0.0.1 with port 0 and stopped by
 * the test that started it. Each returns the environment a Lifeboat process needs to use it
 * (the standard variables, as a user would set them) and a storage URL.
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import fs from 'node:fs/promises';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import type { S3Client } from '@aws-sdk/client-s3';
import { freePort } from '../../shared/mysql/ephemeral.ts';

const require = createRequire(import.meta.url);

export interface TestServer {
  name: string;
  /** The storage URL for a fresh bucket/container on this server. */
  url: string;
  /** Variables that point Lifeboat (and its SDKs) at the server. */
  env: Record<string, string>;
  /** Whether the server enforces create-only writes (If-None-Match / generation 0). */
  enforcesIfAbsent: boolean;
  /** Whether a write to a bucket that does not exist fails (the GCS emulator creates it). */
  refusesWritesToMissingBucket: boolean;
  /** Whether delimiter listings roll deeper keys into folders (s3rver only does one level). */
  listsNestedFolders: boolean;
  stop(): Promise<void>;
}

export async function tempDir(label: string): Promise<string> {
  return fs.mkdtemp(path.join(os.tmpdir(), `lifeboat-${label}-`));
}

const bucketName = () => `lb-${randomBytes(4).toString('hex')}`;

/** Variables that keep the AWS SDK away from this machine's own configuration. */
function isolatedAws(endpoint: string, key: string, secret: string): Record<string, string> {
  return {
    AWS_ENDPOINT_URL_S3: endpoint,
    AWS_REGION: 'us-east-1',
    AWS_ACCESS_KEY_ID: key,
    AWS_SECRET_ACCESS_KEY: secret,
    AWS_CONFIG_FILE: '/nonexistent',
    AWS_SHARED_CREDENTIALS_FILE: '/nonexistent',
    AWS_EC2_METADATA_DISABLED: 'true',
    AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true',
  };
}

/** An SDK client for a test S3 server (its environment), sending checksums only where required. */
export async function s3ClientOf(env: Record<string, string>): Promise<S3Client> {
  const { S3Client } = await import('@aws-sdk/client-s3');
  return new S3Client({
    endpoint: env.AWS_ENDPOINT_URL_S3,
    region: 'us-east-1',
    forcePathStyle: true,
    credentials: { accessKeyId: env.AWS_ACCESS_KEY_ID!, secretAccessKey: env.AWS_SECRET_ACCESS_KEY! },
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
  });
}

async function createBucket(
  env: Record<string, string>,
  bucket: string,
  options: { objectLock?: boolean } = {},
): Promise<void> {
  const { CreateBucketCommand } = await import('@aws-sdk/client-s3');
  const client = await s3ClientOf(env);
  await client.send(
    new CreateBucketCommand({ Bucket: bucket, ObjectLockEnabledForBucket: options.objectLock || undefined }),
  );
  client.destroy();
}

/**
 * A fresh bucket on an S3 server (`s3://<bucket>/backups`); with `objectLock`, created with
 * Object Lock enabled (and so versioned), as lock-for needs. Only Ceph RGW enforces locks here.
 */
export async function newS3Bucket(
  server: TestServer,
  options: { objectLock?: boolean } = {},
): Promise<string> {
  const bucket = bucketName();
  await createBucket(server.env, bucket, options);
  return `s3://${bucket}/backups`;
}

/** s3rver (files on disk). Its list tokens need --openssl-legacy-provider (the test command sets it). */
export async function startS3rver(): Promise<TestServer> {
  const S3rver = require('s3rver');
  const directory = await tempDir('s3rver');
  const server = new S3rver({ address: '127.0.0.1', port: 0, directory, silent: true });
  const { port } = await server.run();
  const env = isolatedAws(`http://127.0.0.1:${port}`, 'S3RVER', 'S3RVER');
  const bucket = bucketName();
  await createBucket(env, bucket);
  return {
    name: 's3rver',
    url: `s3://${bucket}/backups`,
    env,
    enforcesIfAbsent: false,
    refusesWritesToMissingBucket: true,
    listsNestedFolders: false,
    async stop() {
      await server.close();
      await fs.rm(directory, { recursive: true, force: true });
    },
  };
}

/** fauxqs (in memory), bound to 127.0.0.1 only through its app builder. */
export async function startFauxqs(): Promise<TestServer> {
  const { buildApp } = await import('fauxqs');
  const app = buildApp({ logger: false });
  await app.listen({ port: 0, host: '127.0.0.1' });
  const { port } = app.server.address() as { port: number };
  const env = isolatedAws(`http://127.0.0.1:${port}`, 'test', 'test');
  const bucket = bucketName();
  await createBucket(env, bucket);
  return {
    name: 'fauxqs',
    url: `s3://${bucket}/nested/prefix`,
    env,
    enforcesIfAbsent: false,
    refusesWritesToMissingBucket: true,
    listsNestedFolders: true,
    async stop() {
      await app.close();
    },
  };
}

export const azuriteAccount = 'devstoreaccount1';
/** Azurite's published development key (not a secret). */
export const azuriteKey =
  'Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==';

export function azuriteConnectionString(port: number, key = azuriteKey): string {
  return `DefaultEndpointsProtocol=http;AccountName=${azuriteAccount};AccountKey=${key};BlobEndpoint=http://127.0.0.1:${port}/${azuriteAccount};`;
}

/** Azurite's blob service, in-process, with its API version check off (the SDK is newer). */
export async function startAzurite(): Promise<TestServer> {
  const BlobServer = require('azurite/dist/src/blob/BlobServer').default;
  const BlobConfiguration = require('azurite/dist/src/blob/BlobConfiguration').default;
  const dir = await tempDir('azurite');
  const config = new BlobConfiguration(
    '127.0.0.1',
    0,
    undefined,
    path.join(dir, 'db.json'),
    path.join(dir, 'extent.json'),
    [{ locationId: 'Default', locationPath: path.join(dir, 'blobs'), maxConcurrency: 10 }],
    false,
    undefined,
    false,
    undefined,
    false,
    true, // skipApiVersionCheck
    '',
    '',
    '',
    undefined,
    false,
    false,
  );
  const server = new BlobServer(config);
  await server.start();
  const port = Number(new URL(server.getHttpServerAddress()).port);
  const env = { AZURE_STORAGE_CONNECTION_STRING: azuriteConnectionString(port) };
  const container = bucketName();
  const { BlobServiceClient } = await import('@azure/storage-blob');
  await BlobServiceClient.fromConnectionString(env.AZURE_STORAGE_CONNECTION_STRING)
    .getContainerClient(container)
    .create();
  return {
    name: 'azurite',
    url: `azblob://${container}/backups`,
    env,
    enforcesIfAbsent: true,
    refusesWritesToMissingBucket: true,
    listsNestedFolders: true,
    async stop() {
      await server.close();
      await server.clean();
      await fs.rm(dir, { recursive: true, force: true });
    },
  };
}

/** A local folder: the default provider, for the same contract tests. */
export async function startFolder(): Promise<TestServer> {
  const dir = await tempDir('fs');
  return {
    name: 'fs',
    url: path.join(dir, 'backups'),
    env: {},
    enforcesIfAbsent: true,
    refusesWritesToMissingBucket: true,
    listsNestedFolders: true,
    async stop() {
      await fs.rm(dir, { recursive: true, force: true });
    },
  };
}

/** The GCS emulator (firebase-tools, in-process); Lifeboat finds it through STORAGE_EMULATOR_HOST. */
export async function startGcs(): Promise<TestServer> {
  const { startGcsEmulator, gcsProjectId } = await import('./gcs-emulator.ts');
  const emulator = await startGcsEmulator();
  const bucket = bucketName();
  const response = await fetch(`${emulator.endpoint}/b?project=${gcsProjectId}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ name: bucket }),
  });
  if (!response.ok) throw new Error(`creating bucket ${bucket}: HTTP ${response.status}`);
  return {
    name: 'gcs',
    url: `gs://${bucket}/backups`,
    env: { STORAGE_EMULATOR_HOST: emulator.endpoint, GOOGLE_CLOUD_PROJECT: gcsProjectId },
    enforcesIfAbsent: true,
    refusesWritesToMissingBucket: false,
    listsNestedFolders: true,
    stop: emulator.stop,
  };
}

/** Whether Ceph's radosgw can be started here (Debian: ceph-mon ceph-osd radosgw ceph-common). */
export const cephInstalled = ['ceph-mon', 'ceph-osd', 'radosgw', 'monmaptool'].every((b) =>
  ['/usr/bin', '/usr/sbin', '/bin'].some((dir) => existsSync(path.join(dir, b))),
);

const run = promisify(execFile);

async function until(what: string, seconds: number, probe: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + seconds * 1000;
  while (Date.now() < deadline) {
    if (await probe().catch(() => false)) return;
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`ceph: ${what} not ready after ${seconds} s`);
}

/**
 * Ceph radosgw, a complete S3 implementation (multipart upload listing and abort, Object
 * Lock, If-None-Match): one monitor, one in-memory OSD and the gateway, all on 127.0.0.1,
 * their state in a temporary folder; about 15 s to start. As in ../shared/tools/ceph (see
 * FIELD-NOTES.md for the traps these settings avoid).
 */
export async function startCeph(): Promise<TestServer> {
  const dir = await tempDir('ceph');
  for (const d of ['run', 'log', 'mon.a', 'osd.0', 'rgw']) await fs.mkdir(path.join(dir, d));
  const [monPort, rgwPort] = [await freePort(), await freePort()];
  const fsid = randomUUID();
  const conf = path.join(dir, 'ceph.conf');
  await fs.writeFile(
    conf,
    `[global]
fsid = ${fsid}
mon host = v2:127.0.0.1:${monPort}
public addr = 127.0.0.1
cluster addr = 127.0.0.1
ms bind ipv6 = false
ms mon client mode = crc secure
ms client mode = crc secure
ms bind msgr1 = false
auth cluster required = none
auth service required = none
auth client required = none
run dir = ${dir}/run
admin socket = ${dir}/run/$name.asok
log file = ${dir}/log/$name.log
pid file = ${dir}/run/$name.pid
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
mon max pg per osd = 1000
mon allow pool size one = true
mon warn on pool no redundancy = false
mon allow pool delete = true
mon data avail warn = 2
mon data avail crit = 1
mon warn on insecure global id reclaim allowed = false
osd crush chooseleaf type = 0
[mon]
mon data = ${dir}/mon.$id
mon cluster log file = ${dir}/log/cluster.log
[osd]
osd data = ${dir}/osd.$id
osd objectstore = memstore
memstore device bytes = 1073741824
osd memory target = 536870912
[client.rgw.a]
rgw frontends = beast endpoint=127.0.0.1:${rgwPort}
rgw data = ${dir}/rgw
rgw enable usage log = false
`,
  );
  const children: ChildProcess[] = [];
  const daemon = (command: string, args: string[]) => {
    const child = spawn(command, ['-c', conf, ...args, '-f'], { stdio: 'ignore' });
    children.push(child);
  };
  const stop = async () => {
    for (const child of children.reverse()) {
      if (child.exitCode !== null || child.signalCode !== null) continue;
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      const late = setTimeout(() => child.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(late);
    }
    await fs.rm(dir, { recursive: true, force: true });
  };
  try {
    const monmap = path.join(dir, 'monmap');
    await run('monmaptool', ['--create', '--fsid', fsid, '--addv', 'a', `[v2:127.0.0.1:${monPort}]`, monmap]);
    await run('ceph-mon', ['-c', conf, '--mkfs', '-i', 'a', '--monmap', monmap]);
    daemon('ceph-mon', ['-i', 'a']);
    const ceph = (...args: string[]) => run('ceph', ['-c', conf, '--connect-timeout', '5', ...args]);
    await until('the monitor', 30, async () => {
      await ceph('mon', 'stat');
      return true;
    });
    const uuid = randomUUID();
    const id = (await ceph('osd', 'new', uuid)).stdout.trim();
    await run('ceph-osd', ['-c', conf, '-i', id, '--mkfs', '--osd-uuid', uuid]);
    daemon('ceph-osd', ['-i', id]);
    await until('the OSD', 60, async () => /1 up/.test((await ceph('osd', 'stat')).stdout));
    daemon('radosgw', ['-n', 'client.rgw.a']);
    const endpoint = `http://127.0.0.1:${rgwPort}`;
    await until('radosgw', 90, async () => (await fetch(endpoint)).status > 0);
    await run('radosgw-admin', [
      '-c',
      conf,
      'user',
      'create',
      '--uid=lifeboat',
      '--display-name=lifeboat',
      '--access-key=LBACCESS',
      '--secret-key=LBSECRET',
    ]);
    const env = isolatedAws(endpoint, 'LBACCESS', 'LBSECRET');
    const bucket = bucketName();
    await until('bucket creation', 30, async () => {
      await createBucket(env, bucket);
      return true;
    });
    return {
      name: 'ceph',
      url: `s3://${bucket}/backups`,
      env,
      enforcesIfAbsent: true,
      refusesWritesToMissingBucket: true,
      listsNestedFolders: true,
      stop,
    };
  } catch (error) {
    await stop();
    throw error;
  }
}

/** Every storage the contract runs against, in the order tests and benchmarks report them. */
export const storageServers: [string, () => Promise<TestServer>][] = [
  ['fs', startFolder],
  ['s3rver', startS3rver],
  ['fauxqs', startFauxqs],
  ['azurite', startAzurite],
  ['gcs', startGcs],
];

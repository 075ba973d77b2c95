/**
 * Real storage servers for the tests, each started on 127.0.0.1 with port 0 and stopped by
 * the test that started it. Each returns the environment a Lifeboat process needs to use it
 * (the standard variables, as a user would set them) and a storage URL.
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';

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

async function createBucket(env: Record<string, string>, bucket: string): Promise<void> {
  const { S3Client, CreateBucketCommand } = await import('@aws-sdk/client-s3');
  const client = new S3Client({
    endpoint: env.AWS_ENDPOINT_URL_S3,
    region: 'us-east-1',
    forcePathStyle: true,
    credentials: { accessKeyId: env.AWS_ACCESS_KEY_ID!, secretAccessKey: env.AWS_SECRET_ACCESS_KEY! },
  });
  await client.send(new CreateBucketCommand({ Bucket: bucket }));
  client.destroy();
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

/** Every storage the contract runs against, in the order tests and benchmarks report them. */
export const storageServers: [string, () => Promise<TestServer>][] = [
  ['fs', startFolder],
  ['s3rver', startS3rver],
  ['fauxqs', startFauxqs],
  ['azurite', startAzurite],
  ['gcs', startGcs],
];

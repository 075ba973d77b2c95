import type { Readable } from 'node:stream';
import { DefaultAzureCredential } from '@azure/identity';
import { BlobServiceClient, type ContainerClient, StorageSharedKeyCredential } from '@azure/storage-blob';
import { type PartPlan, uploadInParts } from './parts.ts';
import { type DeleteResult, joinKey, type ObjectInfo, type Storage, StorageError } from './storage.ts';

const MiB = 1024 * 1024;
const maxBlocks = 50_000;
const blockPlan: PartPlan = {
  partSizeFor: (n) => 4 * MiB * 2 ** Math.min(4, Math.floor((n - 1) / 10_000)),
  maxParts: maxBlocks,
  tooLarge: `the artifact is larger than Azure's ${maxBlocks}-block limit allows (about 1.2 TiB)`,
};

/** The blob service client, from the standard Azure variables. */
function serviceClient(url: string, env: NodeJS.ProcessEnv): BlobServiceClient {
  if (env.AZURE_STORAGE_CONNECTION_STRING) {
    try {
      return BlobServiceClient.fromConnectionString(env.AZURE_STORAGE_CONNECTION_STRING);
    } catch (error) {
      throw new StorageError(
        'credentials',
        `storage ${url}: AZURE_STORAGE_CONNECTION_STRING is not a valid connection string`,
        { cause: error },
      );
    }
  }
  const account = env.AZURE_STORAGE_ACCOUNT;
  if (!account) {
    throw new StorageError(
      'credentials',
      `storage ${url}: no Azure credentials found; set AZURE_STORAGE_CONNECTION_STRING, or AZURE_STORAGE_ACCOUNT with azure/login (or AZURE_STORAGE_KEY)`,
    );
  }
  const endpoint = env.AZURE_STORAGE_BLOB_ENDPOINT || `https://${account}.blob.core.windows.net`;
  const credential = env.AZURE_STORAGE_KEY
    ? new StorageSharedKeyCredential(account, env.AZURE_STORAGE_KEY)
    : new DefaultAzureCredential();
  return new BlobServiceClient(endpoint, credential);
}

/**
 * Azure Blob Storage. Streams go up as block blobs with parallel blocks (nothing is
 * visible until the block list is committed); `ifAbsent` is an If-None-Match: * condition.
 */
export class AzureStorage implements Storage {
  readonly url: string;
  private readonly prefix: string;
  private readonly containerName: string;
  private readonly env: NodeJS.ProcessEnv;
  private client?: ContainerClient;
  private readonly pageSize: number;

  constructor(url: string, container: string, prefix: string, env = process.env, pageSize = 5000) {
    this.pageSize = pageSize;
    this.url = url;
    this.prefix = prefix;
    this.containerName = container;
    this.env = env;
  }

  private get container(): ContainerClient {
    this.client ??= serviceClient(this.url, this.env).getContainerClient(this.containerName);
    return this.client;
  }

  private key(key: string): string {
    return joinKey(this.prefix, key);
  }

  private fail(error: unknown, what: string): never {
    throw azureError(error, this.url, what, this.containerName);
  }

  async check(): Promise<void> {
    const exists = await this.container
      .exists()
      .catch((error) => this.fail(error, `container ${this.containerName}`));
    if (!exists) this.fail({ statusCode: 404, code: 'ContainerNotFound' }, `container ${this.containerName}`);
  }

  /**
   * Stages blocks from pooled buffers, four at a time, and commits the block list at the
   * end: nothing is visible before. Blocks grow from 4 MiB to 64 MiB every 10,000, so one
   * artifact can reach about 1.2 TiB within Azure's 50,000-block limit (4 MiB, not 8: the
   * Azure pipeline holds more per request than S3's, and 8 MiB blocks came near 200 MB). Blocks of a failed
   * upload are never committed (Azure discards them after a week).
   */
  async putStream(key: string, body: Readable, signal?: AbortSignal): Promise<void> {
    const blob = this.container.getBlockBlobClient(this.key(key));
    const options = { abortSignal: signal };
    try {
      await uploadInParts<string>(
        body,
        {
          async single(data) {
            await blob.upload(data, data.length, options);
          },
          async part(number, data) {
            const id = Buffer.from(`lifeboat-block-${String(number).padStart(6, '0')}`).toString('base64');
            await blob.stageBlock(id, data, data.length, options);
            return id;
          },
          async complete(ids) {
            await blob.commitBlockList(ids, options);
          },
          async abort() {},
        },
        blockPlan,
      );
    } catch (error) {
      if (signal?.aborted || !(error as { statusCode?: unknown }).statusCode) throw error;
      this.fail(error, key);
    }
  }

  async putBytes(key: string, body: Uint8Array, options: { ifAbsent?: boolean } = {}): Promise<void> {
    await this.container
      .getBlockBlobClient(this.key(key))
      .upload(body, body.byteLength, {
        blobHTTPHeaders: key.endsWith('.json') ? { blobContentType: 'application/json' } : undefined,
        conditions: options.ifAbsent ? { ifNoneMatch: '*' } : undefined,
      })
      .catch((error) => this.fail(error, key));
  }

  async get(key: string, signal?: AbortSignal): Promise<Readable> {
    const response = await this.container
      .getBlobClient(this.key(key))
      .download(0, undefined, { abortSignal: signal, maxRetryRequests: 5 })
      .catch((error) => this.fail(error, key));
    return response.readableStreamBody as Readable;
  }

  async head(key: string): Promise<ObjectInfo | undefined> {
    try {
      const props = await this.container.getBlobClient(this.key(key)).getProperties();
      return { key, size: props.contentLength ?? 0, modified: props.lastModified ?? new Date(0) };
    } catch (error) {
      const code = (error as { code?: string }).code;
      if ((error as { statusCode?: number }).statusCode === 404 && code !== 'ContainerNotFound')
        return undefined;
      this.fail(error, key);
    }
  }

  async *list(prefix: string): AsyncIterable<ObjectInfo> {
    const strip = this.prefix ? joinKey(this.prefix, '').length : 0;
    try {
      for await (const page of this.container
        .listBlobsFlat({ prefix: this.key(prefix) })
        .byPage({ maxPageSize: this.pageSize })) {
        for (const blob of page.segment.blobItems) {
          yield {
            key: blob.name.slice(strip),
            size: blob.properties.contentLength ?? 0,
            modified: blob.properties.lastModified,
          };
        }
      }
    } catch (error) {
      this.fail(error, `list ${prefix || '/'}`);
    }
  }

  async listDirs(prefix: string): Promise<string[]> {
    const strip = this.prefix ? joinKey(this.prefix, '').length : 0;
    const dirs: string[] = [];
    try {
      const pages = this.container
        .listBlobsByHierarchy('/', { prefix: this.key(prefix) })
        .byPage({ maxPageSize: this.pageSize });
      for await (const page of pages) {
        for (const p of page.segment.blobPrefixes ?? []) dirs.push(p.name.slice(strip));
      }
    } catch (error) {
      this.fail(error, `list ${prefix || '/'}`);
    }
    return [...new Set(dirs)].sort();
  }

  /** Blob batch requests of up to 256 deletes; a blob that is already gone is fine. */
  async delete(keys: string[]): Promise<DeleteResult> {
    const batch = this.container.getBlobBatchClient();
    const locked: string[] = [];
    for (let i = 0; i < keys.length; i += 256) {
      const chunk = keys.slice(i, i + 256);
      const response = await batch
        .deleteBlobs(chunk.map((k) => this.container.getBlobClient(this.key(k))))
        .catch((error) => this.fail(error, `delete ${chunk.length} blob(s)`));
      response.subResponses.forEach((r, index) => {
        if (/^BlobImmutableDueTo/.test(r.errorCode ?? '')) locked.push(chunk[index]!);
      });
      const failed = response.subResponses.filter(
        (r) =>
          r.status >= 300 && r.errorCode !== 'BlobNotFound' && !/^BlobImmutableDueTo/.test(r.errorCode ?? ''),
      );
      if (failed.length) {
        const first = failed[0]!;
        this.fail(
          { statusCode: first.status, code: first.errorCode, message: first.statusMessage },
          `delete ${failed.length} blob(s)`,
        );
      }
    }
    return { locked };
  }
}

export function azureError(error: unknown, url: string, what: string, container: string): StorageError {
  if (error instanceof StorageError) return error;
  const status = (error as { statusCode?: number }).statusCode;
  const code = (error as { code?: string }).code ?? '';
  const detail = (error as Error).message ?? String(error);
  const where = `storage ${url}`;
  if (
    (error as Error).name === 'CredentialUnavailableError' ||
    /CredentialUnavailable|ChainedTokenCredential/.test(detail)
  ) {
    return new StorageError(
      'credentials',
      `${where}: no Azure credentials available; use azure/login, or set AZURE_STORAGE_CONNECTION_STRING`,
      { cause: error },
    );
  }
  if (code === 'ContainerNotFound') {
    return new StorageError(
      'no-bucket',
      `${where}: the container '${container}' does not exist; create it first or fix the storage input`,
      { cause: error },
    );
  }
  if (status === 404)
    return new StorageError('not-found', `${where}: '${what}' does not exist`, { cause: error });
  if (code === 'BlobAlreadyExists' || status === 409 || status === 412) {
    return new StorageError('exists', `${where}: '${what}' already exists`, { cause: error });
  }
  if (code === 'AuthenticationFailed' || code === 'AuthorizationFailure' || status === 401) {
    return new StorageError(
      'credentials',
      `${where}: the Azure credentials were rejected or lack permission (${code || status}); check the account key or token, and that the identity has Storage Blob Data Contributor on the container`,
      { cause: error },
    );
  }
  if (status === 403) {
    return new StorageError(
      'denied',
      `${where}: access denied for ${what}; the minimal role is Storage Blob Data Contributor on the container`,
      { cause: error },
    );
  }
  if (/^(ECONNREFUSED|ENOTFOUND|EAI_AGAIN|ECONNRESET|ETIMEDOUT|REQUEST_SEND_ERROR)$/.test(code)) {
    return new StorageError(
      'unreachable',
      `${where}: cannot reach Azure Blob Storage (${code}); check the endpoint and the network`,
      { cause: error },
    );
  }
  return new StorageError(
    'invalid',
    `${where}: ${what} failed${status ? ` (HTTP ${status} ${code})` : ''}: ${detail}`,
    { cause: error },
  );
}

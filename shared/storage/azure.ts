import type { Agent } from 'node:http';
import type { Readable } from 'node:stream';
import { DefaultAzureCredential } from '@azure/identity';
import {
  BlobServiceClient,
  type ContainerClient,
  newPipeline,
  type RequestPolicyFactory,
  StorageSharedKeyCredential,
} from '@azure/storage-blob';
import {
  defaultIdleTimeoutMs,
  idleAgents,
  isStalled,
  proxyConfigured,
  stallOf,
  translatingErrors,
} from './idle.ts';
import type { StorageTuning } from './open.ts';
import { type PartPlan, SinkFailure, uploadInParts } from './parts.ts';
import { brokenDownload, changedWhileRead, downloadRanges, rangedDownload, totalOf } from './ranged.ts';
import {
  type DeleteResult,
  type GetOptions,
  type IncompleteUpload,
  joinKey,
  type ObjectInfo,
  type PutBytesOptions,
  type PutOptions,
  type Storage,
  StorageError,
  StorageWithoutLocks,
} from './storage.ts';

const MiB = 1024 * 1024;
const maxBlocks = 50_000;
const blockPlan: PartPlan = {
  partSizeFor: (n) => 4 * MiB * 2 ** Math.min(4, Math.floor((n - 1) / 10_000)),
  maxParts: maxBlocks,
  tooLarge: `the artifact is larger than Azure's ${maxBlocks}-block limit allows (about 1.2 TiB)`,
};

/**
 * Retries: four tries, 1 s then 3 s apart (the SDK's default waits 4 s, then 12 s, so an
 * unreachable endpoint took 16 s to report); `timeout=` asks the service to give up on one
 * try after 60 s.
 */
const retryOptions = { maxTries: 4, retryDelayInMs: 1000, maxRetryDelayInMs: 8000, tryTimeoutInMs: 60_000 };

/** A request policy that sends every request through `agent` (connections with a no-progress timeout). */
function agentPolicy(agents: { http: Agent; https: Agent }): RequestPolicyFactory {
  return {
    create: (next) => ({
      sendRequest(request) {
        request.agent ??= request.url.startsWith('https:') ? agents.https : agents.http;
        return next.sendRequest(request);
      },
    }),
  };
}

/** The blob service client, from the standard Azure variables. */
function serviceClient(url: string, env: NodeJS.ProcessEnv, idleMs: number): BlobServiceClient {
  const withTimeouts = (endpoint: string, credential: BlobServiceClient['credential']) => {
    const pipeline = newPipeline(credential, { retryOptions });
    // Behind a proxy the SDK's proxy agent is kept (and with it the server-side timeout only).
    if (!proxyConfigured(env)) pipeline.factories.unshift(agentPolicy(idleAgents(idleMs)));
    return new BlobServiceClient(endpoint, pipeline);
  };
  if (env.AZURE_STORAGE_CONNECTION_STRING) {
    let parsed: BlobServiceClient;
    try {
      parsed = BlobServiceClient.fromConnectionString(env.AZURE_STORAGE_CONNECTION_STRING);
    } catch (error) {
      throw new StorageError(
        'credentials',
        `storage ${url}: AZURE_STORAGE_CONNECTION_STRING is not a valid connection string`,
        { cause: error },
      );
    }
    return withTimeouts(parsed.url, parsed.credential);
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
  return withTimeouts(endpoint, credential);
}

/**
 * Azure Blob Storage. Streams go up as block blobs with parallel blocks (nothing is
 * visible until the block list is committed); `ifAbsent` is an If-None-Match: * condition.
 */
export class AzureStorage extends StorageWithoutLocks implements Storage {
  readonly url: string;
  /** Not built here in this version: Azurite answers 501 to immutability policies and legal holds and silently drops upload parameters asking for them, so no test could prove it. */
  protected readonly lockless = {
    provider: 'Azure Blob Storage',
    instead:
      'set a time-based immutability policy on the container (az storage container immutability-policy create), which locks every blob written there',
  };
  private readonly prefix: string;
  private readonly containerName: string;
  private readonly env: NodeJS.ProcessEnv;
  private client?: ContainerClient;
  private readonly pageSize: number;
  private readonly idleMs: number;
  private readonly ranges: ReturnType<typeof downloadRanges>;

  constructor(url: string, container: string, prefix: string, env = process.env, tuning: StorageTuning = {}) {
    super();
    this.pageSize = tuning.pageSize ?? 5000;
    this.idleMs = tuning.idleTimeoutMs ?? defaultIdleTimeoutMs;
    this.ranges = downloadRanges(tuning);
    this.url = url;
    this.prefix = prefix;
    this.containerName = container;
    this.env = env;
  }

  private get container(): ContainerClient {
    this.client ??= serviceClient(this.url, this.env, this.idleMs).getContainerClient(this.containerName);
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
  async putStream(key: string, body: Readable, signal?: AbortSignal, put: PutOptions = {}): Promise<void> {
    this.refuseLock(put.lock);
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
      if (signal?.aborted) throw signal.reason ?? error;
      if (!(error instanceof SinkFailure)) throw error; // the source failed, not Azure
      const translated = azureError(error.cause, this.url, key, this.containerName);
      body.destroy(translated);
      throw translated;
    }
  }

  async putBytes(key: string, body: Uint8Array, options: PutBytesOptions = {}): Promise<void> {
    this.refuseLock(options.lock);
    await this.container
      .getBlockBlobClient(this.key(key))
      .upload(body, body.byteLength, {
        blobHTTPHeaders: key.endsWith('.json') ? { blobContentType: 'application/json' } : undefined,
        conditions: options.ifAbsent ? { ifNoneMatch: '*' } : undefined,
      })
      .catch((error) => this.fail(error, key));
  }

  async get(key: string, signal?: AbortSignal, options?: GetOptions): Promise<Readable> {
    const blob = this.container.getBlobClient(this.key(key));
    return rangedDownload(
      async ({ start, end, version }, abortSignal) => {
        const count = end === undefined ? undefined : end - start + 1;
        const response = await blob
          .download(start, count, { abortSignal, maxRetryRequests: 5, conditions: { ifMatch: version } })
          .catch((error) => {
            if ((error as { statusCode?: number }).statusCode === 412)
              throw changedWhileRead(this.url, key, error);
            this.fail(error, key);
          });
        const body = response.readableStreamBody as Readable;
        // The SDK reports a connection dropped half-way as a bare abort of its source stream.
        const named = translatingErrors(
          body,
          (e) => (stallOf((body as { source?: unknown }).source) ?? e) as Error,
        );
        return {
          body: named,
          size: count === undefined ? response.contentLength : totalOf(response.contentRange),
          version: response.etag,
        };
      },
      {
        ...this.ranges,
        signal,
        expectedBytes: options?.expectedBytes,
        broken: (e) => brokenDownload(e, this.url, key),
      },
    );
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

  /**
   * Blocks that were staged and never committed cannot be listed without a blob and are not
   * billed for long: Azure discards them 7 days after staging. Nothing to list.
   */
  async listIncomplete(): Promise<IncompleteUpload[]> {
    return [];
  }

  async removeIncomplete(): Promise<void> {}
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
  if (isStalled(error)) {
    return new StorageError(
      'timeout',
      `${where}: ${what}: Azure Blob Storage stopped answering (${detail}), also on every retry; check the network and the endpoint, then retry`,
      { cause: error },
    );
  }
  if (/^(ECONNREFUSED|ENOTFOUND|EAI_AGAIN|ECONNRESET|ETIMEDOUT|EPIPE|REQUEST_SEND_ERROR)$/.test(code)) {
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

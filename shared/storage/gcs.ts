import { EventEmitter } from 'node:events';
import { PassThrough, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import {
  Storage as GcsClient,
  IdempotencyStrategy,
  RETRYABLE_ERR_FN_DEFAULT,
  type StorageOptions,
} from '@google-cloud/storage';
import * as teenyAgents from 'teeny-request/build/src/agents.js';
import { defaultIdleTimeoutMs, idleAgents, isStalled, proxyConfigured, stallOf } from './idle.ts';
import type { StorageTuning } from './open.ts';
import { brokenDownload, changedWhileRead, downloadRanges, rangedDownload } from './ranged.ts';
import {
  type DeleteResult,
  forEachLimit,
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

// teeny-request (the SDK's HTTP layer) pipes every streamed response with 11 listeners on one
// stream, one over Node's default: each ranged GET would print a "memory leak" warning.
EventEmitter.defaultMaxListeners = Math.max(EventEmitter.defaultMaxListeners, 16);

/**
 * The JSON API requests (metadata, list, delete, small uploads, downloads) go through
 * teeny-request, whose `timeout` option node-fetch 3 ignores: no request ever timed out. It
 * takes its keep-alive agents from a pool of its own, keyed by protocol; putting agents with
 * the no-progress timeout there gives those requests one (for the whole process: the last
 * storage opened sets it).
 */
function useIdleAgentsForJsonApi(agents: ReturnType<typeof idleAgents>): void {
  const pool = (teenyAgents as { pool?: unknown }).pool;
  if (!(pool instanceof Map)) return;
  pool.set('http:forever', agents.http);
  pool.set('https:forever', agents.https);
}

/** Whether an error is of the data request of a resumable upload (`upload_id=` in its URL). */
function isStreamedUpload(error: unknown): boolean {
  const url = (error as { config?: { url?: unknown } } | undefined)?.config?.url;
  return /[?&]upload_id=/.test(String(url ?? ''));
}

/** Connection failures that no retry within seconds will cure: the endpoint is not there. */
const unreachableCodes = /^(ECONNREFUSED|ENOTFOUND|EHOSTUNREACH|ENETUNREACH)$/;

/**
 * Google Cloud Storage. Credentials come from Application Default Credentials (what
 * google-github-actions/auth sets up); `STORAGE_EMULATOR_HOST` points it at an emulator.
 * Streams go up as one resumable upload each, checked against the MD5 that GCS computes
 * (hashed natively: the client's crc32c is JavaScript and cost 25 MB and 15% speed);
 * `ifAbsent` is a generation-0 precondition. Requests time out after 30 s without progress
 * and are retried (up to four times, at most 8 s apart); `check` tries once first, so an
 * unreachable endpoint is reported at once, not after half a minute of retries. A streamed
 * upload is one request and cannot be retried: a stalled one fails (a StorageError) after
 * the same 30 s, its resumable session left to expire (GCS drops it after a week).
 */
export class GcsStorage extends StorageWithoutLocks implements Storage {
  readonly url: string;
  /** Not built here in this version: its emulator here keeps no object holds or retention (it drops them silently) and answers 501 to a bucket retention policy, so no test could prove it. */
  protected readonly lockless = {
    provider: 'Google Cloud Storage',
    instead:
      'set a retention policy on the bucket (gcloud storage buckets update --retention-period), which locks every object written there',
  };
  private readonly prefix: string;
  private readonly bucketName: string;
  private readonly bucket: ReturnType<GcsClient['bucket']>;
  /** The same bucket through a client that does not retry, for `check`. */
  private readonly probe: ReturnType<GcsClient['bucket']>;
  private readonly pageSize: number;
  private readonly ranges: ReturnType<typeof downloadRanges>;

  constructor(url: string, bucket: string, prefix: string, env = process.env, tuning: StorageTuning = {}) {
    super();
    this.pageSize = tuning.pageSize ?? 1000;
    // One stream, resumed from the byte reached when it breaks: the SDK's HTTP layer costs a
    // metadata request and a stream pipeline per GET, and the emulator here reads the whole
    // object for every range (12 MiB/s in parallel ranges against 158 MiB/s in one).
    this.ranges = downloadRanges(tuning, 1);
    this.url = url;
    this.prefix = prefix;
    this.bucketName = bucket;
    const idleMs = tuning.idleTimeoutMs ?? defaultIdleTimeoutMs;
    const options: StorageOptions = {
      retryOptions: {
        autoRetry: true,
        maxRetries: 4,
        retryDelayMultiplier: 2,
        maxRetryDelay: 8,
        totalTimeout: 300,
        // Lifeboat's writes are safe to repeat (the same bytes to the same name; create-only
        // ones carry their precondition). With the default (RetryConditional) one save without
        // a precondition turned retries off for every later request of the client.
        idempotencyStrategy: IdempotencyStrategy.RetryAlways,
        // A connection dropped for making no progress is worth another try, like a reset.
        // Not the streamed upload (one request, its bytes not kept): a retry cannot resend them.
        retryableErrorFn: (error) =>
          !isStreamedUpload(error) && (RETRYABLE_ERR_FN_DEFAULT(error) || isStalled(error)),
      },
    };
    const emulator = env.STORAGE_EMULATOR_HOST;
    if (emulator) {
      options.apiEndpoint = /^https?:\/\//.test(emulator) ? emulator : `http://${emulator}`;
      options.projectId = env.GOOGLE_CLOUD_PROJECT || 'lifeboat-emulator';
    }
    const client = new GcsClient(options);
    // Resumable uploads go through another HTTP stack (gaxios), with no timeout of their own:
    // their connections get the no-progress timeout from the agent.
    const agents = idleAgents(idleMs);
    useIdleAgentsForJsonApi(agents);
    const agent = options.apiEndpoint?.startsWith('http:') ? agents.http : agents.https;
    // Behind a proxy gaxios makes its own proxy agent, which ours would replace.
    if (!proxyConfigured(env))
      client.interceptors.push({
        request: (reqOpts) => {
          (reqOpts as { agent?: unknown }).agent ??= agent;
          return reqOpts as Parameters<NonNullable<GcsClient['interceptors'][number]['request']>>[0] &
            ReturnType<NonNullable<GcsClient['interceptors'][number]['request']>>;
        },
      });
    this.bucket = client.bucket(bucket);
    this.probe = new GcsClient({ ...options, retryOptions: { autoRetry: false } }).bucket(bucket);
  }

  private key(key: string): string {
    return joinKey(this.prefix, key);
  }

  private fail(error: unknown, what: string): never {
    throw gcsError(error, this.url, what, this.bucketName);
  }

  async check(): Promise<void> {
    const what = `bucket ${this.bucketName}`;
    // One try first: an endpoint that refuses connections or does not resolve is reported at
    // once (the client would retry it for half a minute); other failures get the retries.
    const [exists] = await this.probe
      .exists()
      .catch((error) => {
        if (unreachableCodes.test(String((error as { code?: unknown }).code))) this.fail(error, what);
        return this.bucket.exists();
      })
      .catch((error) => this.fail(error, what));
    if (!exists) this.fail({ code: 404, message: 'bucket not found' }, `bucket ${this.bucketName}`);
  }

  async putStream(key: string, body: Readable, signal?: AbortSignal, put: PutOptions = {}): Promise<void> {
    this.refuseLock(put.lock);
    const target = this.bucket.file(this.key(key)).createWriteStream({ resumable: true, validation: 'md5' });
    let uploadError: unknown;
    target.once('error', (error) => {
      uploadError = error;
    });
    try {
      await pipeline(body.iterator({ destroyOnReturn: false }), target, { signal });
    } catch (error) {
      if (signal?.aborted) throw signal.reason ?? error;
      if (error !== uploadError) throw error; // the source failed, not GCS
      const translated = gcsError(error, this.url, key, this.bucketName);
      body.destroy(translated);
      throw translated;
    }
  }

  async putBytes(key: string, body: Uint8Array, options: PutBytesOptions = {}): Promise<void> {
    this.refuseLock(options.lock);
    await this.bucket
      .file(this.key(key))
      .save(Buffer.from(body.buffer, body.byteOffset, body.byteLength), {
        resumable: false,
        contentType: key.endsWith('.json') ? 'application/json' : undefined,
        preconditionOpts: options.ifAbsent ? { ifGenerationMatch: 0 } : undefined,
      })
      .catch((error) => this.fail(error, key));
  }

  async get(key: string, signal?: AbortSignal, options?: GetOptions): Promise<Readable> {
    const name = this.key(key);
    const [meta] = await this.bucket
      .file(name)
      .getMetadata()
      .catch((error) => this.fail(error, key));
    const generation = meta.generation === undefined ? undefined : String(meta.generation);
    return rangedDownload(
      async ({ start, end, version }) => {
        // Every range from the generation the metadata named: a replaced object is not spliced.
        const file = this.bucket.file(name, version === undefined ? {} : { generation: version });
        const body = file.createReadStream({ validation: false, start, end });
        const named = stoppableAfterResponse(body, (e) =>
          version !== undefined && (e as { code?: number }).code === 404
            ? changedWhileRead(this.url, key, e)
            : (e as Error),
        );
        return {
          body: named,
          size: Number(meta.size ?? 0),
          version: generation,
        };
      },
      {
        ...this.ranges,
        signal,
        expectedBytes: options?.expectedBytes,
        // The SDK reports its own request timeouts only in words.
        broken: (e) => brokenDownload(e, this.url, key, /timeout/i.test((e as Error)?.message ?? '')),
      },
    );
  }

  async head(key: string): Promise<ObjectInfo | undefined> {
    try {
      const [meta] = await this.bucket.file(this.key(key)).getMetadata();
      return { key, size: Number(meta.size ?? 0), modified: new Date(meta.updated ?? 0) };
    } catch (error) {
      if ((error as { code?: number }).code === 404) return undefined;
      this.fail(error, key);
    }
  }

  async *list(prefix: string): AsyncIterable<ObjectInfo> {
    const strip = this.prefix ? joinKey(this.prefix, '').length : 0;
    let pageToken: string | undefined;
    do {
      const [files, next] = await this.bucket
        .getFiles({ prefix: this.key(prefix), autoPaginate: false, maxResults: this.pageSize, pageToken })
        .catch((error) => this.fail(error, `list ${prefix || '/'}`));
      for (const file of files) {
        yield {
          key: file.name.slice(strip),
          size: Number(file.metadata.size ?? 0),
          modified: new Date(file.metadata.updated ?? 0),
        };
      }
      pageToken = (next as { pageToken?: string } | null)?.pageToken;
    } while (pageToken);
  }

  async listDirs(prefix: string): Promise<string[]> {
    const strip = this.prefix ? joinKey(this.prefix, '').length : 0;
    const dirs: string[] = [];
    let pageToken: string | undefined;
    do {
      const [, next, response] = await this.bucket
        .getFiles({
          prefix: this.key(prefix),
          delimiter: '/',
          autoPaginate: false,
          maxResults: 1000,
          pageToken,
        })
        .catch((error) => this.fail(error, `list ${prefix || '/'}`));
      for (const p of (response as { prefixes?: string[] }).prefixes ?? []) dirs.push(p.slice(strip));
      pageToken = (next as { pageToken?: string } | null)?.pageToken;
    } while (pageToken);
    return [...new Set(dirs)].sort();
  }

  async delete(keys: string[]): Promise<DeleteResult> {
    // The JSON API's batch endpoint is not in the Node client; deletes run 16 at a time.
    const locked: string[] = [];
    await forEachLimit(keys, 16, async (key) => {
      await this.bucket
        .file(this.key(key))
        .delete({ ignoreNotFound: true })
        .catch((error) => {
          // A retention policy or a temporary / event-based hold refuses the delete with 403.
          const message = (error as Error).message ?? '';
          if ((error as { code?: number }).code === 403 && /retention|hold/i.test(message)) locked.push(key);
          else this.fail(error, `delete ${key}`);
        });
    });
    return { locked };
  }

  /**
   * A resumable upload that was never finished leaves no object and no listable trace: GCS
   * drops the session after a week. Nothing to list.
   */
  async listIncomplete(): Promise<IncompleteUpload[]> {
    return [];
  }

  async removeIncomplete(): Promise<void> {}
}

export function gcsError(error: unknown, url: string, what: string, bucket: string): StorageError {
  if (error instanceof StorageError) return error;
  const code = (error as { code?: number | string }).code;
  const detail = (error as Error).message ?? String(error);
  const where = `storage ${url}`;
  if (/Could not load the default credentials|Unable to detect a Project Id/i.test(detail)) {
    return new StorageError(
      'credentials',
      `${where}: no Google Cloud credentials found; use google-github-actions/auth, set GOOGLE_APPLICATION_CREDENTIALS, or STORAGE_EMULATOR_HOST for an emulator`,
      { cause: error },
    );
  }
  if (code === 404 && (/bucket/i.test(what) || /bucket/i.test(detail))) {
    return new StorageError(
      'no-bucket',
      `${where}: the bucket '${bucket}' does not exist; create it first or fix the storage input`,
      { cause: error },
    );
  }
  if (code === 404)
    return new StorageError('not-found', `${where}: '${what}' does not exist`, { cause: error });
  if (code === 412) return new StorageError('exists', `${where}: '${what}' already exists`, { cause: error });
  if (code === 401) {
    return new StorageError(
      'credentials',
      `${where}: the Google Cloud credentials were rejected; check the service account or workload identity`,
      { cause: error },
    );
  }
  if (code === 403) {
    return new StorageError(
      'denied',
      `${where}: access denied for ${what}; the minimal permissions are storage.objects.create, get, list and delete on the bucket (roles/storage.objectUser)`,
      { cause: error },
    );
  }
  if (isStalled(error) || (error as { type?: string }).type === 'request-timeout') {
    return new StorageError(
      'timeout',
      `${where}: ${what}: Google Cloud Storage stopped answering (${detail}); check the network, then retry`,
      { cause: error },
    );
  }
  if (
    typeof code === 'string' &&
    /^(ECONNREFUSED|ENOTFOUND|EAI_AGAIN|ECONNRESET|ETIMEDOUT|EHOSTUNREACH|ENETUNREACH|EPIPE)$/.test(code)
  ) {
    return new StorageError(
      'unreachable',
      `${where}: cannot reach Google Cloud Storage (${code}); check STORAGE_EMULATOR_HOST and the network`,
      { cause: error },
    );
  }
  return new StorageError('invalid', `${where}: ${what} failed${code ? ` (${code})` : ''}: ${detail}`, {
    cause: error,
  });
}

/**
 * The SDK's read stream, with its errors translated, stopped when the returned stream is
 * destroyed: only once its response has come, since the SDK pipes the response into the
 * stream it gave out and fails with an unhandled ERR_STREAM_UNABLE_TO_PIPE if that stream
 * was destroyed first (a download abandoned while its ranges are still being asked).
 */
function stoppableAfterResponse(body: Readable, translate: (error: unknown) => Error): Readable {
  const out = new PassThrough({ highWaterMark: body.readableHighWaterMark });
  let response: unknown;
  body.once('response', (res) => {
    response = res;
  });
  // A stalled connection reaches the stream as a bare "aborted": the response knows why.
  body.on('error', (error) => out.destroy(translate(stallOf(response) ?? error)));
  out.on('close', () => {
    if (body.destroyed || body.readableEnded) return;
    // The SDK starts its pipe right after emitting 'response'.
    if (response) body.destroy();
    else body.once('response', () => setImmediate(() => body.destroy()));
  });
  body.pipe(out);
  return out;
}

import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { Storage as GcsClient, type StorageOptions } from '@google-cloud/storage';
import {
  type DeleteResult,
  forEachLimit,
  joinKey,
  type ObjectInfo,
  type Storage,
  StorageError,
} from './storage.ts';

/**
 * Google Cloud Storage. Credentials come from Application Default Credentials (what
 * google-github-actions/auth sets up); `STORAGE_EMULATOR_HOST` points it at an emulator.
 * Streams go up as one resumable upload each, checked against the MD5 that GCS computes
 * (hashed natively: the client's crc32c is JavaScript and cost 25 MB and 15% speed);
 * `ifAbsent` is a generation-0 precondition.
 */
export class GcsStorage implements Storage {
  readonly url: string;
  private readonly prefix: string;
  private readonly bucketName: string;
  private readonly bucket: ReturnType<GcsClient['bucket']>;
  private readonly pageSize: number;

  constructor(url: string, bucket: string, prefix: string, env = process.env, pageSize = 1000) {
    this.pageSize = pageSize;
    this.url = url;
    this.prefix = prefix;
    this.bucketName = bucket;
    const options: StorageOptions = { retryOptions: { autoRetry: true, maxRetries: 4 } };
    const emulator = env.STORAGE_EMULATOR_HOST;
    if (emulator) {
      options.apiEndpoint = /^https?:\/\//.test(emulator) ? emulator : `http://${emulator}`;
      options.projectId = env.GOOGLE_CLOUD_PROJECT || 'lifeboat-emulator';
    }
    this.bucket = new GcsClient(options).bucket(bucket);
  }

  private key(key: string): string {
    return joinKey(this.prefix, key);
  }

  private fail(error: unknown, what: string): never {
    throw gcsError(error, this.url, what, this.bucketName);
  }

  async check(): Promise<void> {
    const [exists] = await this.bucket
      .exists()
      .catch((error) => this.fail(error, `bucket ${this.bucketName}`));
    if (!exists) this.fail({ code: 404, message: 'bucket not found' }, `bucket ${this.bucketName}`);
  }

  async putStream(key: string, body: Readable, signal?: AbortSignal): Promise<void> {
    const target = this.bucket.file(this.key(key)).createWriteStream({ resumable: true, validation: 'md5' });
    await pipeline(body, target, { signal }).catch((error) => {
      if (signal?.aborted || !(error as { code?: unknown }).code) throw error;
      this.fail(error, key);
    });
  }

  async putBytes(key: string, body: Uint8Array, options: { ifAbsent?: boolean } = {}): Promise<void> {
    await this.bucket
      .file(this.key(key))
      .save(Buffer.from(body.buffer, body.byteOffset, body.byteLength), {
        resumable: false,
        contentType: key.endsWith('.json') ? 'application/json' : undefined,
        preconditionOpts: options.ifAbsent ? { ifGenerationMatch: 0 } : undefined,
      })
      .catch((error) => this.fail(error, key));
  }

  async get(key: string): Promise<Readable> {
    const file = this.bucket.file(this.key(key));
    await file.getMetadata().catch((error) => this.fail(error, key));
    return file.createReadStream({ validation: false });
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
  if (typeof code === 'string' && /^(ECONNREFUSED|ENOTFOUND|EAI_AGAIN|ECONNRESET|ETIMEDOUT)$/.test(code)) {
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

import type { Readable } from 'node:stream';
import {
  AbortMultipartUploadCommand,
  DeleteObjectsCommand,
  GetBucketVersioningCommand,
  GetObjectCommand,
  GetObjectLockConfigurationCommand,
  HeadBucketCommand,
  HeadObjectCommand,
  type HeadObjectCommandOutput,
  ListMultipartUploadsCommand,
  ListObjectsV2Command,
  ListObjectVersionsCommand,
  type ObjectIdentifier,
  PutObjectCommand,
  S3Client,
  type S3ClientConfig,
} from '@aws-sdk/client-s3';
import { fromIni } from '@aws-sdk/credential-provider-ini';
import { fromTokenFile } from '@aws-sdk/credential-provider-web-identity';
import { fromInstanceMetadata } from '@smithy/credential-provider-imds';
import { defaultIdleTimeoutMs, idleAgents, isStalled } from './idle.ts';
import type { StorageTuning } from './open.ts';
import { SinkFailure } from './parts.ts';
import {
  brokenDownload,
  changedWhileRead,
  downloadRanges,
  type RangeResponse,
  rangedDownload,
  totalOf,
} from './ranged.ts';
import { objectLockOf, s3LockFields, uploadToS3 } from './s3-upload.ts';
import {
  type DeleteOptions,
  type DeleteResult,
  type GetOptions,
  type IncompleteUpload,
  joinKey,
  type LockMode,
  type ObjectInfo,
  type ObjectLock,
  type PutBytesOptions,
  type PutOptions,
  type Storage,
  StorageError,
} from './storage.ts';

/** The endpoint for S3-compatible servers, from the standard variables. */
export function s3Endpoint(env = process.env): string | undefined {
  return env.AWS_ENDPOINT_URL_S3 || env.AWS_ENDPOINT_URL || undefined;
}

/**
 * The credentials of a client opened with `env`, taken from `env` and nothing else: static
 * keys (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN); a profile
 * (AWS_PROFILE, from the env's AWS_SHARED_CREDENTIALS_FILE and AWS_CONFIG_FILE); web
 * identity (AWS_ROLE_ARN with AWS_WEB_IDENTITY_TOKEN_FILE, as OIDC sets them). With none of
 * them, `process.env` itself gets the SDK's default chain (which reads process.env, and also
 * SSO, credential_process, container and instance roles); any other environment (a copy's
 * target, see target-env.ts) gets only its default profile and the instance role, so that
 * it never falls through to this process's own variables.
 */
export function s3Credentials(env: NodeJS.ProcessEnv): S3ClientConfig['credentials'] {
  const region = env.AWS_REGION || env.AWS_DEFAULT_REGION || 'us-east-1';
  const files = { filepath: env.AWS_SHARED_CREDENTIALS_FILE, configFilepath: env.AWS_CONFIG_FILE };
  if (env.AWS_ACCESS_KEY_ID && env.AWS_SECRET_ACCESS_KEY) {
    return {
      accessKeyId: env.AWS_ACCESS_KEY_ID,
      secretAccessKey: env.AWS_SECRET_ACCESS_KEY,
      sessionToken: env.AWS_SESSION_TOKEN || undefined,
    };
  }
  if (env.AWS_PROFILE) return fromIni({ profile: env.AWS_PROFILE, ...files, clientConfig: { region } });
  if (env.AWS_ROLE_ARN && env.AWS_WEB_IDENTITY_TOKEN_FILE) {
    return fromTokenFile({
      roleArn: env.AWS_ROLE_ARN,
      webIdentityTokenFile: env.AWS_WEB_IDENTITY_TOKEN_FILE,
      roleSessionName: env.AWS_ROLE_SESSION_NAME || `lifeboat-${Date.now()}`,
      clientConfig: { region },
    });
  }
  if (env === process.env) return undefined;
  const profile = fromIni({ profile: 'default', ...files, clientConfig: { region } });
  const metadataOff = env.AWS_EC2_METADATA_DISABLED && env.AWS_EC2_METADATA_DISABLED !== 'false';
  if (metadataOff) return profile;
  const instance = fromInstanceMetadata();
  return async (options) => {
    try {
      return await profile(options);
    } catch {
      return instance();
    }
  };
}

/**
 * AWS S3 and S3-compatible servers (MinIO, Ceph, R2). Credentials come from the SDK's own
 * chain (environment, profile, web identity / OIDC, instance role). With a custom endpoint
 * the client uses path-style addressing and sends checksums only where an operation
 * requires one: many S3-compatible servers store the SDK's streamed checksum framing
 * inside the object. Every request has a no-progress timeout (30 s: the connection is
 * dropped and the request retried, four attempts in all), so a stalled connection costs
 * seconds; a failed upload aborts its multipart upload, and prune aborts those a killed
 * run left.
 */
export class S3Storage implements Storage {
  readonly url: string;
  private readonly bucket: string;
  private readonly prefix: string;
  private readonly client: S3Client;
  private readonly pageSize: number;
  private readonly ranges: ReturnType<typeof downloadRanges>;
  /** Whether the SDK adds checksums where S3 supports them (real AWS; not custom endpoints). */
  private readonly checksums: boolean;
  /** Whether the bucket keeps versions, asked once (by the first delete of every version). */
  private versioning?: Promise<boolean>;

  constructor(url: string, bucket: string, prefix: string, env = process.env, tuning: StorageTuning = {}) {
    this.pageSize = tuning.pageSize ?? 1000;
    this.ranges = downloadRanges(tuning);
    this.url = url;
    this.bucket = bucket;
    this.prefix = prefix;
    const endpoint = s3Endpoint(env);
    this.checksums = !endpoint;
    const idleMs = tuning.idleTimeoutMs ?? defaultIdleTimeoutMs;
    const agents = idleAgents(idleMs);
    const config: S3ClientConfig = {
      region: env.AWS_REGION || env.AWS_DEFAULT_REGION || 'us-east-1',
      maxAttempts: 4,
      // No-progress timeouts on every connection (see idle.ts); none on the whole request,
      // since a part on a slow link may rightly take minutes.
      requestHandler: {
        connectionTimeout: Math.min(10_000, idleMs),
        httpAgent: agents.http,
        httpsAgent: agents.https,
      },
    };
    // From `env`, so that a storage opened with an explicit environment never reads another.
    const credentials = s3Credentials(env);
    if (credentials) config.credentials = credentials;
    if (endpoint) {
      config.endpoint = endpoint;
      config.forcePathStyle = true;
      config.requestChecksumCalculation = 'WHEN_REQUIRED';
      config.responseChecksumValidation = 'WHEN_REQUIRED';
    }
    this.client = new S3Client(config);
  }

  private key(key: string): string {
    return joinKey(this.prefix, key);
  }

  private fail(error: unknown, what: string): never {
    throw s3Error(error, this.url, what, this.bucket);
  }

  async check(): Promise<void> {
    try {
      await this.client.send(new HeadBucketCommand({ Bucket: this.bucket }));
    } catch (error) {
      this.fail(error, `bucket ${this.bucket}`);
    }
  }

  /**
   * Object Lock must be enabled on the bucket (GetObjectLockConfiguration): S3 refuses lock
   * fields on a bucket without it, some servers silently drop them. Object Lock is set when
   * the bucket is created (or, on AWS, turned on for a versioned bucket).
   */
  async checkLocks(mode: LockMode): Promise<void> {
    const refuse = (why: string, cause?: unknown) =>
      new StorageError(
        'invalid',
        `storage ${this.url}: lock-for (${mode}) needs S3 Object Lock on the bucket '${this.bucket}', ${why}; create the bucket with Object Lock enabled (aws s3api create-bucket --object-lock-enabled-for-bucket), or on AWS turn it on for the versioned bucket (aws s3api put-object-lock-configuration --object-lock-configuration ObjectLockEnabled=Enabled); nothing was written`,
        { cause },
      );
    let enabled: string | undefined;
    try {
      const result = await this.client.send(new GetObjectLockConfigurationCommand({ Bucket: this.bucket }));
      enabled = result.ObjectLockConfiguration?.ObjectLockEnabled;
    } catch (error) {
      const name = errorName(error);
      const code = status(error);
      if (name === 'ObjectLockConfigurationNotFoundError' || (code === 404 && name !== 'NoSuchBucket'))
        throw refuse('which is not enabled', error);
      if (code === 405 || code === 501 || name === 'NotImplemented' || name === 'MethodNotAllowed')
        throw refuse(`and this server does not implement Object Lock (${name || code})`, error);
      this.fail(error, `the Object Lock configuration of bucket ${this.bucket}`);
    }
    if (enabled !== 'Enabled') throw refuse('which is not enabled');
  }

  /** HeadObject's Object Lock fields (AWS returns them to an identity with s3:GetObjectRetention). */
  async lockOf(key: string): Promise<ObjectLock | undefined> {
    let head: HeadObjectCommandOutput;
    try {
      head = await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: this.key(key) }));
    } catch (error) {
      if (status(error) === 404 && errorName(error) !== 'NoSuchBucket') return undefined;
      this.fail(error, key);
    }
    return objectLockOf(head);
  }

  /**
   * A failure of S3 (not of the source) is translated into a StorageError after the
   * multipart upload was aborted, and fails `body` with it, so that the command reports the
   * storage's words and exits 1.
   */
  async putStream(
    key: string,
    body: Readable,
    signal?: AbortSignal,
    options: PutOptions = {},
  ): Promise<void> {
    try {
      await uploadToS3(
        {
          client: this.client,
          bucket: this.bucket,
          key: this.key(key),
          checksums: this.checksums,
          lock: options.lock,
          signal,
        },
        body,
      );
    } catch (error) {
      if (signal?.aborted) throw signal.reason;
      if (!(error instanceof SinkFailure)) throw error; // the source failed, not S3
      const translated = s3Error(error.cause, this.url, key, this.bucket);
      body.destroy(translated);
      throw translated;
    }
  }

  async putBytes(key: string, body: Uint8Array, options: PutBytesOptions = {}): Promise<void> {
    try {
      await this.client.send(
        new PutObjectCommand({
          Bucket: this.bucket,
          Key: this.key(key),
          Body: body,
          ContentType: key.endsWith('.json') ? 'application/json' : undefined,
          IfNoneMatch: options.ifAbsent ? '*' : undefined,
          ...s3LockFields(options.lock),
        }),
      );
    } catch (error) {
      this.fail(error, key);
    }
  }

  async get(key: string, signal?: AbortSignal, options?: GetOptions): Promise<Readable> {
    return rangedDownload(
      async ({ start, end, version }, abortSignal) => {
        try {
          const result = await this.client.send(
            new GetObjectCommand({
              Bucket: this.bucket,
              Key: this.key(key),
              Range: end === undefined ? undefined : `bytes=${start}-${end}`,
              IfMatch: version,
            }),
            { abortSignal },
          );
          return {
            body: result.Body as Readable,
            size: end === undefined ? result.ContentLength : totalOf(result.ContentRange),
            version: result.ETag,
          };
        } catch (error) {
          // An empty object has no byte 0 to range over: read it whole.
          if (start === 0 && status(error) === 416) return this.getWhole(key, abortSignal);
          if (status(error) === 412) throw changedWhileRead(this.url, key, error);
          this.fail(error, key);
        }
      },
      {
        ...this.ranges,
        signal,
        expectedBytes: options?.expectedBytes,
        broken: (e) => brokenDownload(e, this.url, key),
      },
    );
  }

  private async getWhole(key: string, abortSignal: AbortSignal): Promise<RangeResponse> {
    try {
      const result = await this.client.send(
        new GetObjectCommand({ Bucket: this.bucket, Key: this.key(key) }),
        { abortSignal },
      );
      return { body: result.Body as Readable };
    } catch (error) {
      this.fail(error, key);
    }
  }

  async head(key: string): Promise<ObjectInfo | undefined> {
    try {
      const result = await this.client.send(
        new HeadObjectCommand({ Bucket: this.bucket, Key: this.key(key) }),
      );
      return { key, size: result.ContentLength ?? 0, modified: result.LastModified ?? new Date(0) };
    } catch (error) {
      if (status(error) === 404 && errorName(error) !== 'NoSuchBucket') return undefined;
      this.fail(error, key);
    }
  }

  async *list(prefix: string): AsyncIterable<ObjectInfo> {
    const strip = this.prefix ? joinKey(this.prefix, '').length : 0;
    let token: string | undefined;
    do {
      const page = await this.client
        .send(
          new ListObjectsV2Command({
            Bucket: this.bucket,
            Prefix: this.key(prefix),
            ContinuationToken: token,
            MaxKeys: this.pageSize,
          }),
        )
        .catch((error) => this.fail(error, `list ${prefix || '/'}`));
      for (const item of page.Contents ?? []) {
        if (!item.Key) continue;
        yield {
          key: item.Key.slice(strip),
          size: item.Size ?? 0,
          modified: item.LastModified ?? new Date(0),
        };
      }
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token);
  }

  async listDirs(prefix: string): Promise<string[]> {
    const full = this.key(prefix);
    const strip = this.prefix ? joinKey(this.prefix, '').length : 0;
    const dirs: string[] = [];
    let token: string | undefined;
    do {
      try {
        const page = await this.client.send(
          new ListObjectsV2Command({
            Bucket: this.bucket,
            Prefix: full,
            Delimiter: '/',
            ContinuationToken: token,
            MaxKeys: this.pageSize,
          }),
        );
        for (const p of page.CommonPrefixes ?? []) if (p.Prefix) dirs.push(p.Prefix.slice(strip));
        token = page.IsTruncated ? page.NextContinuationToken : undefined;
      } catch (error) {
        this.fail(error, `list ${prefix || '/'}`);
      }
    } while (token);
    return [...new Set(dirs)].sort();
  }

  /**
   * DeleteObjects by 1,000. Objects that Object Lock protects (retention or legal hold, on a
   * versioned bucket a delete of a specific version) come back as AccessDenied: when the
   * message names the lock, or (Ceph RGW says only "AccessDenied") HeadObject shows a lock in
   * force, they are reported as locked. A plain delete on a versioned bucket adds a delete
   * marker and succeeds; the versions stay. With `allVersions` (prune) on a versioned bucket,
   * every version and delete marker of each key is deleted, and the bytes of the versions
   * removed are counted; a locked version stays, is not counted, and its key is reported.
   */
  async delete(keys: string[], options: DeleteOptions = {}): Promise<DeleteResult> {
    const versioned = options.allVersions && (await this.isVersioned());
    const targets = versioned
      ? await this.versionsOf(keys)
      : keys.map((k) => ({ Key: this.key(k), VersionId: undefined, Size: 0 }));
    const locked = new Set<string>();
    let freedBytes = 0;
    const strip = this.prefix ? joinKey(this.prefix, '').length : 0;
    for (let i = 0; i < targets.length; i += 1000) {
      const batch = targets.slice(i, i + 1000);
      try {
        const result = await this.client.send(
          new DeleteObjectsCommand({
            Bucket: this.bucket,
            Delete: {
              Objects: batch.map(({ Key, VersionId }): ObjectIdentifier => ({ Key, VersionId })),
              Quiet: true,
            },
          }),
        );
        const failed: typeof result.Errors = [];
        const kept = new Set<string>();
        for (const e of result.Errors ?? []) {
          if (e.Code === 'NoSuchKey' || e.Code === 'NoSuchVersion') continue;
          kept.add(`${e.Key} ${e.VersionId ?? ''}`);
          if (e.Key && (await this.isLockDenial(e))) locked.add(e.Key.slice(strip));
          else failed.push(e);
        }
        if (failed.length > 0) {
          const first = failed[0]!;
          throw new StorageError(
            first.Code === 'AccessDenied' ? 'denied' : 'invalid',
            `storage ${this.url}: could not delete ${failed.length} object(s), first ${first.Key}${first.VersionId ? ` (version ${first.VersionId})` : ''}: ${first.Code} ${first.Message ?? ''}${versioned && first.Code === 'AccessDenied' ? '; prune needs s3:DeleteObjectVersion on a versioned bucket' : ''}`.trim(),
          );
        }
        for (const t of batch) if (!kept.has(`${t.Key} ${t.VersionId ?? ''}`)) freedBytes += t.Size;
      } catch (error) {
        if (error instanceof StorageError) throw error;
        this.fail(error, `delete ${batch.length} object(s)`);
      }
    }
    return versioned ? { locked: [...locked], freedBytes } : { locked: [...locked] };
  }

  /** Whether the bucket keeps versions (Enabled or Suspended); a server without versioning does not. */
  private isVersioned(): Promise<boolean> {
    this.versioning ??= this.client
      .send(new GetBucketVersioningCommand({ Bucket: this.bucket }))
      .then((r) => r.Status === 'Enabled' || r.Status === 'Suspended')
      .catch((error) => {
        const code = status(error);
        if (code === 405 || code === 501 || errorName(error) === 'NotImplemented') return false;
        this.versioning = undefined;
        this.fail(error, `the versioning of bucket ${this.bucket}`);
      });
    return this.versioning;
  }

  /** Every version and delete marker of `keys` (ListObjectVersions of each key's folder). */
  private async versionsOf(keys: string[]) {
    const wanted = new Set(keys.map((k) => this.key(k)));
    const all = new Set([...wanted].map((k) => k.slice(0, k.lastIndexOf('/') + 1) || k));
    // A folder whose parent is listed too is in the parent's listing.
    const folders = [...all].filter((f) => ![...all].some((o) => o !== f && f.startsWith(o)));
    // By key and version: a folder's listing also holds the keys of its subfolders.
    const found = new Map<string, { Key: string; VersionId?: string; Size: number }>();
    for (const Prefix of folders) {
      let KeyMarker: string | undefined;
      let VersionIdMarker: string | undefined;
      do {
        const page = await this.client
          .send(
            new ListObjectVersionsCommand({
              Bucket: this.bucket,
              Prefix,
              KeyMarker,
              VersionIdMarker,
              MaxKeys: this.pageSize,
            }),
          )
          .catch((error) => this.fail(error, `list the versions under ${Prefix}`));
        for (const v of [...(page.Versions ?? []), ...(page.DeleteMarkers ?? [])]) {
          if (!v.Key || !wanted.has(v.Key)) continue;
          const size = 'Size' in v ? Number(v.Size ?? 0) : 0;
          found.set(`${v.Key} ${v.VersionId}`, { Key: v.Key, VersionId: v.VersionId, Size: size });
        }
        const more = page.IsTruncated;
        KeyMarker = more ? page.NextKeyMarker : undefined;
        VersionIdMarker = more ? page.NextVersionIdMarker : undefined;
      } while (KeyMarker);
    }
    return [...found.values()];
  }

  /** Whether a refused delete was refused by Object Lock (retention in force, or a legal hold). */
  private async isLockDenial(e: { Code?: string; Message?: string; Key?: string; VersionId?: string }) {
    if (e.Code !== 'AccessDenied') return false;
    if (/object lock|worm|retention|legal hold/i.test(e.Message ?? '')) return true;
    try {
      const head = await this.client.send(
        new HeadObjectCommand({ Bucket: this.bucket, Key: e.Key, VersionId: e.VersionId }),
      );
      const lock = objectLockOf(head);
      return Boolean(lock?.legalHold || (lock?.until && lock.until.getTime() > Date.now()));
    } catch {
      return false;
    }
  }

  /** Multipart uploads under `prefix` that were never completed or aborted (ListMultipartUploads). */
  async listIncomplete(prefix: string): Promise<IncompleteUpload[]> {
    const strip = this.prefix ? joinKey(this.prefix, '').length : 0;
    const found: IncompleteUpload[] = [];
    let keyMarker: string | undefined;
    let uploadIdMarker: string | undefined;
    do {
      const page = await this.client
        .send(
          new ListMultipartUploadsCommand({
            Bucket: this.bucket,
            Prefix: this.key(prefix),
            KeyMarker: keyMarker,
            UploadIdMarker: uploadIdMarker,
            MaxUploads: this.pageSize,
          }),
        )
        .catch((error) => this.fail(error, `list multipart uploads under ${prefix || '/'}`));
      for (const upload of page.Uploads ?? []) {
        if (!upload.Key || !upload.UploadId) continue;
        found.push({
          key: upload.Key.slice(strip),
          id: upload.UploadId,
          started: upload.Initiated ?? new Date(0),
        });
      }
      const more = page.IsTruncated && (page.NextKeyMarker || page.NextUploadIdMarker);
      keyMarker = more ? page.NextKeyMarker : undefined;
      uploadIdMarker = more ? page.NextUploadIdMarker : undefined;
    } while (keyMarker || uploadIdMarker);
    return found;
  }

  async removeIncomplete(uploads: IncompleteUpload[]): Promise<void> {
    for (const upload of uploads) {
      if (!upload.id) continue;
      try {
        await this.client.send(
          new AbortMultipartUploadCommand({
            Bucket: this.bucket,
            Key: this.key(upload.key),
            UploadId: upload.id,
          }),
        );
      } catch (error) {
        if (errorName(error) === 'NoSuchUpload' || status(error) === 404) continue;
        this.fail(error, `abort the multipart upload of ${upload.key}`);
      }
    }
  }
}

function status(error: unknown): number | undefined {
  return (error as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode;
}

function errorName(error: unknown): string {
  return (error as { name?: string; Code?: string }).Code ?? (error as Error).name ?? '';
}

/** Translates an AWS SDK error into a StorageError that says what to do. */
export function s3Error(error: unknown, url: string, what: string, bucket: string): StorageError {
  if (error instanceof StorageError) return error;
  const name = errorName(error);
  const code = status(error);
  const detail = (error as Error).message || name;
  const where = `storage ${url}`;
  if (name === 'CredentialsProviderError' || /Could not load credentials/i.test(detail)) {
    return new StorageError(
      'credentials',
      `${where}: no AWS credentials found; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or use aws-actions/configure-aws-credentials`,
      { cause: error },
    );
  }
  if (name === 'NoSuchBucket' || (code === 404 && /bucket/i.test(what))) {
    return new StorageError(
      'no-bucket',
      `${where}: the bucket '${bucket}' does not exist; create it first or fix the storage input`,
      { cause: error },
    );
  }
  if (name === 'NoSuchKey' || name === 'NotFound' || code === 404) {
    return new StorageError('not-found', `${where}: '${what}' does not exist`, { cause: error });
  }
  if (name === 'PreconditionFailed' || code === 412 || name === 'ConditionalRequestConflict') {
    return new StorageError('exists', `${where}: '${what}' already exists`, { cause: error });
  }
  if (['InvalidAccessKeyId', 'SignatureDoesNotMatch', 'ExpiredToken', 'InvalidToken'].includes(name)) {
    return new StorageError(
      'credentials',
      `${where}: the AWS credentials were rejected (${name}); check the access key, secret and session token`,
      { cause: error },
    );
  }
  if (name === 'AccessDenied' || code === 403) {
    return new StorageError(
      'denied',
      `${where}: access denied for ${what}; the minimal permissions are s3:PutObject, s3:GetObject, s3:DeleteObject, s3:AbortMultipartUpload, s3:ListMultipartUploadParts on the objects and s3:ListBucket, s3:ListBucketMultipartUploads on the bucket`,
      { cause: error },
    );
  }
  if (isStalled(error)) {
    return new StorageError(
      'timeout',
      `${where}: ${what}: the S3 endpoint stopped answering (${detail}), also on every retry; check the network and the endpoint's health, then retry`,
      { cause: error },
    );
  }
  const system = (error as NodeJS.ErrnoException).code;
  if (
    system &&
    /^(ECONNREFUSED|ENOTFOUND|EAI_AGAIN|ECONNRESET|ETIMEDOUT|EHOSTUNREACH|ENETUNREACH|EPIPE)$/.test(system)
  ) {
    return new StorageError(
      'unreachable',
      `${where}: cannot reach the S3 endpoint (${system}) for ${what}, also on every retry; check AWS_ENDPOINT_URL_S3 and the network`,
      { cause: error },
    );
  }
  if (name === 'TimeoutError') {
    return new StorageError(
      'timeout',
      `${where}: ${what}: the S3 endpoint timed out (${detail}); check the network`,
      {
        cause: error,
      },
    );
  }
  return new StorageError(
    'invalid',
    `${where}: ${what} failed: ${name}${code ? ` (HTTP ${code})` : ''}: ${detail}`,
    { cause: error },
  );
}

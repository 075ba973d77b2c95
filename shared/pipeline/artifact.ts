import { PassThrough, type Readable, Transform, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { Artifact } from '../catalog/manifest.ts';
import { UserError } from '../errors.ts';
import type { Storage } from '../storage/storage.ts';
import { chunkBytes } from './buffers.ts';
import { type Compression, compressionSuffix, compressStream, decompressStream } from './compression.ts';
import { Counter, Digest } from './digest.ts';
import { type DecryptionKeys, decryptStream, type EncryptionKeys, encryptStream } from './encryption.ts';
import { type Logger, startProgress } from './progress.ts';

export interface WriteArtifactOptions {
  storage: Storage;
  /** The storage key of the artifact. */
  key: string;
  /** What the artifact holds, recorded in the manifest: tar, sql, … */
  format: string;
  source: Readable;
  compression: Compression;
  compressionLevel?: number;
  encryption?: EncryptionKeys;
  logger: Logger;
  label: string;
  progressIntervalMs?: number;
  signal?: AbortSignal;
}

/** The artifact file name for a format, compression and encryption: `files.tar.zst.age`. */
export function artifactName(format: string, compression: Compression, encrypted: boolean): string {
  return `${format}${compressionSuffix(compression)}${encrypted ? '.age' : ''}`;
}

/**
 * Streams `source` through compress → encrypt → hash/count into storage, with no temporary
 * file, and returns the manifest entry of the artifact `name` (see artifactName). If any
 * stage or the upload fails, every stage is torn down and the upload aborted.
 */
export async function writeArtifact(options: WriteArtifactOptions, name: string): Promise<Artifact> {
  const content = new Counter();
  const stored = new Digest();
  const stages: (NodeJS.ReadWriteStream | Readable)[] = [
    options.source,
    content,
    compressStream(options.compression, options.compressionLevel),
  ];
  if (options.encryption) stages.push(await encryptStream(options.encryption));
  stages.push(stored);
  const progress = startProgress(options.logger, options.label, () => content.bytes, {
    intervalMs: options.progressIntervalMs,
  });
  const upload = new PassThrough({ highWaterMark: chunkBytes });
  try {
    const flowing = pipeline([...stages, upload] as NodeJS.ReadWriteStream[], { signal: options.signal });
    const uploading = options.storage.putStream(options.key, upload, options.signal);
    uploading.catch((error) => upload.destroy(error));
    await Promise.all([flowing, uploading]);
  } finally {
    progress.stop();
  }
  return {
    name,
    bytes: stored.bytes,
    sha256: stored.sha256,
    contentBytes: content.bytes,
    format: options.format,
    compression: options.compression,
    encryption: options.encryption
      ? {
          type: 'age',
          recipients: 'recipients' in options.encryption ? options.encryption.recipients.length : 0,
          passphrase: 'passphrase' in options.encryption,
        }
      : null,
  };
}

export interface ReadArtifactOptions {
  storage: Storage;
  key: string;
  artifact: Artifact;
  keys?: DecryptionKeys;
  logger: Logger;
  label: string;
  progressIntervalMs?: number;
  signal?: AbortSignal;
}

/** A stream error that says the stored bytes are not the bytes the manifest recorded. */
export class IntegrityError extends Error {
  override name = 'IntegrityError';
}

/**
 * The refusal of an artifact that is not encrypted although the reader brought keys: whoever
 * can write the storage could have replaced an encrypted backup by one of their own.
 */
export class UnencryptedArtifactError extends UserError {
  override name = 'UnencryptedArtifactError';
}

/** Refuses an unencrypted artifact when keys are given, unless allow-unencrypted is set. */
function refuseDowngrade(options: ReadArtifactOptions): void {
  const { artifact, keys } = options;
  if (artifact.encryption || !keys || keys.allowUnencrypted) return;
  const given = keys.identities.length
    ? 'an age identity'
    : keys.passphrase
      ? 'an age passphrase'
      : undefined;
  if (!given) return;
  // The key is <set>/<backup-id>/<artifact>.
  const backup = options.key.split('/').at(-2) ?? options.key;
  throw new UnencryptedArtifactError(
    `backup: the artifact ${artifact.name} of ${backup} is not encrypted, but ${given} was given; a backup that should be encrypted may have been replaced. Set allow-unencrypted: true to restore it anyway`,
  );
}

/**
 * The plaintext of an artifact, streamed: storage → sha256 → decrypt → decompress. The
 * returned stream ends only after the stored bytes matched the manifest's size and sha256;
 * on a mismatch it fails instead of ending, so a consumer that waits for the end never
 * takes damaged data as complete. An artifact that is not encrypted is refused, before
 * anything is read, when keys are given (UnencryptedArtifactError), unless
 * `keys.allowUnencrypted`.
 */
export async function readArtifact(options: ReadArtifactOptions): Promise<Readable> {
  const { artifact } = options;
  const stages: NodeJS.ReadWriteStream[] = [];
  refuseDowngrade(options);
  if (artifact.encryption) {
    const keys = options.keys;
    if (!keys || (keys.identities.length === 0 && !keys.passphrase)) {
      throw new UserError(
        `age-identity: backup artifact ${artifact.name} is encrypted; give the age identity (input age-identity, or LIFEBOAT_AGE_IDENTITY) or the passphrase`,
      );
    }
    stages.push(decryptStream(keys));
  }
  const raw = await options.storage.get(options.key, options.signal);
  const stored = new Digest();
  const gate = new IntegrityGate(stored, artifact, options.key);
  const progress = startProgress(options.logger, options.label, () => stored.bytes, {
    total: artifact.bytes,
    intervalMs: options.progressIntervalMs,
  });
  // The consumer's stream stays outside the pipeline: a failing pipeline destroys its own
  // streams with the raw error, and the consumer should hear what it means instead.
  const out = new PassThrough({ highWaterMark: chunkBytes });
  gate.pipe(out);
  pipeline(
    [raw, stored, ...stages, decompressStream(artifact.compression), gate] as NodeJS.ReadWriteStream[],
    {
      signal: options.signal,
    },
  )
    .catch((error) => {
      gate.unpipe(out);
      // A damaged stream usually fails in decryption or decompression before the hash is
      // complete; say that the stored bytes are damaged when they are.
      const damaged = stored.bytes !== artifact.bytes || gate.failedDigest();
      out.destroy(damaged && !options.signal?.aborted ? gate.explain(error) : error);
    })
    .finally(() => progress.stop());
  return out;
}

/**
 * The last stage of a read: counts the plaintext and, before letting the stream end, waits
 * until the stored bytes have all been hashed, then compares size, sha256 and plaintext
 * size with the manifest. (Node's zstd decoder ends at the end of the first frame and
 * ignores what follows, so the plaintext count is what proves nothing was left unread.)
 */
class IntegrityGate extends Transform {
  private readonly digest: Digest;
  private readonly artifact: Artifact;
  private readonly key: string;
  private plainBytes = 0;

  constructor(digest: Digest, artifact: Artifact, key: string) {
    super();
    this.digest = digest;
    this.artifact = artifact;
    this.key = key;
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.plainBytes += chunk.length;
    callback(null, chunk);
  }

  override _flush(callback: TransformCallback): void {
    this.digest.done.then(
      () => {
        const problem = this.problem();
        callback(problem ? new IntegrityError(problem) : null);
      },
      (error) => callback(this.explain(error)),
    );
  }

  /** Whether every stored byte was hashed and the sha256 differs from the manifest's. */
  failedDigest(): boolean {
    return this.digest.bytes === this.artifact.bytes && this.digest.sha256SoFar() !== this.artifact.sha256;
  }

  private problem(): string | undefined {
    const { bytes, sha256, contentBytes } = this.artifact;
    if (this.digest.bytes !== bytes) {
      return `${this.key}: stored artifact has ${this.digest.bytes} bytes, the manifest records ${bytes}: it is truncated or damaged`;
    }
    if (this.digest.sha256 !== sha256) {
      return `${this.key}: sha256 ${this.digest.sha256} does not match the manifest's ${sha256}: the stored artifact is damaged`;
    }
    if (this.plainBytes !== contentBytes) {
      return `${this.key}: decoded ${this.plainBytes} bytes, the manifest records ${contentBytes}: the artifact does not decode completely`;
    }
    return undefined;
  }

  explain(error: unknown): Error {
    if (error instanceof IntegrityError || error instanceof UserError) return error;
    const { bytes } = this.artifact;
    const detail =
      this.digest.bytes < bytes
        ? `truncated or damaged (read ${this.digest.bytes} of ${bytes} bytes)`
        : 'damaged';
    return new IntegrityError(`${this.key}: the stored artifact is ${detail}: ${(error as Error).message}`);
  }
}

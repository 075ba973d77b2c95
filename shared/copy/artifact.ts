import { PassThrough, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { Artifact } from '../catalog/manifest.ts';
import { IntegrityError } from '../pipeline/artifact.ts';
import { chunkBytes } from '../pipeline/buffers.ts';
import { Digest } from '../pipeline/digest.ts';
import { type Logger, startProgress } from '../pipeline/progress.ts';
import type { Storage } from '../storage/storage.ts';

/**
 * Passes the source's bytes on while hashing them, and fails the stream (so that the upload
 * is aborted and nothing becomes visible on the target) when they are more than the manifest
 * records, or, at their end, fewer or of another sha256.
 */
class ArtifactCheck extends Digest {
  problem?: IntegrityError;
  private readonly artifact: Artifact;
  private readonly what: string;

  constructor(artifact: Artifact, what: string) {
    super();
    this.artifact = artifact;
    this.what = what;
  }

  override _transform(chunk: Buffer, encoding: BufferEncoding, callback: TransformCallback): void {
    if (this.bytes + chunk.length > this.artifact.bytes)
      callback(this.refuse(`more than the ${this.artifact.bytes} bytes its manifest records`));
    else super._transform(chunk, encoding, callback);
  }

  override _flush(callback: TransformCallback): void {
    super._flush((error) => {
      if (error) return callback(error);
      if (this.bytes !== this.artifact.bytes)
        return callback(this.refuse(`${this.bytes} bytes, its manifest records ${this.artifact.bytes}`));
      if (this.sha256 !== this.artifact.sha256)
        return callback(this.refuse(`sha256 ${this.sha256}, its manifest records ${this.artifact.sha256}`));
      callback();
    });
  }

  private refuse(found: string): IntegrityError {
    this.problem = new IntegrityError(
      `${this.what} has ${found}: the source artifact is damaged, so this backup is not copied`,
    );
    return this.problem;
  }
}

export interface ArtifactCopy {
  source: Storage;
  target: Storage;
  /** `<set>/<id>/<artifact name>`, the same on both sides. */
  key: string;
  artifact: Artifact;
  /** How the artifact is named in errors: "the artifact files.tar.zst of backup etc/…". */
  what: string;
  logger: Logger;
  progressIntervalMs?: number;
  signal?: AbortSignal;
}

/**
 * Streams one artifact from source to target (storage.get() into storage.putStream(), no
 * temporary file, memory as flat as a backup's upload), hashing it on the way: bytes that
 * do not match the manifest's size and sha256 fail the upload before it completes (an
 * IntegrityError naming the artifact). The stored size on the target is checked afterwards.
 */
export async function copyArtifact(copy: ArtifactCopy): Promise<void> {
  const { artifact, key, signal } = copy;
  const check = new ArtifactCheck(artifact, copy.what);
  const upload = new PassThrough({ highWaterMark: chunkBytes });
  const progress = startProgress(copy.logger, `copied ${key}`, () => check.bytes, {
    total: artifact.bytes,
    intervalMs: copy.progressIntervalMs,
  });
  try {
    const raw = await copy.source.get(key, signal, { expectedBytes: artifact.bytes });
    const flowing = pipeline(raw, check, upload, { signal });
    const uploading = copy.target.putStream(key, upload, signal);
    uploading.catch((error) => upload.destroy(error));
    await Promise.all([flowing, uploading]);
  } catch (error) {
    throw check.problem ?? error;
  } finally {
    progress.stop();
  }
  const stored = await copy.target.head(key);
  if (stored?.size !== artifact.bytes) {
    throw new IntegrityError(
      `${copy.what}: the target ${copy.target.url} holds ${stored ? `${stored.size} bytes` : 'nothing'} after the upload, the manifest records ${artifact.bytes}; the copy is not committed`,
    );
  }
}

import { createHash } from 'node:crypto';
import { Transform, type TransformCallback } from 'node:stream';

/** Passes bytes through unchanged while counting them and computing their sha256. */
export class Digest extends Transform {
  bytes = 0;
  private readonly hash = createHash('sha256');
  private hex?: string;
  private settle!: (error?: Error) => void;
  /** Settles once every byte has passed and the sha256 is known, or the stream failed. */
  readonly done = new Promise<void>((resolve, reject) => {
    this.settle = (error) => (error ? reject(error) : resolve());
  });

  constructor() {
    super();
    this.done.catch(() => {});
    this.once('error', (error) => this.settle(error));
    this.once('close', () => this.settle(new Error('stream closed before its end')));
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.bytes += chunk.length;
    this.hash.update(chunk);
    callback(null, chunk);
  }

  override _flush(callback: TransformCallback): void {
    this.hex = this.hash.digest('hex');
    this.settle();
    callback();
  }

  /** The sha256 of the bytes that have passed so far (the final one once the stream ended). */
  sha256SoFar(): string {
    return this.hex ?? this.hash.copy().digest('hex');
  }

  /** The sha256 in hex; only once the stream has ended. */
  get sha256(): string {
    if (!this.hex) throw new Error('sha256 read before the stream ended');
    return this.hex;
  }
}

/** Counts bytes without hashing: a cheap tap for progress on the uncompressed side. */
export class Counter extends Transform {
  bytes = 0;
  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.bytes += chunk.length;
    callback(null, chunk);
  }
}

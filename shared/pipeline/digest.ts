import { createHash } from 'node:crypto';
import { Transform, type TransformCallback, Writable } from 'node:stream';

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

/**
 * Where the stored bytes of a read end up: hashes each byte and hands it on to `next` (the
 * decoders), following its backpressure. Once `detach()`ed it only hashes, so that the sha256
 * of the whole stored object can be finished after whatever decoded it has failed or stopped;
 * until then, a `next` that is gone holds the bytes back (nothing more is read).
 */
export class DigestTap extends Writable {
  bytes = 0;
  private readonly hash = createHash('sha256');
  private hex?: string;
  private readonly next: Writable;
  private detached = false;
  /** A write held back: until `next` drains, or until detach(). */
  private held: (() => void) | undefined;

  constructor(next: Writable) {
    super({ highWaterMark: 0 });
    this.next = next;
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    this.bytes += chunk.length;
    this.hash.update(chunk);
    if (this.detached) {
      callback();
      return;
    }
    if (this.next.destroyed || this.next.writableEnded) {
      this.held = callback;
      return;
    }
    if (this.next.write(chunk)) {
      callback();
      return;
    }
    this.held = callback;
    const release = () => {
      this.next.off('drain', release);
      this.next.off('close', release);
      // Gone instead of drained: hold on until detach().
      if (this.next.destroyed && !this.detached) return;
      this.release();
    };
    this.next.on('drain', release);
    this.next.on('close', release);
  }

  override _final(callback: (error?: Error | null) => void): void {
    this.hex = this.hash.digest('hex');
    if (!this.detached && !this.next.destroyed) this.next.end();
    callback();
  }

  /** From now on only hashes: `next` gets nothing more. */
  detach(): void {
    this.detached = true;
    this.release();
  }

  private release() {
    const held = this.held;
    this.held = undefined;
    held?.();
  }

  /** The sha256 in hex; only once every stored byte has passed. */
  get sha256(): string | undefined {
    return this.hex;
  }
}

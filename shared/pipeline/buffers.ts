import { Transform, type TransformCallback } from 'node:stream';

/**
 * The chunk size every streaming stage uses. Small enough that the buffers in flight across
 * all stages stay a few MiB, large enough that per-chunk overhead is negligible.
 */
export const chunkBytes = 256 * 1024;

/**
 * Gathers small writes (an archive of small entries, a dump's pipe reads) into chunks of
 * about `target` bytes (`chunkBytes`), so the compressor works on large buffers instead of
 * paying per small write; a write that is large already passes as it is.
 */
export class Coalescer extends Transform {
  private parts: Buffer[] = [];
  private size = 0;
  private readonly target: number;

  constructor(target = chunkBytes) {
    super();
    this.target = target;
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, done: TransformCallback): void {
    if (chunk.length >= this.target) {
      // Large already (a file's read): passed on as it is, not copied.
      this.flushParts();
      this.push(chunk);
    } else {
      this.parts.push(chunk);
      this.size += chunk.length;
      if (this.size >= this.target) this.flushParts();
    }
    done();
  }

  override _flush(done: TransformCallback): void {
    this.flushParts();
    done();
  }

  private flushParts(): void {
    if (this.size === 0) return;
    this.push(Buffer.concat(this.parts, this.size));
    this.parts = [];
    this.size = 0;
  }
}

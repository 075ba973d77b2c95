import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';

/** A deterministic, poorly compressible byte stream of `size` bytes, generated on the fly. */
export function generated(size: number, seed = 1): Readable {
  let produced = 0;
  let counter = seed;
  return new Readable({
    highWaterMark: 1 << 20,
    read() {
      if (produced >= size) return void this.push(null);
      const n = Math.min(1 << 20, size - produced);
      const chunk = Buffer.allocUnsafe(n);
      for (let i = 0; i < n; i += 32) createHash('sha256').update(`${counter++}`).digest().copy(chunk, i);
      produced += n;
      this.push(chunk);
    },
  });
}

export async function sha256Of(stream: Readable): Promise<{ sha256: string; bytes: number }> {
  const hash = createHash('sha256');
  let bytes = 0;
  for await (const chunk of stream) {
    hash.update(chunk as Buffer);
    bytes += (chunk as Buffer).length;
  }
  return { sha256: hash.digest('hex'), bytes };
}

import { createCipheriv, createHash } from 'node:crypto';
import { Readable } from 'node:stream';

/** A deterministic, incompressible byte stream of `size` bytes (an AES-CTR keystream), made on the fly. */
export function generated(size: number, seed = 1): Readable {
  const key = createHash('sha256').update(`lifeboat-test-${seed}`).digest().subarray(0, 16);
  const cipher = createCipheriv('aes-128-ctr', key, Buffer.alloc(16));
  const zeros = Buffer.alloc(1 << 20);
  let produced = 0;
  return new Readable({
    highWaterMark: 1 << 20,
    read() {
      if (produced >= size) return void this.push(null);
      const n = Math.min(zeros.length, size - produced);
      produced += n;
      this.push(cipher.update(zeros.subarray(0, n)));
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

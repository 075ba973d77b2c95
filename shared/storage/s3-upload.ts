import type { Readable } from 'node:stream';
import {
  AbortMultipartUploadCommand,
  ChecksumAlgorithm,
  type CompletedPart,
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  PutObjectCommand,
  type S3Client,
  UploadPartCommand,
} from '@aws-sdk/client-s3';

const MiB = 1024 * 1024;
export const maxParts = 10_000;
/** In-flight part bytes the writer aims to stay under (at least one part is always in flight). */
const inFlightBudget = 64 * MiB;

/**
 * Part sizes grow with the part number, since a streamed artifact's size is not known in
 * advance and S3 allows at most 10,000 parts: 8 MiB for the first 2,000 parts (16 GiB),
 * then 16, 32, 64 and 128 MiB per 2,000 parts, about 484 GiB in all.
 */
export function partSizeFor(partNumber: number): number {
  return 8 * MiB * 2 ** Math.min(4, Math.floor((partNumber - 1) / 2000));
}

export function concurrencyFor(partSize: number): number {
  return Math.max(1, Math.min(4, Math.floor(inFlightBudget / partSize)));
}

/** Reuses part buffers, so that memory stays at the parts in flight and makes no garbage. */
class BufferPool {
  private free: Buffer[] = [];

  take(size: number): Buffer {
    this.free = this.free.filter((b) => b.length === size);
    return this.free.pop() ?? Buffer.allocUnsafeSlow(size);
  }

  give(buffer: Buffer): void {
    this.free.push(buffer);
  }
}

export interface S3UploadOptions {
  client: S3Client;
  bucket: string;
  key: string;
  /** Whether the client computes checksums where S3 supports them (real AWS), so parts carry CRC32. */
  checksums: boolean;
  signal?: AbortSignal;
}

/**
 * Streams `body` into one S3 object: a single PutObject when it fits in the first part,
 * else a multipart upload with up to four parts in flight. A failure or an abort aborts the
 * multipart upload (so no parts linger) and rethrows the first error, not the abort's.
 */
export async function uploadToS3(options: S3UploadOptions, body: Readable): Promise<void> {
  const { client, bucket: Bucket, key: Key, signal } = options;
  const pool = new BufferPool();
  const parts: CompletedPart[] = [];
  const inFlight = new Set<Promise<void>>();
  let uploadId: string | undefined;
  let failure: unknown;
  let partNumber = 1;
  let buffer = pool.take(partSizeFor(1));
  let filled = 0;

  const sendPart = async (): Promise<void> => {
    uploadId ??= (
      await client.send(
        new CreateMultipartUploadCommand({
          Bucket,
          Key,
          ChecksumAlgorithm: options.checksums ? ChecksumAlgorithm.CRC32 : undefined,
        }),
        { abortSignal: signal },
      )
    ).UploadId;
    const number = partNumber++;
    if (number > maxParts)
      throw new Error(`the artifact is larger than S3's ${maxParts}-part limit allows (about 484 GiB)`);
    const data = buffer;
    const length = filled;
    const upload = client
      .send(
        new UploadPartCommand({
          Bucket,
          Key,
          UploadId: uploadId,
          PartNumber: number,
          Body: data.subarray(0, length),
          ContentLength: length,
        }),
        {
          abortSignal: signal,
        },
      )
      .then((result) => {
        if (!result.ETag) throw new Error(`S3 returned no ETag for part ${number}`);
        parts.push({ PartNumber: number, ETag: result.ETag, ChecksumCRC32: result.ChecksumCRC32 });
        pool.give(data);
      })
      .catch((error) => {
        failure ??= error;
      });
    inFlight.add(upload);
    void upload.finally(() => inFlight.delete(upload));
    const size = partSizeFor(partNumber);
    while (inFlight.size >= concurrencyFor(size) && !failure) await Promise.race(inFlight);
    if (failure) throw failure;
    buffer = pool.take(size);
    filled = 0;
  };

  try {
    for await (const chunk of body as AsyncIterable<Buffer>) {
      for (let offset = 0; offset < chunk.length; ) {
        const copied = chunk.copy(buffer, filled, offset);
        filled += copied;
        offset += copied;
        if (filled === buffer.length) await sendPart();
      }
    }
    if (partNumber === 1) {
      await client.send(
        new PutObjectCommand({ Bucket, Key, Body: buffer.subarray(0, filled), ContentLength: filled }),
        { abortSignal: signal },
      );
      return;
    }
    if (filled > 0) await sendPart();
    await Promise.all(inFlight);
    if (failure) throw failure;
    parts.sort((a, b) => (a.PartNumber ?? 0) - (b.PartNumber ?? 0));
    await client.send(
      new CompleteMultipartUploadCommand({
        Bucket,
        Key,
        UploadId: uploadId,
        MultipartUpload: { Parts: parts },
      }),
      {
        abortSignal: signal,
      },
    );
  } catch (error) {
    await Promise.allSettled(inFlight);
    if (uploadId)
      await client.send(new AbortMultipartUploadCommand({ Bucket, Key, UploadId: uploadId })).catch(() => {});
    throw failure && !(error instanceof Error && error.name === 'AbortError') ? failure : error;
  }
}

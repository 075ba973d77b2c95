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
import { type PartPlan, uploadInParts } from './parts.ts';

const MiB = 1024 * 1024;
export const maxParts = 10_000;

/**
 * Part sizes grow with the part number, since a streamed artifact's size is not known in
 * advance and S3 allows at most 10,000 parts: 8 MiB for the first 2,000 parts (16 GiB),
 * then 16, 32, 64 and 128 MiB per 2,000 parts, about 484 GiB in all.
 */
export function partSizeFor(partNumber: number): number {
  return 8 * MiB * 2 ** Math.min(4, Math.floor((partNumber - 1) / 2000));
}

const plan: PartPlan = {
  partSizeFor,
  maxParts,
  tooLarge: `the artifact is larger than S3's ${maxParts}-part limit allows (about 484 GiB)`,
};

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
 * else a multipart upload. A failure or an abort aborts the multipart upload, so that no
 * parts linger, and rethrows the first error, not the abort's.
 */
export async function uploadToS3(options: S3UploadOptions, body: Readable): Promise<void> {
  const { client, bucket: Bucket, key: Key, signal } = options;
  const send = { abortSignal: signal };
  let uploadId: Promise<string | undefined> | undefined;
  const started = () => {
    uploadId ??= client
      .send(
        new CreateMultipartUploadCommand({
          Bucket,
          Key,
          ChecksumAlgorithm: options.checksums ? ChecksumAlgorithm.CRC32 : undefined,
        }),
        send,
      )
      .then((r) => r.UploadId);
    return uploadId;
  };
  await uploadInParts<CompletedPart>(
    body,
    {
      async single(data) {
        await client.send(
          new PutObjectCommand({ Bucket, Key, Body: data, ContentLength: data.length }),
          send,
        );
      },
      async part(number, data) {
        const UploadId = await started();
        const result = await client.send(
          new UploadPartCommand({
            Bucket,
            Key,
            UploadId,
            PartNumber: number,
            Body: data,
            ContentLength: data.length,
          }),
          send,
        );
        if (!result.ETag) throw new Error(`S3 returned no ETag for part ${number}`);
        return { PartNumber: number, ETag: result.ETag, ChecksumCRC32: result.ChecksumCRC32 };
      },
      async complete(parts) {
        await client.send(
          new CompleteMultipartUploadCommand({
            Bucket,
            Key,
            UploadId: await started(),
            MultipartUpload: { Parts: parts },
          }),
          send,
        );
      },
      async abort() {
        const UploadId = await uploadId;
        if (UploadId) await client.send(new AbortMultipartUploadCommand({ Bucket, Key, UploadId }));
      },
    },
    plan,
  );
}

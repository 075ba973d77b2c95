import type { Readable } from 'node:stream';
import {
  AbortMultipartUploadCommand,
  ChecksumAlgorithm,
  type CompletedPart,
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  HeadObjectCommand,
  type HeadObjectCommandOutput,
  PutObjectCommand,
  PutObjectRetentionCommand,
  type S3Client,
  UploadPartCommand,
} from '@aws-sdk/client-s3';
import { lockCovers } from './locking.ts';
import { type PartPlan, uploadInParts } from './parts.ts';
import type { ObjectLock, RetentionLock } from './storage.ts';

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
  /** The Object Lock retention to write the object under. */
  lock?: RetentionLock;
  signal?: AbortSignal;
}

/** The request fields that write an object under `lock` (PutObject, CreateMultipartUpload). */
export function s3LockFields(lock: RetentionLock | undefined) {
  if (!lock) return {};
  return {
    ObjectLockMode: lock.mode === 'compliance' ? ('COMPLIANCE' as const) : ('GOVERNANCE' as const),
    ObjectLockRetainUntilDate: lock.until,
  };
}

/** The lock HeadObject reports (retention, legal hold); undefined when there is none. */
export function objectLockOf(
  head: Pick<
    HeadObjectCommandOutput,
    'ObjectLockMode' | 'ObjectLockRetainUntilDate' | 'ObjectLockLegalHoldStatus'
  >,
): ObjectLock | undefined {
  const lock: ObjectLock = {};
  if (head.ObjectLockMode && head.ObjectLockRetainUntilDate) {
    lock.mode = head.ObjectLockMode === 'COMPLIANCE' ? 'compliance' : 'governance';
    lock.until = new Date(head.ObjectLockRetainUntilDate);
  }
  if (head.ObjectLockLegalHoldStatus === 'ON') lock.legalHold = true;
  return lock.mode || lock.legalHold ? lock : undefined;
}

/**
 * Streams `body` into one S3 object: a single PutObject when it fits in the first part,
 * else a multipart upload. A failure or an abort aborts the multipart upload, so that no
 * parts linger, and rethrows the first error, not the abort's. A lock goes on the PutObject
 * or the CreateMultipartUpload; after a multipart upload the object's retention is read back
 * and set with PutObjectRetention where the server dropped it (Ceph RGW 16 ignores the lock
 * fields of CreateMultipartUpload).
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
          ...s3LockFields(options.lock),
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
          new PutObjectCommand({
            Bucket,
            Key,
            Body: data,
            ContentLength: data.length,
            ...s3LockFields(options.lock),
          }),
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
        const { VersionId } = await client.send(
          new CompleteMultipartUploadCommand({
            Bucket,
            Key,
            UploadId: await started(),
            MultipartUpload: { Parts: parts },
          }),
          send,
        );
        const lock = options.lock;
        if (!lock) return;
        const head = await client.send(new HeadObjectCommand({ Bucket, Key, VersionId }), send);
        if (lockCovers(objectLockOf(head), lock)) return;
        const { ObjectLockMode: Mode, ObjectLockRetainUntilDate: RetainUntilDate } = s3LockFields(lock);
        await client.send(
          new PutObjectRetentionCommand({ Bucket, Key, VersionId, Retention: { Mode, RetainUntilDate } }),
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

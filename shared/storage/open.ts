import { UserError } from '../errors.ts';
import { ForwardingStorage, type Storage } from './storage.ts';
import { parseStorageUrl, type StorageLocation } from './url.ts';

export interface StorageTuning {
  /** Objects per list page (the providers' maximum by default); tests lower it to cross pages. */
  pageSize?: number;
  /**
   * How long a request may make no progress before its connection is dropped and the request
   * retried (30 s by default); tests lower it to prove stalls cost seconds.
   */
  idleTimeoutMs?: number;
  /** The size of each parallel ranged GET of a download (8 MiB); tests lower it to cross ranges. */
  rangeBytes?: number;
  /** Ranged GETs of one artifact at once (S3, Azure): LIFEBOAT_DOWNLOAD_STREAMS, 1 by default. */
  downloadStreams?: number;
}

export const maxDownloadStreams = 8;

/**
 * LIFEBOAT_DOWNLOAD_STREAMS: how many ranged GETs of one artifact a download keeps going
 * (S3, Azure). 1, the default, is one stream, resumed from the byte reached if it breaks.
 */
export function downloadStreamsOf(env: NodeJS.ProcessEnv): number | undefined {
  const given = env.LIFEBOAT_DOWNLOAD_STREAMS;
  if (given === undefined || given === '') return undefined;
  const streams = /^\d+$/.test(given.trim()) ? Number(given.trim()) : Number.NaN;
  if (!(streams >= 1 && streams <= maxDownloadStreams))
    throw new UserError(
      `LIFEBOAT_DOWNLOAD_STREAMS: '${given}' is not accepted; give a whole number from 1 to ${maxDownloadStreams} (ranged GETs of one artifact at once; 1, the default, is one resumable stream)`,
    );
  return streams;
}

/**
 * Opens the storage a `storage` input names. The URL is checked now; the provider's SDK is
 * loaded and contacted only on first use, so a run pays only for the cloud it uses.
 */
export function openStorage(
  input: string,
  env = process.env,
  cwd = process.cwd(),
  tuning: StorageTuning = {},
): Storage {
  const location = parseStorageUrl(input, cwd);
  tuning = { downloadStreams: downloadStreamsOf(env), ...tuning };
  let loaded: Promise<Storage> | undefined;
  return new ForwardingStorage(location.url, () => {
    loaded ??= load(location, env, tuning);
    return loaded;
  });
}

async function load(
  location: StorageLocation,
  env: NodeJS.ProcessEnv,
  tuning: StorageTuning,
): Promise<Storage> {
  switch (location.provider) {
    case 'fs': {
      const { FsStorage } = await import('./fs.ts');
      return new FsStorage(location.url, location.root);
    }
    case 's3': {
      const { S3Storage } = await import('./s3.ts');
      return new S3Storage(location.url, location.bucket, location.prefix, env, tuning);
    }
    case 'gcs': {
      const { GcsStorage } = await import('./gcs.ts');
      return new GcsStorage(location.url, location.bucket, location.prefix, env, tuning);
    }
    case 'azure': {
      const { AzureStorage } = await import('./azure.ts');
      return new AzureStorage(location.url, location.bucket, location.prefix, env, tuning);
    }
  }
}

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

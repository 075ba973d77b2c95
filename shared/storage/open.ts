import { AzureStorage } from './azure.ts';
import { FsStorage } from './fs.ts';
import { GcsStorage } from './gcs.ts';
import { S3Storage } from './s3.ts';
import type { Storage } from './storage.ts';
import { parseStorageUrl } from './url.ts';

export interface StorageTuning {
  /** Objects per list page (the providers' maximum by default); tests lower it to cross pages. */
  pageSize?: number;
}

/** Opens the storage a `storage` input names. Nothing is contacted until first use. */
export function openStorage(
  input: string,
  env = process.env,
  cwd = process.cwd(),
  tuning: StorageTuning = {},
): Storage {
  const location = parseStorageUrl(input, cwd);
  switch (location.provider) {
    case 'fs':
      return new FsStorage(location.url, location.root);
    case 's3':
      return new S3Storage(location.url, location.bucket, location.prefix, env, tuning.pageSize);
    case 'gcs':
      return new GcsStorage(location.url, location.bucket, location.prefix, env, tuning.pageSize);
    case 'azure':
      return new AzureStorage(location.url, location.bucket, location.prefix, env, tuning.pageSize);
  }
}

import type { Readable } from 'node:stream';
import type { DeleteResult, IncompleteUpload, ObjectInfo, Storage, StorageAccess } from './storage.ts';
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
  return new LazyStorage(location.url, () => load(location, env, tuning));
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

class LazyStorage implements Storage {
  readonly url: string;
  private readonly loader: () => Promise<Storage>;
  private loaded?: Promise<Storage>;

  constructor(url: string, loader: () => Promise<Storage>) {
    this.url = url;
    this.loader = loader;
  }

  private provider(): Promise<Storage> {
    this.loaded ??= this.loader();
    return this.loaded;
  }

  async check(access?: StorageAccess): Promise<void> {
    return (await this.provider()).check(access);
  }
  async putStream(key: string, body: Readable, signal?: AbortSignal): Promise<void> {
    return (await this.provider()).putStream(key, body, signal);
  }
  async putBytes(key: string, body: Uint8Array, options?: { ifAbsent?: boolean }): Promise<void> {
    return (await this.provider()).putBytes(key, body, options);
  }
  async get(key: string, signal?: AbortSignal): Promise<Readable> {
    return (await this.provider()).get(key, signal);
  }
  async head(key: string): Promise<ObjectInfo | undefined> {
    return (await this.provider()).head(key);
  }
  async *list(prefix: string): AsyncIterable<ObjectInfo> {
    yield* (await this.provider()).list(prefix);
  }
  async listDirs(prefix: string): Promise<string[]> {
    return (await this.provider()).listDirs(prefix);
  }
  async delete(keys: string[]): Promise<DeleteResult> {
    return (await this.provider()).delete(keys);
  }
  async listIncomplete(prefix: string): Promise<IncompleteUpload[]> {
    return (await this.provider()).listIncomplete(prefix);
  }
  async removeIncomplete(uploads: IncompleteUpload[]): Promise<void> {
    return (await this.provider()).removeIncomplete(uploads);
  }
}

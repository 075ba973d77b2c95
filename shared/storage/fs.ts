import { randomBytes } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { chunkBytes } from '../pipeline/buffers.ts';
import { type DeleteResult, type ObjectInfo, type Storage, StorageError } from './storage.ts';

const partial = '.lifeboat-partial-';

/**
 * A local folder (the default `./backups`). Every object is written to a hidden temporary
 * file and renamed into place, so a reader never sees half an object; `ifAbsent` uses
 * link(2), which fails atomically when the name exists.
 */
export class FsStorage implements Storage {
  readonly url: string;
  readonly root: string;

  constructor(url: string, root: string) {
    this.url = url;
    this.root = root;
  }

  async check(): Promise<void> {
    try {
      await fs.mkdir(this.root, { recursive: true });
      await fs.access(this.root, fs.constants.W_OK | fs.constants.R_OK);
    } catch (error) {
      throw new StorageError(
        'denied',
        `storage ${this.url}: cannot use the folder ${this.root}: ${(error as Error).message}`,
        { cause: error },
      );
    }
  }

  private file(key: string): string {
    const normal = path.posix.normalize(key);
    if (normal.startsWith('../') || normal === '..' || path.posix.isAbsolute(normal)) {
      throw new StorageError('invalid', `storage ${this.url}: key '${key}' leaves the storage folder`);
    }
    return path.join(this.root, ...normal.split('/'));
  }

  private async writeTemp(file: string, write: (temp: string) => Promise<void>): Promise<string> {
    await fs.mkdir(path.dirname(file), { recursive: true });
    const temp = path.join(path.dirname(file), `${partial}${randomBytes(6).toString('hex')}`);
    try {
      await write(temp);
      return temp;
    } catch (error) {
      await fs.rm(temp, { force: true });
      throw error;
    }
  }

  async putStream(key: string, body: Readable, signal?: AbortSignal): Promise<void> {
    const file = this.file(key);
    const temp = await this.writeTemp(file, (t) =>
      pipeline(body, createWriteStream(t, { flags: 'wx' }), { signal }),
    );
    await fs.rename(temp, file);
  }

  async putBytes(key: string, body: Uint8Array, options: { ifAbsent?: boolean } = {}): Promise<void> {
    const file = this.file(key);
    const temp = await this.writeTemp(file, async (t) => {
      const handle = await fs.open(t, 'wx');
      try {
        await handle.writeFile(body);
        await handle.sync();
      } finally {
        await handle.close();
      }
    });
    if (!options.ifAbsent) return fs.rename(temp, file);
    try {
      await fs.link(temp, file);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'EEXIST') {
        throw new StorageError('exists', `storage ${this.url}: '${key}' already exists`, { cause: error });
      }
      throw error;
    } finally {
      await fs.rm(temp, { force: true });
    }
  }

  async get(key: string): Promise<Readable> {
    const file = this.file(key);
    const handle = await fs.open(file, 'r').catch((error: NodeJS.ErrnoException) => {
      if (error.code === 'ENOENT' || error.code === 'EISDIR') {
        throw new StorageError('not-found', `storage ${this.url}: '${key}' does not exist`, { cause: error });
      }
      throw error;
    });
    return handle.createReadStream({ highWaterMark: chunkBytes });
  }

  async head(key: string): Promise<ObjectInfo | undefined> {
    const stat = await fs.stat(this.file(key)).catch(() => undefined);
    return stat?.isFile() ? { key, size: stat.size, modified: stat.mtime } : undefined;
  }

  async *list(prefix: string): AsyncIterable<ObjectInfo> {
    // Walk only the folder that holds the prefix, in sorted order like the object stores.
    const slash = prefix.lastIndexOf('/');
    const base = slash < 0 ? '' : prefix.slice(0, slash + 1);
    yield* this.walk(base, prefix);
  }

  private async *walk(dir: string, prefix: string): AsyncIterable<ObjectInfo> {
    const entries = await fs.readdir(this.file(dir || '.'), { withFileTypes: true }).catch((error) => {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw error;
    });
    entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    for (const entry of entries) {
      if (entry.name.startsWith(partial)) continue;
      const key = `${dir}${entry.name}`;
      if (entry.isDirectory()) {
        if (`${key}/`.startsWith(prefix) || prefix.startsWith(`${key}/`)) yield* this.walk(`${key}/`, prefix);
      } else if (entry.isFile() && key.startsWith(prefix)) {
        const stat = await fs.stat(this.file(key)).catch(() => undefined);
        if (stat) yield { key, size: stat.size, modified: stat.mtime };
      }
    }
  }

  async listDirs(prefix: string): Promise<string[]> {
    const entries = await fs.readdir(this.file(prefix || '.'), { withFileTypes: true }).catch(() => []);
    return entries
      .filter((e) => e.isDirectory())
      .map((e) => `${prefix}${e.name}/`)
      .sort();
  }

  /** An immutable file (chattr +i) refuses deletion even to root: it is reported as locked. */
  async delete(keys: string[]): Promise<DeleteResult> {
    const dirs = new Set<string>();
    const locked: string[] = [];
    for (const key of keys) {
      try {
        await fs.unlink(this.file(key));
      } catch (error) {
        const code = (error as NodeJS.ErrnoException).code;
        if (code === 'EPERM') locked.push(key);
        else if (code !== 'ENOENT') throw error;
      }
      dirs.add(path.dirname(this.file(key)));
    }
    // Remove folders left empty, up to the storage root, so deleted backups leave no trace.
    for (let dir of [...dirs].sort((a, b) => b.length - a.length)) {
      while (dir.startsWith(this.root) && dir !== this.root) {
        try {
          await fs.rmdir(dir);
        } catch {
          break;
        }
        dir = path.dirname(dir);
      }
    }
    return { locked };
  }
}

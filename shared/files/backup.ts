import { createHash } from 'node:crypto';
import { once } from 'node:events';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { Readable } from 'node:stream';
import * as tar from 'tar-stream';
import { Catalog } from '../catalog/catalog.ts';
import { type Manifest, manifestFormat } from '../catalog/manifest.ts';
import { UserError } from '../errors.ts';
import { artifactName, writeArtifact } from '../pipeline/artifact.ts';
import { chunkBytes } from '../pipeline/buffers.ts';
import type { Compression } from '../pipeline/compression.ts';
import type { EncryptionKeys } from '../pipeline/encryption.ts';
import { type Logger, silentLogger } from '../pipeline/progress.ts';
import type { Storage } from '../storage/storage.ts';
import { version } from '../version.ts';
import { IndexWriter, indexFormat } from './file-index.ts';
import { type FoundEntry, walk } from './walk.ts';

export interface FilesBackupOptions {
  storage: Storage;
  set: string;
  source: string;
  include: string[];
  exclude: string[];
  compression: Compression;
  compressionLevel?: number;
  encryption?: EncryptionKeys;
  tags: string[];
  logger: Logger;
  signal?: AbortSignal;
  progressIntervalMs?: number;
  now?: () => Date;
}

export interface FilesFacts {
  files: number;
  directories: number;
  symlinks: number;
  /** Bytes of regular file content. */
  bytes: number;
}

/** Checks that the source is a folder we can read, with one clear line when it is not. */
export async function checkSource(source: string): Promise<void> {
  let stat: Awaited<ReturnType<typeof fs.stat>>;
  try {
    stat = await fs.stat(source);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    throw new UserError(
      `source: '${source}' ${code === 'ENOENT' ? 'does not exist' : `cannot be read (${code})`}; accepted: a folder to back up`,
    );
  }
  if (!stat.isDirectory())
    throw new UserError(`source: '${source}' is not a folder; accepted: a folder to back up`);
  try {
    await fs.readdir(source);
  } catch (error) {
    throw new UserError(
      `source: the folder '${source}' cannot be read (${(error as NodeJS.ErrnoException).code}); run as a user that can read it`,
    );
  }
}

/**
 * Backs up a folder as one tar archive (`files.tar.zst[.age]`) with modes, owners, mtimes,
 * symlinks and empty files, streamed into storage, then commits the manifest. Sockets,
 * FIFOs and devices are left out and listed as such.
 */
export async function backupFiles(options: FilesBackupOptions): Promise<Manifest> {
  const now = options.now ?? (() => new Date());
  const source = options.source;
  await checkSource(source);
  await options.storage.check();

  const catalog = new Catalog(options.storage);
  const started = now();
  const pending = await catalog.begin(options.set, 'full', started);
  options.logger.info(`backup ${options.set}/${pending.id}: ${source} → ${options.storage.url}`);
  const facts: FilesFacts = { files: 0, directories: 0, symlinks: 0, bytes: 0 };
  const skipped: string[] = [];
  const pack = tar.pack();
  const index = new IndexWriter();
  const feeding = feedArchive(pack, index, source, options, facts, skipped).catch((error) => {
    pack.destroy(error);
    index.source.destroy(error);
    throw error;
  });
  const name = artifactName('files.tar', options.compression, Boolean(options.encryption));
  const indexName = artifactName(
    indexFormat,
    options.compression === 'none' ? 'none' : 'zstd',
    Boolean(options.encryption),
  );
  try {
    const [artifact, indexArtifact] = await Promise.all([
      writeArtifact(
        {
          storage: options.storage,
          key: pending.key(name),
          format: 'tar',
          source: pack as unknown as Readable,
          compression: options.compression,
          compressionLevel: options.compressionLevel,
          encryption: options.encryption,
          logger: options.logger,
          label: 'archived',
          progressIntervalMs: options.progressIntervalMs,
          signal: options.signal,
        },
        name,
      ),
      // The index is written beside the archive, from the same read of each file.
      writeArtifact(
        {
          storage: options.storage,
          key: pending.key(indexName),
          format: indexFormat,
          source: index.source,
          compression: options.compression === 'none' ? 'none' : 'zstd',
          encryption: options.encryption,
          logger: silentLogger,
          label: 'indexed',
          progressIntervalMs: options.progressIntervalMs,
          signal: options.signal,
        },
        indexName,
      ),
      feeding,
    ]);
    const manifest: Manifest = {
      format: manifestFormat,
      id: pending.id,
      set: options.set,
      kind: 'files',
      mode: 'full',
      startedAt: started.toISOString(),
      finishedAt: now().toISOString(),
      tool: { name: 'lifeboat', version },
      source: { host: os.hostname(), path: path.resolve(source) },
      artifacts: [artifact, indexArtifact],
      contents: {
        included: options.include.length ? options.include : ['everything under the source folder'],
        excluded: [...options.exclude, ...skipped],
      },
      facts: { ...facts },
      tags: options.tags,
    };
    await catalog.commit(pending, manifest);
    return manifest;
  } catch (error) {
    await catalog.abandon(pending).catch(() => {});
    throw error;
  }
}

async function feedArchive(
  pack: tar.Pack,
  index: IndexWriter,
  source: string,
  options: FilesBackupOptions,
  facts: FilesFacts,
  skipped: string[],
) {
  const warn = (rel: string, what: string) => {
    options.logger.warn(`${rel}: ${what}`);
    skipped.push(`${rel} (${what})`);
  };
  const root = await fs.stat(source);
  await addEntry(pack, { ...header({ rel: '.', abs: source, stat: root }), name: './', type: 'directory' });
  for await (const entry of walk(source, options, (rel) => warn(rel, 'removed while being backed up'))) {
    options.signal?.throwIfAborted();
    const base = header(entry);
    const { stat } = entry;
    if (stat.isDirectory()) {
      await addEntry(pack, { ...base, name: `${entry.rel}/`, type: 'directory' });
      await index.add({ type: 'directory', path: entry.rel });
      facts.directories++;
    } else if (stat.isSymbolicLink()) {
      const linkname = await fs.readlink(entry.abs);
      await addEntry(pack, { ...base, type: 'symlink', linkname });
      await index.add({ type: 'symlink', path: entry.rel, target: linkname });
      facts.symlinks++;
    } else if (stat.isFile()) {
      const sha256 = await addFile(pack, entry, base);
      if (sha256 !== undefined) {
        await index.add({ type: 'file', path: entry.rel, size: stat.size, sha256 });
        facts.files++;
        facts.bytes += stat.size;
      } else warn(entry.rel, 'removed while being backed up');
    } else {
      warn(
        entry.rel,
        `left out: a ${stat.isSocket() ? 'socket' : stat.isFIFO() ? 'FIFO' : 'device'} is not backed up`,
      );
    }
  }
  pack.finalize();
  index.finish(facts);
}

type EntryHeader = Partial<tar.Header> & { name: string };

function header(entry: FoundEntry): EntryHeader {
  const { stat } = entry;
  // Whole seconds as tar(1) stores them: stat.mtime rounds to the millisecond, so a file written at
  // 25.9997 s would be archived as 26 s, a second after it was written.
  const mtime = new Date(Math.floor(stat.mtimeMs / 1000) * 1000);
  return { name: entry.rel, mode: stat.mode & 0o7777, uid: stat.uid, gid: stat.gid, mtime };
}

/** Adds an entry without content (a folder, a symlink, an empty file). */
function addEntry(pack: tar.Pack, headers: EntryHeader): Promise<void> {
  return new Promise((resolve, reject) => {
    pack.entry(headers, Buffer.alloc(0), (error) => (error ? reject(error) : resolve()));
  });
}

/**
 * Streams one file into the archive and returns the sha256 of what it stored (for the index);
 * undefined when it vanished before it could be opened.
 */
async function addFile(pack: tar.Pack, entry: FoundEntry, base: EntryHeader): Promise<string | undefined> {
  const size = entry.stat.size;
  let handle: fs.FileHandle;
  try {
    handle = await fs.open(entry.abs, 'r');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new UserError(
      `source: cannot read '${entry.abs}' (${(error as NodeJS.ErrnoException).code}); run as a user that can read it, or exclude it`,
    );
  }
  if (size === 0) {
    await handle.close();
    await addEntry(pack, { ...base, type: 'file', size: 0 });
    return createHash('sha256').digest('hex');
  }
  const hash = createHash('sha256');
  let sink!: ReturnType<tar.Pack['entry']>;
  const written = new Promise<void>((resolve, reject) => {
    sink = pack.entry({ ...base, type: 'file', size }, (error) => (error ? reject(error) : resolve()));
  });
  // The entry fails, without 'drain', when the archive is torn down (a failed upload, a
  // timeout): wait for either, and never leave that failure unobserved.
  written.catch(() => {});
  sink.on('error', () => {}); // reported through `written`
  const writable = (chunk: Buffer) =>
    sink.write(chunk) ? undefined : Promise.race([once(sink, 'drain'), written]);
  // Read exactly the size recorded in the header: a file that grows meanwhile is cut at that
  // size (as tar does); one that shrinks is an error, since its content is not consistent.
  let read = 0;
  for await (const chunk of handle.createReadStream({ start: 0, end: size - 1, highWaterMark: chunkBytes })) {
    read += (chunk as Buffer).length;
    hash.update(chunk as Buffer);
    await writable(chunk as Buffer);
  }
  if (read < size) {
    sink.destroy();
    throw new UserError(
      `source: '${entry.abs}' shrank from ${size} to ${read} bytes while being backed up; back up a quiet folder`,
    );
  }
  (sink as unknown as NodeJS.WritableStream).end();
  await written;
  return hash.digest('hex');
}

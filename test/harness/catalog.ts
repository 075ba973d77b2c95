/** Short ways to make catalog content in tests and benchmarks. */
import path from 'node:path';
import type { Readable } from 'node:stream';
import * as tar from 'tar-stream';
import { Catalog } from '../../shared/catalog/catalog.ts';
import type { Manifest } from '../../shared/catalog/manifest.ts';
import { backupFiles, type FilesBackupOptions, type FilesFacts } from '../../shared/files/backup.ts';
import { writeArtifact } from '../../shared/pipeline/artifact.ts';
import { silentLogger } from '../../shared/pipeline/progress.ts';
import type { Storage } from '../../shared/storage/storage.ts';

/** backup-files with everything included, zstd, no tags and no log, unless overridden. */
export function backupFolder(
  options: Pick<FilesBackupOptions, 'storage' | 'set' | 'source'> & Partial<FilesBackupOptions>,
) {
  return backupFiles({
    include: [],
    exclude: [],
    compression: 'zstd',
    tags: [],
    logger: silentLogger,
    ...options,
  });
}

/** A valid manifest of a files backup with one placeholder artifact, for hand-made catalogs. */
export function testManifest(fields: Pick<Manifest, 'id' | 'set'> & Partial<Manifest>): Manifest {
  const now = new Date().toISOString();
  return {
    format: 1,
    kind: 'files',
    mode: 'full',
    startedAt: now,
    finishedAt: now,
    tool: { name: 'lifeboat', version: '0' },
    source: {},
    contents: { included: [], excluded: [] },
    facts: {},
    tags: [],
    artifacts: [
      {
        name: 'files.tar.zst',
        bytes: 1,
        sha256: '0'.repeat(64),
        contentBytes: 1,
        format: 'tar',
        compression: 'zstd',
        encryption: null,
      },
    ],
    ...fields,
  };
}

/** One entry of a hand-made archive: its tar header, and the content of a file. */
export type CraftedEntry = Partial<tar.Header> & { name: string; content?: string };

/** What a restore counts in these entries: the facts a matching manifest records. */
function countEntries(entries: CraftedEntry[]): FilesFacts {
  const facts: FilesFacts = { files: 0, directories: 0, symlinks: 0, bytes: 0 };
  for (const { type = 'file', name, content = '' } of entries) {
    if (type === 'file' || type === 'link') facts.files++;
    if (type === 'file') facts.bytes += Buffer.byteLength(content);
    if (type === 'symlink') facts.symlinks++;
    if (type === 'directory' && path.posix.normalize(name.replace(/\/+$/, '') || '.') !== '.')
      facts.directories++;
  }
  return facts;
}

/**
 * Commits a files backup whose archive holds exactly `entries`, as whoever can write the
 * bucket could: through the catalog, with the sha256, sizes and counts in its manifest
 * matching the archive, so that only the restore itself stands between it and the disk.
 */
export async function writeCraftedBackup(
  storage: Storage,
  set: string,
  entries: CraftedEntry[],
): Promise<Manifest> {
  const pack = tar.pack();
  for (const { content = '', ...header } of entries) pack.entry(header, content);
  pack.finalize();
  const catalog = new Catalog(storage);
  const pending = await catalog.begin(set, 'full', new Date());
  const artifact = await writeArtifact(
    {
      storage,
      key: pending.key('files.tar'),
      format: 'tar',
      source: pack as unknown as Readable,
      compression: 'none',
      logger: silentLogger,
      label: 'crafted',
    },
    'files.tar',
  );
  const manifest = testManifest({
    id: pending.id,
    set,
    artifacts: [artifact],
    facts: { ...countEntries(entries) },
  });
  await catalog.commit(pending, manifest);
  return manifest;
}

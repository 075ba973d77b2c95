/** Short ways to make catalog content in tests and benchmarks. */
import type { Manifest } from '../../shared/catalog/manifest.ts';
import { backupFiles, type FilesBackupOptions } from '../../shared/files/backup.ts';
import { silentLogger } from '../../shared/pipeline/progress.ts';

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

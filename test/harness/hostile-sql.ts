/** A MySQL backup edited as whoever can write the bucket could: new SQL, matching sha256 and sizes. */
import { Readable } from 'node:stream';
import { Catalog } from '../../shared/catalog/catalog.ts';
import type { Manifest } from '../../shared/catalog/manifest.ts';
import { readArtifact, writeArtifact } from '../../shared/pipeline/artifact.ts';
import { silentLogger } from '../../shared/pipeline/progress.ts';
import type { Storage } from '../../shared/storage/storage.ts';

/** The plain SQL of an unencrypted MySQL backup. */
export async function backupSql(storage: Storage, manifest: Manifest): Promise<string> {
  const artifact = manifest.artifacts[0]!;
  const plain = await readArtifact({
    storage,
    key: `${manifest.set}/${manifest.id}/${artifact.name}`,
    artifact,
    logger: silentLogger,
    label: 'read',
  });
  const parts: Buffer[] = [];
  for await (const chunk of plain) parts.push(chunk as Buffer);
  return Buffer.concat(parts).toString();
}

/**
 * Commits a new backup of the same set whose SQL is `edit` of the original's, with the
 * artifact's sha256, bytes and contentBytes matching and the facts (row counts) kept: only
 * the restore's own reading of the SQL stands between it and the server.
 */
export async function craftMysqlBackup(
  storage: Storage,
  original: Manifest,
  edit: (sql: string) => string,
): Promise<Manifest> {
  const before = await backupSql(storage, original);
  const after = edit(before);
  if (after === before) throw new Error('the edit changed nothing: the test would prove nothing');
  const catalog = new Catalog(storage);
  const pending = await catalog.begin(original.set, 'full', new Date(Date.now() + 60_000));
  const name = original.artifacts[0]!.name;
  const artifact = await writeArtifact(
    {
      storage,
      key: pending.key(name),
      format: 'sql',
      source: Readable.from([Buffer.from(after)]),
      compression: original.artifacts[0]!.compression,
      logger: silentLogger,
      label: 'crafted',
    },
    name,
  );
  const manifest: Manifest = { ...structuredClone(original), id: pending.id, artifacts: [artifact] };
  await catalog.commit(pending, manifest);
  return manifest;
}

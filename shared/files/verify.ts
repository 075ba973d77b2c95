/**
 * verify-restore of a files backup: the archive restored (as `restore` does it: staged, every
 * path kept inside) into a throwaway folder under the work folder, then every restored entry
 * compared with the backup's index (each file's size and sha256, each symlink's target, the
 * folders), then the user's check commands run against it (RESTORED_DIR). The folder is removed
 * on every path; a killed run leaves a state the `post:` step removes.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import type { Artifact, Manifest } from '../catalog/manifest.ts';
import { messageOf, UserError } from '../errors.ts';
import { AgeDecryptError } from '../pipeline/age-stream.ts';
import {
  IntegrityError,
  readArtifact,
  UndecodableArtifactError,
  UnencryptedArtifactError,
} from '../pipeline/artifact.ts';
import type { DecryptionKeys } from '../pipeline/encryption.ts';
import { formatBytes, type Logger } from '../pipeline/progress.ts';
import type { Storage } from '../storage/storage.ts';
import { type CheckRow, failed, passed, skipped } from '../verify/checks.ts';
import { type CommandCheck, runCommandCheck } from '../verify/command-checks.ts';
import type { VerifyOutcome } from '../verify/report.ts';
import type { FilesFacts } from './backup.ts';
import { type IndexEntry, IndexError, indexFormat, readIndex } from './file-index.ts';
import { ArchiveFactsError, restoreFiles } from './restore.ts';
import { fileSha256 } from './tree-digest.ts';
import { walk } from './walk.ts';

export interface FilesVerifyOptions {
  manifest: Manifest;
  storage: Storage;
  keys: DecryptionKeys;
  workDir: string;
  checkCommands: CommandCheck[];
  logger: Logger;
  progressIntervalMs?: number;
  signal?: AbortSignal;
  onLeftovers?: (state: FilesVerifyLeftovers | undefined) => void;
}

export interface FilesVerifyLeftovers {
  type: 'files-verify';
  /** The throwaway folder (named lifeboat-files-verify-*). */
  dir: string;
}

const folderPrefix = 'lifeboat-files-verify-';

export async function verifyFiles(options: FilesVerifyOptions): Promise<VerifyOutcome & { stopped?: Error }> {
  const { manifest, logger } = options;
  const checks: CheckRow[] = [];
  const timings: Record<string, number> = {};
  const dir = await fs.mkdtemp(path.join(options.workDir, folderPrefix));
  const target = path.join(dir, 'restored');
  options.onLeftovers?.({ type: 'files-verify', dir });
  let restoreSeconds: number | null = null;
  let stopped: Error | undefined;
  let t = performance.now();
  try {
    const restored = await restoreInto(options, target, checks);
    timings.restore = (performance.now() - t) / 1000;
    t = performance.now();
    if (restored) {
      restoreSeconds = timings.restore;
      checks.push(await compareWithIndex(options, target));
      const env = { RESTORED_DIR: target, LIFEBOAT_BACKUP_ID: manifest.id, LIFEBOAT_SET: manifest.set };
      for (const check of options.checkCommands)
        checks.push(await runCommandCheck(check, { logger, signal: options.signal, env }));
    } else {
      checks.push(skipped('files', 'not run: the restore failed'));
      for (const check of options.checkCommands)
        checks.push(skipped(`check: ${check.name}`, 'not run: the restore failed'));
    }
    timings.checks = (performance.now() - t) / 1000;
  } catch (error) {
    stopped = error as Error;
    checks.push(failed('verification', messageOf(error)));
  }
  t = performance.now();
  const removed = await removeFilesVerify({ type: 'files-verify', dir }, logger);
  if (removed) options.onLeftovers?.(undefined);
  timings.teardown = (performance.now() - t) / 1000;
  return {
    checks,
    restoreSeconds,
    environment: { type: 'folder', path: dir, removed },
    timings,
    ...(stopped ? { stopped } : {}),
  };
}

/**
 * The restore's rows: the stored bytes' sha256, their decryption, the archive read through and
 * its counts, and the restore; false when it failed (each failure named as the backup's).
 */
async function restoreInto(
  options: FilesVerifyOptions,
  target: string,
  checks: CheckRow[],
): Promise<boolean> {
  const { manifest } = options;
  const artifact = manifest.artifacts.find((a) => a.format === 'tar');
  if (!artifact) {
    checks.push(failed('archive', `backup ${manifest.id} lists no tar archive among its artifacts`));
    return false;
  }
  const sha = `sha256: ${artifact.name}`;
  const decrypt = `decrypt: ${artifact.name}`;
  const archive = `archive: ${artifact.name}`;
  const intact = passed(sha, `${formatBytes(artifact.bytes)} match the manifest's size and sha256`);
  const decrypted = passed(decrypt, 'age: decrypted and authenticated to the last chunk');
  const encrypted = Boolean(artifact.encryption);
  const rows = (...list: (CheckRow | false)[]) =>
    checks.push(...list.filter((r): r is CheckRow => r !== false));
  try {
    const result = await restoreFiles({
      storage: options.storage,
      manifest,
      target,
      overwrite: false,
      dryRun: false,
      keys: options.keys,
      logger: options.logger,
      signal: options.signal,
      progressIntervalMs: options.progressIntervalMs,
    });
    const f = result.facts;
    rows(
      intact,
      encrypted && decrypted,
      passed(
        archive,
        `read to its end: ${f.files} files, ${f.directories} folders, ${f.symlinks} symlinks, ${formatBytes(f.bytes)}, as the manifest records`,
      ),
      passed('restore', 'staged, every path inside the folder, then moved into place'),
    );
    return true;
  } catch (error) {
    if (options.signal?.aborted) throw error;
    const why = messageOf(error);
    const notRun = (reason: string) => skipped('restore', `not run: ${reason}`);
    if (error instanceof ArchiveFactsError) {
      rows(
        intact,
        encrypted && decrypted,
        failed(archive, why),
        notRun('the archive does not match the manifest'),
      );
    } else if (error instanceof IntegrityError) {
      rows(failed(sha, why), encrypted && skipped(decrypt, 'not trusted: the stored bytes are damaged'));
      rows(
        skipped(archive, 'not trusted: the stored bytes are damaged'),
        notRun('the stored bytes are damaged'),
      );
    } else if (
      error instanceof AgeDecryptError ||
      error instanceof UnencryptedArtifactError ||
      /^age-identity:/.test(why)
    ) {
      rows(skipped(sha, 'not read to the end: nothing could be decrypted'), failed(decrypt, why));
      rows(skipped(archive, 'not run: nothing could be decrypted'), notRun('nothing could be decrypted'));
    } else if (error instanceof UndecodableArtifactError || error instanceof UserError) {
      // The restore finished the stored bytes' sha256 before it said why (they are intact).
      rows(
        intact,
        encrypted && (error instanceof UndecodableArtifactError ? failed(decrypt, why) : decrypted),
      );
      rows(
        error instanceof UndecodableArtifactError && encrypted
          ? skipped(archive, 'not run: nothing could be decoded')
          : failed(archive, why),
        notRun('the archive was refused'),
      );
    } else {
      throw error;
    }
    return false;
  }
}

/**
 * The restored folder against the index, entry by entry in the order both were made (name
 * order, depth first): the same paths and types, each file's size and sha256 from what is on
 * disk, each symlink's target. No path of the index is opened: only what the walk found.
 */
async function compareWithIndex(options: FilesVerifyOptions, root: string): Promise<CheckRow> {
  const name = 'files';
  const artifact = options.manifest.artifacts.find((a) => a.format === indexFormat);
  if (!artifact) {
    return skipped(
      name,
      "the backup has no index (made before Lifeboat recorded one): the archive's sha256 and counts were checked, not each file",
    );
  }
  const problems: string[] = [];
  let compared = 0;
  let totals: FilesFacts | undefined;
  try {
    const stream = await readArtifact(indexReadOptions(options, artifact));
    const index = readIndex(stream);
    try {
      const vanished: string[] = [];
      for await (const entry of walk(root, { include: [], exclude: [] }, (rel) => vanished.push(rel))) {
        options.signal?.throwIfAborted();
        const next = await index.next();
        if (next.done) {
          problems.push(`'${entry.rel}' was restored but is not in the index`);
          break;
        }
        const listed = next.value;
        if (listed.path !== entry.rel) {
          problems.push(`the restored folder has '${entry.rel}' where the index lists '${listed.path}'`);
          break;
        }
        const problem = await compareEntry(entry.abs, entry.stat, listed, options.signal);
        if (problem) problems.push(`'${entry.rel}': ${problem}`);
        compared++;
        if (problems.length >= 5) break;
      }
      if (vanished.length) problems.push(`'${vanished[0]}' vanished from the throwaway folder`);
      if (problems.length === 0) {
        const next = await index.next();
        if (!next.done) problems.push(`the index lists '${next.value.path}', which was not restored`);
        else totals = next.value;
      }
    } finally {
      await index.return(undefined as never);
      stream.destroy();
    }
  } catch (error) {
    if (options.signal?.aborted) throw error;
    if (!(error instanceof IndexError || error instanceof IntegrityError || error instanceof UserError))
      throw error;
    return failed(name, `the index ${artifact.name}: ${messageOf(error)}`);
  }
  if (problems.length || !totals) return failed(name, problems.join('; '));
  return passed(
    name,
    `${totals.files} files (${formatBytes(totals.bytes)}), ${totals.directories} folders, ${totals.symlinks} symlinks: every size, sha256 and link target as indexed at backup time (${compared} entries)`,
  );
}

const indexReadOptions = (options: FilesVerifyOptions, artifact: Artifact) => ({
  storage: options.storage,
  key: `${options.manifest.set}/${options.manifest.id}/${artifact.name}`,
  artifact,
  keys: options.keys,
  logger: options.logger,
  label: 'index read',
  signal: options.signal,
});

async function compareEntry(
  abs: string,
  stat: import('node:fs').Stats,
  listed: IndexEntry,
  signal?: AbortSignal,
): Promise<string | undefined> {
  const type = stat.isDirectory()
    ? 'directory'
    : stat.isSymbolicLink()
      ? 'symlink'
      : stat.isFile()
        ? 'file'
        : 'other';
  if (type !== listed.type) return `restored as a ${type}, indexed as a ${listed.type}`;
  if (listed.type === 'file') {
    if (stat.size !== listed.size) return `${stat.size} bytes restored, ${listed.size} indexed`;
    const sha256 = await fileSha256(abs, stat.size, signal);
    if (sha256 !== listed.sha256)
      return `sha256 ${sha256.slice(0, 12)}… restored, ${listed.sha256.slice(0, 12)}… indexed`;
  } else if (listed.type === 'symlink') {
    const target = await fs.readlink(abs);
    if (target !== listed.target) return `links to '${target}', indexed as '${listed.target}'`;
  }
  return undefined;
}

/** Removes the throwaway folder; false when it could not be removed (said as a warning). */
export async function removeFilesVerify(state: FilesVerifyLeftovers, logger: Logger): Promise<boolean> {
  if (!path.basename(state.dir).startsWith(folderPrefix))
    throw new UserError(`post: ${state.dir} is not a verify-restore folder; left alone`);
  try {
    await fs.rm(state.dir, { recursive: true, force: true });
    return true;
  } catch (error) {
    logger.warn(
      `could not remove the throwaway folder ${state.dir} (${messageOf(error)}); remove it by hand`,
    );
    return false;
  }
}

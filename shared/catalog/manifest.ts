import { z } from 'zod';
import { UserError } from '../errors.ts';
import { compressions } from '../pipeline/compression.ts';
import { lockModes, type RetentionLock } from '../storage/storage.ts';
import { isBackupId, isSetName } from './ids.ts';

export const manifestFormat = 1;
export const kinds = ['files', 'mysql', 'k8s', 'ebs', 'zfs'] as const;

/**
 * Whether `name` is a plain file name of the backup folder, as artifactName makes them
 * (files.tar.zst.age): not empty, not '.', no '/' or backslash, no '..', no control
 * characters. Storage keys and local paths are made from it, so nothing else is accepted
 * from a manifest.
 */
export function isArtifactName(name: string): boolean {
  if (name.length === 0 || name.length > 255 || name === '.' || name.includes('..')) return false;
  for (const char of name) {
    const code = char.charCodeAt(0);
    if (char === '/' || char === '\\' || code < 0x20 || code === 0x7f) return false;
  }
  return true;
}

export const artifactSchema = z.object({
  /** Object name inside the backup folder, e.g. files.tar.zst.age */
  name: z.string().refine(isArtifactName, {
    error: (issue) =>
      `'${String(issue.input)}' is not a plain file name (an artifact is a file of its own backup folder: not empty, no '/', '\\' or '..')`,
  }),
  /** Bytes as stored, and their sha256: what `sha256sum` of the downloaded file prints. */
  bytes: z.number().int().nonnegative(),
  sha256: z.string().regex(/^[0-9a-f]{64}$/),
  /** Bytes before compression and encryption. */
  contentBytes: z.number().int().nonnegative(),
  /** What the artifact is: tar, sql, … */
  format: z.string().min(1),
  compression: z.enum(compressions),
  encryption: z.union([
    z.null(),
    z.object({ type: z.literal('age'), recipients: z.number().int().nonnegative(), passphrase: z.boolean() }),
  ]),
});

export const verificationSchema = z.object({
  format: z.literal(manifestFormat),
  backupId: z.string(),
  set: z.string(),
  at: z.iso.datetime(),
  passed: z.boolean(),
  checks: z.array(
    z.object({
      name: z.string(),
      passed: z.boolean(),
      /** Not run (an earlier failure made it moot); `passed` is false. */
      skipped: z.boolean().optional(),
      detail: z.string().optional(),
    }),
  ),
  /** RTO: seconds the restore took. */
  restoreSeconds: z.number().nonnegative().optional(),
  /** RPO: the backup's age in seconds when it was verified. */
  ageSeconds: z.number().nonnegative().optional(),
  /** Where it was restored: local, external, … */
  environment: z.string().optional(),
  tool: z.object({ name: z.literal('lifeboat'), version: z.string() }),
});

export const manifestSchema = z
  .object({
    format: z.literal(manifestFormat),
    id: z.string().min(1),
    set: z.string().min(1),
    kind: z.enum(kinds),
    mode: z.string().min(1),
    startedAt: z.iso.datetime(),
    finishedAt: z.iso.datetime(),
    tool: z.object({ name: z.literal('lifeboat'), version: z.string() }),
    /** Where the backup came from: host, path, server version, … */
    source: z.record(z.string(), z.unknown()),
    /** The stored files; none for ebs and zfs backups, whose data are snapshots (in facts). */
    artifacts: z.array(artifactSchema),
    /** What is in the backup and what was left out, in words a reader can check. */
    contents: z.object({ included: z.array(z.string()), excluded: z.array(z.string()) }),
    /** Facts later checks compare against: counts, sizes, row counts, snapshot ids. */
    facts: z.record(z.string(), z.unknown()),
    tags: z.array(z.string()).default([]),
    /**
     * An incremental backup (mode `incremental`): the id of the backup of the same set it
     * applies on top of. Restoring it needs that one first (and its parent, down to a full
     * one); prune never deletes a backup a kept one depends on.
     */
    parent: z.string().refine(isBackupId, { error: 'is not a backup id Lifeboat makes' }).optional(),
    /**
     * The retention lock every object of the backup was written under (lock-for): none may be
     * deleted or overwritten before `until` (the backup's start plus lock-for). Verification
     * records written later get the same lock while it lasts.
     */
    lock: z.object({ mode: z.enum(lockModes), until: z.iso.datetime() }).optional(),
  })
  .refine((m) => m.kind === 'ebs' || m.kind === 'zfs' || m.artifacts.length > 0, {
    message: 'a backup of this kind needs at least one artifact',
    path: ['artifacts'],
  });

export type Artifact = z.infer<typeof artifactSchema>;
export type Manifest = z.infer<typeof manifestSchema>;
export type Verification = z.infer<typeof verificationSchema>;
export type Kind = Manifest['kind'];

/** The folder a manifest was read from: `<set>/<id>/manifest.json`. */
export interface ManifestFolder {
  set: string;
  id: string;
}

/**
 * Refuses a folder whose names are not a set name and a backup id as Lifeboat makes them
 * (a UserError); returns the folder as `<set>/<id>/`.
 */
export function checkManifestFolder(folder: ManifestFolder): string {
  const place = `${folder.set}/${folder.id}/`;
  if (!isSetName(folder.set)) {
    throw new UserError(
      `backup: the folder ${place} is not a backup folder: '${folder.set}' is not a set name Lifeboat makes, so the backup is refused`,
    );
  }
  if (!isBackupId(folder.id)) {
    throw new UserError(
      `backup: the folder ${place} is not a backup folder: '${folder.id}' is not a backup id Lifeboat makes (such as 2026-11-21-0315-backup-full), so the backup is refused`,
    );
  }
  return place;
}

/**
 * Parses and validates a manifest's bytes, read from `folder`. Whoever can write the storage
 * writes the manifest too, so nothing in it is trusted for a path: the folder's names must be
 * a set name and a backup id as Lifeboat makes them, the manifest must name that same set and
 * id, and each artifact must be a plain file name. Every refusal is a UserError naming the
 * folder; schema errors name the first bad field.
 */
export function parseManifest(text: string, where: string, folder: ManifestFolder): Manifest {
  const place = checkManifestFolder(folder);
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw new UserError(`${where}: manifest.json is not valid JSON`);
  }
  const format = (json as { format?: unknown })?.format;
  if (typeof format === 'number' && format > manifestFormat) {
    throw new UserError(
      `${where}: manifest format ${format} is newer than this Lifeboat understands (${manifestFormat}); upgrade Lifeboat`,
    );
  }
  const result = manifestSchema.safeParse(json);
  if (!result.success) {
    const issue = result.error.issues[0]!;
    throw new UserError(
      `${where}: manifest.json is invalid at ${issue.path.join('.') || '(root)'}: ${issue.message}`,
    );
  }
  const manifest = result.data;
  if (manifest.set !== folder.set || manifest.id !== folder.id) {
    throw new UserError(
      `backup: the manifest in ${place} says it is set '${manifest.set}', backup '${manifest.id}'; a manifest must describe its own folder, so the backup is refused`,
    );
  }
  return manifest;
}

export function totalBytes(manifest: Manifest): number {
  return manifest.artifacts.reduce((sum, a) => sum + a.bytes, 0);
}

/** The retention lock a manifest records, as the storage takes it. */
export function recordedLock(manifest: Manifest): RetentionLock | undefined {
  return manifest.lock && { mode: manifest.lock.mode, until: new Date(manifest.lock.until) };
}

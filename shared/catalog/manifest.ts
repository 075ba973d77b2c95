import { z } from 'zod';
import { compressions } from '../pipeline/compression.ts';

export const manifestFormat = 1;
export const kinds = ['files', 'mysql', 'k8s', 'ebs'] as const;

export const artifactSchema = z.object({
  /** Object name inside the backup folder, e.g. files.tar.zst.age */
  name: z
    .string()
    .min(1)
    .regex(/^[^/]+$/),
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
    /** The stored files; none for ebs backups, whose data are EC2 snapshots (in facts). */
    artifacts: z.array(artifactSchema),
    /** What is in the backup and what was left out, in words a reader can check. */
    contents: z.object({ included: z.array(z.string()), excluded: z.array(z.string()) }),
    /** Facts later checks compare against: counts, sizes, row counts, snapshot ids. */
    facts: z.record(z.string(), z.unknown()),
    tags: z.array(z.string()).default([]),
  })
  .refine((m) => m.kind === 'ebs' || m.artifacts.length > 0, {
    message: 'a backup of this kind needs at least one artifact',
    path: ['artifacts'],
  });

export type Artifact = z.infer<typeof artifactSchema>;
export type Manifest = z.infer<typeof manifestSchema>;
export type Verification = z.infer<typeof verificationSchema>;
export type Kind = Manifest['kind'];

/** Parses and validates a manifest's bytes; the error names the first bad field. */
export function parseManifest(text: string, where: string): Manifest {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw new Error(`${where}: manifest.json is not valid JSON`);
  }
  const format = (json as { format?: unknown })?.format;
  if (typeof format === 'number' && format > manifestFormat) {
    throw new Error(
      `${where}: manifest format ${format} is newer than this Lifeboat understands (${manifestFormat}); upgrade Lifeboat`,
    );
  }
  const result = manifestSchema.safeParse(json);
  if (!result.success) {
    const issue = result.error.issues[0]!;
    throw new Error(
      `${where}: manifest.json is invalid at ${issue.path.join('.') || '(root)'}: ${issue.message}`,
    );
  }
  return result.data;
}

export function totalBytes(manifest: Manifest): number {
  return manifest.artifacts.reduce((sum, a) => sum + a.bytes, 0);
}

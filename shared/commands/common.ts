import { readFileSync, statSync } from 'node:fs';
import {
  type InputCollector,
  maxTimerSeconds,
  parseBoolean,
  parseChoice,
  parseDuration,
  parseInteger,
  warnInput,
} from '../action/inputs.ts';
import type { CommandResult, InputReader, InputSpec, OutputSpec } from '../action/spec.ts';
import type { RowFloor } from '../anomaly/rules.ts';
import {
  type AnomalyOptions,
  type AnomalyReport,
  anomalyOutputs,
  anomalySummary,
  checkAnomalies,
  type KindMetrics,
} from '../anomaly/run.ts';
import { Catalog } from '../catalog/catalog.ts';
import { validateSetName } from '../catalog/ids.ts';
import type { Manifest } from '../catalog/manifest.ts';
import { UserError } from '../errors.ts';
import { type Compression, parseCompression } from '../pipeline/compression.ts';
import {
  type DecryptionKeys,
  type EncryptionKeys,
  parseIdentities,
  parseRecipients,
  splitList,
} from '../pipeline/encryption.ts';
import type { Logger } from '../pipeline/progress.ts';
import { withRetentionLock } from '../storage/locking.ts';
import { openStorage } from '../storage/open.ts';
import { joinKey, type LockMode, lockModes, type Storage } from '../storage/storage.ts';

export const storageInput: InputSpec = {
  name: 'storage',
  description:
    'Where backups live: a folder (./backups), file:///path, s3://bucket/prefix, gs://bucket/prefix or azblob://container/prefix. Credentials come from the standard environment variables, never from the URL. Not given: ./backups, a folder on this machine (a warning); backup commands refuse that on a GitHub-hosted runner, which is deleted with the job. Given but empty (an unset variable): an error.',
  default: './backups',
};

/**
 * The commands that write a backup into `storage` (whose default, a folder on the runner, is
 * lost with a GitHub-hosted runner). snapshot-ebs is not one: its snapshots live in EC2, and
 * storage only adds a catalog entry.
 */
export const backupCommandNames: readonly string[] = ['backup-files', 'dump-mysql', 'backup-k8s'];

/**
 * Checks that hold for an input of this name in every command that has it, made where it is
 * read (shared/action/run.ts): each returns the problem, one line, or undefined.
 */
export const inputChecks: Record<string, (value: string) => string | undefined> = {
  'work-dir': (value) => {
    const folder = value.trim();
    let isFolder: boolean;
    try {
      isFolder = statSync(folder).isDirectory();
    } catch (error) {
      return `work-dir: '${folder}' ${(error as NodeJS.ErrnoException).code === 'ENOENT' ? 'does not exist' : `cannot be read (${(error as NodeJS.ErrnoException).code})`}; accepted: an existing folder (create it first, or leave work-dir out for RUNNER_TEMP or the system temp folder)`;
    }
    return isFolder
      ? undefined
      : `work-dir: '${folder}' is not a folder; accepted: an existing folder (or leave work-dir out for RUNNER_TEMP or the system temp folder)`;
  },
};

export const setInput: InputSpec = {
  name: 'set',
  description:
    'The backup set: one protected thing over time, e.g. prod-mysql or etc-nova (lowercase letters, digits, . _ -).',
  required: true,
};

export const timeoutInput = (fallback: string): InputSpec => ({
  name: 'timeout',
  description: 'Give up (and clean up) after this long, e.g. 90m or 6h.',
  default: fallback,
});

export const progressInput: InputSpec = {
  name: 'progress-interval',
  description: 'How often long work prints a progress line (bytes, rate, ETA).',
  default: '10s',
};

export const passphraseInput: InputSpec = {
  name: 'age-passphrase',
  description:
    'A passphrase for age encryption instead of recipients (secret; on the CLI only from LIFEBOAT_AGE_PASSPHRASE).',
  secretEnv: 'LIFEBOAT_AGE_PASSPHRASE',
};

/** The keys that read an encrypted backup. */
export const decryptionInputs: InputSpec[] = [
  {
    name: 'age-identity',
    description:
      'The age identity (AGE-SECRET-KEY-1…) for encrypted backups (secret; on the CLI only from LIFEBOAT_AGE_IDENTITY).',
    secretEnv: 'LIFEBOAT_AGE_IDENTITY',
  },
  { name: 'age-identity-file', description: 'A file holding age identities, as made by age-keygen.' },
  passphraseInput,
  {
    name: 'allow-unencrypted',
    description:
      'Accept a backup that is not encrypted although an age identity or passphrase is given; by default it is refused, since whoever can write the storage could have replaced an encrypted backup by one of their own.',
    default: 'false',
  },
];

/** The inputs that shape what a backup stores: compression, encryption, tags. */
export const artifactInputs: InputSpec[] = [
  { name: 'compression', description: 'zstd, gzip or none.', default: 'zstd' },
  {
    name: 'compression-level',
    description: 'The compression level (zstd 1-19, gzip 1-9); default zstd 3, gzip 6.',
  },
  {
    name: 'age-recipients',
    description:
      'age public keys (age1…) to encrypt to, comma or newline separated. Reading the backup then needs a matching identity.',
  },
  passphraseInput,
  { name: 'tags', description: 'Labels recorded in the manifest, comma separated.' },
];

/** The retention lock of the backup commands: every object of the backup written under it. */
export const lockInputs: InputSpec[] = [
  {
    name: 'lock-for',
    description:
      "Write every object of the backup (artifacts, manifest, and the verification records verify-restore adds) under a retention lock for this long from the backup's start, e.g. 30d: until then no one with this job's credentials can delete or overwrite it. S3: Object Lock (the bucket must have it). A folder: the immutable flag, chattr +i (root only). GCS and Azure: not built (refused). Units s, m (minutes), h, d, w. Default: no lock.",
  },
  {
    name: 'lock-mode',
    description:
      'With lock-for: governance (an identity allowed s3:BypassGovernanceRetention can still lift the lock; give the backup role no such right), or compliance (no one can shorten or remove it until it passes, not even the account root: you pay for the storage until then). A folder holds only governance.',
    default: 'governance',
  },
];

/** lock-for and lock-mode: the lock's mode and how long it runs from the backup's start. */
export interface LockRule {
  mode: LockMode;
  seconds: number;
}

/** lock-for and lock-mode; undefined without lock-for (then lock-mode other than governance is refused). */
export function parseLock(read: InputReader): LockRule | undefined {
  const mode = parseChoice('lock-mode', read('lock-mode'), lockModes, 'governance');
  if (!read('lock-for')?.trim()) {
    if (mode !== 'governance')
      throw new UserError(`lock-mode: ${mode} is given without lock-for; give lock-for too, e.g. 30d`);
    return undefined;
  }
  return { mode, seconds: parseDuration('lock-for', read('lock-for')) };
}

/**
 * The storage input of a backup command, with lock-for: every permanent write of the backup
 * goes under the lock, and the storage's check fails (before anything is written) where it
 * cannot hold one.
 */
export function parseBackupStorage(read: InputReader, c: InputCollector): Storage {
  const storage = c.field(() => parseStorage(read));
  const lock = c.field(() => parseLock(read));
  return storage && lock ? withRetentionLock(storage, lock) : storage;
}

/** The summary row of a backup's lock, when it has one. */
export function lockRows(manifest: Manifest): string[][] {
  return manifest.lock ? [['Locked', `${manifest.lock.mode} until ${manifest.lock.until}`]] : [];
}

export interface ArtifactOptions {
  compression: Compression;
  compressionLevel?: number;
  encryption?: EncryptionKeys;
  tags: string[];
}

export function parseArtifactOptions(read: InputReader, c: InputCollector): ArtifactOptions {
  const compression = c.field(() => parseCompression(read('compression') || 'zstd'));
  return {
    compression,
    compressionLevel: c.field(() =>
      parseInteger(
        'compression-level',
        read('compression-level'),
        compression === 'gzip' ? { min: 1, max: 9 } : { min: 1, max: 19 },
      ),
    ),
    encryption: c.field(() => {
      const keys = parseEncryption(read);
      if (!keys)
        warnInput(
          read,
          'not encrypted: whoever can read the storage can read this backup; give age-recipients (or age-passphrase) to encrypt it',
        );
      return keys;
    }),
    tags: splitList(read('tags')),
  };
}

/** The outputs of a command that makes a backup. */
export function backupOutputs(artifact: string, result: string): OutputSpec[] {
  return [
    { name: 'backup-id', description: 'The id of the committed backup.' },
    { name: 'uri', description: 'The URL of the backup folder.' },
    { name: 'bytes', description: 'Bytes stored.' },
    { name: 'sha256', description: `sha256 of the stored ${artifact}.` },
    { name: 'duration-seconds', description: 'How long the backup took.' },
    { name: 'result', description: result },
  ];
}

export interface CommonOptions {
  storage: Storage;
  timeoutSeconds: number;
  progressIntervalMs: number;
}

export function parseStorage(read: InputReader): Storage {
  return openStorage(read('storage') || './backups');
}

export function parseSet(read: InputReader): string {
  const set = read('set');
  if (!set?.trim()) throw new UserError('set: required; accepted: a set name such as prod-mysql or etc-nova');
  return validateSetName(set);
}

/** The `timeout` input: a timer waits for it, so at most maxTimerSeconds (24d20h31m). */
export function parseTimeout(read: InputReader, fallback: string): number {
  return parseDuration('timeout', read('timeout'), fallback, maxTimerSeconds);
}

export function parseProgress(read: InputReader): number {
  return parseDuration('progress-interval', read('progress-interval'), '10s', maxTimerSeconds) * 1000;
}

/** Recipients or a passphrase; none means the backup is not encrypted. */
export function parseEncryption(read: InputReader): EncryptionKeys | undefined {
  const recipients = parseRecipients(read('age-recipients'));
  const passphrase = read('age-passphrase');
  if (recipients.length && passphrase) {
    throw new UserError('age-passphrase: give either age-recipients or age-passphrase, not both');
  }
  if (recipients.length) return { recipients };
  if (passphrase) return { passphrase };
  return undefined;
}

/**
 * Identities from the secret input or a key file, and/or a passphrase; and whether an artifact
 * that is not encrypted is accepted all the same (allow-unencrypted, default false).
 */
export function parseDecryption(read: InputReader): DecryptionKeys {
  const identities = parseIdentities(read('age-identity'));
  const file = read('age-identity-file')?.trim();
  if (file) {
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch (error) {
      throw new UserError(
        `age-identity-file: cannot read '${file}' (${(error as NodeJS.ErrnoException).code}); accepted: a file made by age-keygen`,
      );
    }
    identities.push(...parseIdentities(text, 'age-identity-file'));
  }
  return {
    identities,
    passphrase: read('age-passphrase') || undefined,
    allowUnencrypted: parseBoolean('allow-unencrypted', read('allow-unencrypted'), false),
  };
}

/** The URL of a backup's folder, for outputs and logs. */
export function backupUri(storage: Storage, set: string, id: string): string {
  return joinKey(storage.url, `${set}/${id}/`);
}

/**
 * The anomaly gates (shared/anomaly/): every backup command and verify-restore compares the
 * backup with the previous committed one of its set.
 */
export const anomalyInputs: InputSpec[] = [
  {
    name: 'max-shrink',
    description:
      'An anomaly when a number of the backup shrank by more than this since the previous committed backup of the set, e.g. 20% (stored and content bytes; files; rows per table; objects per resource; volume sizes), or off. A table or resource that is gone shrank by 100%.',
    default: '20%',
  },
  {
    name: 'max-growth',
    description: 'An anomaly when a number of the backup grew by more than this, e.g. 300%, or off.',
    default: 'off',
  },
  {
    name: 'fail-on-anomaly',
    description:
      'true: an anomaly fails the step (a new backup stays committed all the same); false: a warning.',
    default: 'false',
  },
];

/** min-rows: dump-mysql's and verify-restore's per-table floors. */
export const minRowsInput: InputSpec = {
  name: 'min-rows',
  description:
    'MySQL: an anomaly when a table holds fewer rows than this, as <database>.<table>=N pairs, comma or newline separated; * and ? are wildcards (app.users=1000, app.orders=1, *=1). A named table missing from the backup is one too.',
};

export const anomalyOutputSpecs: OutputSpec[] = [
  { name: 'anomalies', description: 'JSON: the anomalies found, one message each ([] when none).' },
  {
    name: 'deltas',
    description:
      'JSON: each number compared with the previous committed backup of the set: [{ name, previous, current, change (a fraction: -0.003 is -0.3%), anomaly? }] ([] for a first backup).',
  },
];

/**
 * max-shrink or max-growth: a percentage (20%, 20 or 0.5%: more than 0, at most `max`) as a
 * fraction, or null for off.
 */
export function parseLimit(
  name: string,
  value: string | undefined,
  fallback: string,
  max?: number,
): number | null {
  const v = (value?.trim() || fallback).toLowerCase();
  if (v === 'off') return null;
  const match = /^(\d+(?:\.\d+)?)\s*%?$/.exec(v);
  const n = match ? Number(match[1]) : Number.NaN;
  if (!(n > 0) || (max !== undefined && n > max)) {
    throw new UserError(
      `${name}: '${value}' is not accepted; accepted: a percentage more than 0${max !== undefined ? `, at most ${max}` : ''}, such as ${fallback === 'off' ? '300%' : fallback}, or off`,
    );
  }
  return n / 100;
}

/** min-rows: `<database>.<table>=N` pairs (* and ? wildcards). */
export function parseMinRows(value: string | undefined): RowFloor[] {
  return splitList(value).map((pair) => {
    const eq = pair.lastIndexOf('=');
    const tables = eq > 0 ? pair.slice(0, eq).trim() : '';
    const min = eq > 0 ? pair.slice(eq + 1).trim() : '';
    if (!tables || !/^\d+$/.test(min) || !(tables.includes('.') || /^[*?]+$/.test(tables))) {
      throw new UserError(
        `min-rows: '${pair}' is not accepted; accepted: <database>.<table>=N pairs with N a whole number, * and ? as wildcards, e.g. app.users=1000, app.*=1 or *=1`,
      );
    }
    return { tables, min: Number(min) };
  });
}

/** The anomaly inputs; min-rows only where the command declares it (`minRows`). */
export function parseAnomalyOptions(
  read: InputReader,
  c: InputCollector,
  { minRows }: { minRows: boolean },
): AnomalyOptions {
  return {
    maxShrink: c.field(() => parseLimit('max-shrink', read('max-shrink'), '20%', 100)),
    maxGrowth: c.field(() => parseLimit('max-growth', read('max-growth'), 'off')),
    failOnAnomaly: c.field(() => parseBoolean('fail-on-anomaly', read('fail-on-anomaly'), false)),
    minRows: minRows ? (c.field(() => parseMinRows(read('min-rows'))) ?? []) : [],
  };
}

/**
 * A command's result with what the anomaly gates found: the outputs `anomalies` and `deltas`,
 * the comparison rows after its table, the notes, and with fail-on-anomaly a failed step
 * (each anomaly, then `stays`: what is kept although the step fails).
 */
export function withAnomalies(result: CommandResult, report: AnomalyReport, stays: string): CommandResult {
  const { rows, notes } = anomalySummary(report);
  const failing = report.failOnAnomaly && report.anomalies.length > 0;
  return {
    ...result,
    outputs: { ...result.outputs, ...anomalyOutputs(report) },
    summary: {
      ...result.summary,
      table: [...result.summary.table, ...rows],
      notes: [...(result.summary.notes ?? []), ...notes],
    },
    failed: failing
      ? [
          ...(result.failed ?? []),
          ...report.anomalies.map((a) => `anomaly: ${a}`),
          `fail-on-anomaly: ${stays}`,
        ]
      : result.failed,
  };
}

/**
 * A backup command's result, compared with the previous committed backup of its set: the
 * anomaly rows, notes and outputs added, and failed (the backup staying) with fail-on-anomaly.
 */
export async function gateBackup(
  anomaly: AnomalyOptions,
  backup: { storage: Storage; manifest: Manifest; metrics: KindMetrics; logger: Logger },
  result: CommandResult,
): Promise<CommandResult> {
  const { storage, manifest, metrics, logger } = backup;
  const gates = await checkAnomalies(anomaly, { catalog: new Catalog(storage), manifest, metrics, logger });
  return withAnomalies(result, gates, backupStays(manifest.set, manifest.id));
}

/** What stays when fail-on-anomaly fails a backup command: the backup, committed. */
export const backupStays = (set: string, id: string) =>
  `the backup ${set}/${id} is committed and stays in the catalog; the step fails so that someone looks at the change (restore or verify it, or delete it with prune-retention)`;

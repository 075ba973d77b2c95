import { InputCollector, parseBoolean, refuseInput } from '../action/inputs.ts';
import { defineCommand } from '../action/spec.ts';
import { validateBackupRef, validateSetName } from '../catalog/ids.ts';
import { type CopyReport, chooseSets, copyBackups } from '../copy/copy.ts';
import { messageOf, UserError } from '../errors.ts';
import { formatBytes, formatDuration } from '../pipeline/progress.ts';
import { withRetentionLock } from '../storage/locking.ts';
import { openStorage } from '../storage/open.ts';
import { type Storage, StorageError } from '../storage/storage.ts';
import { targetEnv, targetPrefix } from '../storage/target-env.ts';
import { parseStorageUrl, type StorageLocation } from '../storage/url.ts';
import {
  type CommonOptions,
  lockInputs,
  parseLock,
  parseProgress,
  parseStorage,
  parseTimeout,
  progressInput,
  storageInput,
  timeoutInput,
} from './common.ts';

interface Options extends CommonOptions {
  target: Storage;
  set: string;
  backup: string;
  dryRun: boolean;
}

const storageAccepted =
  'a folder path, file:///abs/path, s3://bucket/prefix, gs://bucket/prefix or azblob://container/prefix';

/** Whether two locations are one storage, or one lies inside the other. */
function overlap(a: StorageLocation, b: StorageLocation): boolean {
  const inside = (x: string, y: string) => x === y || x.startsWith(`${y.replace(/\/+$/, '')}/`);
  if (a.provider === 'fs' || b.provider === 'fs') {
    return a.provider === 'fs' && b.provider === 'fs' && (inside(a.root, b.root) || inside(b.root, a.root));
  }
  if (a.provider !== b.provider || a.bucket !== b.bucket) return false;
  return !a.prefix || !b.prefix || inside(a.prefix, b.prefix) || inside(b.prefix, a.prefix);
}

/**
 * The target storage. With LIFEBOAT_TO_ variables it is another service (or account), which
 * may use the same bucket name; without, the same location (or one inside the other) as the
 * source is refused: the copy would read what it writes.
 */
function parseTarget(value: string | undefined, source: string | undefined): Storage {
  if (!value?.trim()) {
    throw new UserError(
      `to-storage: required (not given, or given empty: an unset variable?); accepted: ${storageAccepted}`,
    );
  }
  const env = targetEnv(process.env);
  let location: StorageLocation;
  try {
    location = parseStorageUrl(value);
  } catch (error) {
    if (!(error instanceof UserError)) throw error;
    throw new UserError(messageOf(error).replace(/^storage:/, 'to-storage:'));
  }
  let from: StorageLocation | undefined;
  try {
    from = parseStorageUrl(source || './backups');
  } catch {}
  if (from && overlap(from, location) && (location.provider === 'fs' || env === process.env)) {
    throw new UserError(
      `to-storage: '${value}' is the storage given as storage, or lies inside it or around it; give another storage (a second bucket, another cloud; set ${targetPrefix}* variables for another service or account)`,
    );
  }
  return openStorage(value, env);
}

function parseSetOrAll(value: string | undefined): string {
  const v = value?.trim();
  if (!v) throw new UserError("set: required; accepted: a set name such as etc-nova, or '*' for every set");
  return v === '*' ? v : validateSetName(v);
}

function parseBackup(value: string | undefined, set: string | undefined): string {
  const v = value?.trim() || 'latest';
  if (v === 'all-missing') return v;
  const ref = validateBackupRef(v);
  if (ref !== 'latest' && set === '*') {
    throw new UserError(
      `backup: '${ref}' names one backup of one set; with set '*' give latest or all-missing, or name the set`,
    );
  }
  return ref;
}

/** A target's storage error, said as the target's, with where its credentials come from. */
function asTarget(error: unknown): unknown {
  if (!(error instanceof StorageError)) return error;
  const hint = ['credentials', 'denied'].includes(error.code)
    ? targetEnv(process.env) !== process.env
      ? ` (to-storage uses only the ${targetPrefix}* variables)`
      : ` (to-storage uses the same variables as storage; set ${targetPrefix}AWS_ACCESS_KEY_ID, ${targetPrefix}AZURE_STORAGE_CONNECTION_STRING, … for its own)`
    : '';
  return new StorageError(error.code, `to-storage: ${error.message}${hint}`, { cause: error });
}

function summaryTable(report: CopyReport): string[][] {
  const table = [['Set', 'Backup', 'Kind', 'Size', 'Result']];
  for (const b of report.backups) {
    const result = {
      copied: `copied in ${formatDuration(b.seconds ?? 0)}${b.replacedUnfinished ? ' (an unfinished copy replaced)' : ''}`,
      present: 'already present (same sha256s)',
      'would-copy': `would copy${b.replacedUnfinished ? ' (replacing an unfinished copy)' : ''}`,
      failed: `FAILED: ${b.reason}`,
    }[b.state];
    table.push([b.set, b.id, b.kind ?? '', b.state === 'failed' ? '' : formatBytes(b.bytes), result]);
  }
  return table;
}

export const copyCommand = defineCommand<Options>({
  name: 'copy',
  description:
    'Copy committed backups to a second storage (any of folder, S3, GCS, Azure to any other), streamed and re-hashed, committed there with the same backup id; resumes after a killed run.',
  inputs: [
    storageInput,
    {
      name: 'to-storage',
      description: `Where to copy to: a folder, file:///path, s3://bucket/prefix, gs://bucket/prefix or azblob://container/prefix. Its credentials and endpoint come from the standard variables with the prefix ${targetPrefix} (${targetPrefix}AWS_ACCESS_KEY_ID, ${targetPrefix}AWS_ENDPOINT_URL_S3, ${targetPrefix}AZURE_STORAGE_CONNECTION_STRING, …): when any is set, the target sees only those; when none is, the same variables as storage.`,
      required: true,
    },
    {
      name: 'set',
      description: "The set to copy, or '*' for every set of storage.",
      required: true,
    },
    {
      name: 'backup',
      description:
        'latest (the newest committed backup of each set), a backup id, or all-missing (every committed backup the target lacks).',
      default: 'latest',
    },
    {
      name: 'dry-run',
      description:
        'true: print the plan (what would be copied, its size, what is already there) and write nothing.',
      default: 'false',
    },
    ...lockInputs,
    timeoutInput('6h'),
    progressInput,
  ],
  outputs: [
    { name: 'copied', description: 'The backups copied, as set/id, comma separated (empty when none).' },
    { name: 'count', description: 'How many backups were copied (in a dry run: would be).' },
    { name: 'bytes', description: 'Bytes copied (in a dry run: to copy).' },
    { name: 'duration-seconds', description: 'How long the command took.' },
    { name: 'throughput', description: 'Bytes per second while copying.' },
    { name: 'result', description: 'Every backup considered, with what was done, as JSON.' },
  ],
  parse(read) {
    const c = new InputCollector();
    const set = c.field(() => parseSetOrAll(read('set')));
    const target = read('to-storage');
    const options: Options = {
      storage: c.field(() => parseStorage(read)),
      target: undefined as unknown as Storage,
      set,
      backup: c.field(() => parseBackup(read('backup'), set)),
      dryRun: c.field(() => parseBoolean('dry-run', read('dry-run'), false)),
      timeoutSeconds: c.field(() => parseTimeout(read, '6h')),
      progressIntervalMs: c.field(() => parseProgress(read)),
    };
    // A missing to-storage is refused where inputs are read, like an empty storage (so that
    // the spec tests can parse every command without it).
    const lock = c.field(() => parseLock(read));
    try {
      const to = parseTarget(target, read('storage'));
      // lock-for on copy: each copied backup is locked from its own start (its manifest's startedAt).
      options.target = lock ? withRetentionLock(to, lock) : to;
    } catch (error) {
      if (!(error instanceof UserError)) throw error;
      refuseInput(read, messageOf(error));
    }
    c.finish();
    return options;
  },
  async execute(options, { logger, signal }) {
    const started = Date.now();
    const { storage, target, dryRun } = options;
    await storage.check('read');
    const sets = await chooseSets(storage, options.set);
    await target.check(dryRun ? 'read' : 'write').catch(async (error) => {
      // A dry run into a folder that does not exist yet: an empty target (a real run creates it).
      const missing = dryRun && error instanceof StorageError && error.code === 'no-bucket';
      if (!missing || (await target.listDirs('').catch(() => undefined))?.length !== 0) throw asTarget(error);
    });
    const report = await copyBackups({
      source: storage,
      target,
      sets,
      allSets: options.set === '*',
      backup: options.backup,
      dryRun,
      logger,
      progressIntervalMs: options.progressIntervalMs,
      signal,
    });
    const seconds = (Date.now() - started) / 1000;
    const moved = report.backups.filter((b) => b.state === (dryRun ? 'would-copy' : 'copied'));
    const present = report.backups.filter((b) => b.state === 'present');
    const failed = report.backups.filter((b) => b.state === 'failed');
    const notes = [
      `${dryRun ? 'Dry run: nothing was written. Would copy' : 'Copied'} ${moved.length} backup(s), ${formatBytes(report.bytes)}, from ${storage.url} to ${target.url}${!dryRun && report.seconds > 0 ? ` at ${formatBytes(report.bytesPerSecond)}/s` : ''}; ${present.length} already there.`,
    ];
    if (failed.length)
      notes.push(
        `${failed.length} backup(s) not copied (see the table); nothing of them looks committed in ${target.url}.`,
      );
    notes.push('Retention is per storage: prune-retention on the copy keeps what its own policy keeps.');
    return {
      outputs: {
        copied: moved.map((b) => `${b.set}/${b.id}`).join(','),
        count: String(moved.length),
        bytes: String(report.bytes),
        'duration-seconds': seconds.toFixed(1),
        throughput: String(report.bytesPerSecond),
        result: JSON.stringify(report),
      },
      summary: {
        heading: `${dryRun ? 'Copy plan' : 'Copy'}: ${storage.url} → ${target.url}`,
        table: summaryTable(report),
        notes,
      },
      failed: failed.length ? failed.map((b) => b.reason ?? `${b.set}/${b.id}: not copied`) : undefined,
    };
  },
});

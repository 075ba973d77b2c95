/**
 * What a kind of backup (files, mysql, k8s, ebs, zfs) brings to the generic commands: each job is
 * a small, optional part, and a command only asks the registry (index.ts) for the part it runs.
 */
import type { InputCollector } from '../action/inputs.ts';
import type { CommandContext, CommandResult, InputReader, InputSpec, OutputSpec } from '../action/spec.ts';
import type { Manifest } from '../catalog/manifest.ts';
import type { DecryptionKeys } from '../pipeline/encryption.ts';
import type { Logger } from '../pipeline/progress.ts';
import type { OutsideReport } from '../retention/prune.ts';
import type { Storage } from '../storage/storage.ts';
import type { VerifyOutcome } from '../verify/report.ts';

/** What every kind's restore or verification gets from the command besides its own options. */
export interface StepContext extends CommandContext {
  storage: Storage;
  keys: DecryptionKeys;
  progressIntervalMs: number;
  /** The URL of the backup folder (or of the backup outside the catalog). */
  uri: string;
  /** When the command started (ms since the epoch), for durations. */
  started: number;
}

export interface RestoreContext extends StepContext {
  dryRun: boolean;
  overwrite: boolean;
}

/** One job of a kind: the inputs it adds to a command, how it reads them, and how it runs. */
export interface Step<Options, Context, Result> {
  /** Described without the kind: the registry prefixes "<kind> backups: ". */
  inputs: InputSpec[];
  outputs?: OutputSpec[];
  /** Reads this kind's inputs; every problem goes into `c` (one line each). */
  parse(read: InputReader, c: InputCollector): Options;
  run(options: Options, manifest: Manifest, context: Context): Promise<CommandResult & Result>;
  /** Removes what a killed run left (the `post:` step): the `type`s of the states it records. */
  leftovers?: { types: string[]; remove(state: unknown, read: InputReader, logger: Logger): Promise<void> };
}

export interface RestoreStep<Options> extends Step<Options, RestoreContext, unknown> {
  /**
   * An input that names a backup outside the catalog (a Velero tarball): when given, `set` is
   * not required and `runOutside` restores it.
   */
  outside?: {
    input: string;
    runOutside(options: Options, context: Omit<RestoreContext, 'uri'>): Promise<CommandResult>;
  };
}

export interface VerifyContext extends StepContext {
  /** The folder for throwaway data and the report. */
  workDir: string;
}

export interface VerifyStep<Options> {
  /** What the verification does, for the command's description. */
  checks: string;
  inputs: InputSpec[];
  parse(read: InputReader, c: InputCollector): Options;
  run(
    options: Options,
    manifest: Manifest,
    context: VerifyContext,
  ): Promise<VerifyOutcome & { stopped?: Error }>;
  leftovers?: Step<Options, VerifyContext, unknown>['leftovers'];
}

/** What prune-retention gives a kind's removal of the data its deleted backups kept outside the catalog. */
export interface PruneContext {
  set: string;
  logger: Logger;
  /** Opens a storage a manifest names by URL (a Velero copy's). */
  openStorage(url: string): Storage;
}

/**
 * Data a kind's backups keep outside the catalog (EC2 snapshots, a Velero copy), which prune
 * removes with the backup: `of` reads where from the manifest before the manifests go, and
 * `remove` deletes what the deleted backups had (only those the storage really deleted),
 * its result going into the set's report field `report`.
 */
export type OutsidePart<Ref> = {
  [F in keyof OutsideReport]: {
    report: F;
    of(manifest: Manifest): Ref | undefined;
    remove(refs: { id: string; ref: Ref }[], context: PruneContext): Promise<OutsideReport[F]>;
  };
}[keyof OutsideReport];

/** What prune-retention asks of a kind; a kind without it is pruned as catalog objects alone. */
export interface PrunePart<Ref> {
  /**
   * Why prune-retention must not delete this backup (its data live elsewhere and are pruned
   * there), or undefined. Asked of the backups the plan deletes; a named set is then refused,
   * and with set '*' the set is skipped with a warning.
   */
  refuse?(manifest: Manifest): string | undefined;
  outside?: OutsidePart<Ref>;
}

export interface Kind<R = unknown, V = unknown, P = unknown> {
  name: string;
  restore?: RestoreStep<R>;
  verify?: VerifyStep<V>;
  prune?: PrunePart<P>;
  /**
   * The numbers the anomaly gates (shared/anomaly/) compare with the previous backup of the
   * set, by name: 'rows:<db>.<table>', 'objects:<resource>', 'volume-bytes:<id>', …
   * (stored-bytes and content-bytes are every kind's). The manifest may come from storage:
   * read its facts defensively; what is not a finite count or size is dropped.
   */
  metrics?: (manifest: Manifest) => Record<string, number>;
}

export function defineKind<R, V, P = unknown>(kind: Kind<R, V, P>): Kind<R, V, P> {
  return kind;
}

/** The outputs every restore of a catalog backup gives, and its summary's heading. */
export function restoreOutputs(
  manifest: Manifest,
  { uri, dryRun, started }: RestoreContext,
  target: string,
  bytes: number,
  result: object,
) {
  const seconds = (Date.now() - started) / 1000;
  return {
    seconds,
    outputs: {
      'backup-id': manifest.id,
      uri,
      target,
      bytes: String(bytes),
      'duration-seconds': seconds.toFixed(1),
      result: JSON.stringify({ backupId: manifest.id, set: manifest.set, kind: manifest.kind, ...result }),
    },
    heading: `${dryRun ? 'Dry-run restore' : 'Restore'} of ${manifest.set}/${manifest.id}`,
  };
}

import { InputCollector, parseBoolean, requireInput } from '../action/inputs.ts';
import { defineCommand } from '../action/spec.ts';
import { Catalog } from '../catalog/catalog.ts';
import { validateBackupRef } from '../catalog/ids.ts';
import { UserError } from '../errors.ts';
import { restoreFiles } from '../files/restore.ts';
import type { DecryptionKeys } from '../pipeline/encryption.ts';
import { formatBytes } from '../pipeline/progress.ts';
import {
  backupUri,
  type CommonOptions,
  parseDecryption,
  parseProgress,
  parseSet,
  parseStorage,
  parseTimeout,
  passphraseInput,
  progressInput,
  setInput,
  storageInput,
  timeoutInput,
} from './common.ts';

interface Options extends CommonOptions {
  set: string;
  backup: string;
  target?: string;
  overwrite: boolean;
  dryRun: boolean;
  keys: DecryptionKeys;
}

export const restoreCommand = defineCommand<Options>({
  name: 'restore',
  description:
    "Restore a backup for real: checks every artifact's sha256 and never leaves a half-restored target.",
  inputs: [
    storageInput,
    setInput,
    {
      name: 'backup',
      description: 'The backup id, or latest (the newest committed backup of the set).',
      default: 'latest',
    },
    {
      name: 'target',
      description: 'files backups: the folder to restore into (new or empty unless overwrite).',
    },
    {
      name: 'overwrite',
      description: 'Replace a non-empty target, only once the restore has fully succeeded.',
      default: 'false',
    },
    {
      name: 'dry-run',
      description: 'Download, check, decrypt and read everything; write nothing.',
      default: 'false',
    },
    {
      name: 'age-identity',
      description:
        'The age identity (AGE-SECRET-KEY-1…) for encrypted backups (secret; on the CLI only from LIFEBOAT_AGE_IDENTITY).',
      secretEnv: 'LIFEBOAT_AGE_IDENTITY',
    },
    { name: 'age-identity-file', description: 'A file holding age identities, as made by age-keygen.' },
    passphraseInput,
    timeoutInput('6h'),
    progressInput,
  ],
  outputs: [
    { name: 'backup-id', description: 'The id of the restored backup.' },
    { name: 'uri', description: 'The URL of the restored backup folder.' },
    { name: 'target', description: 'Where it was restored.' },
    { name: 'bytes', description: 'Bytes of content restored.' },
    { name: 'duration-seconds', description: 'How long the restore took.' },
    { name: 'result', description: 'What was restored, as JSON.' },
  ],
  parse(read) {
    const c = new InputCollector();
    const options: Options = {
      storage: c.field(() => parseStorage(read)),
      set: c.field(() => parseSet(read)),
      backup: c.field(() => validateBackupRef(read('backup') || 'latest')),
      target: read('target')?.trim() || undefined,
      overwrite: c.field(() => parseBoolean('overwrite', read('overwrite'), false)),
      dryRun: c.field(() => parseBoolean('dry-run', read('dry-run'), false)),
      keys: c.field(() => parseDecryption(read)),
      timeoutSeconds: c.field(() => parseTimeout(read, '6h')),
      progressIntervalMs: c.field(() => parseProgress(read)),
    };
    c.finish();
    return options;
  },
  async execute(options, { logger, signal }) {
    const started = Date.now();
    await options.storage.check();
    const manifest = await new Catalog(options.storage).resolve(options.set, options.backup);
    const uri = backupUri(options.storage, manifest.set, manifest.id);
    logger.info(
      `${options.dryRun ? 'dry run: checking' : 'restoring'} ${uri} (${manifest.kind}, finished ${manifest.finishedAt})`,
    );
    if (manifest.kind !== 'files') {
      throw new UserError(
        `backup: '${manifest.id}' is a ${manifest.kind} backup; restoring ${manifest.kind} backups is not built yet (only files)`,
      );
    }
    const target = requireInput('target', options.target, 'the folder to restore the files into');
    const result = await restoreFiles({ ...options, manifest, target, logger, signal });
    const seconds = (Date.now() - started) / 1000;
    const verb = options.dryRun ? 'checked (dry run, nothing written)' : `restored into ${result.target}`;
    logger.info(`${verb}: ${result.facts.files} files, ${formatBytes(result.facts.bytes)}, sha256 verified`);
    return {
      outputs: {
        'backup-id': manifest.id,
        uri,
        target: result.target,
        bytes: String(result.facts.bytes),
        'duration-seconds': seconds.toFixed(1),
        result: JSON.stringify({ backupId: manifest.id, set: manifest.set, kind: manifest.kind, ...result }),
      },
      summary: {
        heading: `${options.dryRun ? 'Dry-run restore' : 'Restore'} of ${manifest.set}/${manifest.id}`,
        table: [
          ['', ''],
          ['Backup', manifest.id],
          ['From', uri],
          ['Target', options.dryRun ? `${result.target} (dry run: nothing written)` : result.target],
          [
            'Restored',
            `${result.facts.files} files, ${result.facts.directories} folders, ${result.facts.symlinks} symlinks`,
          ],
          ['Content', formatBytes(result.facts.bytes)],
          ['Integrity', 'sha256 and counts match the manifest'],
          ['Duration', `${seconds.toFixed(1)} s`],
        ],
      },
    };
  },
});

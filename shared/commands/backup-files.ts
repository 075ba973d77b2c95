import { InputCollector, requireInput } from '../action/inputs.ts';
import { defineCommand } from '../action/spec.ts';
import { filesMetrics } from '../anomaly/files.ts';
import type { AnomalyOptions } from '../anomaly/run.ts';
import { totalBytes } from '../catalog/manifest.ts';
import { backupFiles, type FilesBackupOptions } from '../files/backup.ts';
import { splitList } from '../pipeline/encryption.ts';
import { formatBytes } from '../pipeline/progress.ts';
import {
  anomalyInputs,
  anomalyOutputSpecs,
  artifactInputs,
  backupOutputs,
  backupUri,
  type CommonOptions,
  gateBackup,
  lockInputs,
  lockRows,
  parseAnomalyOptions,
  parseArtifactOptions,
  parseBackupStorage,
  parseProgress,
  parseSet,
  parseTimeout,
  progressInput,
  setInput,
  storageInput,
  timeoutInput,
} from './common.ts';

type Options = CommonOptions &
  Omit<FilesBackupOptions, 'logger' | 'signal' | 'storage' | 'progressIntervalMs'> & {
    anomaly: AnomalyOptions;
  };

export const backupFilesCommand = defineCommand<Options>({
  name: 'backup-files',
  description:
    'Back up a folder (configuration such as /etc/nova) into a set: one tar archive, compressed and optionally encrypted.',
  inputs: [
    storageInput,
    setInput,
    { name: 'source', description: 'The folder to back up.', required: true },
    {
      name: 'include',
      description:
        'Globs of what to include (comma or newline separated); a pattern without / matches a name at any depth. Default: everything.',
    },
    { name: 'exclude', description: 'Globs of what to leave out, e.g. *.log, cache/**.' },
    ...artifactInputs,
    ...lockInputs,
    ...anomalyInputs,
    timeoutInput('6h'),
    progressInput,
  ],
  outputs: [...backupOutputs('archive', 'The manifest, as JSON.'), ...anomalyOutputSpecs],
  parse(read) {
    const c = new InputCollector();
    const options: Options = {
      storage: parseBackupStorage(read, c),
      set: c.field(() => parseSet(read)),
      source: c.field(() => requireInput('source', read('source'), 'the folder to back up')),
      include: splitList(read('include')),
      exclude: splitList(read('exclude')),
      ...parseArtifactOptions(read, c),
      anomaly: parseAnomalyOptions(read, c, { minRows: false }),
      timeoutSeconds: c.field(() => parseTimeout(read, '6h')),
      progressIntervalMs: c.field(() => parseProgress(read)),
    };
    c.finish();
    return options;
  },
  async execute(options, { logger, signal }) {
    const started = Date.now();
    const manifest = await backupFiles({ ...options, logger, signal });
    const seconds = (Date.now() - started) / 1000;
    const artifact = manifest.artifacts[0]!;
    const facts = manifest.facts as { files: number; directories: number; symlinks: number; bytes: number };
    const uri = backupUri(options.storage, manifest.set, manifest.id);
    logger.info(`committed ${uri} (${formatBytes(totalBytes(manifest))} stored)`);
    return gateBackup(
      options.anomaly,
      { storage: options.storage, manifest, metrics: filesMetrics, logger },
      {
        outputs: {
          'backup-id': manifest.id,
          uri,
          bytes: String(totalBytes(manifest)),
          sha256: artifact.sha256,
          'duration-seconds': seconds.toFixed(1),
          result: JSON.stringify(manifest),
        },
        summary: {
          heading: `Backup ${manifest.set}/${manifest.id}`,
          table: [
            ['', ''],
            ['Backup', manifest.id],
            ['Stored at', uri],
            ['Source', options.source],
            ['Files', `${facts.files} files, ${facts.directories} folders, ${facts.symlinks} symlinks`],
            ['Content', formatBytes(facts.bytes)],
            [
              'Stored',
              `${formatBytes(totalBytes(manifest))}: archive and index (${artifact.compression}${artifact.encryption ? ', age-encrypted' : ', not encrypted'})`,
            ],
            ['sha256', artifact.sha256],
            ...lockRows(manifest),
            ['Duration', `${seconds.toFixed(1)} s`],
          ],
          notes: manifest.contents.excluded.length
            ? [`Left out: ${manifest.contents.excluded.join('; ')}`]
            : undefined,
        },
      },
    );
  },
});

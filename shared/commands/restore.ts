import { InputCollector, parseBoolean } from '../action/inputs.ts';
import { defineCommand } from '../action/spec.ts';
import { Catalog } from '../catalog/catalog.ts';
import { validateBackupRef } from '../catalog/ids.ts';
import { kindFor, kindInputs, kindOutputs, kinds, parseKinds, removeKindLeftovers } from '../kinds/index.ts';
import type { DecryptionKeys } from '../pipeline/encryption.ts';
import {
  backupUri,
  type CommonOptions,
  decryptionInputs,
  parseDecryption,
  parseProgress,
  parseSet,
  parseStorage,
  parseTimeout,
  progressInput,
  setInput,
  storageInput,
  timeoutInput,
} from './common.ts';

interface Options extends CommonOptions {
  set: string;
  backup: string;
  overwrite: boolean;
  dryRun: boolean;
  keys: DecryptionKeys;
  /** Each kind's own options, by kind name. */
  kinds: Record<string, unknown>;
  /** The kind whose input names a backup outside the catalog, when one was given. */
  outside?: string;
}

/** The inputs (each a kind's) that name a backup outside the catalog, e.g. another tool's tarball. */
const outsideInputs = kinds.flatMap((k) => (k.restore?.outside ? [k.restore.outside.input] : []));

export const restoreCommand = defineCommand<Options>({
  name: 'restore',
  description:
    "Restore a backup for real: checks every artifact's sha256 and never leaves a half-restored target.",
  inputs: [
    storageInput,
    {
      ...setInput,
      required: false,
      description: `${setInput.description} Required, except with ${outsideInputs.join(' or ')}.`,
    },
    {
      name: 'backup',
      description: 'The backup id, or latest (the newest committed backup of the set).',
      default: 'latest',
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
    ...decryptionInputs,
    ...kindInputs('restore'),
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
    ...kindOutputs('restore'),
  ],
  parse(read) {
    const c = new InputCollector();
    const outside = kinds.find((k) => k.restore?.outside && read(k.restore.outside.input)?.trim())?.name;
    const options: Options = {
      storage: c.field(() => parseStorage(read)),
      set: outside ? read('set')?.trim() || '' : c.field(() => parseSet(read)),
      backup: c.field(() => validateBackupRef(read('backup') || 'latest')),
      overwrite: c.field(() => parseBoolean('overwrite', read('overwrite'), false)),
      dryRun: c.field(() => parseBoolean('dry-run', read('dry-run'), false)),
      keys: c.field(() => parseDecryption(read)),
      kinds: parseKinds('restore', read, c),
      outside,
      timeoutSeconds: c.field(() => parseTimeout(read, '6h')),
      progressIntervalMs: c.field(() => parseProgress(read)),
    };
    c.finish();
    return options;
  },
  async execute(options, context) {
    const { storage, keys, dryRun, overwrite, progressIntervalMs } = options;
    const common = { ...context, storage, keys, dryRun, overwrite, progressIntervalMs, started: Date.now() };
    const outside = kinds.find((k) => k.name === options.outside)?.restore;
    if (outside?.outside) return outside.outside.runOutside(options.kinds[options.outside!], common);
    await storage.check('read');
    const manifest = await new Catalog(storage).resolve(options.set, options.backup);
    const uri = backupUri(storage, manifest.set, manifest.id);
    context.logger.info(
      `${dryRun ? 'dry run: checking' : 'restoring'} ${uri} (${manifest.kind}, finished ${manifest.finishedAt})`,
    );
    const kind = kindFor('restore', manifest, 'restore');
    return kind.restore!.run(options.kinds[kind.name], manifest, { ...common, uri });
  },
  /** The `post:` step of a killed restore: the kind that recorded what it left removes it. */
  cleanup: (state, read, logger) => removeKindLeftovers('restore', state, read, logger),
});

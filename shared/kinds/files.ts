import { parseBoolean, requireInput } from '../action/inputs.ts';
import { filesMetrics } from '../anomaly/files.ts';
import { type FilesLeftovers, removeFilesLeftovers, restoreFiles } from '../files/restore.ts';
import { type FilesVerifyLeftovers, removeFilesVerify, verifyFiles } from '../files/verify.ts';
import { formatBytes } from '../pipeline/progress.ts';
import { parseCommandChecks } from '../verify/command-checks.ts';
import { defineKind, restoreOutputs } from './kind.ts';

export const filesKind = defineKind({
  name: 'files',
  metrics: filesMetrics,
  restore: {
    inputs: [
      { name: 'target', description: 'the folder to restore into (new or empty unless overwrite).' },
      {
        name: 'preserve-owner',
        description:
          "restore the archive's owners (when running as root) and setuid, setgid and sticky bits; by default files belong to whoever restores and get no setuid or setgid bit.",
        default: 'false',
      },
    ],
    parse: (read, c) => ({
      target: read('target')?.trim() || undefined,
      preserveOwner: c.field(() => parseBoolean('preserve-owner', read('preserve-owner'), false)),
    }),
    async run(options, manifest, context) {
      const { logger, signal, leftovers, uri, started: _, ...common } = context;
      const target = requireInput('target', options.target, 'the folder to restore the files into');
      const result = await restoreFiles({
        ...common,
        preserveOwner: options.preserveOwner,
        manifest,
        target,
        logger,
        signal,
        onLeftovers: (state) => leftovers?.(state),
      });
      const verb = common.dryRun ? 'checked (dry run, nothing written)' : `restored into ${result.target}`;
      logger.info(
        `${verb}: ${result.facts.files} files, ${formatBytes(result.facts.bytes)}, sha256 verified`,
      );
      const { seconds, outputs, heading } = restoreOutputs(
        manifest,
        context,
        result.target,
        result.facts.bytes,
        result,
      );
      return {
        outputs,
        summary: {
          heading,
          table: [
            ['', ''],
            ['Backup', manifest.id],
            ['From', uri],
            ['Target', common.dryRun ? `${result.target} (dry run: nothing written)` : result.target],
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
    leftovers: {
      types: ['files-staging'],
      remove: (state, _read, logger) => removeFilesLeftovers(state as FilesLeftovers, logger),
    },
  },
  verify: {
    checks:
      "the archive restored into a throwaway folder, every file's size and sha256 compared with the index made at backup time, your check commands",
    inputs: [
      {
        name: 'check-commands',
        description:
          'your checks, a YAML list of {name, run}: shell commands run against the restored folder (RESTORED_DIR in their environment), each passing when it exits 0.',
      },
    ],
    parse: (read, c) => ({ checkCommands: c.field(() => parseCommandChecks(read('check-commands'))) ?? [] }),
    run(options, manifest, { logger, signal, leftovers, uri, storage, keys, progressIntervalMs, workDir }) {
      logger.info(`verifying ${uri} (files, taken ${manifest.startedAt}): restore into a throwaway folder`);
      return verifyFiles({
        manifest,
        storage,
        keys,
        workDir,
        checkCommands: options.checkCommands,
        logger,
        signal,
        progressIntervalMs,
        onLeftovers: (state) => leftovers?.(state),
      });
    },
    leftovers: {
      types: ['files-verify'],
      remove: async (state, _read, logger) => {
        await removeFilesVerify(state as FilesVerifyLeftovers, logger);
      },
    },
  },
});

import type { Command } from '../action/spec.ts';
import { withSignals } from '../signals/index.ts';
import { backupFilesCommand } from './backup-files.ts';
import { backupK8sCommand } from './backup-k8s.ts';
import { copyCommand } from './copy.ts';
import { dumpMysqlCommand } from './dump-mysql.ts';
import { listCommand } from './list.ts';
import { pruneRetentionCommand } from './prune-retention.ts';
import { reportCommand } from './report.ts';
import { restoreCommand } from './restore.ts';
import { snapshotEbsCommand } from './snapshot-ebs.ts';
import { snapshotZfsCommand } from './snapshot-zfs.ts';
import { statusCommand } from './status.ts';
import { verifyRestoreCommand } from './verify-restore.ts';

/** The commands that are built, in the order the CLI's help lists them. */
export const commands: Command<never>[] = (
  [
    backupFilesCommand,
    dumpMysqlCommand,
    backupK8sCommand,
    snapshotEbsCommand,
    snapshotZfsCommand,
    restoreCommand,
    verifyRestoreCommand,
    listCommand,
    pruneRetentionCommand,
    copyCommand,
    statusCommand,
    reportCommand,
  ] as unknown as Command<never>[]
).map((command) => withSignals(command));

/** Commands of the design that are not built yet: asking for one says so. */
export const notBuilt: Record<string, string> = {};

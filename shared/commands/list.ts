import { InputCollector } from '../action/inputs.ts';
import { defineCommand } from '../action/spec.ts';
import { Catalog } from '../catalog/catalog.ts';
import { validateSetName } from '../catalog/ids.ts';
import { totalBytes } from '../catalog/manifest.ts';
import { messageOf, UserError } from '../errors.ts';
import { formatBytes, formatDuration } from '../pipeline/progress.ts';
import { forEachLimit } from '../storage/storage.ts';
import { type CommonOptions, parseStorage, parseTimeout, storageInput, timeoutInput } from './common.ts';

interface Options extends CommonOptions {
  set?: string;
}

export interface ListedBackup {
  set: string;
  id: string;
  kind: string;
  mode: string;
  bytes: number;
  finishedAt: string;
  ageSeconds: number;
  lastVerification: { at: string; passed: boolean } | null;
}

/** A folder with a manifest that Lifeboat refuses: not listed as a backup, never restored. */
export interface DamagedBackup {
  set: string;
  id: string;
  reason: string;
}

/**
 * Every committed backup (newest first per set), the count of unfinished folders, and the
 * folders whose manifest is refused (damaged, or not describing its own folder).
 */
export async function listCatalog(catalog: Catalog, only?: string, now = new Date()) {
  const sets = only ? [only] : await catalog.listSets();
  const backups: ListedBackup[] = [];
  const damaged: DamagedBackup[] = [];
  let unfinished = 0;
  for (const set of sets) {
    const entries = await catalog.listBackups(set);
    unfinished += entries.filter((e) => !e.committed).length;
    const committed = entries.filter((e) => e.committed);
    const rows: (ListedBackup | DamagedBackup)[] = new Array(committed.length);
    await forEachLimit(
      committed.map((entry, index) => ({ entry, index })),
      8,
      async ({ entry, index }) => {
        const [read, last] = await Promise.allSettled([
          catalog.readManifest(set, entry.id),
          catalog.lastVerification(entry),
        ]);
        if (read.status === 'rejected') {
          if (!(read.reason instanceof UserError)) throw read.reason;
          rows[index] = { set, id: entry.id, reason: messageOf(read.reason) };
          return;
        }
        if (last.status === 'rejected') throw last.reason;
        const manifest = read.value;
        const verification = last.value;
        rows[index] = {
          set,
          id: entry.id,
          kind: manifest.kind,
          mode: manifest.mode,
          bytes: totalBytes(manifest),
          finishedAt: manifest.finishedAt,
          ageSeconds: Math.max(0, (now.getTime() - Date.parse(manifest.finishedAt)) / 1000),
          lastVerification: verification ? { at: verification.at, passed: verification.passed } : null,
        };
      },
    );
    for (const row of rows) {
      if ('reason' in row) damaged.push(row);
      else backups.push(row);
    }
  }
  return { sets, backups, unfinished, damaged };
}

export const listCommand = defineCommand<Options>({
  name: 'list',
  description:
    'List the sets and committed backups in a storage, with size, age, mode and last verification.',
  inputs: [
    storageInput,
    { name: 'set', description: 'Only this set (default: every set).' },
    timeoutInput('10m'),
  ],
  outputs: [
    { name: 'count', description: 'How many committed backups were listed.' },
    { name: 'result', description: 'Sets and backups, as JSON.' },
  ],
  parse(read) {
    const c = new InputCollector();
    const set = read('set')?.trim();
    const options: Options = {
      storage: c.field(() => parseStorage(read)),
      set: set ? c.field(() => validateSetName(set)) : undefined,
      timeoutSeconds: c.field(() => parseTimeout(read, '10m')),
      progressIntervalMs: 10_000,
    };
    c.finish();
    return options;
  },
  async execute(options, { logger }) {
    await options.storage.check();
    const listing = await listCatalog(new Catalog(options.storage), options.set);
    const table = [['Set', 'Backup', 'Kind', 'Mode', 'Size', 'Age', 'Last verification']];
    for (const b of listing.backups) {
      const v = b.lastVerification;
      table.push([
        b.set,
        b.id,
        b.kind,
        b.mode,
        formatBytes(b.bytes),
        formatDuration(b.ageSeconds),
        v ? `${v.passed ? 'passed' : 'FAILED'} ${v.at}` : 'never',
      ]);
    }
    const notes = [
      `${listing.backups.length} committed backup(s) in ${listing.sets.length} set(s) at ${options.storage.url}`,
    ];
    for (const d of listing.damaged) logger.warn(`not listed: ${d.set}/${d.id}: ${d.reason}`);
    if (listing.damaged.length)
      notes.push(
        `${listing.damaged.length} backup folder(s) with a manifest Lifeboat refuses are not listed and cannot be restored: ${listing.damaged.map((d) => `${d.set}/${d.id}`).join(', ')} (the log says why)`,
      );
    if (listing.unfinished)
      notes.push(
        `${listing.unfinished} unfinished backup folder(s) without a manifest are not listed (prune-retention removes them)`,
      );
    return {
      outputs: { count: String(listing.backups.length), result: JSON.stringify(listing) },
      summary: { heading: `Backups in ${options.storage.url}`, table, notes },
    };
  },
});

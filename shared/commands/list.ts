import { InputCollector } from '../action/inputs.ts';
import { defineCommand } from '../action/spec.ts';
import { Catalog } from '../catalog/catalog.ts';
import { clockSkewMs, compareIdsNewestFirst, validateSetName } from '../catalog/ids.ts';
import { formatBytes, formatDuration } from '../pipeline/progress.ts';
import { type CommonOptions, parseStorage, parseTimeout, storageInput, timeoutInput } from './common.ts';

interface Options extends CommonOptions {
  set?: string;
}

import { listCatalog } from '../catalog/listing.ts';

export { type DamagedBackup, type ListedBackup, listCatalog } from '../catalog/listing.ts';

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
    await options.storage.check('read');
    const listing = await listCatalog(new Catalog(options.storage), options.set);
    const table = [['Set', 'Backup', 'Kind', 'Mode', 'Size', 'Age', 'Last verification', 'Lock']];
    const now = new Date();
    // Damaged backups stay in their place in the table, marked, so that none goes unseen.
    const rows = [...listing.backups, ...listing.damaged].sort(
      (a, b) =>
        listing.sets.indexOf(a.set) - listing.sets.indexOf(b.set) || compareIdsNewestFirst(a.id, b.id),
    );
    for (const b of rows) {
      if (!('kind' in b)) {
        table.push([b.set, b.id, 'DAMAGED', '', '', '', 'cannot be restored (see below)', '']);
        continue;
      }
      const v = b.lastVerification;
      table.push([
        b.set,
        b.id,
        b.kind,
        b.mode,
        formatBytes(b.bytes),
        b.aheadOfClock ? 'ahead of the clock' : formatDuration(b.ageSeconds),
        v ? `${v.passed ? 'passed' : 'FAILED'} ${v.at}` : b.verificationDamaged ? 'DAMAGED record' : 'never',
        b.lock
          ? `${b.lock.mode} until ${b.lock.until}${Date.parse(b.lock.until) <= now.getTime() ? ' (passed)' : ''}`
          : '',
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
    const ahead = listing.backups.filter((b) => b.aheadOfClock);
    for (const b of ahead) {
      logger.warn(
        `${b.set}/${b.id} is dated ahead of this machine's clock by more than ${clockSkewMs / 60_000} minutes (a runner's clock was ahead when it was taken): it is never latest, and prune-retention's newest rule does not protect it; restore it by its id if you want it`,
      );
    }
    if (ahead.length)
      notes.push(
        `${ahead.length} backup(s) dated ahead of the clock, never taken as latest: ${ahead.map((b) => `${b.set}/${b.id}`).join(', ')}`,
      );
    for (const b of listing.backups)
      if (b.verificationDamaged) logger.warn(`${b.set}/${b.id}: ${b.verificationDamaged}`);
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

/**
 * What status and report read from a storage: the sets asked for, each with its committed
 * backups as `list` sees them (listCatalog: damaged manifests and records each said apart).
 */
import { Catalog } from '../catalog/catalog.ts';
import { validateSetName } from '../catalog/ids.ts';
import { type DamagedBackup, type ListedBackup, listCatalog } from '../catalog/listing.ts';
import { UserError } from '../errors.ts';
import type { Storage } from '../storage/storage.ts';

/** Every set in the storage, or these by name. */
export type SetSelection = '*' | string[];

/** `*` (every set), or set names, comma separated: each checked, none twice. */
export function parseSetSelection(value: string | undefined, input = 'set'): SetSelection {
  const v = value?.trim() || '*';
  if (v === '*') return '*';
  const names = v
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  if (names.includes('*'))
    throw new UserError(
      `${input}: '*' means every set and stands alone; accepted: * or set names, comma separated`,
    );
  if (names.length === 0)
    throw new UserError(`${input}: '${value}' names no set; accepted: * or set names, comma separated`);
  const twice = names.find((n, i) => names.indexOf(n) !== i);
  if (twice) throw new UserError(`${input}: '${twice}' is given twice; give each set once`);
  return names.map((n) => validateSetName(n, input));
}

export interface SetListing {
  set: string;
  /** Committed backups whose manifest Lifeboat accepts, newest first. */
  backups: ListedBackup[];
  damaged: DamagedBackup[];
}

export interface Gathered {
  /** Every set in the storage. */
  known: string[];
  /** The sets asked for that exist, in the order asked (or the storage's). */
  listings: SetListing[];
  /** The sets asked for by name that do not exist. */
  missing: string[];
}

/**
 * Reads the sets of `selection`. A storage that cannot be read (a folder or bucket that does
 * not exist, no access) is an error, never "no backups".
 */
export async function gatherSets(storage: Storage, selection: SetSelection, now: Date): Promise<Gathered> {
  await storage.check('read');
  const catalog = new Catalog(storage);
  const known = await catalog.listSets();
  const wanted = selection === '*' ? known : selection.filter((s) => known.includes(s));
  const listings: SetListing[] = [];
  for (const set of wanted) {
    const listing = await listCatalog(catalog, set, now);
    listings.push({ set, backups: listing.backups, damaged: listing.damaged });
  }
  const missing = selection === '*' ? [] : selection.filter((s) => !known.includes(s));
  return { known, listings, missing };
}

import type { Dirent, Stats } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';

/** One thing found under the source folder; `rel` uses '/' and has no leading './'. */
export interface FoundEntry {
  rel: string;
  abs: string;
  stat: Stats;
}

export interface Selection {
  include: string[];
  exclude: string[];
}

/**
 * Whether a relative path matches a glob. A pattern without '/' matches the last name at
 * any depth (`*.log`, `node_modules`), as in .gitignore; one with '/' matches the whole
 * path from the source folder (`secrets/**`, `conf.d/*.conf`).
 */
export function matchesPattern(rel: string, pattern: string): boolean {
  const p = pattern.replace(/^\.?\//, '').replace(/\/$/, '');
  if (!p.includes('/')) return path.posix.matchesGlob(path.posix.basename(rel), p);
  return path.posix.matchesGlob(rel, p);
}

const matchesAny = (rel: string, patterns: string[]) => patterns.some((p) => matchesPattern(rel, p));

/**
 * Walks `root` depth-first in name order without following symlinks, yielding directories
 * before what they hold. An excluded path is skipped (an excluded directory is not entered).
 * With include patterns, only matching entries are yielded (a matching directory brings
 * everything below it), each preceded by its not-yet-yielded parent folders so their modes
 * survive; without include patterns every entry is. Entries that vanish during the walk are
 * reported to `onVanished` and skipped.
 */
export async function* walk(
  root: string,
  selection: Selection,
  onVanished: (rel: string) => void,
): AsyncGenerator<FoundEntry> {
  const everything = selection.include.length === 0;
  const parents: FoundEntry[] = []; // folders on the current path not yet yielded

  async function* visit(dirAbs: string, dirRel: string, included: boolean): AsyncGenerator<FoundEntry> {
    let entries: Dirent[];
    try {
      entries = await fs.readdir(dirAbs, { withFileTypes: true });
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return onVanished(dirRel);
      throw error;
    }
    entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    for (const entry of entries) {
      const rel = dirRel ? `${dirRel}/${entry.name}` : entry.name;
      if (matchesAny(rel, selection.exclude)) continue;
      const abs = path.join(dirAbs, entry.name);
      let stat: Stats;
      try {
        stat = await fs.lstat(abs);
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
        onVanished(rel);
        continue;
      }
      const found = { rel, abs, stat };
      const selected = everything || included || matchesAny(rel, selection.include);
      if (selected) {
        yield* parents.splice(0);
        yield found;
        if (stat.isDirectory()) yield* visit(abs, rel, !everything);
      } else if (stat.isDirectory()) {
        parents.push(found);
        yield* visit(abs, rel, false);
        if (parents.at(-1) === found) parents.pop();
      }
    }
  }
  yield* visit(root, '', false);
}

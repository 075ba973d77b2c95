import { UserError } from '../errors.ts';

/** Backup ids: `YYYY-MM-DD-HHMM-backup-<mode>` in UTC, with `-N` when the minute is taken. */
const idPattern = /^(\d{4})-(\d{2})-(\d{2})-(\d{2})(\d{2})-backup-([a-z]+(?:-[a-z]+)*)(?:-(\d+))?$/;
const setPattern = /^[a-z0-9][a-z0-9._-]{0,62}$/;

export interface ParsedId {
  id: string;
  time: Date;
  mode: string;
  sequence: number;
}

export function parseBackupId(id: string): ParsedId | undefined {
  const m = idPattern.exec(id);
  if (!m) return undefined;
  const [, y, mo, d, h, mi, mode, seq] = m;
  const time = new Date(Date.UTC(Number(y), Number(mo) - 1, Number(d), Number(h), Number(mi)));
  if (Number.isNaN(time.getTime()) || time.getUTCMonth() !== Number(mo) - 1) return undefined;
  return { id, time, mode: mode!, sequence: seq ? Number(seq) : 1 };
}

export function baseBackupId(time: Date, mode: string): string {
  const p = (n: number) => String(n).padStart(2, '0');
  return `${time.getUTCFullYear()}-${p(time.getUTCMonth() + 1)}-${p(time.getUTCDate())}-${p(time.getUTCHours())}${p(time.getUTCMinutes())}-backup-${mode}`;
}

/** The id with sequence `n` (1 is the bare id). */
export function backupIdWithSequence(base: string, n: number): string {
  return n <= 1 ? base : `${base}-${n}`;
}

/**
 * How far a backup's id may be ahead of this machine's clock and still count as taken now
 * (clocks of runners drift a little). A backup further ahead is "from the future": a runner's
 * clock was ahead when it was taken.
 */
export const clockSkewMs = 5 * 60_000;

/** Whether a backup taken at `time` (the minute in its id) lies ahead of `now` by more than the skew. */
export function isAheadOfClock(time: Date, now: Date): boolean {
  return time.getTime() > now.getTime() + clockSkewMs;
}

/**
 * Newest first: by time, then by sequence (as a number: `-11` is newer than `-9`), then by
 * name. Ids that are not backup ids come last, by name.
 */
export function compareIdsNewestFirst(a: string, b: string): number {
  const pa = parseBackupId(a);
  const pb = parseBackupId(b);
  if (pa && pb) {
    return pb.time.getTime() - pa.time.getTime() || pb.sequence - pa.sequence || (a < b ? 1 : a > b ? -1 : 0);
  }
  return pa ? -1 : pb ? 1 : a < b ? 1 : a > b ? -1 : 0;
}

/**
 * Whether a name, exactly as stored (not trimmed), is a set name Lifeboat accepts: what a
 * folder read back from storage must be before any path or key is made from it.
 */
export function isSetName(name: string): boolean {
  return setPattern.test(name);
}

/** Whether a name, exactly as stored, is a backup id Lifeboat makes (see parseBackupId). */
export function isBackupId(id: string): boolean {
  return parseBackupId(id) !== undefined;
}

export function validateSetName(set: string, input = 'set'): string {
  const name = set.trim();
  if (!setPattern.test(name)) {
    throw new UserError(
      `${input}: '${set}' is not a valid set name; accepted: 1-63 lowercase letters, digits, '.', '_' and '-', starting with a letter or digit (e.g. prod-mysql)`,
    );
  }
  return name;
}

export function validateBackupRef(ref: string, input = 'backup'): string {
  const value = ref.trim();
  if (value === 'latest' || parseBackupId(value)) return value;
  throw new UserError(
    `${input}: '${ref}' is not a backup id; accepted: latest, or an id such as 2026-11-21-0315-backup-full (see lifeboat list)`,
  );
}

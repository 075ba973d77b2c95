/**
 * Whether each set is being backed up and proven: its newest committed backup against max-age,
 * its newest verification against max-verify-age (and require-verified). Reads nothing: it
 * judges what the catalog listing found (see gather.ts).
 */
import { clockSkewMs, isAheadOfClock } from '../catalog/ids.ts';
import { formatDuration } from '../pipeline/progress.ts';

/** From worst to best; a set takes the worst of its problems. */
export const statuses = ['MISSING', 'FAILED', 'STALE', 'UNVERIFIED', 'OK'] as const;
export type SetStatus = (typeof statuses)[number];

export interface FreshnessRules {
  /** The newest committed backup must have finished within this long; none: not judged. */
  maxAgeSeconds?: number;
  /** The newest verification must have run within this long (so a set never verified fails). */
  maxVerifyAgeSeconds?: number;
  /** A set that was never verified fails. */
  requireVerified: boolean;
}

/** What the listing says of one committed backup whose manifest Lifeboat accepts. */
export interface BackupFacts {
  id: string;
  finishedAt: string;
  aheadOfClock: boolean;
  lastVerification: { at: string; passed: boolean } | null;
  verificationDamaged?: string;
}

export interface SetFreshness {
  set: string;
  status: SetStatus;
  /** One line per problem, each naming the set (none when OK). */
  problems: string[];
  /** Things seen that do not fail the set: damaged or future-dated backups and records. */
  notes: string[];
  /** Committed backups Lifeboat accepts. */
  backups: number;
  newest: { id: string; finishedAt: string; ageSeconds: number } | null;
  /** The newest verification of any backup of the set. */
  verification: { backupId: string; at: string; passed: boolean; ageSeconds: number } | null;
}

const ageOf = (at: string, now: Date) => Math.max(0, (now.getTime() - Date.parse(at)) / 1000);

/** A set that was asked for by name but has no folder in the storage. */
export function missingSet(set: string, known: string[]): SetFreshness {
  const here = known.length ? `sets here: ${known.join(', ')}` : 'the storage holds no sets';
  return {
    set,
    status: 'MISSING',
    problems: [`${set}: MISSING: no such set in the storage (${here})`],
    notes: [],
    backups: 0,
    newest: null,
    verification: null,
  };
}

/**
 * Judges one set from its committed backups (newest first) and the count of folders whose
 * manifest is refused. A backup or a record dated ahead of the clock (by more than
 * clockSkewMs) proves nothing fresh: it is passed over, and noted.
 */
export function judgeSet(
  set: string,
  backups: BackupFacts[],
  damaged: number,
  rules: FreshnessRules,
  now: Date,
): SetFreshness {
  const found: { status: SetStatus; line: string }[] = [];
  const notes: string[] = [];
  const ahead = backups.filter((b) => b.aheadOfClock);
  if (ahead.length)
    notes.push(
      `${ahead.length} backup(s) dated ahead of the clock by more than ${clockSkewMs / 60_000} minutes, not counted: ${ahead.map((b) => b.id).join(', ')}`,
    );
  if (damaged) notes.push(`${damaged} backup folder(s) with a manifest Lifeboat refuses, not counted`);
  const present = backups.filter((b) => !b.aheadOfClock);
  const first = present[0];
  const newest = first
    ? { id: first.id, finishedAt: first.finishedAt, ageSeconds: ageOf(first.finishedAt, now) }
    : null;
  if (!newest) {
    found.push({
      status: 'MISSING',
      line: `${set}: MISSING: no committed backup${damaged || ahead.length ? ' that counts (see the notes)' : ''}`,
    });
  } else if (rules.maxAgeSeconds !== undefined && newest.ageSeconds > rules.maxAgeSeconds) {
    found.push({
      status: 'STALE',
      line: `${set}: STALE: the newest backup, ${newest.id}, finished ${formatDuration(newest.ageSeconds)} ago, more than max-age ${formatDuration(rules.maxAgeSeconds)}`,
    });
  }
  const verification = newestVerification(present, now, notes);
  const judgeVerification = rules.requireVerified || rules.maxVerifyAgeSeconds !== undefined;
  if (verification && !verification.passed) {
    found.push({
      status: 'FAILED',
      line: `${set}: FAILED: the newest verification (of ${verification.backupId}, ${formatDuration(verification.ageSeconds)} ago) failed`,
    });
  } else if (!verification && judgeVerification && newest) {
    found.push({ status: 'UNVERIFIED', line: `${set}: UNVERIFIED: no backup of the set was ever verified` });
  } else if (
    verification &&
    rules.maxVerifyAgeSeconds !== undefined &&
    verification.ageSeconds > rules.maxVerifyAgeSeconds
  ) {
    found.push({
      status: 'UNVERIFIED',
      line: `${set}: UNVERIFIED: the newest verification (of ${verification.backupId}) ran ${formatDuration(verification.ageSeconds)} ago, more than max-verify-age ${formatDuration(rules.maxVerifyAgeSeconds)}`,
    });
  }
  const status = statuses.find((s) => found.some((f) => f.status === s)) ?? 'OK';
  return {
    set,
    status,
    problems: found.map((f) => f.line),
    notes,
    backups: present.length,
    newest,
    verification,
  };
}

/** The newest verification record of any backup of the set (by its time), noting what is passed over. */
function newestVerification(
  backups: BackupFacts[],
  now: Date,
  notes: string[],
): SetFreshness['verification'] {
  let newest: SetFreshness['verification'] = null;
  for (const b of backups) {
    if (b.verificationDamaged) notes.push(`${b.id}: ${b.verificationDamaged}; it counts as no verification`);
    const v = b.lastVerification;
    if (!v) continue;
    if (isAheadOfClock(new Date(v.at), now)) {
      notes.push(`${b.id}: its verification record is dated ahead of the clock (${v.at}), not counted`);
      continue;
    }
    if (!newest || Date.parse(v.at) > Date.parse(newest.at))
      newest = { backupId: b.id, at: v.at, passed: v.passed, ageSeconds: ageOf(v.at, now) };
  }
  return newest;
}

/** Failures first (worst first), then by name. */
export function failuresFirst(a: SetFreshness, b: SetFreshness): number {
  return statuses.indexOf(a.status) - statuses.indexOf(b.status) || a.set.localeCompare(b.set);
}

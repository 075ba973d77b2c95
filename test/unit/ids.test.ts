import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  backupIdWithSequence,
  baseBackupId,
  clockSkewMs,
  compareIdsNewestFirst,
  isAheadOfClock,
  parseBackupId,
  validateBackupRef,
  validateSetName,
} from '../../shared/catalog/ids.ts';

test('backup ids are the UTC minute and the mode', () => {
  const id = baseBackupId(new Date('2026-11-21T03:15:59.999Z'), 'full');
  assert.equal(id, '2026-11-21-0315-backup-full');
  assert.equal(
    baseBackupId(new Date('2026-01-02T23:05:00+02:00'), 'exclude-storage'),
    '2026-01-02-2105-backup-exclude-storage',
  );
  assert.equal(backupIdWithSequence(id, 1), id);
  assert.equal(backupIdWithSequence(id, 3), `${id}-3`);
});

test('ids parse back into time, mode and sequence', () => {
  assert.deepEqual(parseBackupId('2026-11-21-0315-backup-only-storage-12'), {
    id: '2026-11-21-0315-backup-only-storage-12',
    time: new Date('2026-11-21T03:15:00Z'),
    mode: 'only-storage',
    sequence: 12,
  });
  assert.equal(parseBackupId('2026-02-30-0315-backup-full'), undefined);
  assert.equal(parseBackupId('nightly'), undefined);
});

test('newest first: by time, then by sequence', () => {
  const ids = [
    '2026-11-20-0315-backup-full',
    '2026-11-21-0315-backup-full-2',
    '2026-11-21-0315-backup-full',
    '2026-11-21-0316-backup-full',
    'junk',
  ];
  assert.deepEqual([...ids].sort(compareIdsNewestFirst), [
    '2026-11-21-0316-backup-full',
    '2026-11-21-0315-backup-full-2',
    '2026-11-21-0315-backup-full',
    '2026-11-20-0315-backup-full',
    'junk',
  ]);
});

test('set names and backup references are validated', () => {
  assert.equal(validateSetName(' etc-nova '), 'etc-nova');
  assert.throws(() => validateSetName('Prod'), /set: 'Prod' is not a valid set name/);
  assert.throws(() => validateSetName('a/b'), /not a valid set name/);
  assert.equal(validateBackupRef('latest'), 'latest');
  assert.throws(
    () => validateBackupRef('yesterday'),
    /backup: 'yesterday' is not a backup id; accepted: latest/,
  );
});

test('sequences are numbers: -11 is newer than -9 and -2, the bare id is the first', () => {
  const base = '2026-11-21-0315-backup-full';
  const ids = [base, ...Array.from({ length: 11 }, (_, i) => `${base}-${i + 2}`)];
  const shuffled = [...ids].sort((a, b) => (a < b ? -1 : 1)); // string order: -10, -11, -12, -2, …
  assert.deepEqual(shuffled.sort(compareIdsNewestFirst), [...ids].reverse());
  assert.equal(compareIdsNewestFirst(`${base}-11`, `${base}-9`) < 0, true);
  assert.equal(compareIdsNewestFirst('junk', 'junk'), 0);
});

test('a backup is ahead of the clock only beyond the allowed skew', () => {
  const now = new Date('2026-11-21T03:15:30Z');
  assert.equal(clockSkewMs, 5 * 60_000);
  assert.equal(isAheadOfClock(new Date('2026-11-21T03:20:00Z'), now), false);
  assert.equal(isAheadOfClock(new Date('2026-11-21T03:21:00Z'), now), true);
  assert.equal(isAheadOfClock(new Date('2026-11-20T03:21:00Z'), now), false);
});

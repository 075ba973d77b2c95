import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  backupIdWithSequence,
  baseBackupId,
  compareIdsNewestFirst,
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

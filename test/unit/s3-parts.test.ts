import assert from 'node:assert/strict';
import { test } from 'node:test';
import { concurrencyFor } from '../../shared/storage/parts.ts';
import { maxParts, partSizeFor } from '../../shared/storage/s3-upload.ts';

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;

test('part sizes grow so that 10,000 parts hold about 484 GiB, every part within S3 limits', () => {
  let total = 0;
  for (let n = 1; n <= maxParts; n++) {
    const size = partSizeFor(n);
    assert.ok(size >= 5 * MiB && size <= 5 * GiB, `part ${n}`);
    total += size;
  }
  assert.equal(partSizeFor(1), 8 * MiB);
  assert.equal(partSizeFor(2000), 8 * MiB);
  assert.equal(partSizeFor(2001), 16 * MiB);
  assert.equal(total, 2000 * (8 + 16 + 32 + 64 + 128) * MiB); // 484.4 GiB
});

test('parts in flight shrink as parts grow: with the one being filled, 32 MiB while parts are small', () => {
  assert.equal(concurrencyFor(4 * MiB), 4); // Azure's blocks: 20 MiB
  assert.equal(concurrencyFor(8 * MiB), 3); // S3's first 2,000 parts: 32 MiB
  assert.equal(concurrencyFor(16 * MiB), 1);
  assert.equal(concurrencyFor(32 * MiB), 1);
  assert.equal(concurrencyFor(128 * MiB), 1);
});

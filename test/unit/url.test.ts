import assert from 'node:assert/strict';
import { test } from 'node:test';
import { UserError } from '../../shared/errors.ts';
import { parseStorageUrl } from '../../shared/storage/url.ts';

test('folders and file URLs are the local provider', () => {
  assert.deepEqual(parseStorageUrl('./backups', '/work'), {
    provider: 'fs',
    url: './backups',
    root: '/work/backups',
  });
  assert.deepEqual(parseStorageUrl('/var/backups', '/work'), {
    provider: 'fs',
    url: '/var/backups',
    root: '/var/backups',
  });
  assert.equal((parseStorageUrl('file:///srv/b%20x') as { root: string }).root, '/srv/b x');
});

test('cloud URLs give bucket and a normalised prefix', () => {
  assert.deepEqual(parseStorageUrl('s3://my-bucket/a//b/'), {
    provider: 's3',
    url: 's3://my-bucket/a//b/',
    bucket: 'my-bucket',
    prefix: 'a/b',
  });
  assert.deepEqual(parseStorageUrl('gs://b.example.com'), {
    provider: 'gcs',
    url: 'gs://b.example.com',
    bucket: 'b.example.com',
    prefix: '',
  });
  assert.equal(parseStorageUrl('azblob://backups/prod').provider, 'azure');
  assert.equal(parseStorageUrl('S3://my-bucket').provider, 's3');
});

test('bad storage URLs are refused with what is accepted', () => {
  const cases: [string, RegExp][] = [
    ['ftp://host/x', /unknown scheme 'ftp:\/\/'.*accepted: a folder path, file:\/\/\/abs\/path, s3:\/\//],
    ['s3://', /names no bucket/],
    ['s3://My_Bucket/x', /not a valid bucket name/],
    ['azblob://a--b/x', /not a valid container name/],
    ['s3://bucket/x?region=eu', /query or fragment/],
    ['', /storage: empty/],
  ];
  for (const [input, message] of cases) {
    assert.throws(
      () => parseStorageUrl(input),
      (e: unknown) => e instanceof UserError && message.test(e.message),
      input,
    );
  }
});

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { UserError } from '../../shared/errors.ts';
import { downloadStreamsOf, openStorage } from '../../shared/storage/open.ts';
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

test('credentials in a storage URL are refused without being repeated', () => {
  const secrets = [
    'AKIAIOSFODNN7EXAMPLE',
    'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY',
    'sv=2024',
    'SIGNATURE123',
  ];
  const cases = [
    's3://AKIAIOSFODNN7EXAMPLE:wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY@bucket/prefix',
    's3://AKIAIOSFODNN7EXAMPLE@bucket/prefix',
    'gs://AKIAIOSFODNN7EXAMPLE:SIGNATURE123@bucket',
    'azblob://AKIAIOSFODNN7EXAMPLE:SIGNATURE123@container/x',
    'https://AKIAIOSFODNN7EXAMPLE:SIGNATURE123@host/x',
    'file://AKIAIOSFODNN7EXAMPLE:SIGNATURE123@/srv/x',
    'azblob://container/x?sv=2024&sig=SIGNATURE123',
    's3://bucket/x#SIGNATURE123',
  ];
  for (const input of cases) {
    assert.throws(
      () => parseStorageUrl(input),
      (e: unknown) => {
        assert.ok(e instanceof UserError, input);
        assert.match(e.message, /^storage: /);
        assert.match(e.message, /not shown here/);
        for (const secret of secrets) assert.ok(!e.message.includes(secret), `${input}: ${e.message}`);
        return true;
      },
    );
  }
});

test('a file:// URL with a query or fragment is refused, not read as the folder before it', () => {
  for (const input of ['file:///srv/backups?x=1', 'file:///srv/backups#old']) {
    assert.throws(
      () => parseStorageUrl(input),
      (e: unknown) => e instanceof UserError && /has a query or fragment/.test(e.message),
      input,
    );
  }
  assert.equal((parseStorageUrl('file:///srv/backups') as { root: string }).root, '/srv/backups');
});

test('LIFEBOAT_DOWNLOAD_STREAMS: 1 to 8 ranged GETs at once; anything else is refused, naming it', () => {
  assert.equal(downloadStreamsOf({}), undefined);
  assert.equal(downloadStreamsOf({ LIFEBOAT_DOWNLOAD_STREAMS: '' }), undefined);
  assert.equal(downloadStreamsOf({ LIFEBOAT_DOWNLOAD_STREAMS: '1' }), 1);
  assert.equal(downloadStreamsOf({ LIFEBOAT_DOWNLOAD_STREAMS: ' 8 ' }), 8);
  for (const bad of ['0', '9', '2.5', 'four', '-1', '1e1']) {
    assert.throws(
      () => openStorage('./backups', { LIFEBOAT_DOWNLOAD_STREAMS: bad }),
      (e: Error) =>
        e instanceof UserError &&
        e.message ===
          `LIFEBOAT_DOWNLOAD_STREAMS: '${bad}' is not accepted; give a whole number from 1 to 8 (ranged GETs of one artifact at once; 1, the default, is one resumable stream)`,
    );
  }
});

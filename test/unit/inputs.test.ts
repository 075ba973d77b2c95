import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  InputCollector,
  InputErrors,
  parseBoolean,
  parseDuration,
  parseInteger,
} from '../../shared/action/inputs.ts';
import { UserError } from '../../shared/errors.ts';
import { parseIdentities, parseRecipients, splitList } from '../../shared/pipeline/encryption.ts';
import { formatBytes, formatDuration } from '../../shared/pipeline/progress.ts';

test('durations', () => {
  assert.equal(parseDuration('timeout', '90s'), 90);
  assert.equal(parseDuration('timeout', '1h30m'), 5400);
  assert.equal(parseDuration('timeout', '2d'), 172800);
  assert.equal(parseDuration('timeout', undefined, '6h'), 21600);
  assert.throws(
    () => parseDuration('timeout', '6 hours'),
    /timeout: '6 hours' is not accepted; accepted: a duration such as 90s/,
  );
  assert.throws(() => parseDuration('timeout', '0s'), /longer than zero/);
});

test('booleans and integers', () => {
  assert.equal(parseBoolean('overwrite', 'TRUE', false), true);
  assert.equal(parseBoolean('overwrite', '', true), true);
  assert.throws(
    () => parseBoolean('overwrite', 'maybe', false),
    /overwrite: 'maybe' is not accepted; accepted: true or false/,
  );
  assert.equal(parseInteger('level', '19', { min: 1, max: 19 }), 19);
  assert.throws(() => parseInteger('level', '20', { min: 1, max: 19 }), /from 1 to 19/);
});

test('the collector reports every bad input, one line each', () => {
  const c = new InputCollector();
  c.field(() => parseBoolean('overwrite', 'maybe', false));
  c.field(() => parseDuration('timeout', 'soon'));
  assert.equal(
    c.field(() => 5),
    5,
  );
  assert.throws(
    () => c.finish(),
    (e: unknown) =>
      e instanceof InputErrors &&
      e instanceof UserError &&
      e.lines.length === 2 &&
      /^overwrite/.test(e.lines[0]!),
  );
});

test('lists, recipients and identities', () => {
  assert.deepEqual(splitList('a, b\n# comment\nc # trailing\n\n'), ['a', 'b', 'c']);
  const r = 'age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p';
  assert.deepEqual(parseRecipients(`${r}\n`), [r]);
  assert.throws(() => parseRecipients('ssh-ed25519 AAAA'), /age-recipients: .* is not an age recipient/);
  assert.throws(() => parseIdentities('not a key'), /age-identity: does not hold an age identity/);
});

test('human figures', () => {
  assert.equal(formatBytes(512), '512 B');
  assert.equal(formatBytes(1536), '1.50 KiB');
  assert.equal(formatBytes(300 * 1024 * 1024), '300.0 MiB');
  assert.equal(formatDuration(59.6), '1m00s');
  assert.equal(formatDuration(0.3), '300ms');
  assert.equal(formatDuration(3 * 3600 + 61), '3h01m');
});

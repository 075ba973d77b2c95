import assert from 'node:assert/strict';
import { test } from 'node:test';
import { generateIdentity } from 'age-encryption';
import {
  InputCollector,
  InputErrors,
  maxTimerSeconds,
  parseBoolean,
  parseDuration,
  parseInteger,
} from '../../shared/action/inputs.ts';
import { parseTimeout } from '../../shared/commands/common.ts';
import { UserError } from '../../shared/errors.ts';
import {
  parseIdentities,
  parseRecipients,
  recipientOf,
  splitList,
} from '../../shared/pipeline/encryption.ts';
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

test('a recipient that looks like one but is not (checksum, length) is refused at parse time', async () => {
  const good = await recipientOf(await generateIdentity());
  assert.deepEqual(parseRecipients(good), [good]);
  const last = good.at(-1) === 'q' ? 'p' : 'q';
  for (const bad of [
    `${good.slice(0, -1)}${last}`, // one character mistyped: the checksum fails
    good.slice(0, -1), // one missing
    'age1qqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqq',
  ]) {
    assert.throws(
      () => parseRecipients(`${good}\n${bad}`),
      (e: unknown) =>
        e instanceof UserError &&
        /^age-recipients: 'age1.{8}…' is not a valid age recipient \(its checksum or length is wrong/.test(
          e.message,
        ),
      bad,
    );
  }
});

test('durations a timer waits for are refused above what a timer can hold (2^31-1 ms)', () => {
  assert.equal(maxTimerSeconds, 2147483.647);
  assert.equal(parseDuration('timeout', '24d', undefined, maxTimerSeconds), 24 * 86400);
  assert.equal(parseDuration('timeout', '24d20h31m', undefined, maxTimerSeconds), 2147460);
  assert.throws(
    () => parseDuration('timeout', '24d20h32m', undefined, maxTimerSeconds),
    /^UserError: timeout: '24d20h32m' is longer than a timer can wait; accepted: at most 24d20h31m$/,
  );
  const read = (value: string) => (name: string) => (name === 'timeout' ? value : undefined);
  assert.equal(parseTimeout(read('6h'), '6h'), 21600);
  assert.throws(() => parseTimeout(read('30d'), '6h'), /timeout: '30d' is longer than a timer can wait/);
  assert.throws(() => parseTimeout(read('5w'), '6h'), /at most 24d20h31m/);
});

test('human figures', () => {
  assert.equal(formatBytes(512), '512 B');
  assert.equal(formatBytes(1536), '1.50 KiB');
  assert.equal(formatBytes(300 * 1024 * 1024), '300.0 MiB');
  assert.equal(formatDuration(59.6), '1m00s');
  assert.equal(formatDuration(0.3), '300ms');
  assert.equal(formatDuration(3 * 3600 + 61), '3h01m');
});

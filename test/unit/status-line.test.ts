/** The one line that opens every job summary and notification: what it says after good and bad nights. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { samplesOf } from '../../shared/signals/index.ts';
import { metricsText } from '../../shared/signals/prometheus.ts';
import { formatChange, statusLine } from '../../shared/signals/status-line.ts';

const deltas = (change: number) => JSON.stringify([{ name: 'stored-bytes', change }]);

test('a good night: size and change, verify with RPO and RTO against their limits', () => {
  const line = statusLine([
    {
      command: 'dump-mysql',
      set: 'prod-mysql',
      outputs: { bytes: String(1.2 * 1024 ** 3), deltas: deltas(-0.003) },
    },
    {
      command: 'verify-restore',
      set: 'prod-mysql',
      outputs: {
        passed: 'true',
        'rpo-seconds': String(5 * 3600),
        'rto-seconds': '48',
        result: JSON.stringify({ limits: { maxAgeSeconds: 26 * 3600, maxRestoreSeconds: 45 * 60 } }),
      },
    },
  ]);
  assert.equal(
    line,
    'prod-mysql: backup OK 1.20 GiB (−0.3%) · verify PASSED · RPO 5h00m / 26h00m · RTO 48s / 45m00s',
  );
});

test('a failed night: failures first, the failed set before the good one, anomalies named', () => {
  const line = statusLine([
    { command: 'backup-files', set: 'etc-nova', outputs: { bytes: '1024' } },
    {
      command: 'dump-mysql',
      set: 'prod-mysql',
      outputs: { bytes: '100', anomalies: JSON.stringify(['rows:shop.orders shrank 40% (2000 → 1200)']) },
    },
    {
      command: 'verify-restore',
      set: 'prod-mysql',
      outputs: { passed: 'false' },
      failed: ["check 'rows: shop' failed"],
    },
  ]);
  assert.equal(
    line,
    "prod-mysql: 1 anomaly: rows:shop.orders shrank 40% (2000 → 1200) · verify FAILED: check 'rows: shop' failed · backup OK 100 B | etc-nova: backup OK 1.00 KiB",
  );
});

test('outputs that are not numbers (a hostile manifest) are left out, never shown as NaN', () => {
  const line = statusLine([
    {
      command: 'backup-files',
      set: 'x',
      outputs: { bytes: 'lots', deltas: '{not json', anomalies: '[1, {"a": 2}]' },
    },
    {
      command: 'verify-restore',
      set: 'x',
      outputs: { passed: 'true', 'rto-seconds': 'Infinity', result: '[]' },
    },
  ]);
  assert.equal(line, 'x: backup OK · verify PASSED');
  assert.doesNotMatch(line, /NaN|undefined|Infinity/);
});

test('a command that failed before it ran names the error; list and status name every set', () => {
  assert.equal(
    statusLine([{ command: 'status', set: '*', failed: ['etc-nova: STALE: the newest backup is 3d old'] }]),
    'all sets: status FAILED: etc-nova: STALE: the newest backup is 3d old',
  );
});

test('changes read as signed percentages with a real minus sign', () => {
  assert.deepEqual([-0.003, 0.12, 0, 0.00001, -0.5].map(formatChange), [
    '−0.3%',
    '+12%',
    '±0%',
    '±0%',
    '−50%',
  ]);
});

test('the metrics of a failed run keep the last success time; label values are escaped', () => {
  const samples = samplesOf({ command: 'backup-files', set: 'a', failed: ['boom'] }, 3, 1700000000);
  const text = metricsText(samples, { set: 'we"ird\\set\nx', command: 'backup-files' });
  assert.match(
    text,
    /^lifeboat_last_success_timestamp_seconds\{set="we\\"ird\\\\set\\nx",command="backup-files"\} 1700000000$/m,
  );
  assert.match(text, /^lifeboat_run_success\{[^}]*\} 0$/m);
  assert.doesNotMatch(text, /lifeboat_bytes_stored/);
});

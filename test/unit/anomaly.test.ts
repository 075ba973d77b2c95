/**
 * The anomaly gates' engine without storage: deltas of two sets of metrics, max-shrink,
 * max-growth and min-rows, the summary rows, each kind's metrics of crafted manifests, and
 * the inputs of every command that has them (one line naming the input per bad value).
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { InputErrors } from '../../shared/action/inputs.ts';
import { makeReader } from '../../shared/action/run.ts';
import type { Command } from '../../shared/action/spec.ts';
import { cleanMetrics, compareMetrics, shownName } from '../../shared/anomaly/compare.ts';
import { filesMetrics } from '../../shared/anomaly/files.ts';
import { type AnomalyRules, applyRules, floorAnomalies, percent } from '../../shared/anomaly/rules.ts';
import { anomalySummary, manifestMetrics, notCompared } from '../../shared/anomaly/run.ts';
import type { Manifest } from '../../shared/catalog/manifest.ts';
import { parseLimit, parseMinRows } from '../../shared/commands/common.ts';
import { commands } from '../../shared/commands/index.ts';
import { ebsMetrics } from '../../shared/kinds/ebs.ts';
import { k8sMetrics } from '../../shared/kinds/k8s.ts';
import { mysqlMetrics } from '../../shared/kinds/mysql/metrics.ts';
import { zfsMetrics } from '../../shared/kinds/zfs.ts';

const rules = (r: Partial<AnomalyRules> = {}): AnomalyRules => ({
  maxShrink: 0.2,
  maxGrowth: null,
  minRows: [],
  ...r,
});

function manifest(kind: Manifest['kind'], facts: Record<string, unknown>, bytes = [100]): Manifest {
  return {
    format: 1,
    id: '2026-12-02-1900-backup-full',
    set: 'demo',
    kind,
    mode: 'full',
    startedAt: '2026-12-02T19:00:00.000Z',
    finishedAt: '2026-12-02T19:01:00.000Z',
    tool: { name: 'lifeboat', version: '0' },
    source: {},
    artifacts: bytes.map((b, i) => ({
      name: `a${i}`,
      bytes: b,
      sha256: '0'.repeat(64),
      contentBytes: b * 3,
      format: 'tar',
      compression: 'zstd',
      encryption: null,
    })),
    contents: { included: [], excluded: [] },
    facts,
    tags: [],
  };
}

test('deltas: each metric then and now as a fraction; a gone one is now 0; a new one or one from 0 is not compared', () => {
  const { deltas, added } = compareMetrics(
    cleanMetrics({ files: 100, 'rows:app.gone': 5, 'rows:app.empty': 0, 'rows:app.grew': 0, same: 7 }),
    cleanMetrics({ files: 97, 'rows:app.new': 3, 'rows:app.empty': 0, 'rows:app.grew': 4, same: 7 }),
  );
  assert.deepEqual(deltas, [
    { name: 'files', previous: 100, current: 97, change: -0.03 },
    { name: 'rows:app.empty', previous: 0, current: 0, change: 0 },
    { name: 'same', previous: 7, current: 7, change: 0 },
    { name: 'rows:app.gone', previous: 5, current: 0, change: -1 },
  ]);
  assert.deepEqual(added, ['rows:app.new', 'rows:app.grew']);
});

test('metrics from storage keep only finite non-negative numbers, and no name is special', () => {
  const clean = cleanMetrics({
    ok: 3,
    negative: -1,
    text: '5',
    infinite: Number.POSITIVE_INFINITY,
    nan: Number.NaN,
    ['__proto__']: 9,
  });
  assert.deepEqual(Object.entries(clean), [
    ['ok', 3],
    ['__proto__', 9],
  ]);
  assert.equal(Object.getPrototypeOf(clean), null);
});

test('max-shrink: more than the limit is an anomaly, exactly the limit is not; off allows any shrink', () => {
  const comparison = compareMetrics(
    { 'stored-bytes': 1000, files: 1000, 'rows:app.orders': 1000 },
    { 'stored-bytes': 800, files: 799, 'rows:app.orders': 600 },
  );
  const judged = applyRules(comparison, {}, rules());
  assert.deepEqual(
    judged.deltas.map((d) => [d.name, d.anomaly !== undefined]),
    [
      ['stored-bytes', false],
      ['files', true],
      ['rows:app.orders', true],
    ],
  );
  assert.deepEqual(judged.anomalies, [
    'files shrank by 20.1% (1000 → 799), more than max-shrink 20%',
    'rows:app.orders shrank by 40.0% (1000 → 600), more than max-shrink 20%',
  ]);
  assert.deepEqual(applyRules(comparison, {}, rules({ maxShrink: null })).anomalies, []);
  assert.deepEqual(applyRules(comparison, {}, rules({ maxShrink: 0.5 })).anomalies, []);
});

test('max-growth: off by default; given, more than the limit is an anomaly, in bytes for bytes', () => {
  const comparison = compareMetrics(
    { 'stored-bytes': 1024 * 1024, objects: 10 },
    { 'stored-bytes': 5 * 1024 * 1024, objects: 40 },
  );
  assert.deepEqual(applyRules(comparison, {}, rules()).anomalies, []);
  assert.deepEqual(applyRules(comparison, {}, rules({ maxGrowth: 3 })).anomalies, [
    'stored-bytes grew by 400.0% (1.00 MiB → 5.00 MiB), more than max-growth 300%',
  ]);
});

test('min-rows: the strictest matching floor per table, a named table that is missing, a glob that matches none', () => {
  const current = { 'rows:app.users': 900, 'rows:app.orders': 0, 'rows:app.logs': 5, files: 1 };
  const floors = parseMinRows('app.users=1000, app.*=1,app.logs=2\napp.gone=1,shop.*=1');
  assert.deepEqual(
    floorAnomalies(current, floors).map((f) => f.message),
    [
      'min-rows app.gone=1: the table is not in the backup',
      'min-rows shop.*=1: matches no table in the backup',
      'rows:app.users holds 900 rows, below min-rows app.users=1000',
      'rows:app.orders holds 0 rows, below min-rows app.*=1',
    ],
  );
  assert.deepEqual(floorAnomalies(current, parseMinRows('*=0')), []);
  // A floor also marks the metric's delta.
  const judged = applyRules(
    compareMetrics({ 'rows:app.users': 950 }, { 'rows:app.users': 900 }),
    { 'rows:app.users': 900 },
    rules({ minRows: parseMinRows('app.users=1000') }),
  );
  assert.equal(judged.deltas[0]!.anomaly, 'rows:app.users holds 900 rows, below min-rows app.users=1000');
});

test('names from a backup are shown with control characters escaped', () => {
  assert.equal(shownName('rows:app.a\nb\u001b[31m'), 'rows:app.a\\u000ab\\u001b[31m');
  const [anomaly] = applyRules(compareMetrics({ 'rows:x.\r': 10 }, {}), {}, rules()).anomalies;
  assert.equal(anomaly, 'rows:x.\\u000d shrank by 100.0% (10 → 0), more than max-shrink 20%');
});

test('percent and the summary: a heading row, totals and anomalies always, other changes, each anomaly listed', () => {
  assert.equal(percent(-0.003), '-0.3%');
  assert.equal(percent(0.25), '+25.0%');
  assert.equal(percent(0), '0.0%');
  const previous = { rows: 100, 'rows:a.same': 50, 'rows:a.less': 50, 'rows:a.cut': 0 };
  const current = { rows: 80, 'rows:a.same': 50, 'rows:a.less': 30, 'rows:a.cut': 0 };
  const judged = applyRules(compareMetrics(previous, current), current, rules({ maxShrink: 0.3 }));
  const { rows, notes } = anomalySummary({
    previous: '2026-12-01-1900-backup-full',
    ...judged,
    notes: [],
    failOnAnomaly: false,
  });
  assert.deepEqual(rows, [
    ['Compared with 2026-12-01-1900-backup-full', 'Previous', 'Now', 'Change', ''],
    ['rows', '100', '80', '-20.0%', '✅'],
    ['rows:a.less', '50', '30', '-40.0%', '❌'],
  ]);
  assert.deepEqual(notes, [
    '2 more metric(s) compared within the limits: see the deltas output.',
    '❌ anomaly: rows:a.less shrank by 40.0% (50 → 30), more than max-shrink 30%',
    'fail-on-anomaly is false: the anomalies are warnings.',
  ]);
  // A first backup: no rows, the note says so.
  assert.deepEqual(
    anomalySummary({ deltas: [], anomalies: [], notes: ['First backup'], failOnAnomaly: false }),
    {
      rows: [],
      notes: ['First backup'],
    },
  );
  assert.deepEqual(notCompared({ ...rules(), failOnAnomaly: true }, 'a dry run').notes, [
    'Not compared with earlier backups: a dry run.',
  ]);
});

test("each kind's metrics: stored and content bytes of the artifacts, then the kind's own", () => {
  assert.deepEqual(
    { ...manifestMetrics(manifest('files', { files: 12, bytes: 5 }, [100, 50]), filesMetrics) },
    { 'stored-bytes': 150, 'content-bytes': 450, files: 12 },
  );
  const mysql = manifest('mysql', {
    databases: [
      { name: 'app', tables: { users: 10, orders: 0 } },
      { name: 'crm', tables: { leads: 3, bad: 'x' } },
      { name: 7, tables: { t: 1 } },
    ],
  });
  assert.deepEqual(mysqlMetrics(mysql), {
    tables: 3,
    rows: 13,
    'rows:app.users': 10,
    'rows:app.orders': 0,
    'rows:crm.leads': 3,
  });
  assert.throws(() => mysqlMetrics(manifest('mysql', { databases: 'no' })), /not a MySQL backup/);
  const k8s = manifest('k8s', { counts: { total: 5, byResource: { 'deployments.apps': 2, configmaps: 3 } } });
  assert.deepEqual(k8sMetrics(k8s), { objects: 5, 'objects:deployments.apps': 2, 'objects:configmaps': 3 });
  assert.deepEqual(
    { ...manifestMetrics(manifest('k8s', { counts: { byResource: 'abc' } }, []), k8sMetrics) },
    {},
  );
  const ebs = manifest('ebs', { snapshots: [{ volumeId: 'vol-1', sizeGiB: 8 }, { volumeId: 'vol-2' }] }, []);
  assert.deepEqual(
    { ...manifestMetrics(ebs, ebsMetrics) },
    { volumes: 2, 'volume-bytes:vol-1': 8 * 2 ** 30 },
  );
  const zfs = manifest(
    'zfs',
    {
      host: 'h',
      snapshotName: 'lifeboat-2026-12-02-1900-backup-full',
      recursive: false,
      datasets: ['tank/db'],
      pools: ['tank'],
      snapshots: [
        {
          root: 'tank/db',
          dataset: 'tank/db',
          pool: 'tank',
          snapshot: 'tank/db@lifeboat-2026-12-02-1900-backup-full',
          guid: '123',
          referenced: 4096,
          used: 0,
          creation: '2026-12-02T19:00:00Z',
        },
      ],
    },
    [],
  );
  assert.deepEqual(zfsMetrics(zfs), { snapshots: 1, 'volume-bytes:tank/db': 4096 });
});

/** The lines about `name` when `command` parses these inputs (with its required ones). */
function problems(command: Command<never>, inputs: Record<string, string>): string[] {
  const given: Record<string, string> = {
    set: 'demo',
    source: '.',
    'instance-id': 'i-0123456789abcdef0',
    region: 'eu-west-1',
    datasets: 'tank/db',
    ...inputs,
  };
  try {
    command.parse(makeReader(command, (spec) => given[spec.name] ?? spec.default, {}));
    return [];
  } catch (error) {
    if (!(error instanceof InputErrors)) throw error;
    return error.lines.filter((l) => Object.keys(inputs).some((name) => l.startsWith(`${name}:`)));
  }
}

const gated = ['backup-files', 'dump-mysql', 'backup-k8s', 'snapshot-ebs', 'snapshot-zfs', 'verify-restore'];

test('every backup command and verify-restore has the gates; min-rows only dump-mysql and verify-restore', () => {
  for (const command of commands) {
    const names = command.inputs.map((i) => i.name);
    const has = ['max-shrink', 'max-growth', 'fail-on-anomaly'].every((n) => names.includes(n));
    assert.equal(has, gated.includes(command.name), command.name);
    assert.equal(
      names.includes('min-rows'),
      ['dump-mysql', 'verify-restore'].includes(command.name),
      command.name,
    );
    const outputs = command.outputs.map((o) => o.name);
    assert.equal(outputs.includes('anomalies') && outputs.includes('deltas'), gated.includes(command.name));
  }
});

test('the gate inputs: defaults, off, percentages; each bad value one line naming the input and what is accepted', () => {
  assert.equal(parseLimit('max-shrink', undefined, '20%', 100), 0.2);
  assert.equal(parseLimit('max-shrink', ' 35 ', '20%', 100), 0.35);
  assert.equal(parseLimit('max-shrink', '0.5%', '20%', 100), 0.005);
  assert.equal(parseLimit('max-shrink', 'OFF', '20%', 100), null);
  assert.equal(parseLimit('max-growth', undefined, 'off'), null);
  assert.equal(parseLimit('max-growth', '300%', 'off'), 3);
  assert.deepEqual(parseMinRows('app.users=1000, app.orders=1\n*=1'), [
    { tables: 'app.users', min: 1000 },
    { tables: 'app.orders', min: 1 },
    { tables: '*', min: 1 },
  ]);
  for (const name of gated) {
    const command = commands.find((c) => c.name === name)! as unknown as Command<never>;
    const options = command.parse(
      makeReader(
        command,
        (spec) =>
          ({
            set: 'demo',
            source: '.',
            'instance-id': 'i-0123456789abcdef0',
            region: 'eu-west-1',
            datasets: 'tank/db',
          })[spec.name] ?? spec.default,
        {},
      ),
    ) as unknown as { anomaly: unknown };
    assert.deepEqual(
      options.anomaly,
      { maxShrink: 0.2, maxGrowth: null, failOnAnomaly: false, minRows: [] },
      name,
    );
    assert.deepEqual(
      problems(command, { 'max-shrink': '120%', 'max-growth': 'lots', 'fail-on-anomaly': 'maybe' }),
      [
        "max-shrink: '120%' is not accepted; accepted: a percentage more than 0, at most 100, such as 20%, or off",
        "max-growth: 'lots' is not accepted; accepted: a percentage more than 0, such as 300%, or off",
        "fail-on-anomaly: 'maybe' is not accepted; accepted: true or false",
      ],
      name,
    );
    assert.deepEqual(problems(command, { 'max-shrink': '0%' }).length, 1, name);
    assert.deepEqual(problems(command, { 'max-shrink': '-5%' }).length, 1, name);
  }
  const dump = commands.find((c) => c.name === 'dump-mysql')! as unknown as Command<never>;
  for (const bad of ['users=5', 'app.users', 'app.users=-1', 'app.users=1.5', '=3']) {
    assert.deepEqual(
      problems(dump, { 'min-rows': bad }),
      [
        `min-rows: '${bad}' is not accepted; accepted: <database>.<table>=N pairs with N a whole number, * and ? as wildcards, e.g. app.users=1000, app.*=1 or *=1`,
      ],
      bad,
    );
  }
});

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { incompatibility } from '../../shared/mysql/environment.ts';
import { meets, parseExpectation, parseUserChecks } from '../../shared/verify/checks.ts';
import { limitRows } from '../../shared/verify/report.ts';

test('expectations compare numbers as numbers and anything else as text', () => {
  const cases: [string | number, string | null, boolean][] = [
    ['>= 1000', '1000', true],
    ['>= 1000', '999', false],
    ['>= 1000', '10000', true],
    ['== 0', '0', true],
    ['== 0', '0.00', true],
    ['== 0', '1', false],
    ['!= 0', '3', true],
    ['< 5', '4.99', true],
    ['> 5', 'abc', false],
    ['20261120', '20261120', true],
    ['ok', 'ok', true],
    ['ok', 'OK', false],
    ["'1.0'", '1.0', true],
    [7, '7', true],
    ['== NULL', null, true],
    ['>= 1', null, false],
    ['!= 0', null, true],
  ];
  for (const [expect, value, want] of cases) {
    assert.equal(meets(value, parseExpectation('x', expect)), want, `${value} ${expect}`);
  }
});

test('bad expectations and checks are refused, naming the item and field', () => {
  assert.throws(() => parseExpectation('checks: item 1', '>= many'), /'many' is not a number/);
  assert.throws(() => parseExpectation('checks: item 1', '>='), /has no value after >=/);
  assert.throws(() => parseExpectation('checks: item 1', undefined), /'expect' is missing/);
  assert.throws(() => parseUserChecks('name: x'), /must be a YAML list/);
  assert.throws(() => parseUserChecks('- [unclosed'), /checks: not valid YAML/);
  assert.throws(() => parseUserChecks('- name: a\n  expect: 1\n'), /checks: item 1 \(a\): 'sql' is missing/);
  assert.throws(() => parseUserChecks('- sql: SELECT 1\n  expect: 1\n'), /checks: item 1: 'name' is missing/);
  assert.throws(
    () => parseUserChecks('- name: a\n  sql: SELECT 1\n  expect: 1\n  excpet: 2\n'),
    /unknown field 'excpet'; accepted: name, sql, expect, database/,
  );
  assert.throws(
    () => parseUserChecks('- {name: a, sql: SELECT 1, expect: 1}\n- {name: a, sql: SELECT 2, expect: 2}\n'),
    /item 2: the name 'a' is used twice/,
  );
  const [check] = parseUserChecks(
    '- name: orders\n  database: shop\n  sql: |\n    SELECT COUNT(*)\n    FROM orders\n  expect: ">= 10"\n',
  );
  assert.deepEqual(check, {
    name: 'orders',
    database: 'shop',
    sql: 'SELECT COUNT(*)\nFROM orders',
    expect: { operator: '>=', operand: '10', text: '>= 10' },
  });
  assert.deepEqual(parseUserChecks(''), []);
});

test('servers that cannot hold a backup are named with the reason', () => {
  const mariadb1011 = { flavour: 'mariadb' as const, version: '10.11.19-MariaDB-0+deb12u1' };
  const mysql8 = { flavour: 'mysql' as const, version: '8.0.36' };
  assert.equal(incompatibility(mariadb1011, '10.11.6-MariaDB'), undefined);
  assert.equal(incompatibility(mariadb1011, '11.4.2-MariaDB'), undefined);
  assert.match(incompatibility(mariadb1011, '10.3.39-MariaDB')!, /into the older MariaDB 10\.3\.39/);
  assert.match(
    incompatibility(mysql8, '10.11.6-MariaDB')!,
    /MySQL 8\.0\.36 backup cannot be restored into MariaDB/,
  );
  assert.match(incompatibility(mariadb1011, '8.4.0')!, /MySQL does not read MariaDB's dumps/);
  assert.equal(incompatibility(mysql8, '8.4.0'), undefined);
  assert.match(incompatibility(mysql8, '5.7.44')!, /older MySQL 5\.7\.44/);
  assert.equal(incompatibility({ flavour: 'mysql', version: '5.7.44' }, '10.11.6-MariaDB'), undefined);
});

test('RPO and RTO rows appear only for the limits given, and fail past them', () => {
  assert.deepEqual(limitRows(100, 5, { maxAgeSeconds: null, maxRestoreSeconds: null }), []);
  const [rpo, rto] = limitRows(93_600, 5, { maxAgeSeconds: 26 * 3600, maxRestoreSeconds: 4 });
  assert.equal(rpo!.status, 'passed');
  assert.equal(rto!.status, 'failed');
  assert.equal(
    limitRows(93_601, null, { maxAgeSeconds: 26 * 3600, maxRestoreSeconds: 4 })[0]!.status,
    'failed',
  );
  assert.equal(limitRows(1, null, { maxAgeSeconds: null, maxRestoreSeconds: 4 })[0]!.status, 'skipped');
});

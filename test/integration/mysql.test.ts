/**
 * dump-mysql and the MySQL restore against real MariaDB servers: fidelity on a hostile
 * dataset, a consistent snapshot under concurrent writes, and restores that never leave a
 * target half-restored.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { generateIdentity } from 'age-encryption';
import { Catalog } from '../../shared/catalog/catalog.ts';
import type { Manifest } from '../../shared/catalog/manifest.ts';
import { dumpMysql, type MysqlDumpOptions } from '../../shared/mysql/dump.ts';
import type { MysqlFacts } from '../../shared/mysql/facts.ts';
import { type MysqlRestoreOptions, restoreMysql } from '../../shared/mysql/restore.ts';
import { recipientOf } from '../../shared/pipeline/encryption.ts';
import { silentLogger } from '../../shared/pipeline/progress.ts';
import { openStorage } from '../../shared/storage/open.ts';
import type { Storage } from '../../shared/storage/storage.ts';
import {
  databases,
  type EphemeralServer,
  fingerprint,
  sampleShop,
  sql,
  startMysql,
  targetOf,
} from '../harness/mysql.ts';
import { tempDir } from '../harness/servers.ts';

/** Every awkward thing a dump must carry through unchanged. */
const hostile = `
SET SESSION sql_mode = 'NO_ENGINE_SUBSTITUTION';
CREATE DATABASE \`odd db\` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin;
USE \`odd db\`;
CREATE TABLE \`select\` (\`from\` INT PRIMARY KEY, \`where\` VARCHAR(20), \`a\`\`tick\` INT);
INSERT INTO \`select\` VALUES (1, 'reserved', 2), (2, NULL, NULL);
CREATE TABLE \`with space\` (id INT PRIMARY KEY);
CREATE TABLE empty_rows (id INT PRIMARY KEY, v TEXT);
CREATE TABLE texts (id INT PRIMARY KEY, t TEXT, l VARCHAR(50) CHARACTER SET latin1, j JSON);
INSERT INTO texts VALUES
  (1, 'emoji 🐳🚀 and ñ ü 中文', 'caf\\xe9', '{"a": [1, 2, {"b": null}], "s": "quote \\\\" and \\\\\\\\"}'),
  (2, '', '', '[]'),
  (3, NULL, NULL, NULL),
  (4, 'new\\nline\\ttab\\r\\\\ back ; semi -- dash /* c */ \\'q\\' "dq" \`bt\`', 'x', 'null'),
  (5, '\\n-- Current Database: \`x\`\\nDELIMITER ;;\\n', 'y', '{}');
CREATE TABLE bytes (id INT PRIMARY KEY, b BLOB, vb VARBINARY(300), bits BIT(10));
INSERT INTO bytes SELECT 1, GROUP_CONCAT(CHAR(seq) ORDER BY seq SEPARATOR ''), NULL, b'1010101010' FROM seq_0_to_255;
UPDATE bytes SET vb = b WHERE id = 1;
INSERT INTO bytes VALUES (2, '', '', b'0'), (3, NULL, NULL, NULL);
CREATE TABLE numbers (id INT PRIMARY KEY, d DECIMAL(65,30), f FLOAT, g DOUBLE, big BIGINT UNSIGNED, small TINYINT);
INSERT INTO numbers VALUES
  (1, 99999999999999999999999999999999999.999999999999999999999999999999, 3.40282e38, 1.7976931348623157e308, 18446744073709551615, -128),
  (2, -99999999999999999999999999999999999.999999999999999999999999999999, -1.17549e-38, 2.2250738585072014e-308, 0, 127),
  (3, 0, 0, -0.0, 1, 0);
CREATE TABLE times (id INT PRIMARY KEY, d DATE, dt DATETIME(6), ts TIMESTAMP NULL, t TIME, y YEAR, e ENUM('a','b c'), s SET('x','y'));
INSERT INTO times VALUES (1, '0000-00-00', '0000-00-00 00:00:00', NULL, '-838:59:59', 1901, 'b c', 'x,y'),
  (2, '9999-12-31', '2026-11-21 03:15:00.123456', '2038-01-19 03:14:07', '00:00:00.5', 2155, 'a', '');
CREATE TABLE generated (id INT PRIMARY KEY, price DECIMAL(10,2), qty INT,
  total DECIMAL(12,2) AS (price * qty) STORED, label VARCHAR(40) AS (CONCAT('item ', id)) VIRTUAL);
INSERT INTO generated (id, price, qty) VALUES (1, 9.99, 3), (2, 0.01, 0);
CREATE TABLE parents (id INT PRIMARY KEY, name VARCHAR(20));
CREATE TABLE children (id INT PRIMARY KEY, parent_id INT, FOREIGN KEY fk_parent (parent_id) REFERENCES parents(id) ON DELETE CASCADE);
INSERT INTO parents VALUES (1, 'p1'), (2, 'p2');
INSERT INTO children VALUES (10, 1), (11, 1), (12, 2);
CREATE TABLE \`spatial\` (id INT PRIMARY KEY, p POINT NOT NULL, SPATIAL INDEX (p));
INSERT INTO \`spatial\` VALUES (1, ST_GeomFromText('POINT(1.5 -2.25)'));
CREATE TABLE huge (id INT PRIMARY KEY, payload LONGBLOB);
INSERT INTO huge SELECT 1, REPEAT(GROUP_CONCAT(CHAR(seq) ORDER BY seq SEPARATOR ''), 204800) FROM seq_0_to_255;
CREATE TABLE log (id INT AUTO_INCREMENT PRIMARY KEY, what VARCHAR(100));
CREATE VIEW \`view of select\` AS SELECT \`from\`, \`where\` FROM \`select\` WHERE \`from\` > 0;
CREATE VIEW nested AS SELECT COUNT(*) AS n FROM \`view of select\`;
CREATE TRIGGER \`log parents\` AFTER INSERT ON parents FOR EACH ROW INSERT INTO log (what) VALUES (CONCAT('parent ', NEW.id));
DELIMITER //
CREATE PROCEDURE \`add parent\`(IN pid INT, IN pname VARCHAR(20))
BEGIN
  -- a comment line inside a body; and a string with ; and a newline
  INSERT INTO parents VALUES (pid, CONCAT(pname, ';\n'));
END//
CREATE FUNCTION twice(x INT) RETURNS INT DETERMINISTIC
BEGIN
  RETURN x * 2;
END//
DELIMITER ;
CREATE EVENT \`nightly cleanup\` ON SCHEDULE EVERY 1 DAY STARTS '2030-01-01 00:00:00' DISABLE DO DELETE FROM log;
CREATE DATABASE many;
`;

/** 520 small tables, made with one prepared loop. */
const manyTables = `
USE many;
DELIMITER //
CREATE PROCEDURE make_tables()
BEGIN
  DECLARE i INT DEFAULT 1;
  WHILE i <= 520 DO
    SET @s = CONCAT('CREATE TABLE t', i, ' (id INT PRIMARY KEY, v VARCHAR(10))');
    PREPARE st FROM @s; EXECUTE st; DEALLOCATE PREPARE st;
    SET @s = CONCAT('INSERT INTO t', i, ' VALUES (1, ''a''), (', i + 1, ', ''b'')');
    PREPARE st FROM @s; EXECUTE st; DEALLOCATE PREPARE st;
    SET i = i + 1;
  END WHILE;
END//
DELIMITER ;
CALL make_tables();
DROP PROCEDURE make_tables;
`;

let work: string;
let source: EphemeralServer;
let storage: Storage;

function dumpOptions(extra: Partial<MysqlDumpOptions> = {}): MysqlDumpOptions {
  return {
    storage,
    set: 'db',
    target: targetOf(source),
    databases: 'all',
    includeSystemDatabases: false,
    excludeTables: [],
    binlogPosition: 'auto',
    compression: 'zstd',
    tags: [],
    logger: silentLogger,
    ...extra,
  };
}

function restoreOptions(manifest: Manifest, into: EphemeralServer, extra: Partial<MysqlRestoreOptions> = {}) {
  return {
    storage,
    manifest,
    target: targetOf(into),
    databases: 'all' as const,
    rename: new Map<string, string>(),
    ifExists: 'fail' as const,
    parallel: 2,
    dryRun: false,
    logger: silentLogger,
    ...extra,
  };
}

before(async () => {
  work = await tempDir('mysql');
  storage = openStorage(path.join(work, 'backups'));
  source = await startMysql({ binaryLog: true });
  await sql(source, sampleShop);
  await sql(source, hostile);
  await sql(source, manyTables);
});

after(async () => {
  await source?.stop();
  await fs.rm(work, { recursive: true, force: true });
});

describe('dump and restore keep everything', () => {
  let manifest: Manifest;
  let target: EphemeralServer;
  before(async () => {
    manifest = await dumpMysql(dumpOptions());
    target = await startMysql();
  });
  after(() => target?.stop());

  test('the manifest records exact row counts, objects and the binary log position', () => {
    const facts = manifest.facts as unknown as MysqlFacts;
    assert.deepEqual(
      facts.databases.map((d) => d.name),
      ['many', 'odd db', 'shop'],
    );
    const odd = facts.databases.find((d) => d.name === 'odd db')!;
    assert.equal(odd.tables.select, 2);
    assert.equal(odd.tables.empty_rows, 0);
    assert.equal(odd.tables.bytes, 3);
    assert.equal(odd.tables.huge, 1);
    assert.deepEqual(odd.views.sort(), ['nested', 'view of select']);
    assert.deepEqual(odd.triggers, ['log parents']);
    assert.deepEqual(odd.procedures, ['add parent']);
    assert.deepEqual(odd.functions, ['twice']);
    assert.deepEqual(odd.events, ['nightly cleanup']);
    const shop = facts.databases.find((d) => d.name === 'shop')!;
    assert.deepEqual(shop.tables, { customers: 200, orders: 2000 });
    assert.equal(Object.keys(facts.databases.find((d) => d.name === 'many')!.tables).length, 520);
    assert.ok(
      facts.binlog && facts.binlog.position > 0 && facts.binlog.file.startsWith('binlog'),
      'binlog position',
    );
    assert.match(facts.binlog.gtid ?? '', /^\d+-\d+-\d+/);
    assert.equal(facts.server.flavour, 'mariadb');
    assert.equal(manifest.artifacts.length, 1);
    assert.equal(manifest.artifacts[0]!.name, 'dump.sql.zst');
  });

  test('a restore into a fresh server matches the source table by table and object by object', async () => {
    const result = await restoreMysql(restoreOptions(manifest, target));
    assert.equal(result.databases.length, 3);
    for (const db of ['shop', 'odd db', 'many']) {
      assert.deepEqual(await fingerprint(target, db), await fingerprint(source, db), db);
    }
    assert.deepEqual(
      (await databases(target)).filter((d) => d.startsWith('lbstage')),
      [],
      'no staging database left',
    );
  });

  test('a renamed restore of one database matches too, foreign keys and all', async () => {
    await restoreMysql(
      restoreOptions(manifest, target, { databases: ['odd db'], rename: new Map([['odd db', 'odd copy']]) }),
    );
    assert.deepEqual(await fingerprint(target, 'odd copy'), await fingerprint(source, 'odd db'));
    // The foreign key points into the renamed database and still works.
    await sql(target, 'DELETE FROM parents WHERE id = 1', 'odd copy');
    assert.equal((await sql(target, 'SELECT COUNT(*) FROM children', 'odd copy')).trim(), '1');
    assert.equal((await sql(target, 'SELECT twice(21)', 'odd copy')).trim(), '42');
  });

  test('an existing database is refused, replaced only when asked, or skipped', async () => {
    await assert.rejects(
      restoreMysql(restoreOptions(manifest, target, { databases: ['shop'] })),
      /if-exists: the target database 'shop' .* exists/,
    );
    await sql(target, 'INSERT INTO customers (name) VALUES ("added after")', 'shop');
    const skipped = await restoreMysql(
      restoreOptions(manifest, target, { databases: ['shop'], ifExists: 'skip' }),
    );
    assert.equal(skipped.databases[0]!.status, 'skipped');
    assert.equal((await sql(target, 'SELECT COUNT(*) FROM customers', 'shop')).trim(), '201');
    await restoreMysql(restoreOptions(manifest, target, { databases: ['shop'], ifExists: 'replace' }));
    assert.deepEqual(await fingerprint(target, 'shop'), await fingerprint(source, 'shop'));
  });
});

describe('a restore never leaves a target half-restored', () => {
  let target: EphemeralServer;
  let manifest: Manifest;
  let identity: string;
  before(async () => {
    target = await startMysql();
    identity = await generateIdentity();
    manifest = await dumpMysql(
      dumpOptions({
        databases: ['shop'],
        set: 'enc',
        encryption: { recipients: [await recipientOf(identity)] },
      }),
    );
  });
  after(() => target?.stop());

  async function damage(how: (bytes: Buffer) => Buffer): Promise<Manifest> {
    const copy = await dumpMysql(
      dumpOptions({ databases: ['shop'], set: `bad-${Math.random().toString(36).slice(2, 8)}` }),
    );
    const file = path.join(work, 'backups', copy.set, copy.id, copy.artifacts[0]!.name);
    await fs.writeFile(file, how(await fs.readFile(file)));
    return copy;
  }

  async function assertUntouched() {
    const dbs = await databases(target);
    assert.ok(!dbs.includes('shop'), 'no shop database');
    assert.deepEqual(
      dbs.filter((d) => d.startsWith('lbstage')),
      [],
      'no staging database left',
    );
  }

  test('a flipped byte is caught and nothing is restored', async () => {
    const bad = await damage((b) => {
      b[Math.floor(b.length / 2)]! ^= 0xff;
      return b;
    });
    await assert.rejects(restoreMysql(restoreOptions(bad, target)), /sha256|damaged|corrupt/i);
    await assertUntouched();
  });

  test('a truncated artifact is caught and nothing is restored', async () => {
    const bad = await damage((b) => b.subarray(0, Math.floor(b.length * 0.7)));
    await assert.rejects(restoreMysql(restoreOptions(bad, target)), /truncated|bytes|sha256|damaged/i);
    await assertUntouched();
  });

  test('the wrong age identity is refused and nothing is restored', async () => {
    const other = await generateIdentity();
    await assert.rejects(
      restoreMysql(restoreOptions(manifest, target, { keys: { identities: [other] } })),
      /identity|decrypt|no identity matched/i,
    );
    await assertUntouched();
  });

  test('a manifest whose row count disagrees with the data is refused', async () => {
    const edited = structuredClone(manifest);
    (edited.facts as unknown as MysqlFacts).databases[0]!.tables.orders = 1999;
    await assert.rejects(
      restoreMysql(restoreOptions(edited, target, { keys: { identities: [identity] } })),
      /shop\.orders holds 2000 rows, but its manifest records 1999/,
    );
    await assertUntouched();
  });

  test('a dry run reads and checks everything and writes nothing', async () => {
    const result = await restoreMysql(
      restoreOptions(manifest, target, { dryRun: true, keys: { identities: [identity] } }),
    );
    assert.equal(result.rows, 2200);
    assert.equal(result.databases[0]!.status, 'checked');
    await assertUntouched();
    await restoreMysql(restoreOptions(manifest, target, { keys: { identities: [identity] } }));
    assert.deepEqual(await fingerprint(target, 'shop'), await fingerprint(source, 'shop'));
  });
});

test('the snapshot is consistent while another connection writes', async () => {
  await sql(
    source,
    `CREATE DATABASE bank; USE bank;
     CREATE TABLE a_accounts (id INT PRIMARY KEY, balance BIGINT NOT NULL);
     CREATE TABLE m_filler (id INT PRIMARY KEY, pad CHAR(200));
     CREATE TABLE z_accounts (id INT PRIMARY KEY, balance BIGINT NOT NULL);
     INSERT INTO a_accounts SELECT seq, 1000 FROM seq_1_to_100;
     INSERT INTO z_accounts SELECT seq, 1000 FROM seq_1_to_100;
     INSERT INTO m_filler SELECT seq, REPEAT('x', 200) FROM seq_1_to_1500000;`,
  );
  // Transfers between the two tables, each in one transaction, all through the dump.
  let stop = false;
  let transfers = 0;
  const writer = (async () => {
    const { connect } = await import('../../shared/mysql/connection.ts');
    const conn = await connect(targetOf(source), 'bank');
    while (!stop) {
      const id = 1 + (transfers % 100);
      await conn.query('START TRANSACTION');
      await conn.query('UPDATE a_accounts SET balance = balance - 7 WHERE id = ?', [id]);
      await conn.query('UPDATE z_accounts SET balance = balance + 7 WHERE id = ?', [id]);
      await conn.query('COMMIT');
      transfers++;
    }
    await conn.end();
  })();
  await new Promise((resolve) => setTimeout(resolve, 100));
  const before = transfers;
  const manifest = await dumpMysql(dumpOptions({ databases: ['bank'], set: 'bank' })).finally(() => {
    stop = true;
  });
  await writer;
  assert.ok(transfers - before > 20, `writes happened during the dump (${transfers - before})`);
  const target = await startMysql();
  try {
    await restoreMysql(restoreOptions(manifest, target));
    const [a, z] = (
      await sql(
        target,
        'SELECT (SELECT SUM(balance) FROM a_accounts), (SELECT SUM(balance) FROM z_accounts)',
        'bank',
      )
    )
      .trim()
      .split('\t')
      .map(Number);
    assert.equal(a! + z!, 200_000, `the totals agree (a ${a}, z ${z})`);
    assert.notEqual(a, 100_000, 'the snapshot is from during the writes');
  } finally {
    await target.stop();
    await sql(source, 'DROP DATABASE bank');
  }
});

test('a failed dump commits nothing', async () => {
  const set = 'failing';
  await sql(
    source,
    "CREATE USER 'narrow'@'%' IDENTIFIED BY 'pw'; GRANT SELECT ON shop.customers TO 'narrow'@'%';",
  );
  await assert.rejects(
    dumpMysql(
      dumpOptions({
        set,
        databases: ['shop'],
        target: targetOf(source, 'narrow', 'pw'),
        binlogPosition: 'off',
      }),
    ),
    /mariadb-dump failed .*(denied|privilege)/i,
  );
  const entries = await new Catalog(storage).listBackups(set);
  assert.deepEqual(
    entries.filter((e) => e.committed),
    [],
  );
  assert.deepEqual(entries, [], 'nothing left behind');
});

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { DumpFacts } from '../../shared/mysql/facts.ts';
import { DumpReader, type StatementKind } from '../../shared/mysql/sql-stream.ts';
import { createdObject, roleOf } from '../../shared/mysql/statements.ts';

/** A dump in both dumpers' shapes: mariadb-dump's row per line, mysqldump's one line. */
const dump = [
  '/*M!999999\\- enable the sandbox mode */ ',
  '-- MariaDB dump 10.19',
  '/*!40101 SET NAMES utf8mb4 */;',
  "-- CHANGE MASTER TO MASTER_LOG_FILE='binlog.000007', MASTER_LOG_POS=1234;",
  '',
  'CREATE DATABASE /*!32312 IF NOT EXISTS*/ `we``ird db` /*!40100 DEFAULT CHARACTER SET latin1 */;',
  'USE `we``ird db`;',
  'DROP TABLE IF EXISTS `t(1)`;',
  'CREATE TABLE `t(1)` (',
  "  `a` varchar(10) DEFAULT 'x;'",
  ') ENGINE=InnoDB;',
  'INSERT INTO `t(1)` VALUES',
  "(1,'a (b), (c)',0x28),",
  "(2,'it\\'s \\\\',NULL),",
  "(3,'\\n-- Current Database: x;',''),",
  "(4,'VALUES (',5);",
  "INSERT INTO `t(1)` (`a`, `b(`) VALUES (5,'('),(6,'''('),(7,NULL);",
  'CREATE TABLE `my` (x INT) ENGINE=MyISAM;',
  'DELIMITER ;;',
  '/*!50003 CREATE*/ /*!50017 DEFINER=`root`@`localhost`*/ /*!50003 TRIGGER `trg` BEFORE INSERT ON `t(1)` FOR EACH ROW',
  'INSERT INTO log VALUES (1);',
  'SET @x = 1; */;;',
  'DELIMITER ;',
  'DELIMITER ;;',
  'CREATE DEFINER=`root`@`localhost` PROCEDURE `p 1`()',
  'BEGIN',
  '  SELECT 1;',
  'END ;;',
  'DELIMITER ;',
  '/*!50001 CREATE ALGORITHM=UNDEFINED */',
  '/*!50013 DEFINER=`root`@`localhost` SQL SECURITY DEFINER */',
  '/*!50001 VIEW `v` AS select 1 AS `1` */;',
  "-- SET GLOBAL gtid_slave_pos='0-1-99';",
  '-- Dump completed on 2026-11-21  8:17:24',
  '',
].join('\n');

async function read(chunkSize: number) {
  const facts = new DumpFacts();
  const kinds: StatementKind[] = [];
  const pieces: Buffer[] = [];
  const reader = new DumpReader({
    statement: (text, kind) => {
      kinds.push(kind);
      pieces.push(Buffer.from(text));
      facts.statement(text, kind);
    },
    dataStart: (table) => facts.dataStart(table),
    dataPiece: (piece) => {
      pieces.push(Buffer.from(piece));
    },
    dataEnd: (rows) => facts.dataEnd(rows),
  });
  const bytes = Buffer.from(dump);
  for (let i = 0; i < bytes.length; i += chunkSize) await reader.push(bytes.subarray(i, i + chunkSize));
  await reader.end();
  return { facts, kinds, text: Buffer.concat(pieces).toString() };
}

test('the dump reader counts rows and objects the same whatever the chunking, and passes every byte on', async () => {
  for (const size of [1 << 20, 1000, 64, 7, 3, 2, 1]) {
    const { facts, kinds, text } = await read(size);
    assert.equal(text, dump, `every byte, in order (chunks of ${size})`);
    assert.equal(kinds.filter((k) => k === 'command').length, 1);
    assert.deepEqual(facts.databases, [
      {
        name: 'we`ird db',
        options: 'DEFAULT CHARACTER SET latin1',
        tables: { 't(1)': 7, my: 0 },
        views: ['v'],
        procedures: ['p 1'],
        functions: [],
        triggers: ['trg'],
        events: [],
        nonTransactional: ['my (MyISAM)'],
      },
    ]);
    assert.deepEqual(facts.binlog, { file: 'binlog.000007', position: 1234, gtid: '0-1-99' });
    assert.equal(facts.completed, true);
  }
});

test('a dump cut inside a statement is an error', async () => {
  const reader = new DumpReader({ statement() {}, dataStart() {}, dataPiece() {}, dataEnd() {} });
  await reader.push(Buffer.from("USE `a`;\nINSERT INTO `t` VALUES\n(1,'x'),\n(2,"));
  await assert.rejects(reader.end(), /truncated/);
});

test('statement roles and created objects', () => {
  assert.equal(roleOf('/*!40101 SET NAMES utf8mb4 */;\n'), 'session');
  assert.equal(roleOf('USE `x`;\n'), 'database');
  assert.equal(roleOf('/*!40000 ALTER TABLE `t` DISABLE KEYS */;\n'), 'table');
  assert.equal(roleOf('LOCK TABLES `t` WRITE;\n'), 'lock');
  assert.equal(roleOf('/*!50001 DROP VIEW IF EXISTS `v`*/;\n'), 'object');
  assert.deepEqual(createdObject('CREATE DEFINER=`a`@`%` FUNCTION `f  2`(x INT) RETURNS int'), {
    type: 'function',
    name: 'f  2',
  });
  assert.deepEqual(
    createdObject('/*!50106 CREATE*/ /*!50117 DEFINER=`r`@`l`*/ /*!50106 EVENT `e` ON SCHEDULE'),
    {
      type: 'event',
      name: 'e',
    },
  );
  assert.equal(createdObject('CREATE DATABASE `x`;'), undefined);
});

/** Reads `sql` in chunks of `size` and returns the rows per table, or throws the reader's refusal. */
async function readAll(sql: string, size: number): Promise<Record<string, number>> {
  const rows: Record<string, number> = {};
  let table = '';
  const reader = new DumpReader({
    statement() {},
    dataStart: (t) => {
      table = t;
    },
    dataPiece() {},
    dataEnd: (n) => {
      rows[table] = (rows[table] ?? 0) + n;
    },
  });
  const bytes = Buffer.from(sql);
  for (let i = 0; i < bytes.length; i += size) await reader.push(bytes.subarray(i, i + size));
  await reader.end();
  return rows;
}

test('what looks like a client command or a second statement inside a string is data', async () => {
  const sql = [
    'USE `a`;',
    "INSERT INTO `t` VALUES (1,'\\\\! rm -rf / ; DROP DATABASE x;'),(2,'it''s; \\\\. /etc/passwd'),(3,_binary 'x\\'y'),(4,x'0aff',-1.5e-3,NULL);",
    "INSERT INTO `t` VALUES\n(5,'a\nb'),\n(6,0x00ff);",
    "SET @x = 'a;b \\\\! c';",
    '',
  ].join('\n');
  for (const size of [1, 2, 3, 5, 17, 1 << 16])
    assert.deepEqual(await readAll(sql, size), { t: 6 }, `chunks of ${size}`);
});

test('a hostile line is refused at its line whatever the chunking', async () => {
  const hostile: [string, RegExp][] = [
    ["INSERT INTO `t` VALUES (1,'a') \\! id\n;", /line 2 .*a backslash outside a string/],
    ["INSERT INTO `t` VALUES (1,'a');\nSELECT 1;", /line 3 .*'SELECT 1' is not a statement a dumper writes/],
    [
      "INSERT INTO `t` VALUES (1,'a'),(2,victim.f(1));",
      /line 2 .*'victim' between values|name, a keyword or a function/,
    ],
    ["INSERT INTO `t` VALUES (1,'a') -- ;\n,(2,'b');", /line 2 .*-- \(a comment\) between values/],
    ['INSERT INTO `victim`.`t` VALUES (1);', /line 2 .*an INSERT that is not INSERT INTO <table>/],
    ['SET @a = 1 /* ;\n*/, @@GLOBAL.x = 1;', /line 2 .*a comment that is never closed/],
    ["SET @a = '1;\n' DROP DATABASE x;", /line 2 .*text after the delimiter ';'|never closed/],
    ['/*!40101 SET NAMES utf8mb4 */ ; \\! id;', /line 2 .*text after the delimiter/],
    ['/*M!999999\\- enable the sandbox mode */ \\! id;', /line 2 .*a backslash outside a string/],
    ['delimiter $$\nDROP DATABASE x $$\nSELECT 1;', /line 2 .*the client command 'delimiter'/],
  ];
  for (const [line, error] of hostile) {
    for (const size of [1, 3, 7, 1 << 16]) {
      await assert.rejects(readAll(`USE \`a\`;\n${line}\n`, size), error, `${line} in chunks of ${size}`);
    }
  }
});

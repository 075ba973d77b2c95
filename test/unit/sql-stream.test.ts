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

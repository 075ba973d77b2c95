/**
 * Hostile MySQL backups against real MariaDB servers: whoever can write the bucket edits the
 * SQL (and the manifest, so that sha256, sizes and row counts all match). Restore, its dry
 * run and verify-restore must refuse each one before the statement reaches a server, run
 * nothing on this machine, and leave every other database of the target as it was.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { makeReader, runCommand } from '../../shared/action/run.ts';
import type { Command } from '../../shared/action/spec.ts';
import type { Manifest } from '../../shared/catalog/manifest.ts';
import { verifyRestoreCommand } from '../../shared/commands/verify-restore.ts';
import { clientPrograms, writeOptionFile } from '../../shared/mysql/connection.ts';
import { dumpMysql } from '../../shared/mysql/dump.ts';
import { Loader } from '../../shared/mysql/loader.ts';
import { type MysqlRestoreOptions, restoreMysql } from '../../shared/mysql/restore.ts';
import { silentLogger } from '../../shared/pipeline/progress.ts';
import { openStorage } from '../../shared/storage/open.ts';
import type { Storage } from '../../shared/storage/storage.ts';
import type { VerifyReport } from '../../shared/verify/report.ts';
import { craftMysqlBackup } from '../harness/hostile-sql.ts';
import { databases, type EphemeralServer, sampleShop, sql, startMysql, targetOf } from '../harness/mysql.ts';
import { tempDir } from '../harness/servers.ts';

let work: string;
let storage: Storage;
let source: EphemeralServer;
let target: EphemeralServer;
let original: Manifest;
/** A file that appears if any shell command of a backup ran. */
let marker: string;

const victim = `
CREATE DATABASE victim;
CREATE TABLE victim.keep (id INT PRIMARY KEY, secret VARCHAR(20));
INSERT INTO victim.keep VALUES (1, 'do not touch'), (2, 'nor this');
`;

before(async () => {
  work = await tempDir('mysql-hostile');
  storage = openStorage(path.join(work, 'backups'));
  marker = path.join(work, 'marker');
  [source, target] = await Promise.all([startMysql(), startMysql()]);
  await sql(source, sampleShop);
  await sql(target, victim);
  original = await dumpMysql({
    storage,
    set: 'shop',
    target: targetOf(source),
    databases: ['shop'],
    includeSystemDatabases: false,
    excludeTables: [],
    binlogPosition: 'off',
    compression: 'zstd',
    tags: [],
    logger: silentLogger,
  });
});

after(async () => {
  await Promise.all([source?.stop(), target?.stop()]);
  await fs.rm(work, { recursive: true, force: true });
});

function restoreOptions(manifest: Manifest, extra: Partial<MysqlRestoreOptions> = {}): MysqlRestoreOptions {
  return {
    storage,
    manifest,
    target: targetOf(target),
    databases: 'all',
    rename: new Map(),
    ifExists: 'fail',
    parallel: 2,
    dryRun: false,
    logger: silentLogger,
    ...extra,
  };
}

/** Nothing ran here, the target holds only what it held, and victim is whole. */
async function assertUntouched(): Promise<void> {
  await assert.rejects(fs.access(marker), 'no shell command of the backup ran');
  assert.deepEqual(
    (await databases(target)).filter(
      (d) => !['information_schema', 'mysql', 'performance_schema', 'sys'].includes(d),
    ),
    ['victim'],
    'no database restored, no staging database left',
  );
  assert.equal(
    await sql(target, 'SELECT id, secret FROM victim.keep ORDER BY id'),
    '1\tdo not touch\n2\tnor this\n',
  );
  assert.equal((await sql(target, "SELECT COUNT(*) FROM mysql.user WHERE user = 'evil'")).trim(), '0');
  assert.equal((await sql(target, 'SELECT @@GLOBAL.general_log')).trim(), '0');
}

const sandbox = '/*M!999999\\- enable the sandbox mode */';
const setNames = '/*!40101 SET NAMES utf8mb4 */;';
const useShop = 'USE `shop`;\n';
const firstRow = /INSERT INTO `customers` VALUES\n\(1,/;

/** Each hostile edit, and the refusal a user sees (with the dump's line). */
const cases: { name: string; edit: (sql: string) => string; error: RegExp }[] = [
  {
    name: 'a shell command inside SET NAMES, with the sandbox line removed',
    edit: (s) =>
      s.replace(`${sandbox}\n`, '').replace(setNames, `/*!40101 SET NAMES utf8mb4 \\! touch ${marker} */;`),
    error:
      /^line \d+ of the dump: a backslash outside a string \(a client command such as \\! or \\\.\); Lifeboat does not restore this/,
  },
  {
    name: 'the client command system at the start of a statement',
    edit: (s) => s.replace(useShop, `${useShop}system touch ${marker}\n;\n`),
    error: /^line \d+ of the dump: the client command 'system'/,
  },
  {
    name: 'source of a file',
    edit: (s) => s.replace(useShop, `${useShop}\\. /etc/passwd\n`),
    error: /^line \d+ of the dump: a backslash outside a string/,
  },
  {
    name: 'a shell command among the values of an INSERT',
    edit: (s) => s.replace(firstRow, (m) => `${m} \\! touch ${marker}\n`),
    error: /^line \d+ of the dump: a backslash outside a string/,
  },
  {
    name: 'a second statement after the values of an INSERT',
    edit: (s) => s.replace(/(INSERT INTO `customers` VALUES\n[^;]*\);)\n/, '$1DROP DATABASE victim;\n'),
    error: /^line \d+ of the dump: text after the ; that ends an INSERT \(a second statement on the line\)/,
  },
  {
    name: 'a second statement on the line of a SET',
    edit: (s) => s.replace(setNames, `${setNames} DROP DATABASE victim;`),
    error: /^line \d+ of the dump: text after the delimiter ';' \(a second statement on the line\)/,
  },
  {
    name: 'a table of another database dropped after USE shop',
    edit: (s) => s.replace(useShop, `${useShop}DROP TABLE IF EXISTS \`victim\`.\`keep\`;\n`),
    error: /^line \d+ of the dump: a name qualified with a database in 'DROP TABLE IF EXISTS'/,
  },
  {
    name: 'USE of a database the manifest does not list',
    edit: (s) => s.replace(useShop, 'USE `victim`;\nDROP TABLE IF EXISTS `keep`;\n'),
    error:
      /^line \d+ of the dump: USE of the database 'victim', which the backup's manifest does not list \(it lists: shop\)/,
  },
  {
    name: 'SET GLOBAL',
    edit: (s) => s.replace(useShop, `${useShop}SET GLOBAL general_log = 1;\n`),
    error: /^line \d+ of the dump: SET GLOBAL \(only session and user variables are set by a dump\)/,
  },
  {
    name: 'SET @@GLOBAL inside a conditional comment',
    edit: (s) => s.replace(setNames, '/*!40101 SET @a = 1, @@GLOBAL.general_log = 1 */;'),
    error: /^line \d+ of the dump: SET of a global variable/,
  },
  {
    name: 'a user with every privilege',
    edit: (s) => s.replace(useShop, `${useShop}GRANT ALL ON *.* TO 'evil'@'%' IDENTIFIED BY 'x';\n`),
    error: /^line \d+ of the dump: 'GRANT ALL ON \*' is not a statement a dumper writes/,
  },
  {
    name: 'a file written by the server',
    edit: (s) =>
      s.replace(useShop, `${useShop}SELECT * FROM \`customers\` INTO OUTFILE '/tmp/lifeboat-out';\n`),
    error: /^line \d+ of the dump: 'SELECT \* FROM customers' is not a statement a dumper writes/,
  },
  {
    name: 'a subquery into another database among the values',
    edit: (s) => s.replace(firstRow, (m) => `${m.slice(0, -3)}((SELECT COUNT(*) FROM victim.keep),`),
    error: /^line \d+ of the dump: an expression \(a parenthesis inside a row\) between values/,
  },
  {
    name: 'a function call among the values',
    edit: (s) => s.replace(firstRow, (m) => `${m}SLEEP(0)+`),
    error: /^line \d+ of the dump: 'SLEEP' between values \(a function, a name or a keyword\)/,
  },
  {
    name: 'a table kept in another folder of the server',
    edit: (s) => s.replace(/\) ENGINE=InnoDB/, ") ENGINE=InnoDB DATA DIRECTORY='/tmp'"),
    error: /^line \d+ of the dump: DIRECTORY in CREATE TABLE \(it reaches outside the database\)/,
  },
  {
    name: 'a MERGE table over a table of another database',
    edit: (s) =>
      s.replace(useShop, `${useShop}CREATE TABLE \`m\` (id INT) ENGINE=MERGE UNION=(\`victim\`.\`keep\`);\n`),
    error: /^line \d+ of the dump: ENGINE=MERGE in CREATE TABLE \(it reaches outside the database\)/,
  },
  {
    name: 'a view created in another database',
    edit: (s) => s.replace(useShop, `${useShop}CREATE VIEW \`victim\`.\`v\` AS SELECT 1;\n`),
    error: /^line \d+ of the dump: 'CREATE VIEW victim \.' is not CREATE VIEW of one unqualified name/,
  },
  {
    name: 'NO_BACKSLASH_ESCAPES (the client would read strings otherwise)',
    edit: (s) => s.replace(setNames, `${setNames}\n/*!40101 SET SQL_MODE='NO_BACKSLASH_ESCAPES' */;`),
    error: /^line \d+ of the dump: SET of NO_BACKSLASH_ESCAPES/,
  },
  {
    name: 'a delimiter no dumper writes',
    edit: (s) => s.replace(useShop, `${useShop}DELIMITER \\!\n`),
    error: /^line \d+ of the dump: DELIMITER '\\!' \(the dumpers write ; and ;;\)/,
  },
];

describe('restore refuses a hostile dump before the statement reaches a server', () => {
  for (const { name, edit, error } of cases) {
    test(name, async () => {
      const crafted = await craftMysqlBackup(storage, original, edit);
      const refused = (e: Error) => {
        assert.equal(e.name, 'UnsafeDumpError');
        assert.match(e.message, error);
        return true;
      };
      await assert.rejects(restoreMysql(restoreOptions(crafted)), refused);
      await assertUntouched();
      // A dry run reads the same SQL and refuses it the same way.
      await assert.rejects(restoreMysql(restoreOptions(crafted, { dryRun: true })), refused);
    });
  }

  test('the untouched backup restores (the refusals are not of every dump)', async () => {
    await restoreMysql(restoreOptions(original));
    assert.equal((await sql(target, 'SELECT COUNT(*) FROM shop.orders')).trim(), '2000');
    await sql(target, 'DROP DATABASE shop');
    await assertUntouched();
  });
});

describe('the least-privileged restore user of the README', () => {
  test('restores into its target and staging names only, and cannot touch another database', async () => {
    await sql(
      target,
      `CREATE USER 'lifeboat_restore'@'%' IDENTIFIED BY 'restore-pw';
       GRANT ALL PRIVILEGES ON \`shop\\_copy\`.* TO 'lifeboat_restore'@'%';
       GRANT ALL PRIVILEGES ON \`lbstage\\_%\`.* TO 'lifeboat_restore'@'%';
       GRANT SET USER ON *.* TO 'lifeboat_restore'@'%';`,
    );
    try {
      await restoreMysql(
        restoreOptions(original, {
          target: targetOf(target, 'lifeboat_restore', 'restore-pw'),
          rename: new Map([['shop', 'shop_copy']]),
        }),
      );
      assert.equal((await sql(target, 'SELECT COUNT(*) FROM shop_copy.orders')).trim(), '2000');
      assert.equal((await sql(target, 'CALL shop_copy.customer_count()')).trim(), '200');
      // What the README says remains: a statement that got through could still only reach
      // databases this user may write.
      await assert.rejects(
        restoreMysql(
          restoreOptions(original, { target: targetOf(target, 'lifeboat_restore', 'restore-pw') }),
        ),
        /denied/i,
        'restoring as shop (not granted) is refused by the server',
      );
      await sql(target, 'DROP DATABASE shop_copy');
      await assertUntouched();
    } finally {
      await sql(target, "DROP USER 'lifeboat_restore'@'%'");
    }
  });
});

describe('the client runs in its sandbox, whatever reaches it', () => {
  test('--sandbox is found in the client on this machine, and the client refuses \\! under it', async () => {
    const programs = await clientPrograms('mariadb');
    assert.deepEqual(programs.sandboxArgs, ['--sandbox'], 'MariaDB 10.11.8 and later list --sandbox');
    const optionFile = await writeOptionFile(targetOf(target), programs.flavour);
    try {
      const loader = new Loader(
        {
          program: programs.client,
          args: [...optionFile.args, ...programs.sandboxArgs],
          optionFd: optionFile.fd,
        },
        'test',
      );
      await loader.write(`\\! touch ${marker}\nSELECT 1;\n`);
      await assert.rejects(loader.end(), /sandbox/i);
    } finally {
      await optionFile.dispose();
    }
    await assert.rejects(fs.access(marker), 'the shell command did not run');
  });
});

describe('verify-restore of a hostile dump', () => {
  test('fails its parse check naming the command; nothing runs and nothing is left', async () => {
    const crafted = await craftMysqlBackup(storage, original, cases[0]!.edit);
    const workDir = await tempDir('hostile-verify');
    const inputs: Record<string, string> = {
      storage: path.join(work, 'backups'),
      set: 'shop',
      backup: crafted.id,
      'work-dir': workDir,
      'progress-interval': '1h',
      'post-restore-command': `touch ${marker}`,
    };
    const command = verifyRestoreCommand as unknown as Command<never>;
    const result = await runCommand(
      command,
      makeReader(command, (spec) => inputs[spec.name] ?? spec.default),
      silentLogger,
    );
    const report = JSON.parse(await fs.readFile(result.outputs.report!, 'utf8')) as VerifyReport;
    assert.equal(report.passed, false);
    const parse = report.checks.find((c) => c.name.startsWith('parse:'))!;
    assert.equal(parse.status, 'failed');
    assert.match(
      parse.detail,
      /line \d+ of the dump: a backslash outside a string \(a client command such as \\! or \\\.\)/,
    );
    const post = report.checks.find((c) => c.name === 'post-restore-command');
    assert.notEqual(post?.status, 'passed', 'the post-restore-command did not run');
    await assert.rejects(fs.access(marker), 'nothing ran');
    assert.equal(report.environment.removed, true);
    assert.deepEqual(
      (await fs.readdir(workDir)).filter((f) => f.startsWith('lifeboat-mysqld')),
      [],
      'the throwaway server is gone',
    );
    await fs.rm(workDir, { recursive: true, force: true });
  });
});

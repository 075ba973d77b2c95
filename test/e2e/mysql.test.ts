/**
 * The MySQL drill through the built bundle: dump-mysql as a runner runs it, restore through
 * the CLI into a second server, and the bad inputs a user makes, each one clear line with
 * exit status 1 and nothing committed.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Catalog } from '../../shared/catalog/catalog.ts';
import { freePort } from '../../shared/mysql/ephemeral.ts';
import { openStorage } from '../../shared/storage/open.ts';
import {
  connectionInputs,
  type EphemeralServer,
  fingerprint,
  sampleShop,
  sql,
  startMysql,
} from '../harness/mysql.ts';
import { errorLines, type Run, runAction, runCli } from '../harness/runner.ts';
import { tempDir } from '../harness/servers.ts';

let work: string;
let storage: string;
let source: EphemeralServer;
let target: EphemeralServer;

before(async () => {
  work = await tempDir('mysql-e2e');
  storage = path.join(work, 'backups');
  [source, target] = await Promise.all([startMysql(), startMysql()]);
  await sql(source, sampleShop);
  await sql(
    source,
    `CREATE USER 'backup'@'%' IDENTIFIED BY 'pa ss"wo\\\\rd#1';
     GRANT SELECT, SHOW VIEW, TRIGGER, EVENT, LOCK TABLES ON *.* TO 'backup'@'%';
     CREATE USER 'narrow'@'%' IDENTIFIED BY 'narrow';
     GRANT SELECT ON shop.customers TO 'narrow'@'%';`,
  );
});

after(async () => {
  await Promise.all([source?.stop(), target?.stop()]);
  await fs.rm(work, { recursive: true, force: true });
});

async function committed(set: string): Promise<string[]> {
  const entries = await new Catalog(openStorage(storage)).listBackups(set);
  return entries.map((e) => `${e.id}${e.committed ? '' : ' (uncommitted)'}`);
}

function oneError(run: Run, pattern: RegExp): void {
  assert.equal(run.code, 1, `exit status: ${run.stdout}${run.stderr}`);
  const lines = errorLines(run);
  assert.equal(lines.length, 1, `one ::error:: line, got: ${run.stdout}`);
  assert.match(lines[0]!, pattern);
  assert.doesNotMatch(lines[0]!, /unexpected failure/);
}

describe('the drill: dump-mysql, list, restore into another server', () => {
  let backupId: string;
  test('dump-mysql as an action, with a password that never shows', async () => {
    const password = 'pa ss"wo\\rd#1';
    const run = await runAction(
      'dump-mysql',
      { storage, set: 'shop-db', ...connectionInputs(source), user: 'backup', password, databases: 'shop' },
      {},
    );
    assert.equal(run.code, 0, run.stdout + run.stderr);
    // The runner takes ::add-mask:: lines in and masks the value everywhere after.
    const printed = run.stdout.replace(/^::add-mask::.*$/gm, '') + run.stderr;
    assert.ok(!printed.includes(password), 'the password is not printed');
    assert.ok(run.stdout.includes(`::add-mask::${password}`), 'the password is masked');
    backupId = run.outputs['backup-id']!;
    assert.match(backupId, /^\d{4}-\d\d-\d\d-\d{4}-backup-full$/);
    const manifest = JSON.parse(run.outputs.result!);
    assert.deepEqual(manifest.facts.databases[0].tables, { customers: 200, orders: 2000 });
    assert.ok(!JSON.stringify(manifest).includes(password), 'not in the manifest');
    assert.match(run.summary, /2 tables, 2200 rows/);
  });

  test('restore through the CLI, renamed, matches the source', async () => {
    const run = await runCli(
      [
        'restore',
        '--storage',
        storage,
        '--set',
        'shop-db',
        '--host',
        '127.0.0.1',
        '--port',
        String(target.port),
        '--ssl-mode',
        'disabled',
        '--rename',
        'shop=shop_restored',
      ],
      {},
    );
    assert.equal(run.code, 0, run.stdout + run.stderr);
    assert.deepEqual(await fingerprint(target, 'shop_restored'), await fingerprint(source, 'shop'));
    assert.match(run.stdout + run.stderr, /2200 rows/);
  });

  test('by hand, with standard tools: zstd -d | mariadb', async () => {
    const file = path.join(storage, 'shop-db', backupId, 'dump.sql.zst');
    await new Promise<void>((resolve, reject) => {
      const child = spawn(
        'bash',
        ['-c', `zstd -dc "$0" | mariadb --no-defaults --socket="$1" -uroot`, file, target.socket],
        {
          stdio: ['ignore', 'inherit', 'inherit'],
        },
      );
      child.once('close', (code) => (code === 0 ? resolve() : reject(new Error(`exit ${code}`))));
    });
    assert.deepEqual(await fingerprint(target, 'shop'), await fingerprint(source, 'shop'));
  });

  test('list shows the backup', async () => {
    const run = await runCli(['list', '--storage', storage, '--set', 'shop-db'], {});
    assert.equal(run.code, 0, run.stderr);
    assert.match(run.stdout, new RegExp(backupId));
  });
});

describe('bad inputs: one clear line, exit 1, nothing committed', () => {
  const cases: [string, () => Promise<Record<string, string>>, RegExp][] = [
    [
      'an unreachable server',
      async () => ({ host: '127.0.0.1', port: String(await freePort()), 'ssl-mode': 'disabled' }),
      /host: cannot connect to root@127\.0\.0\.1:\d+: connection refused/,
    ],
    [
      'a wrong password',
      async () => ({ ...connectionInputs(source), user: 'backup', password: 'wrong' }),
      /password: access denied for backup@/,
    ],
    [
      'an unknown database',
      async () => ({ ...connectionInputs(source), databases: 'shop, nope' }),
      /databases: 'nope' not found on .*present: .*shop/,
    ],
    [
      'missing privileges',
      async () => ({ ...connectionInputs(source), user: 'narrow', password: 'narrow', databases: 'shop' }),
      /mariadb-dump failed .*(denied|privilege)/i,
    ],
    [
      'a bad port',
      async () => ({ port: 'eighty' }),
      /port: 'eighty' is not accepted; accepted: a whole number/,
    ],
    [
      'a bad URL',
      async () => ({ 'mysql-url': 'postgres://u:secret@h/db' }),
      /mysql-url: the scheme postgres: is not accepted/,
    ],
    [
      'a bad exclude',
      async () => ({ ...connectionInputs(source), 'exclude-tables': 'orders' }),
      /exclude-tables: 'orders' is not accepted; accepted: database\.table/,
    ],
  ];
  for (const [name, inputs, pattern] of cases) {
    test(name, async () => {
      const set = `bad-${name.replace(/\W+/g, '-').toLowerCase()}`;
      const run = await runAction('dump-mysql', { storage, set, ...(await inputs()) }, {});
      oneError(run, pattern);
      assert.doesNotMatch(run.stdout.replace(/::add-mask::.*/g, ''), /secret/);
      assert.deepEqual(await committed(set), []);
    });
  }

  test('a pre-command that fails: no dump, and the post-command still runs', async () => {
    const marker = path.join(work, 'post-ran');
    const run = await runAction(
      'dump-mysql',
      {
        storage,
        set: 'hooks',
        ...connectionInputs(source),
        'pre-command': 'echo quiescing; exit 3',
        'post-command': `touch ${marker}`,
      },
      {},
    );
    oneError(run, /pre-command: failed \(exit status 3\)/);
    assert.match(run.stdout, /pre-command: quiescing/);
    await fs.access(marker);
    assert.deepEqual(await committed('hooks'), []);
  });

  test('restore refuses a non-empty target database, naming what to do', async () => {
    const run = await runAction('restore', { storage, set: 'shop-db', ...connectionInputs(source) }, {});
    oneError(run, /if-exists: the target database 'shop' .* set if-exists: replace \(or skip\)/);
  });
});

/**
 * verify-restore against real MariaDB servers: the passing drill, and every way a backup
 * can fail to be proven — each run must name the failing check in its report and leave no
 * environment behind.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import zlib from 'node:zlib';
import { generateIdentity } from 'age-encryption';
import { Catalog } from '../../shared/catalog/catalog.ts';
import type { Manifest } from '../../shared/catalog/manifest.ts';
import { dumpMysql } from '../../shared/mysql/dump.ts';
import { removeLeftovers } from '../../shared/mysql/environment.ts';
import { isAlive, startEphemeralServer } from '../../shared/mysql/ephemeral.ts';
import type { MysqlFacts } from '../../shared/mysql/facts.ts';
import { recipientOf } from '../../shared/pipeline/encryption.ts';
import { silentLogger } from '../../shared/pipeline/progress.ts';
import { openStorage } from '../../shared/storage/open.ts';
import type { Storage } from '../../shared/storage/storage.ts';
import { databases, type EphemeralServer, sampleShop, sql, startMysql, targetOf } from '../harness/mysql.ts';
import { tempDir } from '../harness/servers.ts';
import { checkRow, runVerify, type Verified } from '../harness/verify-run.ts';

let work: string;
let storage: Storage;
let source: EphemeralServer;
let identity: string;

const extra = `
USE shop;
CREATE TABLE audit_log (id INT PRIMARY KEY, what VARCHAR(40));
INSERT INTO audit_log SELECT seq, CONCAT('event ', seq) FROM seq_1_to_50;
CREATE FUNCTION order_total(oid INT) RETURNS DECIMAL(12,2) READS SQL DATA RETURN (SELECT total FROM orders WHERE id = oid);
CREATE EVENT nightly ON SCHEDULE EVERY 1 DAY DO DELETE FROM audit_log WHERE id < 0;
`;

/** Dumps shop into its own set; encrypted unless asked not to be. */
async function backup(set: string, encrypted = true): Promise<Manifest> {
  return dumpMysql({
    storage,
    set,
    target: targetOf(source),
    databases: ['shop'],
    includeSystemDatabases: false,
    excludeTables: [],
    binlogPosition: 'off',
    compression: 'zstd',
    encryption: encrypted ? { recipients: [await recipientOf(identity)] } : undefined,
    tags: [],
    logger: silentLogger,
  });
}

const folder = (m: Manifest) => path.join(work, 'backups', m.set, m.id);

async function rewriteManifest(m: Manifest, change: (m: Manifest) => void): Promise<void> {
  const edited = structuredClone(m);
  change(edited);
  await fs.writeFile(path.join(folder(m), 'manifest.json'), JSON.stringify(edited, null, 2));
}

const verify = (inputs: Record<string, string>) =>
  runVerify({ storage: path.join(work, 'backups'), 'age-identity': identity }, inputs);
const row = checkRow;

/** The run failed on exactly this check, said so, and left nothing behind. */
async function assertFailedOn(run: Verified, name: string, detail: RegExp): Promise<void> {
  const { result, report } = run;
  assert.equal(report.passed, false);
  assert.equal(result.outputs.passed, 'false');
  const check = row(report, name);
  assert.equal(check.status, 'failed', `${name}: ${check.detail}`);
  assert.match(check.detail, detail);
  assert.ok(result.failed?.some((line) => line.includes(`'${check.name}' failed`)));
  await assertGone(run);
}

/** No throwaway server runs, its datadir is deleted, and the report says it was removed. */
async function assertGone(run: Verified): Promise<void> {
  const env = run.report.environment;
  assert.equal(env.removed, true);
  if (env.type === 'local') {
    assert.deepEqual(
      await fs.readdir(run.workDir).then((f) => f.filter((n) => n.startsWith('lifeboat-mysqld'))),
      [],
    );
    assert.equal(isAlive(env.pid as number), false, 'the server process is gone');
  }
}

before(async () => {
  work = await tempDir('verify');
  storage = openStorage(path.join(work, 'backups'));
  identity = await generateIdentity();
  source = await startMysql();
  await sql(source, sampleShop);
  await sql(source, extra);
});

after(async () => {
  await source?.stop();
  await fs.rm(work, { recursive: true, force: true });
});

describe('the passing drill', () => {
  let run: Verified;
  let manifest: Manifest;
  before(async () => {
    manifest = await backup('nightly');
    run = await verify({
      set: 'nightly',
      checks: `
- name: orders exist
  sql: SELECT COUNT(*) FROM orders
  expect: ">= 2000"
- name: every order has its customer
  sql: SELECT COUNT(*) FROM orders o LEFT JOIN customers c ON c.id = o.customer_id WHERE c.id IS NULL
  expect: == 0
- name: the migration ran
  sql: SELECT COUNT(*) FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() AND COLUMN_NAME = 'note'
  expect: 1
`,
      'post-restore-command':
        'mariadb --no-defaults --protocol=tcp -h "$MYSQL_HOST" -P "$MYSQL_TCP_PORT" -u "$MYSQL_USER" "$MYSQL_DATABASE" -e "ALTER TABLE orders ADD COLUMN note TEXT"',
      'max-age': '1h',
      'max-restore-time': '10m',
    });
  });

  test('every check passes, each a named row', () => {
    const { report, result } = run;
    assert.equal(report.passed, true, JSON.stringify(report.checks, null, 1));
    assert.equal(result.failed, undefined);
    assert.equal(result.outputs.passed, 'true');
    for (const name of [
      'sha256: dump.sql.zst.age',
      'decrypt: dump.sql.zst.age',
      'parse: dump.sql.zst.age',
      'restore',
      'rows: shop',
      'objects: shop',
      'post-restore-command',
      'check: orders exist',
      'check: every order has its customer',
      'check: the migration ran',
      'RPO: max-age',
      'RTO: max-restore-time',
    ]) {
      assert.equal(row(report, name).status, 'passed', name);
    }
    assert.match(row(report, 'rows: shop').detail, /3 tables, 2250 rows/);
    assert.match(
      row(report, 'objects: shop').detail,
      /views 1, procedures 1, functions 1, triggers 1, events 1/,
    );
    assert.match(row(report, 'check: orders exist').detail, /'2000', expected >= 2000/);
  });

  test('RTO and RPO are reported, with the time breakdown and sizes', () => {
    const { report, result } = run;
    assert.ok(report.restoreSeconds !== null && report.restoreSeconds > 0);
    assert.ok(report.ageSeconds >= 0 && report.ageSeconds < 3600);
    assert.equal(result.outputs['rto-seconds'], report.restoreSeconds.toFixed(3));
    assert.equal(result.outputs['rpo-seconds'], String(report.ageSeconds));
    assert.deepEqual(Object.keys(report.timings), ['environment', 'restore', 'checks', 'teardown']);
    assert.equal(report.backupId, manifest.id);
    assert.equal(report.sizes.rows, 2250);
    assert.equal(report.sizes.storedBytes, manifest.artifacts[0]!.bytes);
    assert.match(result.summary.heading, /PASSED/);
  });

  test('the environment is gone afterwards', () => assertGone(run));

  test('the catalog records the verification, which list and prune read', async () => {
    const catalog = new Catalog(storage);
    const [entry] = await catalog.listBackups('nightly');
    const record = await catalog.lastVerification(entry!);
    assert.equal(record?.passed, true);
    assert.equal(record?.backupId, manifest.id);
    assert.equal(record?.environment, 'local');
    assert.equal(record?.checks.length, run.report.checks.length);
  });
});

describe('each failure is named in the report', () => {
  test('a byte flipped in the stored artifact', async () => {
    const m = await backup('flipped');
    const file = path.join(folder(m), m.artifacts[0]!.name);
    const bytes = await fs.readFile(file);
    bytes[Math.floor(bytes.length / 2)]! ^= 0x01;
    await fs.writeFile(file, bytes);
    const run = await verify({ set: 'flipped' });
    await assertFailedOn(run, 'sha256: dump.sql.zst.age', /sha256|damaged/i);
    assert.equal(row(run.report, 'rows: shop').status, 'skipped');
    assert.equal(run.report.restoreSeconds, null);
  });

  test('a truncated artifact', async () => {
    const m = await backup('truncated');
    const file = path.join(folder(m), m.artifacts[0]!.name);
    await fs.truncate(file, Math.floor(m.artifacts[0]!.bytes * 0.6));
    await assertFailedOn(
      await verify({ set: 'truncated' }),
      'sha256: dump.sql.zst.age',
      /bytes|truncated|damaged/i,
    );
  });

  test('a manifest whose row count was edited', async () => {
    const m = await backup('edited');
    await rewriteManifest(m, (e) => {
      (e.facts as unknown as MysqlFacts).databases[0]!.tables.orders = 1999;
    });
    const run = await verify({ set: 'edited' });
    await assertFailedOn(run, 'rows: shop', /shop\.orders holds 2000 rows, but its manifest records 1999/);
    assert.equal(row(run.report, 'sha256: dump.sql.zst.age').status, 'passed');
  });

  test('the wrong age identity', async () => {
    await backup('wrong-key');
    const run = await verify({ set: 'wrong-key', 'age-identity': await generateIdentity() });
    await assertFailedOn(run, 'decrypt: dump.sql.zst.age', /none of the given keys can decrypt/);
  });

  test('a table dropped from the artifact (re-packed with a matching sha256)', async () => {
    const m = await backup('dropped', false);
    const file = path.join(folder(m), m.artifacts[0]!.name);
    const text = zlib.zstdDecompressSync(await fs.readFile(file)).toString('utf8');
    const start = text.indexOf('--\n-- Table structure for table `audit_log`');
    const end = text.indexOf('--\n-- Table structure for table', start + 10);
    assert.ok(start > 0 && end > start);
    const plain = Buffer.from(text.slice(0, start) + text.slice(end));
    const packed = zlib.zstdCompressSync(plain);
    await fs.writeFile(file, packed);
    await rewriteManifest(m, (e) => {
      const a = e.artifacts[0]!;
      a.bytes = packed.length;
      a.contentBytes = plain.length;
      a.sha256 = createHash('sha256').update(packed).digest('hex');
    });
    const run = await verify({ set: 'dropped', 'allow-unencrypted': 'true' });
    await assertFailedOn(run, 'rows: shop', /audit_log .*missing from the backup's data/);
  });

  test('a backup older than max-age', async () => {
    const m = await backup('old');
    await rewriteManifest(m, (e) => {
      e.startedAt = new Date(Date.now() - 3 * 86400_000).toISOString();
    });
    const run = await verify({ set: 'old', 'max-age': '26h' });
    await assertFailedOn(run, 'RPO: max-age', /is 3d|older than allowed/);
    assert.equal(row(run.report, 'rows: shop').status, 'passed', 'the data itself is fine');
  });

  test('a user check that fails', async () => {
    await backup('user-check');
    const run = await verify({
      set: 'user-check',
      checks: '- name: a million orders\n  sql: SELECT COUNT(*) FROM orders\n  expect: ">= 1000000"\n',
    });
    await assertFailedOn(run, 'check: a million orders', /got '2000', expected >= 1000000/);
  });

  test('a migration command that fails', async () => {
    await backup('migration');
    const run = await verify({
      set: 'migration',
      'post-restore-command': 'echo "migrating $MYSQL_DATABASE"; exit 3',
    });
    await assertFailedOn(run, 'post-restore-command', /exit status 3/);
  });

  test('a restore slower than max-restore-time', async () => {
    await backup('slow');
    await assertFailedOn(
      await verify({ set: 'slow', 'max-restore-time': '1ms' }),
      'RTO: max-restore-time',
      /slower than allowed/,
    );
  });
});

describe('environments', () => {
  test('external: restored under fresh names, which are dropped afterwards', async () => {
    await backup('external');
    const server = await startMysql();
    try {
      const run = await verify({
        set: 'external',
        environment: 'external',
        host: '127.0.0.1',
        port: String(server.port),
        'ssl-mode': 'disabled',
        checks: '- name: customers\n  database: shop\n  sql: SELECT COUNT(*) FROM customers\n  expect: 200\n',
      });
      assert.equal(run.report.passed, true, JSON.stringify(run.report.checks));
      const names = run.report.environment.databases as Record<string, string>;
      assert.match(names.shop!, /^lbverify_[0-9a-f]{6}_shop$/);
      assert.equal(run.report.environment.removed, true);
      assert.deepEqual(
        (await databases(server)).filter(
          (d) => d.startsWith('lbverify') || d.startsWith('lbstage') || d === 'shop',
        ),
        [],
      );
    } finally {
      await server.stop();
    }
  });

  test("docker: a container of the dumped server's version, removed afterwards", async () => {
    await backup('docker');
    const saved = { PATH: process.env.PATH, dir: process.env.LIFEBOAT_FAKE_DOCKER_DIR };
    const state = await tempDir('fake-docker');
    process.env.PATH = `${path.resolve(import.meta.dirname, '../fakes/docker-bin')}:${process.env.PATH}`;
    process.env.LIFEBOAT_FAKE_DOCKER_DIR = state;
    try {
      const run = await verify({ set: 'docker', environment: 'docker' });
      assert.equal(run.report.passed, true, JSON.stringify(run.report.checks));
      assert.match(String(run.report.environment.image), /^mariadb:10\.\d+$/);
      assert.match(String(run.report.environment.container), /^lifeboat-verify-[0-9a-f]{8}$/);
      assert.equal(run.report.environment.removed, true);
      assert.deepEqual(
        (await fs.readdir(state)).filter((f) => f.endsWith('.json')),
        [],
        'no container left',
      );
      await assert.rejects(
        verify({ set: 'docker', environment: 'docker', 'docker-image': 'mariadb:10.3' }),
        /environment: docker run failed: .*manifest for mariadb:10\.3 not found/,
      );
    } finally {
      process.env.PATH = saved.PATH;
      if (saved.dir === undefined) delete process.env.LIFEBOAT_FAKE_DOCKER_DIR;
      else process.env.LIFEBOAT_FAKE_DOCKER_DIR = saved.dir;
    }
  });

  test('a server that cannot hold the backup is refused with the reason', async () => {
    const m = await backup('mysql8');
    await rewriteManifest(m, (e) => {
      (e.facts as unknown as MysqlFacts).server = { flavour: 'mysql', version: '8.0.36' };
    });
    const workDir = await tempDir('verify-work');
    await assert.rejects(
      verify({ set: 'mysql8', 'work-dir': workDir }),
      /environment: a MySQL 8\.0\.36 backup cannot be restored into MariaDB 10\.\d+/,
    );
    assert.deepEqual(await fs.readdir(workDir), [], 'the environment is gone');
    await fs.rm(workDir, { recursive: true });
  });

  test('too little free disk for the backup is refused before anything starts', async () => {
    const m = await backup('huge');
    await rewriteManifest(m, (e) => {
      e.artifacts[0]!.contentBytes = 2 ** 52;
    });
    const workDir = await tempDir('verify-work');
    await assert.rejects(
      verify({ set: 'huge', 'work-dir': workDir }),
      /environment: .+ free, but restoring this backup \(4096\.0 TiB of SQL\) needs about/,
    );
    assert.deepEqual(await fs.readdir(workDir), []);
    await fs.rm(workDir, { recursive: true });
  });

  test('the post step removes a server left by a killed step', async () => {
    const parent = await tempDir('verify-work');
    const server = await startEphemeralServer({ parent });
    const logs: string[] = [];
    await removeLeftovers({ type: 'mysqld', pid: server.pid, dataDir: server.dataDir }, undefined, {
      info: (m) => logs.push(m),
      warn: (m) => logs.push(m),
    });
    await new Promise((resolve) => setTimeout(resolve, 200));
    assert.equal(isAlive(server.pid), false);
    await assert.rejects(fs.access(server.dataDir));
    assert.ok(logs.some((l) => l.includes(`pid ${server.pid}`)));
    await server.stop();
    await fs.rm(parent, { recursive: true, force: true });
  });
});

describe('picking the backup', () => {
  test('random-within picks a committed backup of the set taken in that window', async () => {
    const ids = [(await backup('sampled')).id, (await backup('sampled')).id];
    const run = await verify({ set: 'sampled', 'random-within': '30d' });
    assert.ok(ids.includes(run.report.backupId));
    const catalog = new Catalog(storage);
    const now = new Date(Date.now() + 60_000);
    const picks = new Set([
      (await catalog.pickRandom('sampled', 30 * 86400, now, () => 0)).id,
      (await catalog.pickRandom('sampled', 30 * 86400, now, () => 0.99)).id,
    ]);
    assert.deepEqual([...picks].sort(), [...ids].sort());
    await assert.rejects(
      catalog.pickRandom('sampled', 60, new Date(Date.now() + 86400_000)),
      /random-within: set 'sampled' .* has no committed backup taken in the last/,
    );
  });

  test('random-within and an explicit backup are refused together', async () => {
    await assert.rejects(
      verify({ set: 'sampled', backup: '2026-01-01-0000-backup-full', 'random-within': '30d' }),
      /random-within: give either backup \(2026-01-01-0000-backup-full\) or random-within, not both/,
    );
  });
});

/**
 * The anomaly gates with real parts: backup-files into folder storage where the second backup
 * lost files, crafted previous manifests (damaged, hostile numbers), and real MariaDB where a
 * table lost 40% of its rows between two dumps, through dump-mysql and verify-restore.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { makeReader, runCommand } from '../../shared/action/run.ts';
import type { Command, CommandResult } from '../../shared/action/spec.ts';
import type { Delta } from '../../shared/anomaly/compare.ts';
import { Catalog } from '../../shared/catalog/catalog.ts';
import { backupFilesCommand } from '../../shared/commands/backup-files.ts';
import { backupK8sCommand } from '../../shared/commands/backup-k8s.ts';
import { dumpMysqlCommand } from '../../shared/commands/dump-mysql.ts';
import { verifyRestoreCommand } from '../../shared/commands/verify-restore.ts';
import type { Logger } from '../../shared/pipeline/progress.ts';
import { openStorage } from '../../shared/storage/open.ts';
import { fakeKubeconfig, startFakeKube } from '../fakes/kube-apiserver.ts';
import { connectionInputs, type EphemeralServer, sql, startMysql } from '../harness/mysql.ts';
import { tempDir } from '../harness/servers.ts';

let work: string;

before(async () => {
  work = await tempDir('anomaly');
});
after(() => fs.rm(work, { recursive: true, force: true }));

/** Runs a command on these inputs (the rest as the spec defaults them), with its warnings. */
async function run(
  command: Command<never>,
  inputs: Record<string, string>,
): Promise<{ result: CommandResult; warnings: string[] }> {
  const warnings: string[] = [];
  const logger: Logger = { info() {}, warn: (line) => warnings.push(line) };
  const result = await runCommand(
    command,
    makeReader(command, (spec) => inputs[spec.name] ?? spec.default, {}),
    logger,
  );
  return { result, warnings };
}

const deltasOf = (result: CommandResult) => JSON.parse(result.outputs.deltas!) as Delta[];
const anomaliesOf = (result: CommandResult) => JSON.parse(result.outputs.anomalies!) as string[];
const rowOf = (result: CommandResult, metric: string) => result.summary.table.find((r) => r[0] === metric);

describe('backup-files: a backup that lost files', () => {
  const backupFiles = backupFilesCommand as unknown as Command<never>;
  let source: string;
  let storage: string;
  const inputs = () => ({ storage, set: 'etc', source, 'progress-interval': '1h' });

  before(async () => {
    source = path.join(work, 'etc');
    storage = path.join(work, 'backups');
    await fs.mkdir(source);
    for (let i = 0; i < 20; i++)
      await fs.writeFile(path.join(source, `f${i}.conf`), `setting ${i}\n`.repeat(200));
  });

  test('a first backup says so: no deltas, no anomaly', async () => {
    const { result, warnings } = await run(backupFiles, inputs());
    assert.equal(result.failed, undefined);
    assert.deepEqual(deltasOf(result), []);
    assert.deepEqual(anomaliesOf(result), []);
    assert.ok(result.summary.notes?.includes('First backup of set etc: nothing to compare with.'));
    assert.deepEqual(
      warnings.filter((w) => w.startsWith('anomaly')),
      [],
    );
  });

  test('half the files gone: files and bytes shrank more than 20% → ❌ rows and a warning; the step passes', async () => {
    for (let i = 10; i < 20; i++) await fs.rm(path.join(source, `f${i}.conf`));
    const { result, warnings } = await run(backupFiles, inputs());
    assert.equal(result.failed, undefined);
    const files = deltasOf(result).find((d) => d.name === 'files')!;
    assert.deepEqual(
      { ...files, anomaly: undefined },
      { name: 'files', previous: 20, current: 10, change: -0.5, anomaly: undefined },
    );
    assert.equal(files.anomaly, 'files shrank by 50.0% (20 → 10), more than max-shrink 20%');
    const content = deltasOf(result).find((d) => d.name === 'content-bytes')!;
    assert.ok(content.change < -0.2 && content.anomaly, JSON.stringify(content));
    assert.ok(anomaliesOf(result).includes(files.anomaly));
    assert.deepEqual(rowOf(result, 'files'), ['files', '20', '10', '-50.0%', '❌']);
    const heading = result.summary.table.find((r) => r[0]!.startsWith('Compared with '));
    assert.deepEqual(heading?.slice(1), ['Previous', 'Now', 'Change', '']);
    assert.ok(warnings.includes(`anomaly: ${files.anomaly}`), warnings.join('\n'));
    assert.ok(result.summary.notes?.includes(`❌ anomaly: ${files.anomaly}`));
  });

  test('a change within the limits is ✅; max-shrink off lets any shrink pass', async () => {
    await fs.rm(path.join(source, 'f9.conf'));
    const within = await run(backupFiles, inputs());
    assert.deepEqual(anomaliesOf(within.result), []);
    assert.deepEqual(rowOf(within.result, 'files'), ['files', '10', '9', '-10.0%', '✅']);
    for (let i = 0; i < 8; i++) await fs.rm(path.join(source, `f${i}.conf`));
    const off = await run(backupFiles, { ...inputs(), 'max-shrink': 'off' });
    assert.deepEqual(anomaliesOf(off.result), []);
    assert.equal(deltasOf(off.result).find((d) => d.name === 'files')?.current, 1);
  });

  test('with fail-on-anomaly the step fails and says the backup stays committed; it is listed and latest', async () => {
    await fs.writeFile(path.join(source, 'f0.conf'), 'x');
    await fs.rm(path.join(source, 'f8.conf'));
    // 1 file → 1 file, but its bytes fell from 2.6 KB to 1 B.
    const { result, warnings } = await run(backupFiles, { ...inputs(), 'fail-on-anomaly': 'true' });
    const id = result.outputs['backup-id']!;
    assert.ok(result.failed?.length, 'the step fails');
    assert.ok(result.failed.some((l) => l.startsWith('anomaly: content-bytes shrank by ')));
    assert.equal(
      result.failed.at(-1),
      `fail-on-anomaly: the backup etc/${id} is committed and stays in the catalog; the step fails so that someone looks at the change (restore or verify it, or delete it with prune-retention)`,
    );
    assert.deepEqual(
      warnings.filter((w) => w.startsWith('anomaly:')),
      [],
      'failing, not warning',
    );
    const catalog = new Catalog(openStorage(storage));
    const listed = (await catalog.listBackups('etc')).filter((b) => b.committed).map((b) => b.id);
    assert.equal(listed.length, 5);
    assert.equal(listed[0], id);
    assert.equal((await catalog.resolve('etc', 'latest')).id, id);
  });

  test('crafted previous manifests: a damaged one is passed over and named; hostile numbers are not compared', async () => {
    const set = 'crafted';
    const older = '2026-01-01-0000-backup-full';
    const damaged = '2026-01-02-0000-backup-full';
    const base = path.join(storage, set);
    await fs.mkdir(path.join(base, older), { recursive: true });
    await fs.mkdir(path.join(base, damaged), { recursive: true });
    await fs.writeFile(path.join(base, damaged, 'manifest.json'), '{ not json');
    const artifact = (bytes: unknown) => ({
      name: 'files.tar.zst',
      bytes,
      sha256: 'a'.repeat(64),
      contentBytes: 10 ** 15,
      format: 'tar',
      compression: 'zstd',
      encryption: null,
    });
    await fs.writeFile(
      path.join(base, older, 'manifest.json'),
      JSON.stringify({
        format: 1,
        id: older,
        set,
        kind: 'files',
        mode: 'full',
        startedAt: '2026-01-01T00:00:00.000Z',
        finishedAt: '2026-01-01T00:00:01.000Z',
        tool: { name: 'lifeboat', version: '0' },
        source: {},
        artifacts: [artifact(1)],
        contents: { included: [], excluded: [] },
        // Not numbers a backup makes: a string, and a files count of the wrong type.
        facts: { files: '1000', directories: -1, bytes: 'lots' },
        tags: [],
      }),
    );
    const { result, warnings } = await run(backupFiles, { ...inputs(), set });
    assert.equal(result.failed, undefined);
    const notes = result.summary.notes ?? [];
    assert.ok(
      notes.some(
        (n) =>
          n.startsWith(`Comparison passed over (damaged manifest): ${damaged} (`) &&
          n.includes('not valid JSON'),
      ),
      notes.join('\n'),
    );
    assert.ok(warnings.some((w) => w.includes(damaged)));
    assert.equal(JSON.parse(result.outputs.result!).set, set);
    const deltas = deltasOf(result);
    // files was no number there: new, not compared; content-bytes fell from 1 PB.
    assert.equal(
      deltas.find((d) => d.name === 'files'),
      undefined,
    );
    assert.ok(
      notes.some(
        (n) => n.startsWith(`New since ${older} (nothing to compare with): `) && n.includes('files'),
      ),
    );
    const content = deltas.find((d) => d.name === 'content-bytes')!;
    assert.equal(content.previous, 10 ** 15);
    assert.ok(content.anomaly);
  });
});

describe('dump-mysql and verify-restore: a table lost 40% of its rows', () => {
  let server: EphemeralServer;
  let storage: string;
  const dump = dumpMysqlCommand as unknown as Command<never>;
  const inputs = (extra: Record<string, string> = {}) => ({
    storage,
    set: 'app',
    ...connectionInputs(server),
    databases: 'app',
    'binlog-position': 'off',
    'progress-interval': '1h',
    ...extra,
  });

  before(async () => {
    storage = path.join(work, 'mysql-backups');
    server = await startMysql();
    await sql(
      server,
      `CREATE DATABASE app;
       USE app;
       CREATE TABLE users (id INT PRIMARY KEY, name VARCHAR(40));
       INSERT INTO users SELECT seq, CONCAT('user ', seq) FROM seq_1_to_1000;
       CREATE TABLE orders (id INT PRIMARY KEY, user_id INT, total DECIMAL(10,2));
       INSERT INTO orders SELECT seq, seq % 1000 + 1, seq * 1.5 FROM seq_1_to_1000;`,
    );
  });
  after(() => server?.stop());

  test('the first dump: nothing to compare, but min-rows already holds', async () => {
    const { result } = await run(dump, inputs({ 'min-rows': 'app.users=1000,app.orders=1' }));
    assert.equal(result.failed, undefined);
    assert.deepEqual(deltasOf(result), []);
    assert.deepEqual(anomaliesOf(result), []);
    const below = await run(dump, inputs({ set: 'other', 'min-rows': 'app.users=1001' }));
    assert.deepEqual(anomaliesOf(below.result), [
      'rows:app.users holds 1000 rows, below min-rows app.users=1001',
    ]);
    assert.ok(below.result.summary.notes?.includes('First backup of set other: nothing to compare with.'));
  });

  test('40% of orders deleted: ❌ for that table (✅ for users), and below a min-rows floor', async () => {
    await sql(server, 'DELETE FROM app.orders WHERE id <= 400;');
    const { result, warnings } = await run(dump, inputs({ 'min-rows': 'app.orders=700, *=1' }));
    assert.equal(result.failed, undefined);
    const deltas = deltasOf(result);
    const orders = deltas.find((d) => d.name === 'rows:app.orders')!;
    assert.equal(orders.previous, 1000);
    assert.equal(orders.current, 600);
    assert.equal(orders.change, -0.4);
    assert.equal(
      orders.anomaly,
      'rows:app.orders shrank by 40.0% (1000 → 600), more than max-shrink 20%; rows:app.orders holds 600 rows, below min-rows app.orders=700',
    );
    assert.deepEqual(
      deltas.find((d) => d.name === 'rows:app.users'),
      { name: 'rows:app.users', previous: 1000, current: 1000, change: 0 },
    );
    // 2000 → 1600 rows in all: exactly 20%, not more.
    assert.deepEqual(rowOf(result, 'rows'), ['rows', '2000', '1600', '-20.0%', '✅']);
    assert.deepEqual(rowOf(result, 'rows:app.orders'), ['rows:app.orders', '1000', '600', '-40.0%', '❌']);
    // The SQL shrank too (its stored bytes may pass 20%); every other table is within the limits.
    assert.deepEqual(
      anomaliesOf(result).filter((a) => !/^(stored|content)-bytes shrank by /.test(a)),
      [
        'rows:app.orders shrank by 40.0% (1000 → 600), more than max-shrink 20%',
        'rows:app.orders holds 600 rows, below min-rows app.orders=700',
      ],
    );
    assert.ok(
      warnings.includes('anomaly: rows:app.orders shrank by 40.0% (1000 → 600), more than max-shrink 20%'),
    );
  });

  test('verify-restore of it: the restored rows match its manifest, and its numbers vs the dump before, in the JSON', async () => {
    const verify = verifyRestoreCommand as unknown as Command<never>;
    const workDir = await fs.mkdtemp(path.join(work, 'verify-mysql-'));
    const reportFile = path.join(workDir, 'report.json');
    const { result, warnings } = await run(verify, {
      storage,
      set: 'app',
      'work-dir': workDir,
      'report-file': reportFile,
      'progress-interval': '1h',
      'min-rows': 'app.orders=700',
      'fail-on-anomaly': 'true',
      record: 'false',
    });
    assert.equal(result.outputs.passed, 'true');
    const report = JSON.parse(await fs.readFile(reportFile, 'utf8'));
    assert.ok(
      report.checks.some(
        (c: { name: string; status: string }) => c.name === 'rows: app' && c.status === 'passed',
      ),
    );
    const orders = (report.deltas as Delta[]).find((d) => d.name === 'rows:app.orders');
    assert.deepEqual(
      { ...orders, anomaly: undefined },
      { name: 'rows:app.orders', previous: 1000, current: 600, change: -0.4, anomaly: undefined },
    );
    assert.deepEqual(report.anomalies, anomaliesOf(result));
    assert.deepEqual(report.deltas, deltasOf(result));
    assert.deepEqual(JSON.parse(result.outputs.result!).deltas, report.deltas);
    assert.equal(report.comparedWith, (await new Catalog(openStorage(storage)).listBackups('app'))[1]!.id);
    assert.deepEqual(
      report.anomalies.filter((a: string) => a.startsWith('rows:')),
      [
        'rows:app.orders shrank by 40.0% (1000 → 600), more than max-shrink 20%',
        'rows:app.orders holds 600 rows, below min-rows app.orders=700',
      ],
    );
    // fail-on-anomaly: the step fails on them; the restore checks passed all the same.
    assert.ok(
      result.failed?.includes(
        'anomaly: rows:app.orders shrank by 40.0% (1000 → 600), more than max-shrink 20%',
      ),
    );
    assert.equal(
      result.failed!.at(-1),
      'fail-on-anomaly: verify-restore fails on the anomalies; the verification record in the catalog says what the restore checks found (passed)',
    );
    assert.deepEqual(
      warnings.filter((w) => w.startsWith('anomaly:')),
      [],
      'failing, not warning',
    );
    assert.deepEqual(rowOf(result, 'rows:app.orders'), ['rows:app.orders', '1000', '600', '-40.0%', '❌']);
  });
});

describe('backup-k8s: a cluster that lost most of its configmaps', () => {
  test('objects:configmaps shrank by 60% → an anomaly; with fail-on-anomaly the step fails, the backup stays', async () => {
    const backupK8s = backupK8sCommand as unknown as Command<never>;
    const storage = path.join(work, 'k8s-backups');
    const backupOf = async (configmaps: number, extra: Record<string, string> = {}) => {
      const fake = await startFakeKube();
      try {
        fake.seed('', 'namespaces', [{ metadata: { name: 'shop' } }]);
        fake.seed(
          '',
          'configmaps',
          Array.from({ length: configmaps }, (_, i) => ({
            metadata: { name: `cm-${i}`, namespace: 'shop' },
            data: {},
          })),
        );
        const kubeconfig = path.join(work, `kubeconfig-${configmaps}`);
        await fs.writeFile(kubeconfig, fakeKubeconfig(fake.url));
        const inputs = {
          storage,
          set: 'cluster',
          kubeconfig,
          mode: 'exclude-storage',
          'progress-interval': '1h',
          ...extra,
        };
        return await run(backupK8s, inputs);
      } finally {
        await fake.stop();
      }
    };
    const first = await backupOf(10);
    assert.deepEqual(anomaliesOf(first.result), []);
    const second = await backupOf(4, { 'fail-on-anomaly': 'true' });
    const lost = anomaliesOf(second.result).find((a) => a.startsWith('objects:configmaps'));
    assert.match(lost ?? '', /^objects:configmaps shrank by 60\.0% \(10 → 4\), more than max-shrink 20%$/);
    assert.ok(second.result.failed?.some((l) => l === `anomaly: ${lost}`));
    assert.ok(
      second.result.failed?.some((l) =>
        /^fail-on-anomaly: the backup cluster\/.* is committed and stays/.test(l),
      ),
    );
    const listed = await new Catalog(openStorage(storage)).listBackups('cluster');
    assert.equal(listed.length, 2, 'both backups are committed');
  });
});

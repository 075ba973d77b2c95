/**
 * Where a verify-restore drill's time goes, on generated data:
 *
 *   bash scripts/dev.sh build && node bench/verify.ts [GiB of table data, default 1]
 *
 * Generates the benchmark dataset in a throwaway MariaDB, dumps it with `lifeboat
 * dump-mysql` (zstd, to a folder), then runs `lifeboat restore --dry-run` (download, sha256,
 * decompress and parse alone: what reading the backup costs) and `lifeboat verify-restore`
 * with one SQL check, and prints the report's breakdown: environment start, restore
 * (download and load, streamed together), checks, teardown; plus peak RSS.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import { startEphemeralServer } from '../shared/mysql/ephemeral.ts';
import { measure } from '../test/harness/measure.ts';
import { tempDir } from '../test/harness/servers.ts';
import { generateBench, sqlRunner } from './mysql-data.ts';

const gib = Number(process.argv[2] ?? 1);
const work = await tempDir('bench-verify');
const server = await startEphemeralServer({
  parent: work,
  options: ['--max-allowed-packet=256M', '--innodb-buffer-pool-size=2G'],
});
const mib = (n: number) => (n / 1024 ** 2).toFixed(0);
const sqlSync = sqlRunner(server.socket);
const lifeboat = async (...args: string[]) => {
  const m = await measure(
    [...args, '--storage', path.join(work, 'backups'), '--set', 'bench'],
    {},
    { cwd: work },
  );
  if (m.code !== 0) throw new Error(`lifeboat ${args[0]} failed: ${m.stderr.slice(-800)}`);
  return m;
};

try {
  generateBench(sqlSync, gib);
  const dump = await lifeboat('dump-mysql', '--socket', server.socket, '--databases', 'bench');
  console.log(`dump-mysql: ${dump.seconds.toFixed(1)} s`);
  await server.stop();
  const read = await lifeboat('restore', '--dry-run', 'true');
  console.log(
    `restore --dry-run (download, sha256, decompress, parse): ${read.seconds.toFixed(1)} s, peak RSS ${mib(read.peakRssBytes)} MiB`,
  );
  const verify = await lifeboat(
    'verify-restore',
    '--work-dir',
    work,
    '--report-file',
    path.join(work, 'report.json'),
    '--checks',
    '- name: orders\n  sql: SELECT COUNT(*) FROM orders\n  expect: "> 0"',
  );
  const report = JSON.parse(await fs.readFile(path.join(work, 'report.json'), 'utf8'));
  const t = report.timings as Record<string, number>;
  console.log(
    `verify-restore: ${verify.seconds.toFixed(1)} s in all (passed: ${report.passed}); environment ${t.environment!.toFixed(1)} s, restore ${t.restore!.toFixed(1)} s, checks ${t.checks!.toFixed(1)} s, teardown ${t.teardown!.toFixed(1)} s; peak RSS ${mib(verify.peakRssBytes)} MiB`,
  );
  console.log(
    `backup: ${mib(report.sizes.storedBytes)} MiB stored, ${mib(report.sizes.contentBytes)} MiB of SQL, ${report.sizes.rows} rows`,
  );
} finally {
  await server.stop();
  await fs.rm(work, { recursive: true, force: true });
}

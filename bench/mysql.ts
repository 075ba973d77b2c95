/**
 * dump-mysql and the MySQL restore against the classic recipes, same data, same run.
 *
 *   bash scripts/dev.sh build && node bench/mysql.ts [GiB of table data, default 1]
 *
 * Generates about that much table data (several tables, mixed types) in a throwaway
 * MariaDB, then times: Lifeboat dump-mysql (zstd, to a folder); `mariadb-dump
 * --single-transaction | gzip`; `| zstd`; a bare `mariadb-dump > /dev/null`; `mydumper -t 2
 * -c`. Then restores into fresh databases: Lifeboat restore (2 connections), `zcat | mariadb`,
 * `zstd -dc | mariadb`,
 * `myloader -t 2`. Prints seconds, ratios (Lifeboat / peer) and Lifeboat's peak RSS.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import { startEphemeralServer } from '../shared/mysql/ephemeral.ts';
import { type Measured, measure } from '../test/harness/measure.ts';
import { tempDir } from '../test/harness/servers.ts';
import { recordFigure } from './figures.ts';
import { generateBench, sqlRunner } from './mysql-data.ts';

const gib = Number(process.argv[2] ?? 1);
const work = await tempDir('bench-mysql');
const server = await startEphemeralServer({
  parent: work,
  options: ['--max-allowed-packet=256M', '--innodb-buffer-pool-size=2G'],
});
const socket = server.socket;
const client = `--no-defaults --socket=${socket} -uroot`;
const sh = (script: string) =>
  measure(['-c', `set -o pipefail; ${script}`], {}, { command: 'bash', cwd: work });
const mib = (n: number) => (n / 1024 ** 2).toFixed(0);

const sqlSync = sqlRunner(socket);

try {
  generateBench(sqlSync, gib);

  const dumpFlags =
    '--single-transaction --quick --hex-blob --routines --triggers --events --databases bench';
  const results: [string, Measured][] = [];
  const run = async (name: string, m: Promise<Measured>) => {
    const r = await m;
    if (r.code !== 0) throw new Error(`${name} failed: ${r.stderr.slice(-800)}`);
    results.push([name, r]);
    console.log(`${name}: ${r.seconds.toFixed(1)} s`);
    return r;
  };
  const bare = await run('mariadb-dump > /dev/null', sh(`mariadb-dump ${client} ${dumpFlags} > /dev/null`));
  const gzip = await run(
    'mariadb-dump | gzip',
    sh(`mariadb-dump ${client} ${dumpFlags} | gzip > dump.sql.gz`),
  );
  const zstd = await run(
    'mariadb-dump | zstd',
    sh(`mariadb-dump ${client} ${dumpFlags} | zstd -q -3 > dump.sql.zst`),
  );
  const mydumper = await run(
    'mydumper -t 2 -c',
    sh(`mydumper --socket ${socket} -u root -B bench -t 2 -c -o mydumper-out`),
  );
  const lifeboat = await run(
    'lifeboat dump-mysql',
    measure(
      [
        'dump-mysql',
        '--storage',
        path.join(work, 'backups'),
        '--set',
        'bench',
        '--socket',
        socket,
        '--databases',
        'bench',
        '--progress-interval',
        '1h',
      ],
      {},
      { cwd: work },
    ),
  );

  // Each restore starts from no database, as after a disaster.
  const reset = () => sqlSync('DROP DATABASE IF EXISTS bench;');
  reset();
  const zcat = await run('zcat | mariadb', sh(`zcat dump.sql.gz | mariadb ${client}`));
  reset();
  const unzstd = await run('zstd -dc | mariadb', sh(`zstd -dc dump.sql.zst | mariadb ${client}`));
  reset();
  const myloader = await run(
    'myloader -t 2',
    sh(`myloader --socket ${socket} -u root -d mydumper-out -B bench -t 2 -o`),
  );
  reset();
  const restore = await run(
    'lifeboat restore',
    measure(
      [
        'restore',
        '--storage',
        path.join(work, 'backups'),
        '--set',
        'bench',
        '--socket',
        socket,
        '--progress-interval',
        '1h',
      ],
      {},
      { cwd: work },
    ),
  );

  const ratio = (a: Measured, b: Measured) => (a.seconds / b.seconds).toFixed(2);
  console.log('\n| what | seconds | Lifeboat / this | Lifeboat peak RSS |');
  console.log('|---|---|---|---|');
  for (const [name, r] of results) {
    const isDump = !/restore|zcat|zstd -dc|myloader/.test(name);
    const ours = isDump ? lifeboat : restore;
    console.log(
      `| ${name} | ${r.seconds.toFixed(1)} | ${r === ours ? '' : ratio(ours, r)} | ${r === ours ? `${mib(r.peakRssBytes)} MiB` : ''} |`,
    );
  }
  const figure = (key: string, ours: Measured, peer: Measured, what: string) =>
    recordFigure({
      key,
      value: ours.seconds / peer.seconds,
      unit: 'ratio',
      detail: `vs ${what}, ${gib} GiB of tables`,
    });
  figure('dump-vs-mariadb-dump-zstd', lifeboat, zstd, 'mariadb-dump | zstd -3');
  figure('dump-vs-mydumper', lifeboat, mydumper, 'mydumper -t 2 -c');
  figure('restore-vs-myloader', restore, myloader, 'myloader -t 2');
  figure('restore-vs-zstd-mariadb', restore, unzstd, 'zstd -dc | mariadb');
  recordFigure({
    key: 'rss-mysql',
    value: lifeboat.peakRssBytes / 1024 ** 2,
    unit: 'MiB',
    detail: `dump-mysql, ${gib} GiB`,
  });
  recordFigure({
    key: 'rss-mysql',
    value: restore.peakRssBytes / 1024 ** 2,
    unit: 'MiB',
    detail: `restore, ${gib} GiB`,
  });
  console.log(
    `\ntargets: dump ≤ 0.5× gzip (${ratio(lifeboat, gzip)}), ≤ 1.15× bare (${ratio(lifeboat, bare)}); restore ≤ 0.8× zcat|mysql (${ratio(restore, zcat)}); vs zstd ${ratio(lifeboat, zstd)}, mydumper ${ratio(lifeboat, mydumper)}, myloader ${ratio(restore, myloader)}`,
  );
} finally {
  await server.stop();
  await fs.rm(work, { recursive: true, force: true });
}

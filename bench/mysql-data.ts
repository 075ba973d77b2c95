import { spawnSync } from 'node:child_process';

/** Runs SQL through the mariadb client on a server's socket, synchronously; returns its output. */
export function sqlRunner(socket: string): (text: string) => string {
  return (text) => {
    const run = spawnSync(
      'mariadb',
      ['--no-defaults', `--socket=${socket}`, '-uroot', '--batch', '--skip-column-names'],
      { input: text, encoding: 'utf8' },
    );
    if (run.status !== 0) throw new Error(run.stderr);
    return run.stdout;
  };
}

/**
 * The benchmark dataset: about `gib` GiB of InnoDB table data in a database `bench`, over
 * four tables of mixed types (ints, decimals, dates, text, JSON, a blob). Prints what it
 * made and how long it took; returns the rows.
 */
export function generateBench(sqlSync: (text: string) => string, gib: number): number {
  const started = performance.now();
  // About 82 bytes of InnoDB data per row (measured).
  const rows = Math.round((gib * 1024 ** 3) / 82);
  sqlSync(`CREATE DATABASE bench; USE bench;
    CREATE TABLE customers (id INT PRIMARY KEY, name VARCHAR(100), email VARCHAR(200), created DATETIME, note TEXT);
    CREATE TABLE orders (id BIGINT PRIMARY KEY, customer_id INT, total DECIMAL(12,2), placed DATETIME, status ENUM('new','paid','sent'), INDEX (customer_id));
    CREATE TABLE events (id BIGINT PRIMARY KEY, kind VARCHAR(30), payload JSON, at TIMESTAMP NULL);
    CREATE TABLE blobs (id INT PRIMARY KEY, digest BINARY(32), data BLOB);`);
  const parts = [
    `INSERT INTO customers SELECT seq, CONCAT('customer ', seq), CONCAT('c', seq, '@example.com'), '2020-01-01' + INTERVAL seq SECOND, REPEAT(MD5(seq), 2) FROM seq_1_to_${Math.round(rows * 0.2)}`,
    `INSERT INTO orders SELECT seq, 1 + seq % 100000, ROUND(RAND(seq) * 1000, 2), '2024-01-01' + INTERVAL seq SECOND, 1 + seq % 3 FROM seq_1_to_${Math.round(rows * 0.5)}`,
    `INSERT INTO events SELECT seq, ELT(1 + seq % 3, 'click', 'view', 'purchase'), JSON_OBJECT('user', seq % 5000, 'page', CONCAT('/p/', seq % 977), 'ms', seq % 1000, 'tag', MD5(seq)), '2025-01-01' + INTERVAL seq SECOND FROM seq_1_to_${Math.round(rows * 0.25)}`,
    `INSERT INTO blobs SELECT seq, UNHEX(SHA2(seq, 256)), RANDOM_BYTES(300) FROM seq_1_to_${Math.round(rows * 0.05)}`,
  ];
  for (const part of parts) {
    try {
      sqlSync(`USE bench; ${part};`);
    } catch {
      // MariaDB has no RANDOM_BYTES: hex of hashes instead (incompressible enough).
      sqlSync(`USE bench; ${part.replace('RANDOM_BYTES(300)', 'UNHEX(REPEAT(SHA2(seq, 512), 5))')};`);
    }
  }
  const size = sqlSync(
    "SELECT SUM(DATA_LENGTH) FROM information_schema.TABLES WHERE TABLE_SCHEMA='bench'",
  ).trim();
  console.log(
    `generated ${rows} rows, ${(Number(size) / 1024 ** 2).toFixed(0)} MiB of table data in ${((performance.now() - started) / 1000).toFixed(0)} s`,
  );
  return rows;
}

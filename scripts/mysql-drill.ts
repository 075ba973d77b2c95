/**
 * The MySQL drill on local defaults, with the built CLI: start a throwaway MariaDB with a
 * sample shop, dump-mysql into ./backups, list, restore into a second throwaway server,
 * compare every table's checksum and every object, then verify-restore (a third throwaway
 * server, row counts, objects, SQL checks, RTO and RPO). Servers are stopped at the end,
 * also when a step fails. Run from .drill/ by scripts/drill.sh.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import path from 'node:path';
import { startEphemeralServer } from '../shared/mysql/ephemeral.ts';

const root = path.resolve(import.meta.dirname, '..');
const lifeboat = (...args: string[]) => {
  console.log(`\n== lifeboat ${args.join(' ')}`);
  const run = spawnSync(process.execPath, [path.join(root, 'bin/lifeboat.js'), ...args], {
    stdio: 'inherit',
  });
  if (run.status !== 0) throw new Error(`lifeboat ${args[0]} failed (exit ${run.status})`);
};
const sql = (socket: string, text: string) =>
  execFileSync(
    'mariadb',
    [
      '--no-defaults',
      `--socket=${socket}`,
      '-uroot',
      '--default-character-set=utf8mb4',
      '--batch',
      '--skip-column-names',
    ],
    { input: text, encoding: 'utf8' },
  );

const sample = `
CREATE DATABASE shop;
USE shop;
CREATE TABLE customers (id INT PRIMARY KEY AUTO_INCREMENT, name VARCHAR(100) NOT NULL, email VARCHAR(200) UNIQUE, note TEXT);
CREATE TABLE orders (id INT PRIMARY KEY AUTO_INCREMENT, customer_id INT NOT NULL, total DECIMAL(12,2) NOT NULL,
  placed DATETIME NOT NULL, receipt BLOB, FOREIGN KEY (customer_id) REFERENCES customers(id));
INSERT INTO customers (name, email, note) SELECT CONCAT('customer ', seq), CONCAT('c', seq, '@example.com'),
  IF(seq % 10 = 0, 'prefers 📦 delivery', NULL) FROM seq_1_to_5000;
INSERT INTO orders (customer_id, total, placed, receipt)
  SELECT 1 + seq % 5000, ROUND(seq * 1.37, 2), '2026-01-01' + INTERVAL seq MINUTE, UNHEX(SHA2(seq, 256)) FROM seq_1_to_50000;
CREATE VIEW big_orders AS SELECT * FROM orders WHERE total > 1000;
CREATE TRIGGER orders_total BEFORE INSERT ON orders FOR EACH ROW SET NEW.total = ABS(NEW.total);
CREATE PROCEDURE customer_count() SELECT COUNT(*) FROM customers;
`;

const check = (socket: string) =>
  sql(
    socket,
    `CHECKSUM TABLE shop.customers, shop.orders EXTENDED;
     SELECT COUNT(*) FROM information_schema.VIEWS WHERE TABLE_SCHEMA='shop';
     SELECT COUNT(*) FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA='shop';
     SELECT COUNT(*) FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA='shop';`,
  );

console.log('\n== two throwaway MariaDB servers (temporary datadirs, private sockets)');
const [source, target] = await Promise.all([
  startEphemeralServer({ parent: process.cwd(), options: ['--event-scheduler=OFF'] }),
  startEphemeralServer({ parent: process.cwd(), options: ['--event-scheduler=OFF'] }),
]);
try {
  console.log(`source ${source.socket}\ntarget ${target.socket}`);
  sql(source.socket, sample);
  lifeboat('dump-mysql', '--set', 'shop-db', '--socket', source.socket, '--databases', 'shop');
  lifeboat('list', '--set', 'shop-db');
  lifeboat('restore', '--set', 'shop-db', '--socket', target.socket);
  console.log('\n== compare: table checksums, views, triggers, routines');
  const before = check(source.socket);
  const after = check(target.socket);
  console.log(after.trim());
  if (before !== after) throw new Error(`the restore differs from the source:\n${before}\n---\n${after}`);
  console.log('identical: 55,000 rows in 2 tables, the view, the trigger and the procedure');
  lifeboat(
    'verify-restore',
    '--set',
    'shop-db',
    '--work-dir',
    process.cwd(),
    '--max-age',
    '1h',
    '--max-restore-time',
    '5m',
    '--checks',
    '- name: every order has its customer\n  sql: SELECT COUNT(*) FROM orders o LEFT JOIN customers c ON c.id = o.customer_id WHERE c.id IS NULL\n  expect: == 0\n- name: orders\n  sql: SELECT COUNT(*) FROM orders\n  expect: ">= 50000"',
  );
  lifeboat('list', '--set', 'shop-db');
} finally {
  await Promise.all([source.stop(), target.stop()]);
}

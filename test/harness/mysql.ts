/**
 * Throwaway MariaDB servers for the tests (the same code verify-restore uses), SQL run
 * through the real client, and a fingerprint of a database: every table's content checksum
 * and every object's definition, to compare a restore with its source.
 */
import { spawn } from 'node:child_process';
import { connect, type MysqlTarget } from '../../shared/mysql/connection.ts';
import { type EphemeralServer, startEphemeralServer } from '../../shared/mysql/ephemeral.ts';

export type { EphemeralServer };

export function startMysql(options: { binaryLog?: boolean } = {}): Promise<EphemeralServer> {
  return startEphemeralServer({
    binaryLog: options.binaryLog,
    options: ['--max-allowed-packet=256M', '--event-scheduler=OFF'],
  });
}

export function targetOf(server: EphemeralServer, user = 'root', password?: string): MysqlTarget {
  return { host: '127.0.0.1', port: server.port, user, password, ssl: { mode: 'disabled' } };
}

/** Inputs that point an action at the server over TCP. */
export function connectionInputs(server: EphemeralServer): Record<string, string> {
  return { host: '127.0.0.1', port: String(server.port), user: 'root', 'ssl-mode': 'disabled' };
}

/** Runs SQL through the mariadb client (statements on stdin) and returns its tab-separated output. */
export function sql(server: EphemeralServer, text: string, database?: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(
      'mariadb',
      [
        '--no-defaults',
        `--socket=${server.socket}`,
        '-uroot',
        '--default-character-set=utf8mb4',
        '--batch',
        '--skip-column-names',
        '--max-allowed-packet=1G',
        ...(database ? [database] : []),
      ],
      { stdio: ['pipe', 'pipe', 'pipe'] },
    );
    let out = '';
    let err = '';
    child.stdout.setEncoding('utf8').on('data', (d) => (out += d));
    child.stderr.setEncoding('utf8').on('data', (d) => (err += d));
    child.once('error', reject);
    child.once('close', (code) => (code === 0 ? resolve(out) : reject(new Error(`mariadb: ${err.trim()}`))));
    child.stdin.end(text);
  });
}

const q = (name: string) => `\`${name.replaceAll('`', '``')}\``;
const lit = (text: string) => `'${text.replaceAll('\\', '\\\\').replaceAll("'", "\\'")}'`;

/**
 * Everything a user would compare after a restore, per database: each table's definition
 * and a checksum of its rows, and the definitions of views, triggers, routines and events
 * (with the database's own name taken out, so a renamed restore compares equal).
 */
export async function fingerprint(
  server: EphemeralServer,
  database: string,
): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  const conn = await connect(targetOf(server));
  const rows = async (query: string) => {
    const [result] = await conn.query({ sql: query, rowsAsArray: true });
    return (result as unknown[][]).map((r) => r.map((v) => (v === null ? 'NULL' : String(v))));
  };
  const strip = (text: string) =>
    text
      .replaceAll(`${q(database)}.`, '')
      .replace(/ AUTO_INCREMENT=\d+/, '')
      .replace(/\\n/g, '\n');
  const tables = await rows(
    `SELECT TABLE_NAME, TABLE_TYPE FROM information_schema.TABLES WHERE TABLE_SCHEMA=${lit(database)} ORDER BY 1`,
  );
  for (const [name, type] of tables) {
    if (type === 'VIEW') {
      const [[, def]] = (await rows(`SHOW CREATE VIEW ${q(database)}.${q(name!)}`)) as [string[]];
      out[`view ${name}`] = strip(def!);
      continue;
    }
    const [[, def]] = (await rows(`SHOW CREATE TABLE ${q(database)}.${q(name!)}`)) as [string[]];
    const [[, sum]] = (await rows(`CHECKSUM TABLE ${q(database)}.${q(name!)} EXTENDED`)) as [string[]];
    const [[count]] = (await rows(`SELECT COUNT(*) FROM ${q(database)}.${q(name!)}`)) as [string[]];
    out[`table ${name}`] = `${strip(def!)}\nchecksum ${sum} rows ${count}`;
  }
  for (const [name] of await rows(
    `SELECT TRIGGER_NAME FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA=${lit(database)} ORDER BY 1`,
  )) {
    const [[, , def]] = (await rows(`SHOW CREATE TRIGGER ${q(database)}.${q(name!)}`)) as [string[]];
    out[`trigger ${name}`] = strip(def!);
  }
  for (const [name, type] of await rows(
    `SELECT ROUTINE_NAME, ROUTINE_TYPE FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA=${lit(database)} ORDER BY 1`,
  )) {
    const [[, , def]] = (await rows(`SHOW CREATE ${type} ${q(database)}.${q(name!)}`)) as [string[]];
    out[`${type!.toLowerCase()} ${name}`] = strip(def!);
  }
  for (const [name] of await rows(
    `SELECT EVENT_NAME FROM information_schema.EVENTS WHERE EVENT_SCHEMA=${lit(database)} ORDER BY 1`,
  )) {
    const [[, , , def]] = (await rows(`SHOW CREATE EVENT ${q(database)}.${q(name!)}`)) as [string[]];
    out[`event ${name}`] = strip(def!);
  }
  await conn.end();
  return out;
}

export async function databases(server: EphemeralServer): Promise<string[]> {
  return (await sql(server, 'SHOW DATABASES')).split('\n').filter(Boolean);
}

/** A small shop: customers, orders with a foreign key, a view, a trigger, a procedure. */
export const sampleShop = `
CREATE DATABASE shop;
USE shop;
CREATE TABLE customers (id INT PRIMARY KEY AUTO_INCREMENT, name VARCHAR(100) NOT NULL, email VARCHAR(200) UNIQUE);
CREATE TABLE orders (id INT PRIMARY KEY AUTO_INCREMENT, customer_id INT NOT NULL, total DECIMAL(12,2) NOT NULL,
  placed DATETIME NOT NULL, FOREIGN KEY (customer_id) REFERENCES customers(id));
INSERT INTO customers (name, email) SELECT CONCAT('customer ', seq), CONCAT('c', seq, '@example.com') FROM seq_1_to_200;
INSERT INTO orders (customer_id, total, placed)
  SELECT 1 + seq % 200, ROUND(seq * 1.37, 2), '2026-01-01' + INTERVAL seq MINUTE FROM seq_1_to_2000;
CREATE VIEW big_orders AS SELECT * FROM orders WHERE total > 1000;
CREATE TRIGGER orders_total BEFORE INSERT ON orders FOR EACH ROW SET NEW.total = ABS(NEW.total);
CREATE PROCEDURE customer_count() SELECT COUNT(*) FROM customers;
`;

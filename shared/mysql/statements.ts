import { readIdentifier } from './sql-stream.ts';

/**
 * What a dump statement does, for restore: `session` settings (SET) apply to every
 * connection; `database` statements (CREATE DATABASE, USE, ALTER DATABASE) are the restore's
 * to decide; `table` statements build tables; `lock` statements are left out (loads run in
 * parallel connections); `object` statements create views, triggers, routines and events.
 */
export type StatementRole = 'session' | 'database' | 'table' | 'lock' | 'object';

/** The statement without conditional-comment markers (`/*!40101 … *\/`), on one line. */
export function plainText(text: string): string {
  // Backquoted names are kept as they are; markers and runs of space outside them go.
  return text
    .replace(/(`(?:[^`]|``)*`)|\/\*!\d*\s?|\*\/|\s+/g, (_, name) => name ?? ' ')
    .replace(/(`(?:[^`]|``)*`)| {2,}/g, (_, name) => name ?? ' ')
    .trim();
}

export function roleOf(text: string): StatementRole {
  const plain = plainText(text);
  if (/^SET\b/i.test(plain)) return 'session';
  if (/^(CREATE (DATABASE|SCHEMA)|USE|ALTER (DATABASE|SCHEMA))\b/i.test(plain)) return 'database';
  if (/^(LOCK TABLES|UNLOCK TABLES)\b/i.test(plain)) return 'lock';
  if (/^(DROP TABLE|CREATE (TEMPORARY )?TABLE|ALTER TABLE|INSERT|REPLACE)\b/i.test(plain)) return 'table';
  return 'object';
}

export type ObjectType = 'table' | 'view' | 'trigger' | 'procedure' | 'function' | 'event';

const identifier = '(`(?:[^`]|``)+`|[\\w$]+)';
const definer = /^CREATE (OR REPLACE )?(ALGORITHM=\w+ )?(DEFINER=\S+ )?(SQL SECURITY \w+ )?/i;

/** The object a CREATE statement makes, with its name; undefined for any other statement. */
export function createdObject(text: string): { type: ObjectType; name: string } | undefined {
  const plain = plainText(text);
  if (!/^CREATE\b/i.test(plain)) return undefined;
  const rest = plain.replace(definer, '');
  const match = new RegExp(
    `^(TABLE|VIEW|TRIGGER|PROCEDURE|(?:AGGREGATE )?FUNCTION|EVENT) (?:IF NOT EXISTS )?${identifier}`,
    'i',
  ).exec(rest);
  if (!match) return undefined;
  const keyword = match[1]!.toLowerCase();
  const type = (keyword.endsWith('function') ? 'function' : keyword) as ObjectType;
  const name = readIdentifier(match[2]!)?.name;
  return name === undefined ? undefined : { type, name };
}

/** The engine named by a CREATE TABLE statement. */
export function tableEngine(text: string): string | undefined {
  return /\)\s*ENGINE=(\w+)/i.exec(text)?.[1];
}

/** The database a `CREATE DATABASE` statement makes, and its character set clause. */
export function createdDatabase(text: string): { name: string; options: string } | undefined {
  const plain = plainText(text);
  const match = /^CREATE (?:DATABASE|SCHEMA) (?:IF NOT EXISTS )?(.*)$/i.exec(plain);
  if (!match) return undefined;
  const id = readIdentifier(match[1]!);
  if (!id) return undefined;
  return { name: id.name, options: id.rest.replace(/;\s*$/, '').trim() };
}

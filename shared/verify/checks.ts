import { parse as parseYaml } from 'yaml';
import { UserError } from '../errors.ts';

/** One named row of a verification: what was checked and how it came out. */
export interface CheckRow {
  name: string;
  status: 'passed' | 'failed' | 'skipped';
  detail: string;
}

export const passed = (name: string, detail: string): CheckRow => ({ name, status: 'passed', detail });
export const failed = (name: string, detail: string): CheckRow => ({ name, status: 'failed', detail });
export const skipped = (name: string, detail: string): CheckRow => ({ name, status: 'skipped', detail });

const operators = ['>=', '<=', '==', '!=', '>', '<'] as const;
type Operator = (typeof operators)[number];

/** What a user check expects of the first column of the first row its SQL returns. */
export interface Expectation {
  operator: Operator;
  /** The operand as written (a number for the ordering operators). */
  operand: string;
  text: string;
}

/** A user check from the `checks` input: SQL run against the restored data, and what it must return. */
export interface UserCheck {
  name: string;
  sql: string;
  expect: Expectation;
  /** The backup's database the SQL runs in (its default database); default: the first restored. */
  database?: string;
}

const expectAccepted =
  "a comparison such as '>= 1000', '== 0', '!= 0', '< 5', or a plain value the result must equal";

/** `>= 1000`, `== 0`, `abc` (equals) into an expectation. */
export function parseExpectation(where: string, raw: unknown): Expectation {
  if (raw === undefined || raw === null || (typeof raw === 'string' && raw.trim() === '')) {
    throw new UserError(`${where}: 'expect' is missing; accepted: ${expectAccepted}`);
  }
  if (typeof raw === 'number' || typeof raw === 'boolean') {
    return { operator: '==', operand: String(raw), text: `== ${raw}` };
  }
  if (typeof raw !== 'string')
    throw new UserError(`${where}: 'expect' must be text; accepted: ${expectAccepted}`);
  const text = raw.trim();
  const match = /^(>=|<=|==|!=|>|<|=)?\s*(.*)$/s.exec(text)!;
  const operator = (match[1] === '=' ? '==' : (match[1] ?? '==')) as Operator;
  const operand = unquote(match[2]!.trim());
  if (match[1] && operand === '') {
    throw new UserError(
      `${where}: 'expect: ${text}' has no value after ${match[1]}; accepted: ${expectAccepted}`,
    );
  }
  if (['>=', '<=', '>', '<'].includes(operator) && !isNumber(operand)) {
    throw new UserError(
      `${where}: 'expect: ${text}' compares with ${operator} but '${operand}' is not a number`,
    );
  }
  return { operator, operand, text: `${operator} ${operand}` };
}

function unquote(value: string): string {
  const quoted = /^'(.*)'$|^"(.*)"$/s.exec(value);
  return quoted ? (quoted[1] ?? quoted[2]!) : value;
}

const isNumber = (value: string) => value.trim() !== '' && Number.isFinite(Number(value));

/** Whether a value returned by SQL (null for NULL or no row) meets the expectation. */
export function meets(value: string | null, expect: Expectation): boolean {
  if (value === null) {
    if (expect.operator === '==') return /^null$/i.test(expect.operand);
    if (expect.operator === '!=') return !/^null$/i.test(expect.operand);
    return false;
  }
  const numeric = isNumber(value) && isNumber(expect.operand);
  const a = numeric ? Number(value) : value;
  const b = numeric ? Number(expect.operand) : expect.operand;
  switch (expect.operator) {
    case '==':
      return a === b;
    case '!=':
      return a !== b;
    case '>=':
      return numeric && a >= b;
    case '<=':
      return numeric && a <= b;
    case '>':
      return numeric && a > b;
    case '<':
      return numeric && a < b;
  }
}

/**
 * The `checks` input: a YAML list of `{name, sql, expect, database?}`. Every problem names
 * the item and the field.
 */
export function parseUserChecks(value: string | undefined): UserCheck[] {
  return parseNamedList('checks', value, ['name', 'sql', 'expect', 'database'], 'name, sql and expect').map(
    ({ where, name, fields }) => {
      const sql = typeof fields.sql === 'string' ? fields.sql.trim() : '';
      if (!sql) throw new UserError(`${where} (${name}): 'sql' is missing`);
      const database = fields.database === undefined ? undefined : String(fields.database).trim();
      return { name, sql, expect: parseExpectation(`${where} (${name})`, fields.expect), database };
    },
  );
}

/**
 * A YAML list of mappings, each with a unique `name` and only the `accepted` fields: what the
 * check inputs hold. `shape` says what an item has, for the errors ("name, sql and expect").
 */
export function parseNamedList(
  input: string,
  value: string | undefined,
  accepted: string[],
  shape: string,
): { where: string; name: string; fields: Record<string, unknown> }[] {
  if (!value?.trim()) return [];
  const listed = `{${accepted.join(', ')}}`;
  let doc: unknown;
  try {
    doc = parseYaml(value);
  } catch (error) {
    throw new UserError(
      `${input}: not valid YAML (${(error as Error).message.split('\n')[0]}); accepted: a list of ${listed}`,
    );
  }
  if (!Array.isArray(doc)) {
    throw new UserError(`${input}: must be a YAML list of ${listed} items (each starting with "- ")`);
  }
  const names = new Set<string>();
  return doc.map((item, i) => {
    const where = `${input}: item ${i + 1}`;
    if (!item || typeof item !== 'object' || Array.isArray(item)) {
      throw new UserError(`${where}: must be a mapping with ${shape}`);
    }
    const fields = item as Record<string, unknown>;
    const unknown = Object.keys(fields).filter((k) => !accepted.includes(k));
    if (unknown.length) {
      throw new UserError(`${where}: unknown field '${unknown[0]}'; accepted: ${accepted.join(', ')}`);
    }
    const name = typeof fields.name === 'string' ? fields.name.trim() : '';
    if (!name) throw new UserError(`${where}: 'name' is missing`);
    if (names.has(name)) throw new UserError(`${where}: the name '${name}' is used twice`);
    names.add(name);
    return { where, name, fields };
  });
}

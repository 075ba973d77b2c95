import { type Token, tokenize, UnsafeDumpError } from './sql-lexer.ts';
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
    .replace(/(`(?:[^`]|``)*`)|\/\*M?!\d*\s?|\*\/|\s+/g, (_, name) => name ?? ' ')
    .replace(/(`(?:[^`]|``)*`)| {2,}/g, (_, name) => name ?? ' ')
    .trim();
}

/** The role of a statement given as text (tokenized with `;`); refuses what no dumper writes. */
export function roleOf(text: string, line = 1): StatementRole {
  return classify(tokenize(text, ';', line), line);
}

const objectKinds = new Set(['VIEW', 'TRIGGER', 'PROCEDURE', 'FUNCTION', 'EVENT']);
/** Table options and words that reach outside the database: files, other servers, other tables. */
const outsideWords = new Set(['SELECT', 'UNION', 'CONNECTION', 'DIRECTORY', 'FILE_NAME', 'LIKE']);
const outsideEngines = new Set([
  'CONNECT',
  'FEDERATED',
  'FEDERATEDX',
  'SPIDER',
  'MRG_MYISAM',
  'MERGE',
  'OQGRAPH',
]);

/**
 * Decides what a statement of an untrusted dump is, from its tokens, and refuses every form
 * that mariadb-dump and mysqldump do not write: anything that could act outside the
 * databases being restored (a name qualified with another database, SET GLOBAL, a table
 * over files or another server, GRANT, dynamic SQL, …). What is let through can still hold,
 * in the bodies of views, routines, triggers and events, SQL that runs later: the README
 * says so and gives the restore user's least privileges.
 */
export function classify(all: Token[], line: number): StatementRole {
  const t = all.slice(0, -1);
  const refuse = (why: string) => new UnsafeDumpError(line, why);
  const word = (i: number) => (t[i]?.type === 'word' ? t[i]!.text.toUpperCase() : undefined);
  const shown = () =>
    `'${t
      .slice(0, 4)
      .map((x) => x.text)
      .join(' ')}'`;
  const unqualifiedNames = (from: number) => {
    for (let i = from; i < t.length; i++)
      if (t[i]!.text === '.') throw refuse(`a name qualified with a database in ${shown()}`);
  };
  switch (word(0)) {
    case 'SET':
      checkSet(t, refuse);
      return 'session';
    case 'USE':
      if (t.length !== 2 || !isName(t[1])) throw refuse(`${shown()} is not USE of one database`);
      return 'database';
    case 'LOCK':
    case 'UNLOCK':
      if (word(1) !== 'TABLES') break;
      return 'lock';
    case 'ALTER': {
      const what = word(1);
      if (what === 'DATABASE' || what === 'SCHEMA') {
        if (!isName(t[2]) || t.slice(3).some((x) => x.type !== 'word' && x.text !== '=')) {
          throw refuse(`${shown()} changes more than a character set`);
        }
        return 'database';
      }
      if (
        what === 'TABLE' &&
        isName(t[2]) &&
        t.length === 5 &&
        /^(DISABLE|ENABLE)$/.test(word(3) ?? '') &&
        word(4) === 'KEYS'
      ) {
        return 'table';
      }
      break;
    }
    case 'DROP': {
      const what = word(1) ?? '';
      if (what !== 'TABLE' && !objectKinds.has(what)) break;
      unqualifiedNames(2);
      return what === 'TABLE' ? 'table' : 'object';
    }
    case 'CREATE': {
      const what = word(1);
      if (what === 'DATABASE' || what === 'SCHEMA') return 'database';
      if (what === 'TABLE') {
        checkCreateTable(t, refuse, shown);
        return 'table';
      }
      checkCreateObject(t, refuse, shown);
      return 'object';
    }
  }
  throw refuse(`${t.length ? shown() : 'an empty statement'} is not a statement a dumper writes`);
}

type Refuse = (why: string) => Error;

function isName(token: Token | undefined): boolean {
  return token?.type === 'ident' || token?.type === 'word';
}

/** SET of session and user variables to literals and variables; never GLOBAL, a password or an expression. */
function checkSet(t: Token[], refuse: Refuse) {
  const upper = (i: number) => (t[i]?.type === 'word' ? t[i]!.text.toUpperCase() : undefined);
  for (const x of t) {
    if (x.type === 'string' && /NO_BACKSLASH_ESCAPES/i.test(x.text)) {
      throw refuse('SET of NO_BACKSLASH_ESCAPES (the client would then read strings differently)');
    }
    if (x.type === 'punct' && !['@', '.', '=', ':=', ',', '-', '+'].includes(x.text)) {
      throw refuse(`'${x.text}' in a SET statement (an expression, where a dumper sets values)`);
    }
  }
  let i = 1;
  if (upper(1) === 'NAMES' || (upper(1) === 'CHARACTER' && upper(2) === 'SET')) return;
  for (;;) {
    if (t[i]?.text === '@' && t[i + 1]?.text === '@') {
      i += 2;
      const scope = upper(i);
      if (scope === 'GLOBAL' || scope === 'PERSIST' || scope === 'PERSIST_ONLY')
        throw refuse('SET of a global variable');
      if ((scope === 'SESSION' || scope === 'LOCAL') && t[i + 1]?.text === '.') i += 2;
      if (!isName(t[i])) throw refuse('SET of something that is not a variable');
      i++;
    } else if (t[i]?.text === '@') {
      if (!isName(t[i + 1]) && t[i + 1]?.type !== 'string')
        throw refuse('SET of something that is not a variable');
      i += 2;
    } else {
      const first = upper(i);
      if (
        first === undefined ||
        [
          'GLOBAL',
          'PERSIST',
          'PERSIST_ONLY',
          'PASSWORD',
          'ROLE',
          'DEFAULT',
          'STATEMENT',
          'TRANSACTION',
        ].includes(first)
      ) {
        throw refuse(`SET ${t[i]?.text ?? ''} (only session and user variables are set by a dump)`);
      }
      if (first === 'SESSION' || first === 'LOCAL') i++;
      if (!isName(t[i])) throw refuse('SET of something that is not a variable');
      i++;
    }
    if (t[i]?.text !== '=' && t[i]?.text !== ':=') throw refuse('SET without = after the variable');
    i++;
    while (i < t.length && t[i]!.text !== ',') i++;
    if (i >= t.length) return;
    i++;
  }
}

/** CREATE TABLE of one unqualified name, over no files, servers or other tables. */
function checkCreateTable(t: Token[], refuse: Refuse, shown: () => string) {
  let i = 2;
  if (t[i]?.text.toUpperCase() === 'IF') i += 3;
  if (!isName(t[i]) || t[i + 1]?.text !== '(')
    throw refuse(`${shown()} is not CREATE TABLE of one unqualified name`);
  for (let k = i + 2; k < t.length; k++) {
    const x = t[k]!;
    const upper = x.type === 'word' ? x.text.toUpperCase() : '';
    if (outsideWords.has(upper)) throw refuse(`${upper} in CREATE TABLE (it reaches outside the database)`);
    if (upper === 'ENGINE') {
      const engine = (t[k + 1]?.text === '=' ? t[k + 2] : t[k + 1])?.text.toUpperCase() ?? '';
      if (outsideEngines.has(engine))
        throw refuse(`ENGINE=${engine} in CREATE TABLE (it reaches outside the database)`);
    }
    if (x.text === '.' && x.type === 'punct') {
      const number = /^\d+$/;
      const around = [t[k - 1], t[k + 1]];
      const isNumber = around.every((a) => a?.type === 'word' && number.test(a.text));
      const isReference = t[k - 2]?.text.toUpperCase() === 'REFERENCES';
      if (!isNumber && !isReference) throw refuse(`a name qualified with a database in ${shown()}`);
    }
  }
}

/** CREATE [OR REPLACE] [ALGORITHM=…] [DEFINER=…] [SQL SECURITY …] VIEW|TRIGGER|PROCEDURE|FUNCTION|EVENT of an unqualified name. */
function checkCreateObject(t: Token[], refuse: Refuse, shown: () => string) {
  const upper = (i: number) => (t[i]?.type === 'word' ? t[i]!.text.toUpperCase() : '');
  let i = 1;
  if (upper(i) === 'OR' && upper(i + 1) === 'REPLACE') i += 2;
  if (upper(i) === 'ALGORITHM' && t[i + 1]?.text === '=') i += 3;
  if (upper(i) === 'DEFINER' && t[i + 1]?.text === '=') {
    i += 2;
    if (upper(i) === 'CURRENT_USER') i += t[i + 1]?.text === '(' ? 3 : 1;
    else if (t[i + 1]?.text === '@' && t[i + 2]) i += 3;
    else if (t[i]?.type === 'string' || isName(t[i])) i += 1;
    else throw refuse(`${shown()}: a DEFINER that is not a user`);
  }
  if (upper(i) === 'SQL' && upper(i + 1) === 'SECURITY') i += 3;
  if (upper(i) === 'AGGREGATE') i++;
  if (!objectKinds.has(upper(i))) throw refuse(`${shown()} is not a statement a dumper writes`);
  const kind = upper(i);
  i++;
  if (upper(i) === 'IF') i += 3;
  if (!isName(t[i]) || t[i + 1]?.text === '.')
    throw refuse(`${shown()} is not CREATE ${kind} of one unqualified name`);
  if (kind === 'TRIGGER') {
    const on = t.findIndex((x, k) => k > i && x.type === 'word' && x.text.toUpperCase() === 'ON');
    if (on < 0 || !isName(t[on + 1]) || t[on + 2]?.text === '.')
      throw refuse(`a trigger on a table of another database`);
  }
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

import { DumpFormatError } from './dump-errors.ts';
import { tokenize, UnsafeDumpError, ValuesScanner } from './sql-lexer.ts';
import { classify, type StatementRole } from './statements.ts';

export { DumpFormatError } from './dump-errors.ts';

/**
 * A streaming reader of mysqldump / mariadb-dump output. It splits the text into statements
 * the way the `mysql` client does for dump files (a statement ends at a line ending with the
 * current DELIMITER), hands small statements over whole, and streams data statements
 * (`INSERT INTO … VALUES`), which can be hundreds of megabytes, in pieces without holding
 * them. A dump is untrusted: every statement is read as the client reads it
 * (`sql-lexer.ts`) and judged (`statements.ts`) before it is handed over, and whatever the
 * dumpers never write is refused with its line number.
 */

export interface StatementHandler {
  /** A whole statement (with its newline) and its role, a `DELIMITER` line, a comment. */
  statement(text: string, kind: StatementKind, info?: StatementInfo): void | Promise<void>;
  /** The start of an INSERT into `table` (of the current database). */
  dataStart(table: string): void | Promise<void>;
  /** The next bytes of the current INSERT, from its first byte. */
  dataPiece(piece: Buffer): void | Promise<void>;
  /** The INSERT ended; `rows` is the number of rows it held. */
  dataEnd(rows: number): void | Promise<void>;
}

export type StatementKind = 'statement' | 'delimiter' | 'command' | 'comment';
export interface StatementInfo {
  role: StatementRole;
  /** The line the statement starts on, counted from 1. */
  line: number;
}

const newline = 0x0a;
const insertPrefix = Buffer.from('INSERT INTO ');
const delimiterPrefix = Buffer.from('DELIMITER ');
const sandboxLine = '/*M!999999\\- enable the sandbox mode */';
/** The delimiters the dumpers write. */
const dumpDelimiters = new Set([';', ';;']);
/** A line shorter than this can be judged only once it is complete. */
const lookahead = 1024;
/** Statements other than data are small; a larger one means the input is not a dump. */
const maxStatementBytes = 256 * 1024 * 1024;
/** `INSERT INTO `t` (`columns`) VALUES` is short; a longer head is not a dump's. */
const maxInsertHead = 1024 * 1024;

export class DumpReader {
  private readonly handler: StatementHandler;
  private carry: Buffer = Buffer.alloc(0);
  private statementParts: Buffer[] = [];
  private statementBytes = 0;
  private statementLine = 1;
  private delimiter = ';';
  /** Inside an INSERT: its head until VALUES, then its values. */
  private insertHead: Buffer[] | undefined;
  private values: ValuesScanner | undefined;
  /** The INSERT's `;` came at the end of a piece: its newline must come next. */
  private valuesEnded = false;
  /** The line the reader is on, counted from 1. */
  private lineNumber = 1;
  /** Bytes read so far. */
  offset = 0;

  constructor(handler: StatementHandler) {
    this.handler = handler;
  }

  private get inData(): boolean {
    return this.insertHead !== undefined || this.values !== undefined;
  }

  /** Feeds the next bytes; await it before feeding more. */
  async push(chunk: Buffer): Promise<void> {
    this.offset += chunk.length;
    const buf = this.carry.length ? Buffer.concat([this.carry, chunk]) : chunk;
    this.carry = Buffer.alloc(0);
    let pos = 0;
    while (pos < buf.length) {
      if (this.inData) {
        pos = await this.readData(buf, pos);
        continue;
      }
      const eol = buf.indexOf(newline, pos);
      if (this.statementParts.length === 0) {
        // A line that starts a statement is judged once it is whole, or long enough.
        if (eol < 0 && buf.length - pos < lookahead) break;
        if (this.delimiter === ';' && startsWith(buf, pos, insertPrefix)) {
          this.insertHead = [];
          this.statementBytes = 0;
          continue;
        }
      }
      if (eol < 0) {
        this.addStatementPart(buf.subarray(pos));
        pos = buf.length;
        break;
      }
      const line = buf.subarray(pos, eol + 1);
      pos = eol + 1;
      await this.line(line);
    }
    if (pos < buf.length) this.carry = Buffer.from(buf.subarray(pos));
  }

  /** Ends the input; fails when it stops inside a statement (a truncated dump). */
  async end(): Promise<void> {
    if (this.carry.length) {
      const rest = this.carry;
      this.carry = Buffer.alloc(0);
      if (!this.inData && this.statementParts.length === 0 && startsWith(rest, 0, insertPrefix)) {
        this.insertHead = [];
        this.statementBytes = 0;
      }
      if (this.inData) await this.readData(rest, 0);
      else await this.line(rest);
    }
    if (this.valuesEnded) await this.endValues();
    if (this.inData || this.statementParts.length) {
      throw new DumpFormatError('the dump ends inside a statement: it is truncated');
    }
  }

  private async line(line: Buffer): Promise<void> {
    if (this.statementParts.length === 0) {
      this.statementLine = this.lineNumber;
      const first = line[0];
      // Comments and blank lines between statements.
      if (first === newline || (first === 0x2d && line[1] === 0x2d) || line.length === 0) {
        this.lineNumber++;
        await this.handler.statement(line.toString(), 'comment');
        return;
      }
      const text = line.toString();
      // mariadb-dump's first line turns on the client's sandbox (no shell escapes in the
      // rest of the file): a client command, like DELIMITER, alone on its line.
      if (text.trim() === sandboxLine) {
        this.lineNumber++;
        await this.handler.statement(text, 'command');
        return;
      }
      if (startsWith(line, 0, delimiterPrefix)) {
        const delimiter = text.slice('DELIMITER '.length).trim();
        if (!dumpDelimiters.has(delimiter)) {
          throw new UnsafeDumpError(this.lineNumber, `DELIMITER '${delimiter}' (the dumpers write ; and ;;)`);
        }
        this.delimiter = delimiter;
        this.lineNumber++;
        await this.handler.statement(text, 'delimiter');
        return;
      }
    }
    this.addStatementPart(line);
    if (line[line.length - 1] === newline) this.lineNumber++;
    if (endsWithDelimiter(this.lineTail(), this.delimiter)) {
      const text = Buffer.concat(this.statementParts).toString();
      this.statementParts = [];
      this.statementBytes = 0;
      const line = this.statementLine;
      const role = classify(tokenize(text, this.delimiter, line), line);
      await this.handler.statement(text, 'statement', { role, line });
    }
  }

  /** The last bytes of the statement so far (a line may have come in several parts). */
  private lineTail(): Buffer {
    const parts: Buffer[] = [];
    let bytes = 0;
    for (let i = this.statementParts.length - 1; i >= 0 && bytes < 64; i--) {
      parts.unshift(this.statementParts[i]!);
      bytes += this.statementParts[i]!.length;
    }
    return parts.length === 1 ? parts[0]! : Buffer.concat(parts);
  }

  private addStatementPart(part: Buffer) {
    this.statementBytes += part.length;
    if (this.statementBytes > maxStatementBytes) {
      throw new DumpFormatError('a statement longer than 256 MiB that is not data: this is not a dump file');
    }
    this.statementParts.push(Buffer.from(part));
  }

  /** Reads an INSERT: its head up to VALUES (checked whole), then its values as they stream. */
  private async readData(buf: Buffer, pos: number): Promise<number> {
    if (this.valuesEnded) {
      if (buf[pos] !== newline) {
        throw new UnsafeDumpError(
          this.lineNumber,
          'text after the ; that ends an INSERT (a second statement on the line)',
        );
      }
      await this.handler.dataPiece(buf.subarray(pos, pos + 1));
      await this.endValues();
      return pos + 1;
    }
    if (this.insertHead) return this.readInsertHead(buf, pos);
    const values = this.values!;
    const end = values.scan(buf, pos);
    const stop = end < 0 ? buf.length : end;
    await this.handler.dataPiece(buf.subarray(pos, stop));
    if (end >= 0) this.valuesEnded = true;
    return stop;
  }

  private async readInsertHead(buf: Buffer, pos: number): Promise<number> {
    const head = this.insertHead!;
    const eol = buf.indexOf(newline, pos);
    const stop = eol < 0 ? buf.length : eol + 1;
    head.push(Buffer.from(buf.subarray(pos, stop)));
    this.statementBytes += stop - pos;
    const text = Buffer.concat(head).toString();
    const at = /[\s)]VALUES(?=[\s(])/.exec(text);
    if (!at) {
      if (this.statementBytes > maxInsertHead || eol >= 0) {
        throw new UnsafeDumpError(this.lineNumber, 'an INSERT that is not INSERT INTO <table> VALUES');
      }
      return stop;
    }
    const valuesAt = at.index + at[0].length;
    const table = insertTable(text.slice(0, at.index + 1), this.lineNumber);
    this.insertHead = undefined;
    this.values = new ValuesScanner(this.lineNumber);
    await this.handler.dataStart(table);
    const headBytes = Buffer.byteLength(text.slice(0, valuesAt));
    const already = this.statementBytes - (stop - pos);
    // The bytes of the head up to VALUES go on as data; the rest is read as values.
    const whole = Buffer.concat(head);
    await this.handler.dataPiece(whole.subarray(0, headBytes));
    const restInBuf = pos + (headBytes - already);
    return restInBuf;
  }

  private async endValues() {
    const values = this.values!;
    this.lineNumber += values.newlines + 1;
    this.values = undefined;
    this.valuesEnded = false;
    await this.handler.dataEnd(values.rows);
  }
}

/** The table of `INSERT INTO `t` [(`columns`)] `: one unqualified name, names only. */
function insertTable(head: string, line: number): string {
  const tokens = tokenize(`${head};`, ';', line).slice(0, -1);
  const refuse = () =>
    new UnsafeDumpError(line, 'an INSERT that is not INSERT INTO <table> [(<columns>)] VALUES');
  const [, , table, ...columns] = tokens;
  if (!table || (table.type !== 'ident' && table.type !== 'word')) throw refuse();
  if (columns.length) {
    if (columns[0]!.text !== '(' || columns[columns.length - 1]!.text !== ')') throw refuse();
    const inner = columns.slice(1, -1);
    if (inner.some((c, i) => (i % 2 === 0 ? c.type !== 'ident' : c.text !== ','))) throw refuse();
  }
  return table.text;
}

function startsWith(buf: Buffer, pos: number, prefix: Buffer): boolean {
  if (buf.length - pos < prefix.length) return false;
  return buf.compare(prefix, 0, prefix.length, pos, pos + prefix.length) === 0;
}

function endsWithDelimiter(line: Buffer, delimiter: string): boolean {
  let end = line.length;
  while (end > 0 && (line[end - 1] === newline || line[end - 1] === 0x0d || line[end - 1] === 0x20)) end--;
  if (end < delimiter.length) return false;
  return line.toString('latin1', end - delimiter.length, end) === delimiter;
}

/** Reads a backquoted identifier (`a``b` is a`b) at the start of `text`. */
export function readIdentifier(text: string): { name: string; rest: string } | undefined {
  if (!text.startsWith('`')) {
    const bare = /^([\w$]+)/.exec(text);
    return bare ? { name: bare[1]!, rest: text.slice(bare[1]!.length) } : undefined;
  }
  let name = '';
  let i = 1;
  while (i < text.length) {
    const c = text[i]!;
    if (c === '`') {
      if (text[i + 1] === '`') {
        name += '`';
        i += 2;
        continue;
      }
      return { name, rest: text.slice(i + 1) };
    }
    name += c;
    i++;
  }
  return undefined;
}

/** Quotes an identifier for SQL. */
export function quoteIdentifier(name: string): string {
  return `\`${name.replaceAll('`', '``')}\``;
}

/** The database of a `USE `db`;` statement, or undefined for any other statement. */
export function useDatabase(text: string): string | undefined {
  if (!text.startsWith('USE ')) return undefined;
  return readIdentifier(text.slice(4).trimStart())?.name;
}

import { UserError } from '../errors.ts';
/**
 * A streaming reader of mysqldump / mariadb-dump output. It splits the text into statements
 * the way the `mysql` client does for dump files (a statement ends at a line ending with the
 * current DELIMITER), hands small statements over whole, and streams data statements
 * (`INSERT INTO … VALUES`), which can be hundreds of megabytes, in pieces without holding
 * them. It relies on what dumps guarantee: string values never hold a raw newline (the
 * dumper escapes it), so a line ending with `;` outside a stored program ends a statement.
 */

export interface StatementHandler {
  /** A whole statement (with its newline), a `DELIMITER` line, or null text for nothing. */
  statement(text: string, kind: StatementKind): void | Promise<void>;
  /** The start of an INSERT into `table` (of the current database). */
  dataStart(table: string): void | Promise<void>;
  /** The next bytes of the current INSERT, from its first byte. */
  dataPiece(piece: Buffer): void | Promise<void>;
  /** The INSERT ended; `rows` is the number of rows it held. */
  dataEnd(rows: number): void | Promise<void>;
}

export type StatementKind = 'statement' | 'delimiter' | 'command' | 'comment';

const newline = 0x0a;
const quote = 0x27;
const backslash = 0x5c;
const openParen = 0x28;
const insertPrefix = Buffer.from('INSERT INTO ');
const values = Buffer.from('VALUES');
const delimiterPrefix = Buffer.from('DELIMITER ');
const sandboxLine = Buffer.from('/*M!999999\\- enable the sandbox mode */');
/** A line shorter than this can be judged only once it is complete. */
const lookahead = 1024;
/** Statements other than data are small; a larger one means the input is not a dump. */
const maxStatementBytes = 256 * 1024 * 1024;

export class DumpReader {
  private readonly handler: StatementHandler;
  private carry: Buffer = Buffer.alloc(0);
  private statementParts: Buffer[] = [];
  private statementBytes = 0;
  private delimiter = ';';
  private inData = false;
  private dataEndsWithSemicolon = false;
  private rowCounter = new RowCounter();
  /** Bytes read so far. */
  offset = 0;

  constructor(handler: StatementHandler) {
    this.handler = handler;
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
          await this.startData(buf.subarray(pos, Math.min(buf.length, pos + lookahead)));
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
        await this.startData(rest.subarray(0, lookahead));
      }
      if (this.inData) await this.readData(rest, 0);
      else await this.line(rest);
    }
    if (this.inData && this.dataEndsWithSemicolon) {
      this.inData = false;
      await this.handler.dataEnd(this.rowCounter.rows);
    }
    if (this.inData || this.statementParts.length) {
      throw new DumpFormatError('the dump ends inside a statement: it is truncated');
    }
  }

  private async line(line: Buffer): Promise<void> {
    if (this.statementParts.length === 0) {
      const first = line[0];
      // Comments and blank lines between statements.
      if (first === newline || (first === 0x2d && line[1] === 0x2d) || line.length === 0) {
        await this.handler.statement(line.toString(), 'comment');
        return;
      }
      // mariadb-dump's first line turns on the client's sandbox (no shell escapes in the
      // rest of the file): a client command, like DELIMITER.
      if (startsWith(line, 0, sandboxLine)) {
        await this.handler.statement(line.toString(), 'command');
        return;
      }
      if (startsWith(line, 0, delimiterPrefix)) {
        const text = line.toString();
        this.delimiter = text.slice('DELIMITER '.length).trim();
        if (!this.delimiter) throw new DumpFormatError('a DELIMITER line names no delimiter');
        await this.handler.statement(text, 'delimiter');
        return;
      }
    }
    this.addStatementPart(line);
    if (endsWithDelimiter(this.lineTail(), this.delimiter)) {
      const text = Buffer.concat(this.statementParts).toString();
      this.statementParts = [];
      this.statementBytes = 0;
      await this.handler.statement(text, 'statement');
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

  private async startData(head: Buffer): Promise<void> {
    const table = insertTable(head);
    if (table === undefined) throw new DumpFormatError(`cannot read the table of: ${head.subarray(0, 80)}`);
    this.inData = true;
    this.dataEndsWithSemicolon = false;
    this.rowCounter = new RowCounter();
    await this.handler.dataStart(table);
  }

  /** Streams data bytes up to the end of the statement (`;` then newline). */
  private async readData(buf: Buffer, pos: number): Promise<number> {
    let end = -1;
    if (this.dataEndsWithSemicolon && buf[pos] === newline) end = pos + 1;
    else {
      const at = buf.indexOf(';\n', pos);
      if (at >= 0) end = at + 2;
    }
    const stop = end < 0 ? buf.length : end;
    const piece = buf.subarray(pos, stop);
    this.rowCounter.push(piece);
    await this.handler.dataPiece(piece);
    if (end < 0) {
      this.dataEndsWithSemicolon = buf[buf.length - 1] === 0x3b;
      return buf.length;
    }
    this.inData = false;
    await this.handler.dataEnd(this.rowCounter.rows);
    return end;
  }
}

/** The SQL is not a complete dump: a backup the user must know about, not a bug. */
export class DumpFormatError extends UserError {
  override name = 'DumpFormatError';
}

/**
 * Counts the rows of one INSERT statement: the `(` that open a row, outside string
 * literals. mariadb-dump puts each row on a line of its own, mysqldump all on one line;
 * values outside strings are numbers, NULL and 0x… hex, so a `(` there always opens a row.
 */
class RowCounter {
  rows = 0;
  private inString = false;
  private escaped = false;
  private pastValues = false;
  private inBacktick = false;
  private matched = 0;
  private perLine: boolean | undefined;

  push(piece: Buffer) {
    let i = 0;
    // Skip `INSERT INTO `t` (`columns`) VALUES` before counting; names are backquoted.
    while (!this.pastValues && i < piece.length) {
      const c = piece[i++]!;
      if (c === 0x60) this.inBacktick = !this.inBacktick;
      else if (!this.inBacktick) {
        this.matched = c === values[this.matched] ? this.matched + 1 : c === values[0] ? 1 : 0;
        if (this.matched === values.length) this.pastValues = true;
      }
    }
    if (this.pastValues && this.perLine === undefined && i < piece.length) {
      // mariadb-dump writes `VALUES` then one row per line (a string never holds a raw
      // newline): counting newlines is enough, and much cheaper than reading the values.
      this.perLine = piece[i] === newline;
      if (this.perLine) i++;
    }
    if (this.perLine) {
      for (let at = piece.indexOf(newline, i); at >= 0; at = piece.indexOf(newline, at + 1)) this.rows++;
      return;
    }
    const n = piece.length;
    while (i < n) {
      if (this.escaped) {
        this.escaped = false;
        i++;
        continue;
      }
      if (this.inString) {
        const q = piece.indexOf(quote, i);
        const b = piece.indexOf(backslash, i);
        if (q < 0 && b < 0) return;
        if (b >= 0 && (q < 0 || b < q)) {
          this.escaped = true;
          i = b + 1;
          continue;
        }
        this.inString = false;
        i = q + 1;
        continue;
      }
      const q = piece.indexOf(quote, i);
      const stop = q < 0 ? n : q;
      let p = piece.indexOf(openParen, i);
      while (p >= 0 && p < stop) {
        this.rows++;
        p = piece.indexOf(openParen, p + 1);
      }
      if (q < 0) return;
      this.inString = true;
      i = q + 1;
    }
  }
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

function insertTable(head: Buffer): string | undefined {
  const text = head.toString('utf8').slice(insertPrefix.length);
  return readIdentifier(text)?.name;
}

/** The database of a `USE `db`;` statement, or undefined for any other statement. */
export function useDatabase(text: string): string | undefined {
  if (!text.startsWith('USE ')) return undefined;
  return readIdentifier(text.slice(4).trimStart())?.name;
}

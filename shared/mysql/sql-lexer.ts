import { DumpFormatError } from './dump-errors.ts';

/**
 * The SQL of a dump read the way the `mariadb` / `mysql` client reads it, so that Lifeboat
 * and the client always agree on where a statement ends. The client runs backslash commands
 * (`\!` shell, `\.` source, `\u` use, …) anywhere outside quotes, named commands (`system`,
 * `source`, …) at the start of a statement, and ends a statement at every delimiter outside
 * quotes and plain comments; conditional comments (`/*!…*\/`, `/*M!…*\/`) are code to it.
 * A backup is untrusted, so whatever could make the two disagree is refused.
 */

export type TokenType = 'word' | 'ident' | 'string' | 'punct';
export interface Token {
  type: TokenType;
  /** A word as written, an identifier unquoted, a string with its quotes, a punctuation mark. */
  text: string;
}

/** The client's named commands, run when they start a statement (`use` is handled as SQL). */
const clientCommands = new Set([
  '?',
  'charset',
  'clear',
  'connect',
  'delimiter',
  'edit',
  'ego',
  'exit',
  'go',
  'help',
  'nopager',
  'notee',
  'nowarning',
  'pager',
  'print',
  'prompt',
  'quit',
  'rehash',
  'sandbox',
  'source',
  'status',
  'system',
  'tee',
  'warnings',
]);

const isWordByte = (c: number) =>
  (c >= 0x30 && c <= 0x39) ||
  (c >= 0x41 && c <= 0x5a) ||
  (c >= 0x61 && c <= 0x7a) ||
  c === 0x5f ||
  c === 0x24 ||
  c >= 0x80;

/**
 * The tokens of one statement (not data) as the client and server see it, ending with its
 * delimiter. Refused: a backslash outside a string, a delimiter before the end, a statement
 * that ends inside a quote or comment, a client command, nested conditional comments.
 */
export function tokenize(text: string, delimiter: string, line: number): Token[] {
  const refuse = (why: string) => new UnsafeDumpError(line, why);
  const tokens: Token[] = [];
  const n = text.length;
  let i = 0;
  let conditional = false;
  let ended = false;
  while (i < n) {
    const c = text[i]!;
    if (ended) {
      if (!/\s/.test(c))
        throw refuse(`text after the delimiter '${delimiter}' (a second statement on the line)`);
      i++;
      continue;
    }
    if (text.startsWith(delimiter, i)) {
      tokens.push({ type: 'punct', text: delimiter });
      ended = true;
      i += delimiter.length;
      continue;
    }
    if (c === '\\') throw refuse('a backslash outside a string (a client command such as \\! or \\.)');
    if (/\s/.test(c)) {
      i++;
      continue;
    }
    if (c === "'" || c === '"' || c === '`') {
      const end = quoteEnd(text, i, c);
      if (end < 0) throw refuse(`a ${c === '`' ? 'name' : 'string'} that is never closed`);
      const body = text.slice(i + 1, end);
      if (c === '`') {
        if (body.includes('\\'))
          throw refuse('a backslash inside a `name` (the client and the server read it differently)');
        tokens.push({ type: 'ident', text: body.replaceAll('``', '`') });
      } else tokens.push({ type: 'string', text: text.slice(i, end + 1) });
      i = end + 1;
      continue;
    }
    if (c === '/' && text[i + 1] === '*') {
      const marker = /^\/\*M?!\d*/.exec(text.slice(i, i + 12));
      if (marker) {
        if (conditional) throw refuse('a conditional comment inside another');
        conditional = true;
        i += marker[0].length;
        continue;
      }
      const close = text.indexOf('*/', i + 2);
      if (close < 0) throw refuse('a comment that is never closed');
      if (text.slice(i, close).includes('\\')) throw refuse('a backslash inside a comment');
      i = close + 2;
      continue;
    }
    if (c === '*' && text[i + 1] === '/') {
      if (!conditional) throw refuse('a comment end */ outside a comment');
      conditional = false;
      i += 2;
      continue;
    }
    if (c === '#' || (c === '-' && text[i + 1] === '-' && /\s/.test(text[i + 2] ?? ''))) {
      const eol = text.indexOf('\n', i);
      const comment = text.slice(i, eol < 0 ? n : eol);
      if (comment.includes('\\')) throw refuse('a backslash inside a comment');
      i = eol < 0 ? n : eol;
      continue;
    }
    if (isWordByte(c.charCodeAt(0))) {
      let j = i + 1;
      while (j < n && isWordByte(text.charCodeAt(j))) j++;
      tokens.push({ type: 'word', text: text.slice(i, j) });
      i = j;
      continue;
    }
    tokens.push({ type: 'punct', text: c === ':' && text[i + 1] === '=' ? ':=' : c });
    i += c === ':' && text[i + 1] === '=' ? 2 : 1;
  }
  if (conditional) throw refuse('a conditional comment that is never closed');
  if (!ended) throw refuse(`the statement does not end with the delimiter ${delimiter}`);
  const first = tokens[0];
  if (first?.type === 'word' && clientCommands.has(first.text.toLowerCase())) {
    throw refuse(`the client command '${first.text}'`);
  }
  if (first?.text === '?') throw refuse("the client command '?'");
  return tokens;
}

/** The index of the quote closing the one at `start`, or -1 (a doubled quote is part of it). */
function quoteEnd(text: string, start: number, quote: string): number {
  let i = start + 1;
  while (i < text.length) {
    const c = text[i]!;
    if (c === '\\') i += 2;
    else if (c === quote) {
      if (text[i + 1] === quote) i += 2;
      else return i;
    } else i++;
  }
  return -1;
}

/** A dump holds what no dumper writes and what could act outside the restore: refused. */
export class UnsafeDumpError extends DumpFormatError {
  override name = 'UnsafeDumpError';
  constructor(line: number, why: string) {
    super(
      `line ${line} of the dump: ${why}; Lifeboat does not restore this, as it could act outside the databases being restored (nothing from this line on was sent to a server)`,
    );
  }
}

const Byte = {
  Newline: 0x0a,
  Quote: 0x27,
  Backslash: 0x5c,
  Open: 0x28,
  Close: 0x29,
  Semicolon: 0x3b,
  Minus: 0x2d,
} as const;

/** What may stand between values of an INSERT outside strings: separators and signs. */
const separator = new Uint8Array(256);
for (const c of ' \t\r\n,+') separator[c.charCodeAt(0)] = 1;

/** The only words a dumper writes between values: NULL, numbers, hex, charset introducers. */
const valueWord = /^(?:null|[0-9]*\.?[0-9]*(?:e[0-9]*)?|0x[0-9a-f]*|x|b|_[a-z0-9]+)$/i;

/**
 * Reads the values of one `INSERT INTO … VALUES` as it streams: it counts the rows (a `(`
 * at depth 0) and finds the `;` that ends the statement, and refuses anything a dumper
 * never writes there — function calls, subqueries, comments, a second statement, a
 * backslash outside a string — so that the client can only ever insert rows.
 */
export class ValuesScanner {
  rows = 0;
  /** Newlines seen (for line numbers). */
  newlines = 0;
  private inString = false;
  private escaped = false;
  private depth = 0;
  private word = '';
  private wordLong = false;
  private longHex = false;
  private lastMinus = false;
  private pendingQuote = false;
  private readonly line: number;

  constructor(line: number) {
    this.line = line;
  }

  /** Scans from `pos`; returns the index just past the ending `;`, or -1 if it is not here yet. */
  scan(buf: Buffer, pos: number): number {
    let i = pos;
    const n = buf.length;
    while (i < n) {
      if (this.escaped) {
        this.escaped = false;
        i++;
        continue;
      }
      if (this.inString) {
        const q = buf.indexOf(Byte.Quote, i);
        const stop = q < 0 ? n : q;
        const b = buf.subarray(i, stop).indexOf(Byte.Backslash);
        if (b >= 0) {
          // An escape before the next quote: step past it and the byte it escapes.
          this.escaped = true;
          i += b + 1;
          continue;
        }
        if (q < 0) return -1;
        if (q + 1 === n) {
          // A quote at the end of the piece: a doubled '' may go on in the next one.
          this.inString = false;
          this.pendingQuote = true;
          return -1;
        }
        this.inString = buf[q + 1] === Byte.Quote;
        i = this.inString ? q + 2 : q + 1;
        continue;
      }
      if (this.pendingQuote) {
        this.pendingQuote = false;
        if (buf[i] === Byte.Quote) {
          this.inString = true;
          i++;
          continue;
        }
      }
      const c = buf[i]!;
      if (isWordByte(c) || c === 0x2e) {
        this.lastMinus = false;
        this.addWordByte(c);
        i++;
        continue;
      }
      this.endWord();
      if (c === Byte.Minus) {
        if (this.lastMinus) throw this.refuse('-- (a comment) between values');
        this.lastMinus = true;
        i++;
        continue;
      }
      this.lastMinus = false;
      if (separator[c]) {
        if (c === Byte.Newline) this.newlines++;
        i++;
        continue;
      }
      switch (c) {
        case Byte.Quote:
          this.inString = true;
          break;
        case Byte.Open:
          if (this.depth > 0) throw this.refuse('an expression (a parenthesis inside a row) between values');
          this.depth = 1;
          this.rows++;
          break;
        case Byte.Close:
          if (this.depth !== 1) throw this.refuse('a ) that closes no row');
          this.depth = 0;
          break;
        case Byte.Semicolon:
          if (this.depth !== 0) throw this.refuse('a ; inside a row');
          return i + 1;
        default:
          throw this.refuse(
            c === Byte.Backslash
              ? 'a backslash outside a string (a client command such as \\! or \\.)'
              : `'${String.fromCharCode(c)}' between values, where only numbers, NULL, hex and strings stand`,
          );
      }
      i++;
    }
    return -1;
  }

  private addWordByte(c: number) {
    if (this.depth === 0) throw this.refuse('a word outside a row');
    if (this.word.length < 24) {
      this.word += String.fromCharCode(c);
      return;
    }
    // A long word is a long number or hex literal: its first bytes tell which, the rest must fit.
    if (!this.wordLong) {
      this.wordLong = true;
      this.longHex = /^0x[0-9a-f]+$/i.test(this.word);
      if (!this.longHex && !/^[0-9.]+$/.test(this.word))
        throw this.refuse(`'${this.word}…' between values (a name or a keyword)`);
    }
    const digit = c >= 0x30 && c <= 0x39;
    const hex = digit || (c >= 0x41 && c <= 0x46) || (c >= 0x61 && c <= 0x66);
    if (this.longHex ? !hex : !(digit || c === 0x2e || c === 0x45 || c === 0x65)) {
      throw this.refuse(`'${this.word}…${String.fromCharCode(c)}' between values (a name or a keyword)`);
    }
  }

  private endWord() {
    if (!this.word) return;
    const word = this.word;
    const long = this.wordLong;
    this.word = '';
    this.wordLong = false;
    if (!long && !valueWord.test(word))
      throw this.refuse(`'${word}' between values (a function, a name or a keyword)`);
  }

  private refuse(why: string) {
    return new UnsafeDumpError(this.line + this.newlines, why);
  }
}

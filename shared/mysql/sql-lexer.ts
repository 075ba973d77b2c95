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

/** Byte classes between the values of an INSERT (outside strings). */
const enumClass = {
  other: 0,
  space: 1,
  newline: 2,
  comma: 3,
  digit: 4,
  letter: 5,
  dot: 6,
  open: 7,
  close: 8,
  quote: 9,
  minus: 10,
  plus: 11,
  semicolon: 12,
  backslash: 13,
} as const;
const byteClass = new Uint8Array(256);
for (const c of ' \t\r') byteClass[c.charCodeAt(0)] = enumClass.space;
byteClass[0x0a] = enumClass.newline;
byteClass[0x2c] = enumClass.comma;
for (let c = 0x30; c <= 0x39; c++) byteClass[c] = enumClass.digit;
for (let c = 0; c < 256; c++) if (byteClass[c] === 0 && isWordByte(c)) byteClass[c] = enumClass.letter;
byteClass[0x2e] = enumClass.dot;
byteClass[0x28] = enumClass.open;
byteClass[0x29] = enumClass.close;
byteClass[0x27] = enumClass.quote;
byteClass[0x2d] = enumClass.minus;
byteClass[0x2b] = enumClass.plus;
byteClass[0x3b] = enumClass.semicolon;
byteClass[0x5c] = enumClass.backslash;

/** What the word being read is: nothing, a number, a 0 that may start hex, hex, a name. */
const Word = { none: 0, number: 1, zero: 2, hex: 3, name: 4 } as const;
type WordState = (typeof Word)[keyof typeof Word];
const isHexDigit = (c: number) =>
  (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x46) || (c >= 0x61 && c <= 0x66);
/** The only names a dumper writes between values: NULL, x'…' and b'…' prefixes, charset introducers (_binary). */
const valueName = /^(?:null|x|b|_[a-z0-9]+)$/i;
const maxName = 32;

/**
 * Whole rows as the dumpers write them, matched natively (several times faster than a byte
 * loop): a string (escapes and doubled quotes inside; never followed by another quote, so
 * it is read as greedily as the client reads it), a number, hex, NULL, or an introduced
 * string; then `,`, `,\n` or the closing `;`. It takes only what the byte reader accepts.
 * Strings are matched as an unrolled loop (runs of plain characters between escapes): a
 * nested quantifier would backtrack exponentially on a string cut by the end of a piece.
 */
const stringRegex = String.raw`'[^'\\]*(?:(?:\\[^]|'')[^'\\]*)*'(?!')`;
const valueRegex = `(?:${stringRegex}|-?[0-9.]+(?:[eE][-+]?[0-9]+)?|0x[0-9A-Fa-f]*|NULL|_[a-z0-9]+ ?${stringRegex}|[xXbB]'[0-9A-Fa-f]*')`;
const rowsRegex = new RegExp(String.raw`\(${valueRegex}(?:,${valueRegex})*\)(?:,\n?|;)`, 'y');

/**
 * Reads the values of one `INSERT INTO … VALUES` as it streams: it counts the rows (a `(`
 * at depth 0) and finds the `;` that ends the statement, and refuses anything a dumper
 * never writes there — function calls, subqueries, names, comments, a second statement, a
 * backslash outside a string — so that the client can only ever insert rows. It runs on
 * every byte of a restore: strings are skipped with indexOf, the rest through a class table.
 */
export class ValuesScanner {
  rows = 0;
  /** Newlines seen (for line numbers). */
  newlines = 0;
  private inString = false;
  private escaped = false;
  /** A quote ended the last piece: it closes the string unless a second one follows. */
  private pendingQuote = false;
  private inRow = false;
  private word: WordState = Word.none;
  private name = '';
  private lastMinus = false;
  private readonly line: number;

  constructor(line: number) {
    this.line = line;
  }

  /** Scans from `pos`; returns the index just past the ending `;`, or -1 if it is not here yet. */
  scan(buf: Buffer, pos: number): number {
    const n = buf.length;
    // One latin1 view of the piece (a byte a character), for the rows regex.
    const text = buf.toString('latin1', pos, n);
    let i = pos;
    while (i < n) {
      if (this.betweenRows()) {
        rowsRegex.lastIndex = i - pos;
        let at = i - pos;
        while (rowsRegex.test(text)) {
          at = rowsRegex.lastIndex;
          this.rows++;
          const last = text.charCodeAt(at - 1);
          if (last === 0x3b) return pos + at;
          if (last === 0x0a) this.newlines++;
        }
        i = pos + at;
        if (i >= n) return -1;
      }
      const slow = this.slowScan(buf, i);
      if (slow.ended) return slow.at;
      i = slow.at;
    }
    return -1;
  }

  /** Between two rows, with nothing pending: where the rows regex can take over. */
  private betweenRows(): boolean {
    return (
      !this.inString &&
      !this.inRow &&
      this.word === Word.none &&
      !this.escaped &&
      !this.pendingQuote &&
      !this.lastMinus
    );
  }

  /**
   * Reads byte by byte what the rows regex does not take (the start of the values, a row cut
   * by the end of a piece, a row of an unusual shape), until the next row starts after one
   * closed here, the `;`, or the end of the piece; refuses whatever no dumper writes.
   */
  private slowScan(buf: Buffer, pos: number): { at: number; ended: boolean } {
    const n = buf.length;
    let i = pos;
    let closed = false;
    if (this.escaped && i < n) {
      this.escaped = false;
      i++;
    }
    if (this.pendingQuote && i < n) {
      this.pendingQuote = false;
      if (buf[i] === 0x27) {
        this.inString = true;
        i++;
      }
    }
    // The state lives in locals while the loop runs (this runs on every byte of a restore).
    let inRow = this.inRow;
    let newlines = this.newlines;
    let rows = this.rows;
    const save = () => {
      this.inRow = inRow;
      this.newlines = newlines;
      this.rows = rows;
    };
    // The next quote and backslash at or after i, each found once and reused (linear overall).
    let nextQuote = -2;
    let nextBackslash = -2;
    while (i < n) {
      if (this.inString) {
        // Most strings are short: read them here, and only a long one through indexOf.
        const shortEnd = Math.min(n, i + 64);
        let k = i;
        while (k < shortEnd) {
          const c = buf[k]!;
          if (c === 0x27 || c === 0x5c) break;
          k++;
        }
        if (k < shortEnd) {
          if (buf[k] === 0x5c) {
            i = k + 2;
            if (i > n) this.escaped = true;
            continue;
          }
          if (k + 1 === n) {
            this.inString = false;
            this.pendingQuote = true;
            i = n;
            break;
          }
          if (buf[k + 1] === 0x27) {
            i = k + 2;
            continue;
          }
          this.inString = false;
          i = k + 1;
          continue;
        }
        if (k === n) break;
        i = k;
        if (nextQuote !== -1 && nextQuote < i) nextQuote = buf.indexOf(0x27, i);
        if (nextBackslash !== -1 && nextBackslash < i) nextBackslash = buf.indexOf(0x5c, i);
        if (nextBackslash >= 0 && (nextQuote < 0 || nextBackslash < nextQuote)) {
          // An escape: skip it and the byte it escapes.
          i = nextBackslash + 2;
          if (i > n) this.escaped = true;
          continue;
        }
        if (nextQuote < 0) break;
        if (nextQuote + 1 === n) {
          this.inString = false;
          this.pendingQuote = true;
          i = n;
          break;
        }
        if (buf[nextQuote + 1] === 0x27) {
          i = nextQuote + 2;
          continue;
        }
        this.inString = false;
        i = nextQuote + 1;
        continue;
      }
      if (this.word !== Word.none) {
        i = this.continueWord(buf, i);
        if (i === n) break;
      }
      const c = buf[i]!;
      const cls = byteClass[c]!;
      if (cls === enumClass.minus) {
        if (buf[i + 1] === 0x2d || (i + 1 === n && this.lastMinus))
          throw this.refuse('-- (a comment) between values', newlines);
        this.lastMinus = i + 1 === n;
        i++;
        continue;
      }
      this.lastMinus = false;
      switch (cls) {
        case enumClass.space:
        case enumClass.comma:
        case enumClass.plus:
          break;
        case enumClass.newline:
          newlines++;
          break;
        case enumClass.digit:
        case enumClass.letter:
        case enumClass.dot:
          if (!inRow) throw this.refuse('a value outside a row', newlines);
          this.word = cls === enumClass.letter ? Word.name : c === 0x30 ? Word.zero : Word.number;
          this.name = cls === enumClass.letter ? String.fromCharCode(c) : '';
          i = this.continueWord(buf, i + 1);
          continue;
        case enumClass.quote:
          if (!inRow) throw this.refuse('a string outside a row', newlines);
          this.inString = true;
          break;
        case enumClass.open:
          if (inRow) throw this.refuse('an expression (a parenthesis inside a row) between values', newlines);
          if (closed) {
            save();
            return { at: i, ended: false };
          }
          inRow = true;
          rows++;
          break;
        case enumClass.close:
          if (!inRow) throw this.refuse('a ) that closes no row', newlines);
          inRow = false;
          closed = true;
          break;
        case enumClass.semicolon:
          if (inRow) throw this.refuse('a ; inside a row', newlines);
          save();
          return { at: i + 1, ended: true };
        case enumClass.backslash:
          throw this.refuse('a backslash outside a string (a client command such as \\! or \\.)', newlines);
        default:
          throw this.refuse(
            `'${String.fromCharCode(c)}' between values, where only numbers, NULL, hex and strings stand`,
            newlines,
          );
      }
      i++;
    }
    save();
    return { at: n, ended: false };
  }

  /** Reads on through the word begun before `i`; returns where it ended (or n: it goes on in the next piece). */
  private continueWord(buf: Buffer, start: number): number {
    const n = buf.length;
    let i = start;
    if (this.word === Word.zero && i < n) {
      const c = buf[i]!;
      this.word = c === 0x78 || c === 0x58 ? Word.hex : Word.number;
      if (this.word === Word.hex) i++;
    }
    switch (this.word) {
      case Word.number:
        // Digits, a decimal point and an exponent (1.5e10; its sign is read as a separator).
        for (; i < n; i++) {
          const c = buf[i]!;
          const cls = byteClass[c]!;
          if (cls === enumClass.digit || cls === enumClass.dot || c === 0x65 || c === 0x45) continue;
          if (cls === enumClass.letter) throw this.refuse('a name, a keyword or a function between values');
          break;
        }
        break;
      case Word.hex:
        for (; i < n; i++) {
          const c = buf[i]!;
          if (isHexDigit(c)) continue;
          const cls = byteClass[c]!;
          if (cls === enumClass.letter || cls === enumClass.dot || cls === enumClass.digit) {
            throw this.refuse('a name, a keyword or a function between values');
          }
          break;
        }
        break;
      case Word.name:
        for (; i < n; i++) {
          const c = buf[i]!;
          const cls = byteClass[c]!;
          if (cls !== enumClass.letter && cls !== enumClass.digit && cls !== enumClass.dot) break;
          if (cls === enumClass.dot || this.name.length >= maxName) {
            throw this.refuse('a name, a keyword or a function between values');
          }
          this.name += String.fromCharCode(c);
        }
        break;
    }
    if (i < n) this.endWord();
    return i;
  }

  private endWord() {
    if (this.word === Word.name && !valueName.test(this.name)) {
      throw this.refuse(`'${this.name}' between values (a function, a name or a keyword)`);
    }
    this.word = Word.none;
  }

  private refuse(why: string, newlines = this.newlines) {
    return new UnsafeDumpError(this.line + newlines, why);
  }
}

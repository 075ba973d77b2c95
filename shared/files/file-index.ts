/**
 * The index of a files backup (`index.jsonl.zst[.age]`, beside the archive): one JSON line per
 * entry in the archive's order, written while the archive is made from the same read of each
 * file, so that a verification can check every restored file's size and sha256. A header line
 * opens it and an end line with the totals closes it, so a cut index is told from a short one.
 *
 *   {"index":"lifeboat-files","format":1}
 *   {"type":"directory","path":"a"}
 *   {"type":"file","path":"a/b.txt","size":12,"sha256":"…"}
 *   {"type":"symlink","path":"a/l","target":"b.txt"}
 *   {"end":true,"files":1,"directories":1,"symlinks":1,"bytes":12}
 *
 * The index comes from storage, so it is not trusted: a verification never opens a path it
 * names; it walks the restored folder and compares what it finds with the index, line by line.
 */
import { once } from 'node:events';
import { PassThrough, type Readable } from 'node:stream';
import { StringDecoder } from 'node:string_decoder';
import type { FilesFacts } from './backup.ts';

export const indexFormat = 'index.jsonl';
const header = { index: 'lifeboat-files', format: 1 };

export type IndexEntry =
  | { type: 'file'; path: string; size: number; sha256: string }
  | { type: 'symlink'; path: string; target: string }
  | { type: 'directory'; path: string };

/** The lines of the index as the archive is made; `source` is what writeArtifact stores. */
export class IndexWriter {
  readonly source = new PassThrough();

  constructor() {
    this.source.write(`${JSON.stringify(header)}\n`);
  }

  /** Adds an entry; waits while the upload of the index is behind (its buffer stays small). */
  async add(entry: IndexEntry): Promise<void> {
    if (!this.source.write(`${JSON.stringify(entry)}\n`)) await once(this.source, 'drain');
  }

  finish(facts: FilesFacts): void {
    this.source.end(`${JSON.stringify({ end: true, ...facts })}\n`);
  }
}

/** Damage of the index: what a verification reports as the backup's, naming the line. */
export class IndexError extends Error {
  override name = 'IndexError';
}

const isCount = (n: unknown): n is number => typeof n === 'number' && Number.isSafeInteger(n) && n >= 0;
const shown = (text: string) => JSON.stringify(text.length > 200 ? `${text.slice(0, 200)}…` : text);

/** A path of the index as the archive names it: relative, normalised, inside the folder. */
function checkPath(value: unknown, line: number): string {
  if (typeof value !== 'string' || value === '')
    throw new IndexError(`index line ${line}: 'path' is missing or not text`);
  if (value.includes('\0')) throw new IndexError(`index line ${line}: the path ${shown(value)} holds a NUL`);
  if (value.startsWith('/') || value.split('/').some((p) => p === '..' || p === '.' || p === ''))
    throw new IndexError(
      `index line ${line}: the path ${shown(value)} is not a plain relative path (no leading '/', '..', '.' or '//')`,
    );
  return value;
}

function checkEntry(value: Record<string, unknown>, line: number): IndexEntry {
  const path = checkPath(value.path, line);
  switch (value.type) {
    case 'file':
      if (!isCount(value.size)) throw new IndexError(`index line ${line}: 'size' is not a count`);
      if (typeof value.sha256 !== 'string' || !/^[0-9a-f]{64}$/.test(value.sha256))
        throw new IndexError(`index line ${line}: 'sha256' is not 64 hex digits`);
      return { type: 'file', path, size: value.size, sha256: value.sha256 };
    case 'symlink':
      if (typeof value.target !== 'string') throw new IndexError(`index line ${line}: 'target' is not text`);
      return { type: 'symlink', path, target: value.target };
    case 'directory':
      return { type: 'directory', path };
    default:
      throw new IndexError(`index line ${line}: unknown entry type; accepted: file, symlink, directory`);
  }
}

/** An index line holds one path (and a symlink's target): longer ones are damage. */
const maxLineBytes = 64 * 1024;

/** The lines of a stream (errors of the stream are thrown), each at most maxLineBytes. */
async function* lines(stream: Readable): AsyncGenerator<string> {
  const decoder = new StringDecoder('utf8');
  let rest = '';
  for await (const chunk of stream) {
    const parts = (rest + decoder.write(chunk as Buffer)).split('\n');
    rest = parts.pop()!;
    if (rest.length > maxLineBytes)
      throw new IndexError(`an index line is longer than ${maxLineBytes} bytes`);
    yield* parts;
  }
  rest += decoder.end();
  if (rest !== '') yield rest;
}

/**
 * The entries of an index, checked as they are read: the header first, known entries with
 * plain relative paths, the end line last. Once every entry was yielded, the totals of the end
 * line must match them (a cut or padded index fails). Everything else is an IndexError.
 */
export async function* readIndex(stream: Readable): AsyncGenerator<IndexEntry, FilesFacts> {
  const found: FilesFacts = { files: 0, directories: 0, symlinks: 0, bytes: 0 };
  let line = 0;
  let end: Record<string, unknown> | undefined;
  for await (const text of lines(stream)) {
    line++;
    if (end) throw new IndexError(`index line ${line}: there is more after the end line`);
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch {
      throw new IndexError(`index line ${line}: not JSON`);
    }
    if (!value || typeof value !== 'object' || Array.isArray(value))
      throw new IndexError(`index line ${line}: not a JSON object`);
    const fields = value as Record<string, unknown>;
    if (line === 1) {
      if (fields.index !== header.index || fields.format !== header.format)
        throw new IndexError('index line 1: not the header of a Lifeboat files index of format 1');
      continue;
    }
    if (fields.end === true) {
      end = fields;
      continue;
    }
    const entry = checkEntry(fields, line);
    if (entry.type === 'file') {
      found.files++;
      found.bytes += entry.size;
    } else if (entry.type === 'symlink') found.symlinks++;
    else found.directories++;
    yield entry;
  }
  if (line === 0) throw new IndexError('the index is empty');
  if (!end) throw new IndexError(`the index ends after line ${line} without its end line (cut short)`);
  for (const key of ['files', 'directories', 'symlinks', 'bytes'] as const) {
    if (!isCount(end[key])) throw new IndexError(`the index's end line has no count of ${key}`);
    if (end[key] !== found[key])
      throw new IndexError(`the index's end line records ${end[key]} ${key}, its lines list ${found[key]}`);
  }
  return found;
}

import { messageOf, UserError } from '../errors.ts';
import type { InputReader } from './spec.ts';

/** Several bad inputs at once: one line each. */
export class InputErrors extends UserError {
  override name = 'InputErrors';
  readonly lines: string[];
  constructor(lines: string[]) {
    super(lines.join('\n'));
    this.lines = lines;
  }
}

/**
 * Collects the problems of every input before failing, so that a user fixes them all in
 * one go. `field` runs one parser and records its UserError instead of throwing.
 */
export class InputCollector {
  private readonly problems: string[] = [];

  field<T>(parse: () => T): T {
    try {
      return parse();
    } catch (error) {
      if (!(error instanceof UserError)) throw error;
      this.problems.push(...(error instanceof InputErrors ? error.lines : [error.message]));
      return undefined as T;
    }
  }

  finish(): void {
    if (this.problems.length) throw new InputErrors(this.problems);
  }
}

/**
 * What reading a command's inputs found besides their values: problems, refused together with
 * the parser's own (one line each, before any work), and warnings, logged once the inputs are
 * accepted. Kept per reader, so that checks made where an input is read (run.ts) and in the
 * shared parsers (commands/common.ts) reach runCommand without changing parse().
 */
export interface ReadNotes {
  problems: string[];
  warnings: string[];
}

const notesByReader = new WeakMap<InputReader, ReadNotes>();

export function notesOf(read: InputReader): ReadNotes {
  let notes = notesByReader.get(read);
  if (!notes) {
    notes = { problems: [], warnings: [] };
    notesByReader.set(read, notes);
  }
  return notes;
}

/** A problem found while reading: refused with the other bad inputs (once, however often read). */
export function refuseInput(read: InputReader, line: string): void {
  const { problems } = notesOf(read);
  if (!problems.includes(line)) problems.push(line);
}

/** A warning found while reading, logged (once) when the inputs are accepted. */
export function warnInput(read: InputReader, line: string): void {
  const { warnings } = notesOf(read);
  if (!warnings.includes(line)) warnings.push(line);
}

export function requireInput(name: string, value: string | undefined, accepted: string): string {
  const v = value?.trim();
  if (!v) throw new UserError(`${name}: required; accepted: ${accepted}`);
  return v;
}

/** One of a fixed set of words (case-insensitive), or the fallback when empty. */
export function parseChoice<T extends string>(
  name: string,
  value: string | undefined,
  choices: readonly T[],
  fallback: T,
): T {
  const v = (value?.trim().toLowerCase() || fallback) as T;
  if (!choices.includes(v)) {
    const accepted = `${choices.slice(0, -1).join(', ')} or ${choices[choices.length - 1]}`;
    throw new UserError(`${name}: '${value}' is not accepted; accepted: ${accepted}`);
  }
  return v;
}

export function parseBoolean(name: string, value: string | undefined, fallback: boolean): boolean {
  const v = value?.trim().toLowerCase();
  if (!v) return fallback;
  if (['true', 'yes', '1', 'on'].includes(v)) return true;
  if (['false', 'no', '0', 'off'].includes(v)) return false;
  throw new UserError(`${name}: '${value}' is not accepted; accepted: true or false`);
}

/** auto, true or false (and the other spellings parseBoolean takes); empty is auto. */
export function parseAutoBoolean(name: string, value: string | undefined): 'auto' | boolean {
  const v = value?.trim().toLowerCase();
  if (!v || v === 'auto') return 'auto';
  try {
    return parseBoolean(name, value, false);
  } catch {
    throw new UserError(`${name}: '${value}' is not accepted; accepted: auto, true or false`);
  }
}

const durationUnits: Record<string, number> = { ms: 0.001, s: 1, m: 60, h: 3600, d: 86400, w: 604800 };

/** The longest a Node.js timer can wait (2^31-1 ms, 24.8 days); a longer one fires at once. */
export const maxTimerSeconds = (2 ** 31 - 1) / 1000;

/**
 * Parses `90s`, `10m`, `6h`, `1h30m`, `2d`, `1w` into seconds; with `maxSeconds`, longer is
 * refused (a duration that a timer waits for: see maxTimerSeconds).
 */
export function parseDuration(
  name: string,
  value: string | undefined,
  fallback?: string,
  maxSeconds?: number,
): number {
  const v = (value?.trim() || fallback || '').toLowerCase();
  const accepted = 'a duration such as 90s, 10m, 6h, 1h30m, 2d or 1w';
  if (!v) throw new UserError(`${name}: required; accepted: ${accepted}`);
  const parts = [...v.matchAll(/(\d+(?:\.\d+)?)(ms|s|m|h|d|w)/g)];
  if (parts.length === 0 || parts.map((p) => p[0]).join('') !== v) {
    throw new UserError(`${name}: '${value}' is not accepted; accepted: ${accepted}`);
  }
  const seconds = parts.reduce((sum, p) => sum + Number(p[1]) * (durationUnits[p[2]!] ?? 0), 0);
  if (seconds <= 0) throw new UserError(`${name}: '${value}' must be longer than zero`);
  if (maxSeconds !== undefined && seconds > maxSeconds) {
    throw new UserError(
      `${name}: '${value ?? v}' is longer than a timer can wait; accepted: at most ${formatWhole(maxSeconds)}`,
    );
  }
  return seconds;
}

/** Whole minutes as the duration inputs write them, rounded down: 2147483.647 s is 24d20h31m. */
function formatWhole(seconds: number): string {
  let minutes = Math.floor(seconds / 60);
  const days = Math.floor(minutes / 1440);
  minutes -= days * 1440;
  const hours = Math.floor(minutes / 60);
  minutes -= hours * 60;
  return `${days ? `${days}d` : ''}${hours ? `${hours}h` : ''}${minutes ? `${minutes}m` : ''}` || '0m';
}

export function parseInteger(
  name: string,
  value: string | undefined,
  range: { min: number; max: number },
): number | undefined {
  const v = value?.trim();
  if (!v) return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n < range.min || n > range.max) {
    throw new UserError(
      `${name}: '${value}' is not accepted; accepted: a whole number from ${range.min} to ${range.max}`,
    );
  }
  return n;
}

const sizeUnits: Record<string, number> = {
  b: 1,
  kb: 1e3,
  mb: 1e6,
  gb: 1e9,
  tb: 1e12,
  kib: 2 ** 10,
  mib: 2 ** 20,
  gib: 2 ** 30,
  tib: 2 ** 40,
};

/** Parses `500GiB`, `1.5TB`, `200MB` or a number of bytes. */
export function parseSize(name: string, value: string | undefined): number | undefined {
  const v = value?.trim();
  if (!v) return undefined;
  const m = /^(\d+(?:\.\d+)?)\s*([a-zA-Z]*)$/.exec(v);
  const unit = sizeUnits[(m?.[2] || 'b').toLowerCase()];
  if (!m || unit === undefined) {
    throw new UserError(
      `${name}: '${value}' is not accepted; accepted: a size such as 500GiB, 1.5TB or 200MB`,
    );
  }
  return Math.floor(Number(m[1]) * unit);
}

/** A parse's result, or the lines of the inputs it refused (any other error is thrown). */
export function parseCollecting<T>(parse: () => T): { options: T | undefined; lines: string[] } {
  try {
    return { options: parse(), lines: [] };
  } catch (error) {
    if (!(error instanceof UserError)) throw error;
    return { options: undefined, lines: error instanceof InputErrors ? error.lines : [messageOf(error)] };
  }
}

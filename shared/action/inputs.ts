import { UserError } from '../errors.ts';

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

const durationUnits: Record<string, number> = { ms: 0.001, s: 1, m: 60, h: 3600, d: 86400, w: 604800 };

/** Parses `90s`, `10m`, `6h`, `1h30m`, `2d`, `1w` into seconds. */
export function parseDuration(name: string, value: string | undefined, fallback?: string): number {
  const v = (value?.trim() || fallback || '').toLowerCase();
  const accepted = 'a duration such as 90s, 10m, 6h, 1h30m, 2d or 1w';
  if (!v) throw new UserError(`${name}: required; accepted: ${accepted}`);
  const parts = [...v.matchAll(/(\d+(?:\.\d+)?)(ms|s|m|h|d|w)/g)];
  if (parts.length === 0 || parts.map((p) => p[0]).join('') !== v) {
    throw new UserError(`${name}: '${value}' is not accepted; accepted: ${accepted}`);
  }
  const seconds = parts.reduce((sum, p) => sum + Number(p[1]) * (durationUnits[p[2]!] ?? 0), 0);
  if (seconds <= 0) throw new UserError(`${name}: '${value}' must be longer than zero`);
  return seconds;
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

import { UserError } from '../errors.ts';

/** The SQL is not a complete dump: a backup the user must know about, not a bug. */
export class DumpFormatError extends UserError {
  override name = 'DumpFormatError';
}

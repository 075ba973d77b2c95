/**
 * A failure the user can fix: a bad input, missing credentials, a backup that does not
 * exist, a target that is not empty. Its message is one line that names the input and
 * says what is accepted. Anything else that is thrown is an unexpected failure.
 */
export class UserError extends Error {
  override name = 'UserError';
}

/** The message of any thrown value, on one line. */
export function messageOf(error: unknown): string {
  const text = error instanceof Error ? error.message : String(error);
  return text.replace(/\s*\n\s*/g, ' ').trim();
}

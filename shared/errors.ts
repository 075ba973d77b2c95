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

/** What a file-system error means for the user, and what fixes it. */
export interface FileSystemProblem {
  /** The errno code: ENOSPC, EDQUOT, EACCES, EPERM or EROFS. */
  code: string;
  problem: string;
  fix: string;
}

const fileSystemProblems: Record<string, Omit<FileSystemProblem, 'code'>> = {
  ENOSPC: {
    problem: 'no space left on the device',
    fix: 'free space on that disk or use a larger one',
  },
  EDQUOT: { problem: 'the disk quota is used up', fix: 'raise the quota or free space' },
  EACCES: {
    problem: 'permission denied',
    fix: 'run Lifeboat as a user that may write there, or fix the owner and mode (chown, chmod)',
  },
  EPERM: {
    problem: 'operation not permitted',
    fix: 'check the owner and for an immutable flag (lsattr; chattr -i removes it)',
  },
  EROFS: {
    problem: 'the file system is read-only',
    fix: 'remount it read-write or choose a folder on a writable disk',
  },
};

/** The problem a file-system error (full disk, no permission, read-only) is, or undefined for others. */
export function fileSystemProblem(error: unknown): FileSystemProblem | undefined {
  const code = (error as NodeJS.ErrnoException | undefined)?.code;
  if (typeof code !== 'string' || !Object.hasOwn(fileSystemProblems, code)) return undefined;
  return { code, ...fileSystemProblems[code]! };
}

/**
 * A UserError for a file-system error the user can fix, naming `subject` (the input, e.g.
 * "target"), the path and the fix: "target: no space left on the device writing /srv/x
 * (ENOSPC); free space on that disk or use a larger one". Undefined for other errors.
 */
export function fileSystemError(
  error: unknown,
  subject: string,
  file = (error as NodeJS.ErrnoException | undefined)?.path,
  fix?: string,
): UserError | undefined {
  const known = fileSystemProblem(error);
  if (!known) return undefined;
  const where = file ? ` at ${file}` : '';
  return new UserError(`${subject}: ${known.problem}${where} (${known.code}); ${fix ?? known.fix}`, {
    cause: error,
  });
}

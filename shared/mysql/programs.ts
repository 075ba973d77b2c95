import { access, constants } from 'node:fs/promises';
import path from 'node:path';

/** The first of `names` found as an executable on PATH, or undefined. */
export async function findProgram(
  names: string[],
  searchPath = process.env.PATH ?? '',
): Promise<string | undefined> {
  const dirs = searchPath.split(path.delimiter).filter(Boolean);
  for (const name of names) {
    for (const dir of [...dirs, '/usr/sbin', '/usr/local/sbin']) {
      const candidate = path.join(dir, name);
      try {
        await access(candidate, constants.X_OK);
        return candidate;
      } catch {}
    }
  }
  return undefined;
}

import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';

/**
 * Writes `file` whole or not at all: a temp file in the same folder (created, never
 * overwritten), then renamed over it. On any failure the temp file is removed.
 */
export async function writeAtomically(file: string, content: string): Promise<void> {
  const target = path.resolve(file);
  const temp = path.join(
    path.dirname(target),
    `.${path.basename(target)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`,
  );
  try {
    await fs.writeFile(temp, content, { flag: 'wx', mode: 0o644 });
    await fs.rename(temp, target);
  } catch (error) {
    await fs.rm(temp, { force: true });
    throw error;
  }
}

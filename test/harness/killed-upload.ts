/**
 * A backup killed with SIGKILL in the middle of its upload, as the OOM killer or a cancelled
 * runner does: a child process begins a backup in a real storage (the in-progress marker)
 * and streams an artifact that never ends; once `ready` says the upload is under way, the
 * child is killed with signal 9 and nothing of Lifeboat's cleanup runs.
 */
import { spawn } from 'node:child_process';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { repoRoot } from './runner.ts';

const child = (url: string, set: string) => `
import { Readable } from 'node:stream';
const { openStorage } = await import(${JSON.stringify(pathToFileURL(path.join(repoRoot, 'shared/storage/open.ts')).href)});
const { Catalog } = await import(${JSON.stringify(pathToFileURL(path.join(repoRoot, 'shared/catalog/catalog.ts')).href)});
const storage = openStorage(${JSON.stringify(url)});
const pending = await new Catalog(storage).begin(${JSON.stringify(set)}, 'full', new Date());
process.stdout.write(JSON.stringify({ id: pending.id }) + '\\n');
let n = 0;
const endless = new Readable({
  read() {
    setTimeout(() => this.push(Buffer.alloc(1 << 20, n++ % 251)), 20);
  },
});
await storage.putStream(pending.key('files.tar'), endless);
`;

/** Runs a backup into `url` and kills it (SIGKILL) once `ready()` is true; returns the backup id. */
export async function killedUpload(
  url: string,
  env: Record<string, string>,
  set: string,
  ready: () => Promise<boolean>,
): Promise<string> {
  const proc = spawn(
    process.execPath,
    ['--openssl-legacy-provider', '--input-type=module', '-e', child(url, set)],
    {
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  let stdout = '';
  let stderr = '';
  proc.stdout.setEncoding('utf8').on('data', (d) => (stdout += d));
  proc.stderr.setEncoding('utf8').on('data', (d) => (stderr += d));
  const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
  try {
    const deadline = Date.now() + 60_000;
    while (!(stdout.includes('\n') && (await ready()))) {
      if (proc.exitCode !== null) throw new Error(`the backup exited before it was killed: ${stderr}`);
      if (Date.now() > deadline) throw new Error(`the upload never got under way: ${stderr}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  } finally {
    proc.kill('SIGKILL');
    await exited;
  }
  return JSON.parse(stdout.split('\n')[0]!).id as string;
}

/**
 * Debian's chromium, headless, as the report's real browser: the DOM it parsed and a screenshot
 * of a local page. Each run has a profile folder of its own, removed afterwards, and runs in a
 * process group of its own that is killed (by PID) if it outlives its time.
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { tempDir } from './servers.ts';

export const chromiumBinary = '/usr/bin/chromium';
export const chromiumInstalled = existsSync(chromiumBinary);

async function chromium(args: string[], timeoutMs = 60_000): Promise<string> {
  const profile = await tempDir('chromium');
  const child = spawn(
    chromiumBinary,
    [
      '--headless',
      '--no-sandbox', // the tests run as root in CI; the page is our own file and runs no script
      '--disable-gpu',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--hide-scrollbars',
      `--user-data-dir=${profile}`,
      ...args,
    ],
    { stdio: ['ignore', 'pipe', 'pipe'], detached: true },
  );
  let out = '';
  let err = '';
  child.stdout!.on('data', (c: Buffer) => (out += c));
  child.stderr!.on('data', (c: Buffer) => (err += c));
  const timer = setTimeout(() => process.kill(-child.pid!, 'SIGKILL'), timeoutMs);
  const code = await new Promise<number | null>((resolve) => child.once('close', resolve));
  clearTimeout(timer);
  try {
    process.kill(-child.pid!, 'SIGKILL'); // helpers of the browser that outlived it
  } catch {}
  await fs.rm(profile, { recursive: true, force: true });
  if (code !== 0) throw new Error(`chromium exited ${code}: ${err.slice(-2000)}`);
  return out;
}

/** The DOM of the page after chromium loaded it, serialised. */
export function dumpDom(file: string): Promise<string> {
  return chromium(['--dump-dom', pathToFileURL(path.resolve(file)).href]);
}

/** A PNG screenshot of the page at `width`×`height`. */
export async function screenshot(file: string, png: string, width = 1200, height = 1600): Promise<void> {
  await chromium([
    `--screenshot=${path.resolve(png)}`,
    `--window-size=${width},${height}`,
    pathToFileURL(path.resolve(file)).href,
  ]);
  if (!existsSync(png)) throw new Error(`chromium wrote no screenshot to ${png}`);
}

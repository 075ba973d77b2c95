/** Runs the CLI in a child process and measures its wall time and peak resident memory (VmHWM). */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { baseEnv, repoRoot } from './runner.ts';

export interface Measured {
  code: number;
  seconds: number;
  peakRssBytes: number;
  stderr: string;
  stdout: string;
}

function peakOf(pid: number): number {
  try {
    const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
    const kb = /VmHWM:\s+(\d+) kB/.exec(status)?.[1];
    return kb ? Number(kb) * 1024 : 0;
  } catch {
    return 0;
  }
}

/** Runs a command (default: the lifeboat CLI) and samples its high-water RSS every 50 ms until it exits. */
export function measure(
  args: string[],
  env: Record<string, string>,
  options: { cwd?: string; command?: string } = {},
): Promise<Measured> {
  const command = options.command ?? process.execPath;
  const argv = options.command ? args : [path.join(repoRoot, 'bin/lifeboat.js'), ...args];
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const child = spawn(command, argv, {
      env: baseEnv(env),
      cwd: options.cwd ?? repoRoot,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let peak = 0;
    let stdout = '';
    let stderr = '';
    const timer = setInterval(() => {
      if (child.pid) peak = Math.max(peak, peakOf(child.pid));
    }, 50);
    child.stdout.setEncoding('utf8').on('data', (d) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d) => (stderr += d));
    child.once('error', reject);
    // 'exit' fires while /proc still holds the process until it is reaped; sample once more there.
    child.once('exit', () => {
      if (child.pid) peak = Math.max(peak, peakOf(child.pid));
    });
    child.once('close', (code) => {
      clearInterval(timer);
      resolve({
        code: code ?? -1,
        seconds: (performance.now() - started) / 1000,
        peakRssBytes: peak,
        stdout,
        stderr,
      });
    });
  });
}

/**
 * The real Prometheus Pushgateway (Debian's prometheus-pushgateway), started on 127.0.0.1 with
 * a free port and a persistence file of its own, and stopped by its PID; and a scrape of what
 * it holds, parsed from the text format.
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import { freePort } from '../../shared/mysql/ephemeral.ts';
import { tempDir } from './servers.ts';

export const pushgatewayBinary = '/usr/bin/prometheus-pushgateway';
export const pushgatewayInstalled = existsSync(pushgatewayBinary);

export interface Pushgateway {
  url: string;
  /** Every sample the gateway exposes now: `name{labels}` → value. */
  scrape(): Promise<Map<string, number>>;
  stop(): Promise<void>;
}

export async function startPushgateway(): Promise<Pushgateway> {
  const dir = await tempDir('pushgateway');
  const port = await freePort();
  const log = await fs.open(path.join(dir, 'log'), 'w');
  const child = spawn(
    pushgatewayBinary,
    [
      `--web.listen-address=127.0.0.1:${port}`,
      `--persistence.file=${path.join(dir, 'data')}`,
      '--log.level=warn',
    ],
    { stdio: ['ignore', log.fd, log.fd] },
  );
  const url = `http://127.0.0.1:${port}`;
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      const exited = new Promise((resolve) => child.once('exit', resolve));
      process.kill(child.pid!, 'SIGTERM');
      await exited;
    }
    await log.close().catch(() => undefined);
    await fs.rm(dir, { recursive: true, force: true });
  };
  const deadline = Date.now() + 20_000;
  for (;;) {
    const ready = await fetch(`${url}/-/ready`).then(
      (r) => r.ok,
      () => false,
    );
    if (ready) break;
    if (child.exitCode !== null || Date.now() > deadline) {
      const text = await fs.readFile(path.join(dir, 'log'), 'utf8').catch(() => '');
      await stop();
      throw new Error(`the pushgateway did not start: ${text.slice(-2000)}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  return {
    url,
    async scrape() {
      const text = await (await fetch(`${url}/metrics`)).text();
      const samples = new Map<string, number>();
      for (const line of text.split('\n')) {
        if (!line || line.startsWith('#')) continue;
        const at = line.lastIndexOf(' ');
        samples.set(line.slice(0, at), Number(line.slice(at + 1)));
      }
      return samples;
    },
    stop,
  };
}

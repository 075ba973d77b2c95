/**
 * Storage throughput and memory, Lifeboat against peer tools in the same run on the same data.
 *
 *   bash scripts/dev.sh build && node --openssl-legacy-provider bench/storage.ts [GiB]
 *
 * For each server (a folder, s3rver, fauxqs, Azurite, the GCS emulator; all on 127.0.0.1) it
 * backs up a folder holding one incompressible file with `lifeboat backup-files
 * --compression none` and restores it, and times rclone doing the same copies where it can
 * reach that server (and on S3 and Azure with LIFEBOAT_DOWNLOAD_STREAMS=4). Then the whole pipeline on a folder: Lifeboat zstd (+ age) against
 * `tar | zstd -3 (| age)`. Prints MiB/s, ratios (Lifeboat time / peer time) and peak RSS.
 */
import { spawnSync } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { generateIdentity, identityToRecipient } from 'age-encryption';
import { generated } from '../test/harness/data.ts';
import { type Measured, measure } from '../test/harness/measure.ts';
import { storageServers, type TestServer, tempDir } from '../test/harness/servers.ts';
import { recordFigure } from './figures.ts';

const gib = Number(process.argv[2] ?? 1);
const bytes = Math.round(gib * 1024 ** 3);
const mib = (n: number) => n / 1024 ** 2;
const have = (tool: string) => spawnSync('sh', ['-c', `command -v ${tool}`]).status === 0;
const rows: string[][] = [['what', 'server', 'tool', 'MiB/s', 'peak RSS MiB', 'ratio (Lifeboat / peer)']];

function row(what: string, server: string, tool: string, run: Measured, peer?: Measured): void {
  if (run.code !== 0) throw new Error(`${tool} ${what} on ${server} failed: ${run.stderr.slice(-500)}`);
  rows.push([
    what,
    server,
    tool,
    (mib(bytes) / run.seconds).toFixed(0),
    tool === 'lifeboat' ? mib(run.peakRssBytes).toFixed(0) : '',
    peer ? (run.seconds / peer.seconds).toFixed(2) : '',
  ]);
}

const sh = (script: string, env: Record<string, string> = {}) =>
  measure(['-c', script], { ...env }, { command: 'bash' });

/** rclone's remote for a server, from environment variables (no config file). */
function rcloneRemote(server: TestServer): { remote: string; env: Record<string, string> } | undefined {
  if (server.name === 's3rver' || server.name === 'fauxqs') {
    const bucket = server.url.slice(5).split('/')[0];
    return {
      remote: `peer:${bucket}/rclone`,
      env: {
        RCLONE_CONFIG_PEER_TYPE: 's3',
        RCLONE_CONFIG_PEER_PROVIDER: 'Other',
        RCLONE_CONFIG_PEER_ENDPOINT: server.env.AWS_ENDPOINT_URL_S3!,
        RCLONE_CONFIG_PEER_ACCESS_KEY_ID: server.env.AWS_ACCESS_KEY_ID!,
        RCLONE_CONFIG_PEER_SECRET_ACCESS_KEY: server.env.AWS_SECRET_ACCESS_KEY!,
        RCLONE_CONFIG_PEER_FORCE_PATH_STYLE: 'true',
        RCLONE_S3_CHUNK_SIZE: '8M',
        RCLONE_S3_UPLOAD_CONCURRENCY: '4',
      },
    };
  }
  // rclone 1.60 cannot reach Azurite on another port than 10000, nor the GCS emulator.
  if (server.name === 'fs') return { remote: path.join(path.dirname(server.url), 'rclone'), env: {} };
  return undefined;
}

const work = await tempDir('bench');
try {
  const source = path.join(work, 'source');
  await fs.mkdir(source);
  await pipeline(generated(bytes, 5), createWriteStream(path.join(source, 'data.bin')));
  console.error(`data: ${gib} GiB incompressible, in ${source}`);

  for (const [, start] of storageServers) {
    const server = await start();
    try {
      console.error(`${server.name}…`);
      const up = await measure(
        [
          'backup-files',
          '--storage',
          server.url,
          '--set',
          'bench',
          '--source',
          source,
          '--compression',
          'none',
        ],
        server.env,
      );
      const target = path.join(work, `restore-${server.name}`);
      const down = await measure(
        ['restore', '--storage', server.url, '--set', 'bench', '--target', target],
        server.env,
      );
      await fs.rm(target, { recursive: true, force: true });
      // Parallel ranged GETs (S3, Azure): LIFEBOAT_DOWNLOAD_STREAMS=4.
      let downParallel: Measured | undefined;
      if (server.name !== 'fs' && server.name !== 'gcs') {
        downParallel = await measure(
          ['restore', '--storage', server.url, '--set', 'bench', '--target', target],
          { ...server.env, LIFEBOAT_DOWNLOAD_STREAMS: '4' },
        );
        await fs.rm(target, { recursive: true, force: true });
      }
      const peer = have('rclone') ? rcloneRemote(server) : undefined;
      let peerUp: Measured | undefined;
      let peerDown: Measured | undefined;
      if (peer) {
        peerUp = await measure(
          ['copyto', path.join(source, 'data.bin'), `${peer.remote}/data.bin`],
          { ...peer.env, HOME: work },
          { command: 'rclone' },
        );
        if (peerUp.code !== 0)
          console.error(`rclone upload to ${server.name} failed: ${peerUp.stderr.trim().split('\n').at(-1)}`);
        else {
          const copy = path.join(work, 'rclone-down.bin');
          peerDown = await measure(
            ['copyto', `${peer.remote}/data.bin`, copy],
            { ...peer.env, HOME: work },
            { command: 'rclone' },
          );
          const size = (await fs.stat(copy).catch(() => undefined))?.size;
          if (size !== bytes) peerDown = { ...peerDown, code: peerDown.code || 1 };
          await fs.rm(copy, { force: true });
        }
      }
      row('upload', server.name, 'lifeboat', up, peerUp?.code === 0 ? peerUp : undefined);
      if (peerUp?.code === 0) row('upload', server.name, 'rclone', peerUp);
      row('download', server.name, 'lifeboat', down, peerDown?.code === 0 ? peerDown : undefined);
      if (downParallel)
        row(
          'download',
          server.name,
          'lifeboat, 4 streams',
          downParallel,
          peerDown?.code === 0 ? peerDown : undefined,
        );
      for (const [run, streams] of [
        [down, 1],
        [downParallel, 4],
      ] as const) {
        if (run && peerDown?.code === 0 && server.name !== 'fs')
          recordFigure({
            key: 'restore-s3-vs-rclone',
            value: run.seconds / peerDown.seconds,
            unit: 'ratio',
            detail: `${server.name}, ${streams} stream${streams > 1 ? 's' : ''}, ${gib} GiB`,
          });
      }
      recordFigure({
        key: 'rss-files',
        value: mib(up.peakRssBytes),
        unit: 'MiB',
        detail: `backup to ${server.name}, ${gib} GiB`,
      });
      recordFigure({
        key: 'rss-files',
        value: mib(down.peakRssBytes),
        unit: 'MiB',
        detail: `restore from ${server.name}, ${gib} GiB`,
      });
      if (peerDown?.code === 0) row('download', server.name, 'rclone', peerDown);
    } finally {
      await server.stop();
    }
  }

  // The whole pipeline into a folder: tar → zstd (→ age) → file.
  const identity = await generateIdentity();
  const recipient = await identityToRecipient(identity);
  for (const encrypt of [false, true]) {
    const storage = path.join(work, `pipeline-${encrypt}`);
    const args = ['backup-files', '--storage', storage, '--set', 'bench', '--source', source];
    if (encrypt) args.push('--age-recipients', recipient);
    const ours = await measure(args, {});
    const peerTool = encrypt ? 'tar | zstd -3 | age' : 'tar | zstd -3';
    let peer: Measured | undefined;
    if (have('zstd') && (!encrypt || have('age'))) {
      peer = await sh(`tar -C "$SRC" -cf - . | zstd -3 -q ${encrypt ? '| age -r "$RCPT"' : ''} > "$OUT"`, {
        SRC: source,
        RCPT: recipient,
        OUT: path.join(work, 'peer.out'),
        PATH: process.env.PATH ?? '',
      });
    }
    const what = encrypt ? 'backup zstd+age' : 'backup zstd';
    row(what, 'fs', 'lifeboat', ours, peer?.code === 0 ? peer : undefined);
    if (peer?.code === 0)
      recordFigure({
        key: encrypt ? 'files-age-vs-tar' : 'files-zstd-vs-tar',
        value: ours.seconds / peer.seconds,
        unit: 'ratio',
        detail: `vs ${peerTool}, ${gib} GiB incompressible`,
      });
    if (peer?.code === 0) row(what, 'fs', peerTool, peer);
  }
} finally {
  await fs.rm(work, { recursive: true, force: true });
}

const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
for (const [i, r] of rows.entries()) {
  console.log(`| ${r.map((c, j) => c.padEnd(widths[j]!)).join(' | ')} |`);
  if (i === 0) console.log(`| ${widths.map((w) => '-'.repeat(w)).join(' | ')} |`);
}

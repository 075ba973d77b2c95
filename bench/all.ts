/**
 * Every figure of the speed targets in one run: runs each benchmark in turn (storage, MySQL,
 * retention, Kubernetes), collects the figures they record (bench/figures.ts) and prints
 * them against their targets, saying which are met.
 *
 *   bash scripts/dev.sh build && node --openssl-legacy-provider bench/all.ts [GiB, default 1]
 *
 * The peers (rclone, mydumper/myloader, zstd, age) are Debian packages; a row whose peer is
 * missing says so. The Kubernetes row uses the real control plane when its binaries are
 * built (LIFEBOAT_KUBE_BIN, or the cache of scripts/kube-binaries.sh), the fake otherwise.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { kubeBinaries } from '../test/harness/kube-cluster.ts';
import type { Figure } from './figures.ts';

const gib = process.argv[2] ?? '1';
const here = path.dirname(new URL(import.meta.url).pathname);
const figuresFile = path.join(await fs.mkdtemp(path.join(os.tmpdir(), 'lifeboat-bench-')), 'figures.jsonl');

interface Target {
  key: string;
  what: string;
  /** Met when the measured value compares so with the limit. */
  atMost?: number;
  atLeast?: number;
  /** Which of several measurements decides: the worst (default) or the best. */
  decide?: 'worst' | 'best';
}

const targets: Target[] = [
  {
    key: 'dump-vs-mariadb-dump-zstd',
    what: 'dump-mysql (zstd, to a folder) / mariadb-dump | zstd -3',
    atMost: 1.0,
  },
  { key: 'dump-vs-mydumper', what: 'dump-mysql / mydumper -t 2 -c', atMost: 0.8 },
  { key: 'restore-vs-myloader', what: 'restore (staging + swap, all checks) / myloader -t 2', atMost: 0.8 },
  { key: 'restore-vs-zstd-mariadb', what: 'restore / zstd -dc | mariadb', atMost: 0.6 },
  { key: 'files-zstd-vs-tar', what: 'backup-files zstd / tar -c | zstd -3', atMost: 1.2 },
  { key: 'files-age-vs-tar', what: 'backup-files zstd+age / tar | zstd | age', atMost: 1.2 },
  {
    key: 'restore-s3-vs-rclone',
    what: 'restore of a 1 GiB artifact from S3 / rclone copyto',
    atMost: 0.8,
    decide: 'best',
  },
  { key: 'rss-files', what: 'peak RSS, files backup and restore (MiB)', atMost: 200e6 / 2 ** 20 },
  { key: 'rss-mysql', what: 'peak RSS, dump-mysql and restore (MiB)', atMost: 200e6 / 2 ** 20 },
  { key: 'prune-plan', what: 'prune plan of 1,000,000 backups (s)', atMost: 2 },
  { key: 'k8s-export', what: 'backup-k8s export at 100k objects (objects/s)', atLeast: 10_000 },
];

function bench(script: string, args: string[]): void {
  console.error(`\n== node bench/${script} ${args.join(' ')}`);
  const run = spawnSync(process.execPath, ['--openssl-legacy-provider', path.join(here, script), ...args], {
    stdio: ['ignore', 'inherit', 'inherit'],
    env: { ...process.env, LIFEBOAT_BENCH_FIGURES: figuresFile },
  });
  if (run.status !== 0)
    console.error(`bench/${script} failed (exit ${run.status ?? run.signal}); its rows are missing`);
}

const kube = kubeBinaries();
if (kube.reason) console.error(`the Kubernetes row runs on the fake API server: ${kube.reason}`);
const realKube = Boolean(kube.binaries);
bench('storage.ts', [gib]);
bench('mysql.ts', [gib]);
bench('retention.ts', ['1000000']);
bench('k8s.ts', ['100000', ...(realKube ? ['--real'] : [])]);

const figures: Figure[] = (await fs.readFile(figuresFile, 'utf8').catch(() => ''))
  .split('\n')
  .filter(Boolean)
  .map((line) => JSON.parse(line) as Figure);
await fs.rm(path.dirname(figuresFile), { recursive: true, force: true });

const format = (f: Figure) =>
  f.unit === 'objects/s' ? Math.round(f.value).toLocaleString('en') : f.value.toFixed(2);
const lines = ['| figure | target | measured | met |', '|---|---|---|---|'];
for (const target of targets) {
  const measured = figures.filter((f) => f.key === target.key);
  const limit = target.atMost !== undefined ? `≤ ${fmt(target.atMost)}` : `≥ ${fmt(target.atLeast!)}`;
  if (measured.length === 0) {
    lines.push(`| ${cell(target.what)} | ${limit} | not measured (see above) | |`);
    continue;
  }
  const ok = (f: Figure) =>
    target.atMost !== undefined
      ? f.value <= target.atMost
      : f.value >= (target.atLeast ?? Number.NEGATIVE_INFINITY);
  const met = target.decide === 'best' ? measured.some(ok) : measured.every(ok);
  // Memory: the worst of each kind of run; the others, each.
  const shown = (f: Figure) => `${format(f)} (${f.detail ?? ''})`;
  const values = target.key.startsWith('rss-')
    ? `${format(measured.reduce((a, b) => (b.value > a.value ? b : a)))} MiB at most, ${measured.length} runs`
    : measured.map(shown).join('; ');
  lines.push(`| ${cell(target.what)} | ${limit} | ${cell(values)} | ${met ? 'yes' : 'no'} |`);
}
console.log(`\n${lines.join('\n')}`);

/** A table cell: pipes in a command line escaped. */
function cell(text: string): string {
  return text.replaceAll('|', '\\|');
}

function fmt(n: number): string {
  return Number.isInteger(n) ? n.toLocaleString('en') : n.toFixed(n < 10 ? 1 : 0);
}

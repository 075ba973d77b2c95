/**
 * Real ZFS for the tests: zfs-fuse (user-space ZFS 0.7.0, pool version 23, through /dev/fuse;
 * `apt-get install -y zfs-fuse`, as root) and throwaway pools on sparse files.
 *
 * There is one zfs-fuse daemon per machine (its socket, /var/run/zfs/zfs_socket, is fixed; a
 * second daemon refuses to start), shared by every test process:
 * - startZfs() reuses a daemon that answers. One the harness started (its pid is in
 *   /run/lifeboat-zfs/daemon.pid) is shared: each process using it registers as
 *   users/<pid>, and the last one to stop() stops it (SIGTERM, by that pid). A daemon the
 *   harness did not start (the machine's own) is used and never stopped.
 * - Otherwise it starts one, deleting the pidfile first (zfs-fuse silently exits when its
 *   pidfile exists, even a stale one).
 * - Start, stop and the sweep below run under a lock (mkdir /run/lifeboat-zfs/lock; a lock
 *   whose owner is dead is broken), so test files running at the same time agree.
 * - Pools are named lbt_<label>_<pid>_<n> (unique per process and machine), each on a sparse
 *   file in its own temp folder, recorded in pools/<name>. destroy() removes pool, mounts and
 *   folder; stop() destroys what the process left; startZfs() destroys the pools of dead
 *   processes (a killed test). A killed last user leaves the daemon running until the next
 *   run's last stop().
 */
import { execFile, spawn } from 'node:child_process';
import { existsSync, statSync } from 'node:fs';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { isAlive } from '../../shared/mysql/ephemeral.ts';

const stateDir = '/run/lifeboat-zfs';
const pidfile = path.join(stateDir, 'daemon.pid');
const usersDir = path.join(stateDir, 'users');
const poolsDir = path.join(stateDir, 'pools');
const lockDir = path.join(stateDir, 'lock');
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

function findProgram(name: string): string | undefined {
  const dirs = [...(process.env.PATH ?? '').split(':').filter(Boolean), '/sbin', '/usr/sbin'];
  return dirs.map((dir) => path.join(dir, name)).find((file) => existsSync(file));
}

/** The zfs-fuse programs, absolute. */
export const zfsPrograms = {
  daemon: findProgram('zfs-fuse') ?? '/sbin/zfs-fuse',
  zfs: findProgram('zfs') ?? '/sbin/zfs',
  zpool: findProgram('zpool') ?? '/sbin/zpool',
};

/** Whether zfs-fuse can run here, or why not. */
export function zfsAvailable(): { ok: true } | { ok: false; reason: string } {
  if (process.platform !== 'linux') return { ok: false, reason: 'zfs-fuse needs Linux' };
  if (process.getuid?.() !== 0) return { ok: false, reason: 'not root (zfs-fuse needs root)' };
  try {
    if (!statSync('/dev/fuse').isCharacterDevice()) throw new Error();
  } catch {
    return { ok: false, reason: 'no /dev/fuse' };
  }
  for (const program of ['zfs-fuse', 'zfs', 'zpool'])
    if (!findProgram(program))
      return { ok: false, reason: `${program} not found (apt-get install -y zfs-fuse)` };
  return { ok: true };
}

/** Runs zfs or zpool (no shell) and returns stdout; rejects with stderr in the message. */
export function zfsCommand(program: 'zfs' | 'zpool', args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(zfsPrograms[program], args, { env: { ...process.env, LC_ALL: 'C' } }, (error, stdout, stderr) =>
      error
        ? reject(new Error(`${program} ${args.join(' ')}: ${stderr.trim() || error.message}`))
        : resolve(stdout),
    );
  });
}

async function retryBusy<T>(run: () => Promise<T>, tries = 15): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await run();
    } catch (error) {
      if (attempt >= tries || !/is busy/.test(String(error))) throw error;
      await sleep(200);
    }
  }
}

const responds = () =>
  zfsCommand('zpool', ['list', '-H', '-o', 'name']).then(
    () => true,
    () => false,
  );

/** The pid of the daemon the harness started, when it is still running. */
async function harnessDaemon(): Promise<number | undefined> {
  const pid = Number((await fs.readFile(pidfile, 'utf8').catch(() => '')).trim());
  if (!pid || !isAlive(pid)) return undefined;
  const cmdline = await fs.readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
  return cmdline.includes('zfs-fuse') ? pid : undefined;
}

async function withLock<T>(run: () => Promise<T>): Promise<T> {
  const deadline = Date.now() + 120_000;
  for (;;) {
    try {
      await fs.mkdir(lockDir);
      await fs.writeFile(path.join(lockDir, 'owner'), String(process.pid));
      break;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
      const owner = Number(await fs.readFile(path.join(lockDir, 'owner'), 'utf8').catch(() => '0'));
      const age = Date.now() - ((await fs.stat(lockDir).catch(() => undefined))?.mtimeMs ?? Date.now());
      if (owner ? !isAlive(owner) : age > 10_000) await fs.rm(lockDir, { recursive: true, force: true });
      else if (Date.now() > deadline)
        throw new Error(`zfs harness: ${lockDir} held by pid ${owner} for 2 min`);
      else await sleep(50);
    }
  }
  try {
    return await run();
  } finally {
    await fs.rm(lockDir, { recursive: true, force: true });
  }
}

interface PoolRecord {
  pool: string;
  dir: string;
  pid: number;
}

/** Destroys `record`'s pool (if the daemon has it), unmounts what is left under its folder, removes it. */
async function removePool(record: PoolRecord): Promise<void> {
  const pools = (await zfsCommand('zpool', ['list', '-H', '-o', 'name']).catch(() => '')).split('\n');
  if (pools.includes(record.pool)) await retryBusy(() => zfsCommand('zpool', ['destroy', '-f', record.pool]));
  const mounts = (await fs.readFile('/proc/mounts', 'utf8'))
    .split('\n')
    .map((line) => line.split(' ')[1] ?? '');
  for (const mount of mounts.filter((m) => m.startsWith(`${record.dir}/`)).reverse())
    await new Promise((resolve) => execFile('umount', ['-l', mount], resolve));
  await fs.rm(record.dir, { recursive: true, force: true });
  await fs.rm(path.join(poolsDir, record.pool), { force: true });
}

/** Removes the pools of processes that are gone. */
async function sweep(): Promise<void> {
  for (const name of await fs.readdir(poolsDir)) {
    const record = JSON.parse(await fs.readFile(path.join(poolsDir, name), 'utf8')) as PoolRecord;
    if (record.pid !== process.pid && !isAlive(record.pid)) await removePool(record).catch(() => {});
  }
}

export interface ZfsDaemon {
  /** The daemon's pid (undefined for a daemon the harness did not start). */
  pid: number | undefined;
  /** True when a running daemon was used rather than started. */
  reused: boolean;
  /** Seconds until the daemon answered (0 when reused). */
  startSeconds: number;
  /**
   * Destroys this process's pools; the last process using a harness daemon stops it. Says
   * what became of the daemon: 'stopped', 'shared' (other processes, or other pools, still use
   * it) or 'not ours' (a daemon the harness did not start).
   */
  stop(): Promise<'stopped' | 'shared' | 'not ours'>;
}

interface Attached {
  pid: number | undefined;
  owned: boolean;
  reused: boolean;
  startSeconds: number;
}

let attached: Promise<Attached> | undefined;
let references = 0;
const livePools = new Set<TestPool>();

async function attach(): Promise<Attached> {
  await Promise.all([usersDir, poolsDir].map((dir) => fs.mkdir(dir, { recursive: true })));
  return withLock(async () => {
    await sweep();
    let pid = await harnessDaemon();
    const started = performance.now();
    let reused = true;
    if (!(await responds())) {
      if (pid) throw new Error(`zfs harness: zfs-fuse ${pid} is running but does not answer`);
      reused = false;
      await fs.rm(pidfile, { force: true });
      const launcher = spawn(zfsPrograms.daemon, ['--pidfile', pidfile, '--no-kstat-mount'], {
        stdio: 'ignore',
        cwd: '/',
      });
      const code = await new Promise<number | null>((resolve, reject) => {
        launcher.once('error', reject);
        launcher.once('exit', resolve);
      });
      const deadline = Date.now() + 20_000;
      while (!(await responds())) {
        if (Date.now() > deadline)
          throw new Error(`zfs harness: zfs-fuse (exit ${code}) did not answer in 20 s`);
        await sleep(50);
      }
      pid = await harnessDaemon();
    }
    const owned = pid !== undefined;
    if (owned) await fs.writeFile(path.join(usersDir, String(process.pid)), '');
    return { pid, owned, reused, startSeconds: reused ? 0 : (performance.now() - started) / 1000 };
  });
}

async function detach(state: Attached): Promise<'stopped' | 'shared' | 'not ours'> {
  for (const pool of [...livePools]) await pool.destroy();
  return withLock(async () => {
    await fs.rm(path.join(usersDir, String(process.pid)), { force: true });
    if (!state.owned) return 'not ours';
    const others = [];
    for (const user of await fs.readdir(usersDir)) {
      if (isAlive(Number(user))) others.push(user);
      else await fs.rm(path.join(usersDir, user), { force: true });
    }
    const pid = await harnessDaemon();
    if (!pid) return 'stopped';
    if (others.length) return 'shared';
    const pools = (await zfsCommand('zpool', ['list', '-H', '-o', 'name']).catch(() => '')).trim();
    if (pools) {
      console.log(`# zfs harness: leaving zfs-fuse ${pid} running, it still has pools: ${pools.split('\n')}`);
      return 'shared';
    }
    process.kill(pid, 'SIGTERM');
    for (let waited = 0; isAlive(pid); waited += 100) {
      if (waited === 30_000) process.kill(pid, 'SIGKILL');
      await sleep(100);
    }
    await fs.rm(pidfile, { force: true });
    return 'stopped';
  });
}

/** Starts (or joins) the machine's zfs-fuse daemon. Call stop() when done (e.g. in after()). */
export async function startZfs(): Promise<ZfsDaemon> {
  const available = zfsAvailable();
  if (!available.ok) throw new Error(`zfs harness: ${available.reason}`);
  references++;
  attached ??= attach();
  let state: Attached;
  try {
    state = await attached;
  } catch (error) {
    references--;
    attached = undefined;
    throw error;
  }
  let stopped = false;
  return {
    pid: state.pid,
    reused: state.reused,
    startSeconds: state.startSeconds,
    async stop() {
      if (stopped) return 'shared';
      stopped = true;
      if (--references > 0) return 'shared';
      attached = undefined;
      return detach(state);
    },
  };
}

export interface TestPool {
  pool: string;
  /** Where the pool's root dataset is mounted. */
  mountpoint: string;
  /** The sparse file that is the pool's only vdev. */
  file: string;
  /** The temp folder holding file and mount points. */
  dir: string;
  /** The altroot (`-R`) when made with `altroot`: received mountpoints land below it. */
  altroot?: string;
  /** Seconds `zpool create` took. */
  createSeconds: number;
  /** Destroys the pool (retrying "is busy") and removes its folder; safe to call twice. */
  destroy(): Promise<void>;
}

let poolCount = 0;

/**
 * A new pool on a sparse file (default 512 MiB) in a temp folder, mounted below it. With
 * `altroot` the pool is created with `-R` (needed to `receive -R` onto a pool's root).
 * Needs startZfs() first.
 */
export async function makePool(
  label = 'pool',
  options: { sizeMiB?: number; altroot?: boolean } = {},
): Promise<TestPool> {
  if (!attached) throw new Error('zfs harness: startZfs() first');
  await attached;
  if (!/^[a-z][a-z0-9]{0,15}$/.test(label)) throw new Error(`zfs harness: bad pool label ${label}`);
  const pool = `lbt_${label}_${process.pid}_${++poolCount}`;
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), `lifeboat-zfs-${pool}-`));
  const record: PoolRecord = { pool, dir, pid: process.pid };
  await fs.writeFile(path.join(poolsDir, pool), JSON.stringify(record));
  const file = path.join(dir, 'pool.img');
  await fs.writeFile(file, '');
  await fs.truncate(file, (options.sizeMiB ?? 512) * 1024 * 1024);
  const mountpoint = options.altroot ? path.join(dir, 'root', pool) : path.join(dir, 'mnt');
  const placement = options.altroot
    ? ['-R', path.join(dir, 'root'), '-m', `/${pool}`]
    : ['-o', 'cachefile=none', '-m', mountpoint];
  const started = performance.now();
  try {
    await zfsCommand('zpool', ['create', ...placement, pool, file]);
  } catch (error) {
    await removePool(record);
    throw error;
  }
  const createSeconds = (performance.now() - started) / 1000;
  let destroyed = false;
  const handle: TestPool = {
    pool,
    mountpoint,
    file,
    dir,
    ...(options.altroot ? { altroot: path.join(dir, 'root') } : {}),
    createSeconds,
    async destroy() {
      if (destroyed) return;
      destroyed = true;
      livePools.delete(handle);
      await removePool(record);
    },
  };
  livePools.add(handle);
  return handle;
}

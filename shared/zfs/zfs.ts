/**
 * A small typed wrapper over the `zfs` and `zpool` commands: list, snapshot, hold/release,
 * destroy, rollback, pool capacity, send and receive. Commands run with execFile/spawn (no
 * shell); every name is checked by ./names.ts before a command runs. Output is read with
 * `-H` (tab-separated) and numbers with `-p` (exact). Messages are read with LC_ALL=C.
 *
 * Tested on zfs-fuse 0.7.0 (pool version 23, test/integration/zfs-cli.test.ts); OpenZFS 2.x
 * only from its manual pages: every flag used here exists there with the same meaning.
 * What differs, and how this module copes:
 * - `zfs list -p` and `zpool list -p` do not exist on zfs-fuse. Listing therefore always uses
 *   `zfs get -Hp -o name,property,value,source` (both have it: one code path) and filters by
 *   the `type` property (zfs-fuse has no `get -t`; on OpenZFS `get -r` also yields bookmarks,
 *   which are dropped). Pool capacity tries `zpool list -Hp` once and falls back to the
 *   rounded human sizes (`exact: false`); the capacity percentage is the same either way.
 * - `zfs holds` fails on zfs-fuse ("pyzfs.py not found"): holds() then gives the count
 *   (`userrefs`) without tag names. hold() and release() say whether the tag was already
 *   there, which works on both and is what a caller with its own tag needs.
 * - zfs-fuse reports freed space in the pool capacity only ~30 s later; creating and
 *   destroying a throwaway snapshot forces it (capacity(pool, { settle: true })).
 * - "dataset is busy" comes right after I/O on zfs-fuse: snapshot, destroy, rollback, hold
 *   and release are retried (default 15 times, 0.2 s apart; with 5, one run with two test
 *   processes on the daemon left a snapshot undestroyed, most likely a longer busy spell). A
 *   held snapshot also answers "dataset is busy" to destroy, so destroySnapshot() looks at
 *   `userrefs` first.
 * - `zfs hold -r`, `release -r` and `destroy -r` refuse as a whole when one snapshot of the
 *   set already has (lacks) the tag or is held; hold/release then go one by one.
 * - zfs-fuse prints some failures ("internal error: ...") on stdout, not stderr.
 * - Received snapshots get the receiving pool's createtxg: "oldest first" is per pool.
 * - Not on zfs-fuse, so not used: raw/compressed/large-block send (-w -c -L), resumable
 *   receive (-s), `receive -u`, bookmarks, native encryption, `.zfs/snapshot`.
 * - On OpenZFS a newer bookmark also blocks rollback; ZFS's refusal is then reported as
 *   kind 'newer-snapshots' like the one rollback() detects itself from snapshots.
 * - zfs-fuse accepts spaces in names (it made "pool/ds@bad name"); Lifeboat refuses them.
 */
import { execFile, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { PassThrough, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import {
  checkDataset,
  checkPropertyValue,
  checkShortSnapshot,
  checkSnapshot,
  checkTag,
  checkUserProperty,
  splitSnapshot,
  ZfsNameError,
} from './names.ts';

export * from './names.ts';

/** The user properties Lifeboat sets on its snapshots. */
export const lifeboatProperties = ['lifeboat:set', 'lifeboat:backup-id'];

export type ZfsErrorKind =
  | 'busy'
  | 'exists'
  | 'missing'
  | 'held'
  | 'clones'
  | 'newer-snapshots'
  | 'unsupported'
  | 'no-zfs'
  | 'failed';

/** A `zfs`/`zpool` command that failed (or a refusal of this module), with what ZFS said. */
export class ZfsError extends Error {
  override name = 'ZfsError';
  readonly kind: ZfsErrorKind;
  readonly args: string[];
  readonly exitCode: number | null;
  readonly stderr: string;
  /** For 'newer-snapshots' and 'held': the snapshots in the way. */
  readonly snapshots: string[];
  constructor(
    message: string,
    kind: ZfsErrorKind,
    detail: { args?: string[]; exitCode?: number | null; stderr?: string; snapshots?: string[] } = {},
  ) {
    super(message);
    this.kind = kind;
    this.args = detail.args ?? [];
    this.exitCode = detail.exitCode ?? null;
    this.stderr = detail.stderr ?? '';
    this.snapshots = detail.snapshots ?? [];
  }
}

function kindOf(stderr: string): ZfsErrorKind {
  if (/dataset is busy|pool is busy/.test(stderr)) return 'busy';
  if (/more recent snapshots/.test(stderr)) return 'newer-snapshots';
  if (/dependent clones/.test(stderr)) return 'clones';
  if (/already exists/.test(stderr)) return 'exists';
  if (/does not exist|no such pool|no such tag|no such dataset/.test(stderr)) return 'missing';
  if (/invalid option|unrecognized command|pyzfs\.py not found|unsupported/.test(stderr))
    return 'unsupported';
  if (/zfs-fuse daemon is running|failed to initialize ZFS library|modules are not loaded/.test(stderr))
    return 'no-zfs';
  return 'failed';
}

function commandError(program: string, args: string[], exitCode: number | null, stderr: string): ZfsError {
  const said = stderr.trim().split('\n').slice(0, 4).join('; ') || `exit code ${exitCode}`;
  return new ZfsError(`${program} ${args[0]}: ${said}`, kindOf(stderr), { args, exitCode, stderr });
}

export interface ZfsEntry {
  name: string;
  type: 'filesystem' | 'volume' | 'snapshot';
  /** The dataset part of the name (the whole name for a dataset). */
  dataset: string;
  /** The part after "@" (snapshots only). */
  snapshot?: string;
  /** As a decimal string: guids do not fit in a double. */
  guid: string;
  /** Unix seconds. */
  creation: number;
  /** The transaction group that created it: orders snapshots made in the same second. */
  createtxg: number;
  used: number;
  referenced: number;
  /** Holds on a snapshot (0 for datasets). */
  userrefs: number;
  /** User properties set on this entry itself (local or received; inherited ones are left out). */
  properties: Record<string, string>;
}

export type DestroyResult =
  | { destroyed: true; snapshots: string[] }
  | {
      destroyed: false;
      reason: 'held' | 'clones' | 'busy' | 'missing';
      snapshots: string[];
      message: string;
    };

export interface PoolCapacity {
  size: number;
  allocated: number;
  free: number;
  /** Percent of the pool allocated, as `zpool list` reports it (an integer). */
  capacity: number;
  /** False when sizes were parsed from rounded human units (zfs-fuse has no `zpool list -p`). */
  exact: boolean;
}

export interface ZfsOptions {
  zfs?: string;
  zpool?: string;
  /** Retries of a command that answered "dataset is busy" (default 15: 3 s at 0.2 s). */
  busyRetries?: number;
  busyDelayMs?: number;
}

const baseProperties = ['type', 'guid', 'creation', 'createtxg', 'used', 'referenced', 'userrefs'];
const entryTypes = new Set(['filesystem', 'volume', 'snapshot']);
const units = 'BKMGTPEZ';
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const env = () => ({ ...process.env, LC_ALL: 'C', LANG: 'C' });
const count = (value: string | undefined) => (value === undefined || value === '-' ? 0 : Number(value));

/** Bytes from `zpool list` human output ("504M", "9.12M", "0"), base 1024. */
function bytesOf(text: string): number {
  const match = /^([\d.]+)([BKMGTPEZ]?)$/.exec(text.trim());
  if (!match) throw new ZfsError(`zpool list: unexpected size ${JSON.stringify(text)}`, 'failed');
  return Math.round(Number(match[1]) * 1024 ** Math.max(0, units.indexOf(match[2] || 'B')));
}

export class Zfs {
  readonly zfsProgram: string;
  readonly zpoolProgram: string;
  private readonly busyRetries: number;
  private readonly busyDelayMs: number;
  /** Whether `zpool list -p` works, once known. */
  private exactPoolList: boolean | undefined;

  constructor(options: ZfsOptions = {}) {
    this.zfsProgram = options.zfs ?? 'zfs';
    this.zpoolProgram = options.zpool ?? 'zpool';
    this.busyRetries = options.busyRetries ?? 15;
    this.busyDelayMs = options.busyDelayMs ?? 200;
  }

  /** Runs a command (no shell) and returns its stdout; retries "dataset is busy" when asked. */
  private async run(program: string, args: string[], retryBusy = false): Promise<string> {
    for (let attempt = 0; ; attempt++) {
      try {
        return await new Promise<string>((resolve, reject) => {
          execFile(program, args, { env: env(), maxBuffer: 512 * 1024 * 1024 }, (error, stdout, stderr) => {
            if (!error) return resolve(stdout);
            if (typeof error.code === 'string') {
              const kind = error.code === 'ENOENT' || error.code === 'EACCES' ? 'no-zfs' : 'failed';
              return reject(new ZfsError(`${program}: ${error.message}`, kind, { args }));
            }
            // zfs-fuse prints some failures ("internal error: ...") on stdout.
            reject(commandError(program, args, error.code ?? null, stderr || stdout));
          });
        });
      } catch (error) {
        const busy = error instanceof ZfsError && error.kind === 'busy';
        if (!retryBusy || !busy || attempt >= this.busyRetries) throw error;
        await sleep(this.busyDelayMs);
      }
    }
  }

  private zfs(args: string[], retryBusy = false) {
    return this.run(this.zfsProgram, args, retryBusy);
  }

  /** Entries from `zfs get -Hp`; `depth`: 0 the name only, 1 it and its snapshots, Infinity recursive. */
  private async entries(name: string, depth: number, userProperties: string[]): Promise<ZfsEntry[]> {
    for (const property of userProperties) checkUserProperty(property);
    const scope = depth === 0 ? [] : depth === Infinity ? ['-r'] : ['-d', String(depth)];
    const properties = [...baseProperties, ...userProperties].join(',');
    const out = await this.zfs([
      'get',
      '-Hp',
      ...scope,
      '-o',
      'name,property,value,source',
      properties,
      name,
    ]);
    const byName = new Map<string, Record<string, string>>();
    const userValues = new Map<string, Record<string, string>>();
    for (const line of out.split('\n')) {
      const fields = line.split('\t');
      if (fields.length < 4) continue;
      const [entry, property] = fields as [string, string];
      const source = fields[fields.length - 1]!;
      const value = fields.slice(2, -1).join('\t');
      if (!byName.has(entry)) {
        byName.set(entry, {});
        userValues.set(entry, {});
      }
      if (property.includes(':')) {
        if (source === 'local' || source === 'received') userValues.get(entry)![property] = value;
      } else byName.get(entry)![property] = value;
    }
    const found: ZfsEntry[] = [];
    for (const [entry, values] of byName) {
      if (!entryTypes.has(values.type ?? '')) continue;
      const at = entry.indexOf('@');
      found.push({
        name: entry,
        type: values.type as ZfsEntry['type'],
        dataset: at < 0 ? entry : entry.slice(0, at),
        ...(at < 0 ? {} : { snapshot: entry.slice(at + 1) }),
        guid: values.guid ?? '',
        creation: count(values.creation),
        createtxg: count(values.createtxg),
        used: count(values.used),
        referenced: count(values.referenced),
        userrefs: count(values.userrefs),
        properties: userValues.get(entry)!,
      });
    }
    return found;
  }

  /** `name` (a dataset or snapshot), or undefined when it does not exist. */
  async get(name: string, options: { properties?: string[] } = {}): Promise<ZfsEntry | undefined> {
    if (name.includes('@')) checkSnapshot(name);
    else checkDataset(name);
    try {
      return (await this.entries(name, 0, options.properties ?? lifeboatProperties))[0];
    } catch (error) {
      if (error instanceof ZfsError && error.kind === 'missing') return undefined;
      throw error;
    }
  }

  /** Filesystems and volumes: `root` and (recursive, the default) everything below it. */
  async datasets(root: string, options: { recursive?: boolean; properties?: string[] } = {}) {
    checkDataset(root);
    const depth = options.recursive === false ? 0 : Infinity;
    return (await this.entries(root, depth, options.properties ?? lifeboatProperties)).filter(
      (entry) => entry.type !== 'snapshot',
    );
  }

  /**
   * Snapshots of `dataset` (recursive, the default: of every dataset below it too), oldest
   * first (by createtxg, then name: the parts of a recursive snapshot stay together).
   */
  async snapshots(dataset: string, options: { recursive?: boolean; properties?: string[] } = {}) {
    checkDataset(dataset);
    const recursive = options.recursive !== false;
    const found = await this.entries(
      dataset,
      recursive ? Infinity : 1,
      options.properties ?? lifeboatProperties,
    );
    return found
      .filter((entry) => entry.type === 'snapshot' && (recursive || entry.dataset === dataset))
      .sort(
        (a, b) =>
          a.createtxg - b.createtxg ||
          (a.dataset < b.dataset ? -1 : a.dataset > b.dataset ? 1 : 0) ||
          (a.name < b.name ? -1 : 1),
      );
  }

  /**
   * Makes `dataset@name` (recursive: the same snapshot of every dataset below, atomically)
   * with user properties set at creation (`-o`; with `zfs set` afterwards where `-o` is not
   * supported). Returns the snapshots made.
   */
  async snapshot(
    dataset: string,
    name: string,
    options: { recursive?: boolean; properties?: Record<string, string> } = {},
  ): Promise<ZfsEntry[]> {
    checkDataset(dataset);
    checkShortSnapshot(name);
    const properties = Object.entries(options.properties ?? {});
    for (const [key, value] of properties) checkPropertyValue(checkUserProperty(key), value);
    const full = `${dataset}@${name}`;
    const recursive = options.recursive ? ['-r'] : [];
    const assignments = properties.map(([key, value]) => `${key}=${value}`);
    let setAfter = false;
    try {
      await this.zfs(['snapshot', ...recursive, ...assignments.flatMap((a) => ['-o', a]), full], true);
    } catch (error) {
      if (!(error instanceof ZfsError && error.kind === 'unsupported' && assignments.length)) throw error;
      await this.zfs(['snapshot', ...recursive, full], true);
      setAfter = true;
    }
    const userProperties = [...new Set([...lifeboatProperties, ...properties.map(([key]) => key)])];
    const made = options.recursive
      ? (await this.snapshots(dataset, { properties: userProperties })).filter((s) => s.snapshot === name)
      : [(await this.get(full, { properties: userProperties }))!];
    if (setAfter) {
      for (const snapshot of made) {
        for (const assignment of assignments) await this.zfs(['set', assignment, snapshot.name], true);
        Object.assign(snapshot.properties, options.properties);
      }
    }
    return made;
  }

  /**
   * Puts hold `tag` on a snapshot (recursive: on the same snapshot of every dataset below).
   * 'already-held' when every one of them had it. `zfs hold -r` fails as a whole when one
   * already has the tag; the snapshots are then held one by one.
   */
  async hold(snapshot: string, tag: string, options: { recursive?: boolean } = {}) {
    return this.holdOrRelease('hold', snapshot, tag, options.recursive === true);
  }

  /** Removes hold `tag` (recursive: from the same snapshot of every dataset below); 'not-held' when none had it. */
  async release(snapshot: string, tag: string, options: { recursive?: boolean } = {}) {
    return this.holdOrRelease('release', snapshot, tag, options.recursive === true);
  }

  private async holdOrRelease<A extends 'hold' | 'release'>(
    action: A,
    snapshot: string,
    tag: string,
    recursive: boolean,
  ): Promise<A extends 'hold' ? 'held' | 'already-held' : 'released' | 'not-held'> {
    const { dataset, snapshot: short } = splitSnapshot(snapshot);
    checkTag(tag);
    const [changed, unchanged] = action === 'hold' ? ['held', 'already-held'] : ['released', 'not-held'];
    // The refusal when the snapshot already has (hold) or lacks (release) the tag.
    const noChange = (error: unknown) =>
      error instanceof ZfsError &&
      (action === 'hold'
        ? error.kind === 'exists'
        : error.kind === 'missing' && /no such tag/.test(error.stderr));
    type Result = A extends 'hold' ? 'held' | 'already-held' : 'released' | 'not-held';
    try {
      await this.zfs([action, ...(recursive ? ['-r'] : []), tag, snapshot], true);
      return changed as Result;
    } catch (error) {
      if (!noChange(error)) throw error;
      if (!recursive) return unchanged as Result;
    }
    let any = false;
    const all = await this.snapshots(dataset, { properties: [] });
    for (const each of all.filter((s) => s.snapshot === short)) {
      try {
        await this.zfs([action, tag, each.name], true);
        any = true;
      } catch (error) {
        if (!noChange(error)) throw error;
      }
    }
    return (any ? changed : unchanged) as Result;
  }

  /** The holds on a snapshot: their count, and their tags where `zfs holds` works (not zfs-fuse). */
  async holds(snapshot: string): Promise<{ userrefs: number; tags?: string[] }> {
    const entry = await this.get(snapshot, { properties: [] });
    if (!entry) throw new ZfsError(`snapshot ${snapshot} does not exist`, 'missing');
    try {
      const out = await this.zfs(['holds', '-H', snapshot]);
      const tags = out
        .split('\n')
        .filter(Boolean)
        .map((line) => line.split('\t')[1]!);
      return { userrefs: entry.userrefs, tags };
    } catch (error) {
      if (error instanceof ZfsError && error.kind === 'unsupported') return { userrefs: entry.userrefs };
      throw error;
    }
  }

  /**
   * Destroys a snapshot (recursive: the same snapshot of every dataset below). A held one
   * (or with clones, or still busy after the retries) is not destroyed: the result says why.
   */
  async destroySnapshot(snapshot: string, options: { recursive?: boolean } = {}): Promise<DestroyResult> {
    const { dataset, snapshot: short } = splitSnapshot(snapshot);
    const targets = async () =>
      options.recursive
        ? (await this.snapshots(dataset, { properties: [] })).filter((s) => s.snapshot === short)
        : [await this.get(snapshot, { properties: [] })].filter((s) => s !== undefined);
    const refused = (reason: 'held' | 'clones' | 'busy' | 'missing', names: string[], message: string) =>
      ({ destroyed: false, reason, snapshots: names, message }) as const;
    const heldOf = (found: ZfsEntry[]) => found.filter((s) => s.userrefs > 0).map((s) => s.name);
    const found = await targets();
    if (found.length === 0) return refused('missing', [], `snapshot ${snapshot} does not exist`);
    const names = found.map((s) => s.name);
    let held = heldOf(found);
    if (held.length) return refused('held', held, `held (zfs release to allow it): ${held.join(', ')}`);
    try {
      await this.zfs(['destroy', ...(options.recursive ? ['-r'] : []), snapshot], true);
      return { destroyed: true, snapshots: names };
    } catch (error) {
      if (!(error instanceof ZfsError)) throw error;
      if (error.kind === 'clones') return refused('clones', names, error.message);
      if (error.kind !== 'busy') throw error;
      held = heldOf(await targets());
      if (held.length) return refused('held', held, `held (zfs release to allow it): ${held.join(', ')}`);
      return refused('busy', names, error.message);
    }
  }

  /**
   * Rolls a dataset back to `snapshot`. Refused (ZfsError 'newer-snapshots', listing them)
   * when newer snapshots exist, unless `destroyNewer` (`zfs rollback -r`), and refused
   * ('held') when one of those is held. Returns the snapshots destroyed.
   */
  async rollback(
    snapshot: string,
    options: { destroyNewer?: boolean } = {},
  ): Promise<{ destroyed: string[] }> {
    const { dataset } = splitSnapshot(snapshot);
    const all = await this.snapshots(dataset, { recursive: false, properties: [] });
    const target = all.find((s) => s.name === snapshot);
    if (!target) throw new ZfsError(`snapshot ${snapshot} does not exist`, 'missing');
    const newer = all.filter((s) => s.createtxg > target.createtxg).map((s) => s.name);
    if (newer.length && !options.destroyNewer)
      throw new ZfsError(
        `cannot roll back to ${snapshot}: newer snapshots exist (${newer.join(', ')}); rolling back would destroy them`,
        'newer-snapshots',
        { snapshots: newer },
      );
    const held = all.filter((s) => s.createtxg > target.createtxg && s.userrefs > 0).map((s) => s.name);
    if (held.length)
      throw new ZfsError(
        `cannot roll back to ${snapshot}: newer snapshots are held: ${held.join(', ')}`,
        'held',
        {
          snapshots: held,
        },
      );
    await this.zfs(['rollback', ...(options.destroyNewer ? ['-r'] : []), snapshot], true);
    return { destroyed: newer };
  }

  /**
   * Size, allocation and free space of a pool. `settle` first creates and destroys a throwaway
   * snapshot of the pool's root, which makes zfs-fuse account space freed moments ago.
   */
  async capacity(pool: string, options: { settle?: boolean } = {}): Promise<PoolCapacity> {
    checkDataset(pool, 'pool');
    if (pool.includes('/')) throw new ZfsNameError(`pool ${JSON.stringify(pool)} is a dataset, not a pool`);
    if (options.settle) {
      const throwaway = `${pool}@lifeboat-settle-${randomBytes(4).toString('hex')}`;
      await this.zfs(['snapshot', throwaway], true);
      await this.zfs(['destroy', throwaway], true);
    }
    const columns = ['-o', 'size,allocated,free,capacity', pool];
    let out: string | undefined;
    if (this.exactPoolList !== false) {
      try {
        out = await this.run(this.zpoolProgram, ['list', '-Hp', ...columns]);
        this.exactPoolList = true;
      } catch (error) {
        if (!(error instanceof ZfsError && error.kind === 'unsupported')) throw error;
        this.exactPoolList = false;
      }
    }
    out ??= await this.run(this.zpoolProgram, ['list', '-H', ...columns]);
    const [size, allocated, free, capacity] = out.trim().split('\t') as [string, string, string, string];
    const exact = this.exactPoolList === true;
    const parse = exact ? Number : bytesOf;
    return {
      size: parse(size),
      allocated: parse(allocated),
      free: parse(free),
      capacity: Number(capacity.replace('%', '')),
      exact,
    };
  }

  /**
   * `zfs clone` of `snapshot` as `name` with properties (e.g. mountpoint, readonly, user
   * properties) set at creation. Destroy it with destroy() before the snapshot can go.
   */
  async clone(snapshot: string, name: string, properties: Record<string, string> = {}): Promise<void> {
    checkSnapshot(snapshot);
    checkDataset(name, 'clone');
    const assignments = Object.entries(properties).map(([key, value]) => {
      if (key.includes(':')) checkPropertyValue(checkUserProperty(key), value);
      else if (!/^[a-z]+$/.test(key)) throw new ZfsNameError(`property '${key}': not a property name`);
      return `${key}=${value}`;
    });
    await this.zfs(['clone', ...assignments.flatMap((a) => ['-o', a]), snapshot, name], true);
  }

  /** `zfs destroy` of a dataset (recursive: with its snapshots and descendants, `-r`). */
  async destroy(dataset: string, options: { recursive?: boolean } = {}): Promise<void> {
    checkDataset(dataset);
    if (!dataset.includes('/')) throw new ZfsNameError(`destroy: '${dataset}' is a pool; destroyPool() it`);
    await this.zfs(['destroy', ...(options.recursive ? ['-r'] : []), dataset], true);
  }

  /** A dataset's mountpoint property ('none', 'legacy' or a path). */
  async mountpoint(dataset: string): Promise<string> {
    checkDataset(dataset);
    return (await this.zfs(['get', '-H', '-o', 'value', 'mountpoint', dataset])).trim();
  }

  /**
   * `zpool create` of a pool on one file vdev, its root dataset mounted at `mountpoint`, not
   * recorded in the machine's cache file (a throwaway pool is not imported at boot).
   */
  async createPool(pool: string, file: string, mountpoint: string): Promise<void> {
    checkDataset(pool, 'pool');
    if (pool.includes('/')) throw new ZfsNameError(`pool '${pool}': a pool name has no '/'`);
    for (const [what, value] of [
      ['vdev', file],
      ['mountpoint', mountpoint],
    ] as const)
      if (!value.startsWith('/') || /[\0\n]/.test(value))
        throw new ZfsNameError(`${what} '${value}': an absolute path is needed`);
    await this.run(this.zpoolProgram, ['create', '-o', 'cachefile=none', '-m', mountpoint, pool, file]);
  }

  /** `zpool destroy -f` (retried while busy). */
  async destroyPool(pool: string): Promise<void> {
    checkDataset(pool, 'pool');
    if (pool.includes('/')) throw new ZfsNameError(`pool '${pool}': a pool name has no '/'`);
    await this.run(this.zpoolProgram, ['destroy', '-f', pool], true);
  }

  /**
   * `zfs send` of `snapshot` (full, or incremental from `from`, an older snapshot of the same
   * dataset; `replicate`: `-R`, with descendants and properties) as a Readable. It ends only
   * after zfs exited 0; otherwise it errors with ZFS's message. Destroying it stops zfs.
   */
  send(
    snapshot: string,
    options: { from?: string; replicate?: boolean; signal?: AbortSignal } = {},
  ): Readable {
    const { dataset } = splitSnapshot(snapshot);
    if (options.from !== undefined && splitSnapshot(options.from).dataset !== dataset)
      throw new ZfsNameError(`incremental send: ${options.from} is not a snapshot of ${dataset}`);
    const args = [
      'send',
      ...(options.replicate ? ['-R'] : []),
      ...(options.from !== undefined ? ['-i', options.from] : []),
      snapshot,
    ];
    const out = new PassThrough({ highWaterMark: 1024 * 1024 });
    const child = spawn(this.zfsProgram, args, {
      env: env(),
      stdio: ['ignore', 'pipe', 'pipe'],
      ...(options.signal ? { signal: options.signal } : {}),
    });
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      if (stderr.length < 65536) stderr += d;
    });
    child.stdout.pipe(out, { end: false });
    child.once('error', (error: NodeJS.ErrnoException) => {
      const kind = error.code === 'ENOENT' ? 'no-zfs' : 'failed';
      out.destroy(new ZfsError(`zfs send: ${error.message}`, kind, { args }));
    });
    child.once('close', (code, signal) => {
      if (code === 0) out.end();
      else out.destroy(commandError('zfs', args, code, stderr || `killed by ${signal}`));
    });
    out.once('close', () => {
      if (child.exitCode === null && child.signalCode === null) child.kill();
    });
    return out;
  }

  /**
   * `zfs receive` of a send stream into `target` (`force`: -F, roll the target back and
   * destroy what the stream does not have; `stripPool`: -d, the stream's names without their
   * pool go under `target`). Not retried: the stream cannot be read twice.
   */
  async receive(
    target: string,
    input: Readable,
    options: { force?: boolean; stripPool?: boolean; signal?: AbortSignal } = {},
  ): Promise<void> {
    if (target.includes('@')) checkSnapshot(target, 'target');
    else checkDataset(target, 'target');
    const args = ['receive', ...(options.force ? ['-F'] : []), ...(options.stripPool ? ['-d'] : []), target];
    const child = spawn(this.zfsProgram, args, {
      env: env(),
      stdio: ['pipe', 'ignore', 'pipe'],
      ...(options.signal ? { signal: options.signal } : {}),
    });
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      if (stderr.length < 65536) stderr += d;
    });
    const exited = new Promise<number | null>((resolve, reject) => {
      child.once('error', reject);
      child.once('close', (code) => resolve(code));
    });
    const [fed, exit] = await Promise.allSettled([pipeline(input, child.stdin), exited]);
    if (exit.status === 'rejected') {
      const error = exit.reason as NodeJS.ErrnoException;
      throw new ZfsError(`zfs receive: ${error.message}`, error.code === 'ENOENT' ? 'no-zfs' : 'failed', {
        args,
      });
    }
    const brokenPipe = (error: NodeJS.ErrnoException) =>
      error.code === 'EPIPE' ||
      error.code === 'ERR_STREAM_PREMATURE_CLOSE' ||
      error.code === 'ERR_STREAM_DESTROYED';
    // The input's own failure is the cause; zfs then only saw a truncated stream.
    if (fed.status === 'rejected' && !brokenPipe(fed.reason)) throw fed.reason;
    if (exit.value !== 0) throw commandError('zfs', args, exit.value, stderr);
    if (fed.status === 'rejected') throw fed.reason;
  }
}

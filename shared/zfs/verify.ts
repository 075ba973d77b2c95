/**
 * verify-restore of a zfs backup: every dataset's chain received into a throwaway pool on a
 * sparse file under the work folder (each dataset flat as `<pool>/d<N>`, so that no
 * received dataset is mounted inside another's tree), then compared with what the manifest
 * recorded when the snapshot was sent: the guid, and, with the index, the file count, bytes
 * and content sha256 of its files. The pool is destroyed on every path; a killed run leaves
 * a state the `post:` step removes.
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { Catalog } from '../catalog/catalog.ts';
import type { Manifest } from '../catalog/manifest.ts';
import { messageOf, UserError } from '../errors.ts';
import { digestTree } from '../files/tree-digest.ts';
import type { DecryptionKeys } from '../pipeline/encryption.ts';
import { formatBytes, type Logger } from '../pipeline/progress.ts';
import type { Storage } from '../storage/storage.ts';
import { type CheckRow, failed, passed, skipped } from '../verify/checks.ts';
import type { VerifyOutcome } from '../verify/report.ts';
import { type DatasetChain, resolveChains } from './chain.ts';
import { receiveChain } from './receive.ts';
import { Zfs } from './zfs.ts';

export interface ZfsVerifyOptions {
  manifest: Manifest;
  storage: Storage;
  keys: DecryptionKeys;
  workDir: string;
  logger: Logger;
  progressIntervalMs?: number;
  signal?: AbortSignal;
  onLeftovers?: (state: ZfsPoolLeftovers | undefined) => void;
  zfs?: Zfs;
}

export interface ZfsPoolLeftovers {
  type: 'zfs-pool';
  pool: string;
  /** The folder holding the pool's file and mount point. */
  dir: string;
}

const poolPattern = /^lifeboat_verify_[0-9a-f]{12}$/;

/** A pool big enough for the chains: twice what they reference, at least 256 MiB (sparse). */
function poolBytes(chains: DatasetChain[]): number {
  const referenced = chains.reduce(
    (sum, c) => sum + Math.max(...c.links.map((l) => l.fact.referenced), 0),
    0,
  );
  return Math.max(256 * 1024 * 1024, Math.ceil((referenced * 2 + 128 * 1024 * 1024) / 1048576) * 1048576);
}

export async function verifyZfs(options: ZfsVerifyOptions): Promise<VerifyOutcome & { stopped?: Error }> {
  const { manifest, logger } = options;
  const zfs = options.zfs ?? new Zfs();
  const checks: CheckRow[] = [];
  const timings: Record<string, number> = {};
  let chains: DatasetChain[];
  try {
    chains = await resolveChains(new Catalog(options.storage), manifest);
    const streams = chains.reduce((n, c) => n + c.links.length, 0);
    checks.push(
      passed('chain', `${chains.length} dataset(s), ${streams} stream(s) back to their full streams`),
    );
  } catch (error) {
    if (!(error instanceof UserError)) throw error;
    checks.push(failed('chain', error.message));
    return { checks, restoreSeconds: null, environment: { type: 'zfs-pool', removed: true }, timings };
  }
  const pool = `lifeboat_verify_${randomBytes(6).toString('hex')}`;
  const dir = await fs.mkdtemp(path.join(options.workDir, 'lifeboat-zfs-verify-'));
  const file = path.join(dir, 'pool.img');
  const mount = path.join(dir, 'mnt');
  let t = performance.now();
  let restoreSeconds: number | null = null;
  let stopped: Error | undefined;
  let created = false;
  let removed = false;
  options.onLeftovers?.({ type: 'zfs-pool', pool, dir });
  try {
    await fs.writeFile(file, '');
    const size = poolBytes(chains);
    await fs.truncate(file, size);
    await zfs.createPool(pool, file, mount);
    created = true;
    timings.environment = (performance.now() - t) / 1000;
    logger.info(`throwaway pool ${pool} on ${file} (sparse, ${formatBytes(size)})`);
    t = performance.now();
    const received: { chain: DatasetChain; into: string }[] = [];
    for (const [i, chain] of chains.entries()) {
      const into = `${pool}/d${i + 1}`;
      const name = `receive ${chain.fact.dataset}`;
      try {
        await receiveChain(chain, into, { ...options, zfs });
        const last = chain.links.at(-1)!.fact;
        checks.push(
          passed(name, `${chain.links.length} stream(s); ${last.snapshot}'s guid ${last.guid} as recorded`),
        );
        received.push({ chain, into });
      } catch (error) {
        if (options.signal?.aborted) throw error;
        checks.push(failed(name, messageOf(error)));
      }
    }
    if (received.length === chains.length) restoreSeconds = (performance.now() - t) / 1000;
    timings.restore = (performance.now() - t) / 1000;
    t = performance.now();
    for (const { chain, into } of received) {
      const index = chain.fact.stream?.index;
      const name = `files ${chain.fact.dataset}`;
      if (chain.fact.type === 'volume') {
        checks.push(skipped(name, 'a volume: no files to compare (its guid was checked)'));
        continue;
      }
      if (!index) {
        checks.push(skipped(name, 'not indexed when sent (send-index: false): only guid and sha256 checked'));
        continue;
      }
      const found = await digestTree(await zfs.mountpoint(into), options.signal);
      const same =
        found.files === index.files &&
        found.bytes === index.bytes &&
        found.directories === index.directories &&
        found.symlinks === index.symlinks &&
        found.sha256 === index.sha256;
      const what = (d: typeof index) =>
        `${d.files} files, ${d.directories} folders, ${d.symlinks} symlinks, ${formatBytes(d.bytes)}, content sha256 ${d.sha256.slice(0, 12)}…`;
      checks.push(
        same
          ? passed(name, `${what(found)}: as recorded`)
          : failed(name, `received ${what(found)}; the manifest records ${what(index)}`),
      );
    }
    timings.checks = (performance.now() - t) / 1000;
  } catch (error) {
    stopped = error as Error;
    checks.push(failed('verification', messageOf(error)));
  } finally {
    t = performance.now();
    removed = await removeVerifyPool({ type: 'zfs-pool', pool, dir }, logger, zfs, created);
    if (removed) options.onLeftovers?.(undefined);
    timings.teardown = (performance.now() - t) / 1000;
  }
  return {
    checks,
    restoreSeconds,
    environment: { type: 'zfs-pool', pool, removed },
    timings,
    ...(stopped ? { stopped } : {}),
  };
}

/** Destroys the throwaway pool (when it exists) and its folder; false when the pool stayed. */
export async function removeVerifyPool(
  state: ZfsPoolLeftovers,
  logger: Logger,
  zfs = new Zfs(),
  exists = true,
): Promise<boolean> {
  if (!poolPattern.test(state.pool) || !path.basename(state.dir).startsWith('lifeboat-zfs-verify-'))
    throw new UserError(`post: ${state.pool} in ${state.dir} is not a verify-restore pool; left alone`);
  if (exists) {
    try {
      await zfs.destroyPool(state.pool);
    } catch (error) {
      if (!/no such pool/i.test(messageOf(error))) {
        logger.warn(
          `could not destroy the throwaway pool ${state.pool} (${messageOf(error)}); zpool destroy -f ${state.pool}`,
        );
        return false;
      }
    }
  }
  await fs.rm(state.dir, { recursive: true, force: true });
  return true;
}

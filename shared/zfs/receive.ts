/**
 * Receiving a backup's streams: each dataset's chain, oldest first, from storage (sha256
 * checked as it streams) through the BEGIN-record gate (./stream.ts) into `zfs receive` of
 * the dataset Lifeboat chose, never one the stream names. After each stream the received
 * snapshot must be there with the guid the manifest records.
 */
import { pipeline, Writable } from 'node:stream';
import { pipeline as pipelineAsync } from 'node:stream/promises';
import { UserError } from '../errors.ts';
import { openArtifact } from '../pipeline/artifact.ts';
import type { DecryptionKeys } from '../pipeline/encryption.ts';
import type { Logger } from '../pipeline/progress.ts';
import type { Storage } from '../storage/storage.ts';
import type { ChainLink, DatasetChain } from './chain.ts';
import { StreamGate } from './stream.ts';
import type { Zfs } from './zfs.ts';

export interface ReceiveOptions {
  zfs: Zfs;
  storage: Storage;
  keys: DecryptionKeys;
  logger: Logger;
  progressIntervalMs?: number;
  signal?: AbortSignal;
}

/** One link's stream, read and checked; `into` undefined: read to the end only (a dry run). */
async function receiveLink(
  link: ChainLink,
  previous: ChainLink | undefined,
  into: string | undefined,
  options: ReceiveOptions,
): Promise<void> {
  const { manifest, fact } = link;
  const key = `${manifest.set}/${manifest.id}/${fact.stream.artifact}`;
  const artifact = manifest.artifacts.find((a) => a.name === fact.stream.artifact)!;
  const read = await openArtifact({
    storage: options.storage,
    key,
    artifact,
    keys: options.keys,
    logger: options.logger,
    label: `${into ? 'zfs receive' : 'read'} ${fact.snapshot}`,
    progressIntervalMs: options.progressIntervalMs,
    signal: options.signal,
  });
  const gate = new StreamGate({
    where: key,
    guid: fact.guid,
    ...(previous ? { fromGuid: previous.fact.guid } : {}),
    snapshot: fact.snapshot.slice(fact.snapshot.indexOf('@') + 1),
  });
  try {
    if (!into) {
      await pipelineAsync(read.stream, gate, new Writable({ write: (_c, _e, done) => done() }));
      return;
    }
    const checked = pipeline(read.stream, gate, () => {});
    await options.zfs.receive(into, checked, { signal: options.signal });
  } finally {
    read.close();
  }
  const received = `${into}@${fact.snapshot.slice(fact.snapshot.indexOf('@') + 1)}`;
  const entry = await options.zfs.get(received, { properties: [] });
  if (!entry || entry.guid !== fact.guid)
    throw new UserError(
      `backup: ${key} was received, but ${received} ${entry ? `has guid ${entry.guid}, the manifest records ${fact.guid}` : 'is not there'}`,
    );
}

/** Receives (or, without `into`, reads and checks) one dataset's chain. */
export async function receiveChain(
  chain: DatasetChain,
  into: string | undefined,
  options: ReceiveOptions,
): Promise<void> {
  for (const [i, link] of chain.links.entries()) {
    options.signal?.throwIfAborted();
    const previous = i > 0 ? chain.links[i - 1] : undefined;
    options.logger.info(
      `${link.manifest.id}: ${link.fact.stream.artifact} (${previous ? `incremental on ${previous.manifest.id}` : 'full'})${into ? ` → ${into}` : ''}`,
    );
    await receiveLink(link, previous, into, options);
  }
}

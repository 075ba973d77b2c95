/**
 * What a zfs manifest says, checked (the storage is not trusted: the facts name datasets and
 * artifacts), and the chain of streams a backup's datasets need: for each dataset, its full
 * stream in some older backup and every incremental stream after it, each applying to the
 * guid its predecessor recorded.
 */
import { z } from 'zod';
import type { Catalog } from '../catalog/catalog.ts';
import type { Manifest } from '../catalog/manifest.ts';
import { messageOf, UserError } from '../errors.ts';
import { datasetNameProblem, shortSnapshotNameProblem } from './names.ts';
import type { ZfsFacts, ZfsSnapshotFact } from './snapshot.ts';

const guid = z.string().regex(/^\d{1,20}$/, 'a decimal guid');
const dataset = z.string().refine((d) => datasetNameProblem(d) === undefined, 'a ZFS dataset name');
const digest = z.object({
  files: z.number().int().nonnegative(),
  directories: z.number().int().nonnegative(),
  symlinks: z.number().int().nonnegative(),
  bytes: z.number().int().nonnegative(),
  sha256: z.string().regex(/^[0-9a-f]{64}$/),
});
const snapshotFact = z.object({
  root: dataset,
  dataset,
  pool: z.string(),
  type: z.enum(['filesystem', 'volume']).default('filesystem'),
  snapshot: z.string(),
  guid,
  referenced: z.number().nonnegative(),
  used: z.number().nonnegative(),
  creation: z.string(),
  stream: z
    .object({
      artifact: z.string(),
      from: z.object({ snapshot: z.string(), guid }).optional(),
      index: digest.optional(),
    })
    .optional(),
});
const factsSchema = z.object({
  host: z.string(),
  snapshotName: z.string().refine((s) => shortSnapshotNameProblem(s) === undefined, 'a snapshot name'),
  recursive: z.boolean(),
  datasets: z.array(dataset).min(1),
  pools: z.array(z.string()),
  snapshots: z.array(snapshotFact),
});

/** The facts of a zfs manifest, or a UserError naming the backup and what is wrong. */
export function zfsFacts(manifest: Manifest): ZfsFacts {
  const where = `backup: the manifest of ${manifest.set}/${manifest.id}`;
  const parsed = factsSchema.safeParse(manifest.facts);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new UserError(
      `${where} has unusable zfs facts: ${issue.path.join('.') || 'facts'}: ${issue.message}`,
    );
  }
  const facts = parsed.data as ZfsFacts;
  const artifacts = new Set(manifest.artifacts.map((a) => a.name));
  for (const s of facts.snapshots) {
    const bad = (why: string) => new UserError(`${where} is refused: snapshot ${s.snapshot}: ${why}`);
    if (!facts.datasets.includes(s.root)) throw bad(`its root ${s.root} is not one of the backup's datasets`);
    if (s.dataset !== s.root && !s.dataset.startsWith(`${s.root}/`))
      throw bad(`its dataset ${s.dataset} is not ${s.root} or below it`);
    if (s.snapshot !== `${s.dataset}@${facts.snapshotName}`)
      throw bad(`it is not ${s.dataset}@${facts.snapshotName}`);
    if (s.stream && !artifacts.has(s.stream.artifact))
      throw bad(`its stream ${s.stream.artifact} is not an artifact of the backup`);
  }
  const names = facts.snapshots.map((s) => s.dataset);
  const twice = names.find((n, i) => names.indexOf(n) !== i);
  if (twice) throw new UserError(`${where} is refused: dataset ${twice} is listed twice`);
  return facts;
}

/** One stream to receive: the backup holding it and its snapshot's facts. */
export interface ChainLink {
  manifest: Manifest;
  fact: ZfsSnapshotFact & { stream: NonNullable<ZfsSnapshotFact['stream']> };
}

/** A dataset of the backup and its streams, oldest (the full one) first. */
export interface DatasetChain {
  fact: ZfsSnapshotFact;
  links: ChainLink[];
}

/** Longest chain followed: a loop in hostile manifests ends here too. */
const maxChain = 10_000;

/**
 * The streams each dataset of `manifest` needs, parents read from the catalog. A broken
 * chain (a parent missing, damaged, of another kind, newer, or without the dataset's
 * snapshot of the guid the stream applies to) is a UserError naming the link.
 */
export async function resolveChains(catalog: Catalog, manifest: Manifest): Promise<DatasetChain[]> {
  const facts = zfsFacts(manifest);
  if (manifest.artifacts.length === 0)
    throw new UserError(
      `backup: ${manifest.set}/${manifest.id} has no zfs streams (it was taken without send-to: its snapshots stay on ${facts.host}); restore it there with rollback: true`,
    );
  const read = new Map<string, { manifest: Manifest; facts: ZfsFacts }>([[manifest.id, { manifest, facts }]]);
  const parentOf = async (child: Manifest) => {
    const id = child.parent;
    const broken = (why: string) =>
      new UserError(`backup: the chain of ${manifest.set}/${manifest.id} is broken at ${child.id}: ${why}`);
    if (!id) throw broken('an incremental stream, but the manifest names no parent backup');
    const known = read.get(id);
    if (known) return known;
    let parent: Manifest;
    try {
      parent = await catalog.readManifest(manifest.set, id);
    } catch (error) {
      throw broken(`its parent ${id} cannot be read (${messageOf(error)})`);
    }
    if (parent.kind !== 'zfs') throw broken(`its parent ${id} is a ${parent.kind} backup`);
    if (Date.parse(parent.startedAt) >= Date.parse(child.startedAt))
      throw broken(`its parent ${id} is not older than it`);
    const entry = { manifest: parent, facts: zfsFacts(parent) };
    read.set(id, entry);
    return entry;
  };
  const chains: DatasetChain[] = [];
  for (const fact of facts.snapshots) {
    if (!fact.stream) continue;
    const links: ChainLink[] = [];
    let current: ZfsSnapshotFact = fact;
    let holder = manifest;
    for (;;) {
      if (!current.stream)
        throw new UserError(
          `backup: the chain of ${manifest.set}/${manifest.id} is broken at ${holder.id}: ${current.snapshot} has no stream there`,
        );
      links.unshift({ manifest: holder, fact: current as ChainLink['fact'] });
      const from = current.stream.from;
      if (!from) break;
      if (links.length >= maxChain)
        throw new UserError(`backup: the chain of ${manifest.set}/${manifest.id} is longer than ${maxChain}`);
      const parent = await parentOf(holder);
      const previous = parent.facts.snapshots.find((s) => s.dataset === current.dataset);
      if (!previous || previous.guid !== from.guid)
        throw new UserError(
          `backup: the chain of ${manifest.set}/${manifest.id} is broken at ${holder.id}: its stream of ${current.dataset} applies to the snapshot with guid ${from.guid}, and its parent ${parent.manifest.id} ${previous ? `has guid ${previous.guid}` : 'has no snapshot of that dataset'}`,
        );
      current = previous;
      holder = parent.manifest;
    }
    chains.push({ fact, links });
  }
  // Parents before the datasets below them.
  return chains.sort((a, b) => (a.fact.dataset < b.fact.dataset ? -1 : 1));
}

/**
 * Where each dataset of the backup goes under `target`: with one root, the root is the target
 * and what is below it keeps its path; with several, each root goes to `target/<its last
 * name>` (two roots with the same last name are refused).
 */
export function targetsOf(chains: DatasetChain[], roots: string[], target: string): Map<string, string> {
  const last = (d: string) => d.slice(d.lastIndexOf('/') + 1);
  const lasts = roots.map(last);
  const clash = lasts.find((n, i) => lasts.indexOf(n) !== i);
  if (roots.length > 1 && clash)
    throw new UserError(
      `target: the backup's datasets ${roots.filter((r) => last(r) === clash).join(' and ')} would both go to ${target}/${clash}; restore them one at a time is not built yet`,
    );
  const map = new Map<string, string>();
  for (const { fact } of chains) {
    const below = fact.dataset.slice(fact.root.length);
    map.set(fact.dataset, roots.length === 1 ? `${target}${below}` : `${target}/${last(fact.root)}${below}`);
  }
  return map;
}

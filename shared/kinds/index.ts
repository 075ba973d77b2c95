/**
 * The registry of backup kinds: the generic commands (restore, verify-restore, …) find the
 * kind of a manifest here and never name one themselves.
 */
import { InputCollector, InputErrors } from '../action/inputs.ts';
import type { InputReader, InputSpec, OutputSpec } from '../action/spec.ts';
import { UserError } from '../errors.ts';
import type { Logger } from '../pipeline/progress.ts';
import { ebsKind } from './ebs.ts';
import { filesKind } from './files.ts';
import { k8sKind } from './k8s.ts';
import type { Kind, PrunePart } from './kind.ts';
import { mysqlKind } from './mysql/index.ts';
import { zfsKind } from './zfs.ts';

/** Every kind, in the order their inputs are listed. */
export const kinds: Kind[] = [filesKind, mysqlKind, ebsKind, k8sKind, zfsKind] as Kind[];

/**
 * What prune-retention asks of the kind named `name` (a manifest's kind): its prune part, or
 * an empty one. Until the zfs kind declares its own, a zfs backup of snapshots on its host
 * alone (no artifacts: nothing in the catalog but its record) is refused here.
 */
export function prunePartOf(name: string): PrunePart<unknown> {
  return kinds.find((k) => k.name === name)?.prune ?? {};
}

/** The jobs a kind may do for a command. */
export type StepName = 'restore' | 'verify';

/** The kinds that do `step`, for messages: "files, mysql, ebs and k8s". */
export function kindNames(step: StepName): string {
  const names = kinds.filter((k) => k[step]).map((k) => k.name);
  return names.length > 1 ? `${names.slice(0, -1).join(', ')} and ${names.at(-1)}` : names.join('');
}

/** The kind of a manifest that does `step`; a UserError naming those that do otherwise. */
export function kindFor(step: StepName, manifest: { id: string; kind: string }, verb: string): Kind {
  const kind = kinds.find((k) => k.name === manifest.kind && k[step]);
  if (!kind) {
    throw new UserError(
      `backup: '${manifest.id}' is a ${manifest.kind} backup; ${verb} is built for ${kindNames(step)} backups only in this version`,
    );
  }
  return kind;
}

/**
 * The inputs (or outputs) the kinds add to `step`'s command, each described as
 * "<kind> backups: …"; one that several kinds declare is listed once, naming them all.
 */
function declared<T extends InputSpec | OutputSpec>(
  step: StepName,
  of: (kind: Kind) => T[] | undefined,
): T[] {
  const byName = new Map<string, { spec: T; uses: { kind: string; description: string }[] }>();
  for (const kind of kinds) {
    if (!kind[step]) continue;
    for (const spec of of(kind) ?? []) {
      const entry = byName.get(spec.name) ?? { spec, uses: [] };
      entry.uses.push({ kind: kind.name, description: spec.description });
      byName.set(spec.name, entry);
    }
  }
  return [...byName.values()].map(({ spec, uses }) => {
    const texts = new Set(uses.map((u) => u.description));
    const description =
      texts.size === 1
        ? `${uses.map((u) => u.kind).join(' and ')} backups: ${uses[0]!.description}`
        : uses.map((u) => `${u.kind} backups: ${u.description}`).join(' ');
    return { ...spec, description };
  });
}

export const kindInputs = (step: StepName): InputSpec[] => declared(step, (k) => k[step]?.inputs);
export const kindOutputs = (step: StepName): OutputSpec[] =>
  declared(step, (k) => (step === 'restore' ? k.restore?.outputs : undefined));

/**
 * Every kind's options for `step`, by kind name: all are read before the backup (and so its
 * kind) is known, so that every bad input is refused at once; a problem two kinds find in an
 * input they share is one line.
 */
export function parseKinds(step: StepName, read: InputReader, c: InputCollector): Record<string, unknown> {
  const options: Record<string, unknown> = {};
  const seen = new Set<string>();
  for (const kind of kinds) {
    const part = kind[step];
    if (!part) continue;
    const own = new InputCollector();
    options[kind.name] = part.parse(read, own);
    c.field(() => {
      try {
        own.finish();
      } catch (error) {
        if (!(error instanceof InputErrors)) throw error;
        const lines = error.lines.filter((line) => !seen.has(line));
        for (const line of lines) seen.add(line);
        if (lines.length) throw new InputErrors(lines);
      }
    });
  }
  return options;
}

/** The `post:` step: the kind whose `step` recorded `state` removes it. */
export async function removeKindLeftovers(
  step: StepName,
  state: unknown,
  read: InputReader,
  logger: Logger,
): Promise<void> {
  const type = (state as { type?: unknown } | null)?.type;
  for (const kind of kinds) {
    const leftovers = kind[step]?.leftovers;
    if (typeof type === 'string' && leftovers?.types.includes(type))
      return leftovers.remove(state, read, logger);
  }
  throw new UserError(`post: the main step left state this version does not know: ${JSON.stringify(state)}`);
}

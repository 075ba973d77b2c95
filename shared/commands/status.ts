import fs from 'node:fs/promises';
import path from 'node:path';
import { InputCollector, parseBoolean, parseDuration } from '../action/inputs.ts';
import { defineCommand, type InputSpec } from '../action/spec.ts';
import { formatDuration } from '../pipeline/progress.ts';
import {
  type FreshnessRules,
  failuresFirst,
  judgeSet,
  missingSet,
  type SetFreshness,
} from '../status/freshness.ts';
import { gatherSets, parseSetSelection, type SetSelection } from '../status/gather.ts';
import { writeAtomically } from '../write-atomically.ts';
import { type CommonOptions, parseStorage, parseTimeout, storageInput, timeoutInput } from './common.ts';

interface Options extends CommonOptions, FreshnessRules {
  sets: SetSelection;
  reportFile?: string;
}

/** The set input of status and report: every set by default. */
export const setsInput: InputSpec = {
  name: 'set',
  description: 'The sets, comma separated, or * for every set in the storage.',
  default: '*',
};

const optionalDuration = (name: string, value: string | undefined) =>
  value?.trim() ? parseDuration(name, value) : undefined;

/** The verification column of a set: what its newest verification found, and when. */
export function verificationText(f: SetFreshness): string {
  const v = f.verification;
  return v
    ? `${v.passed ? 'passed' : 'FAILED'} ${formatDuration(v.ageSeconds)} ago (${v.backupId})`
    : 'never';
}

export const statusCommand = defineCommand<Options>({
  name: 'status',
  description:
    'Check that every set is backed up and proven: fail naming each set whose newest backup is older than max-age (STALE), whose newest verification failed (FAILED) or is too old or missing (UNVERIFIED), or that has no backup (MISSING).',
  inputs: [
    storageInput,
    setsInput,
    {
      name: 'max-age',
      description:
        'The newest committed backup of each set must have finished within this long, e.g. 26h for a nightly backup (a day and some slack); older is STALE. Required: there is no silent default.',
      required: true,
    },
    {
      name: 'max-verify-age',
      description:
        'The newest verification of each set (any of its backups) must have run within this long, e.g. 8d for a weekly verify-restore; older, or never verified, is UNVERIFIED. Default: its age is not judged.',
    },
    {
      name: 'require-verified',
      description:
        'true: a set none of whose backups was ever verified is UNVERIFIED. A failed newest verification is FAILED either way.',
      default: 'false',
    },
    {
      name: 'report-file',
      description:
        'Also write the result (JSON, one entry per set) to this file, atomically. Default: not written.',
    },
    timeoutInput('10m'),
  ],
  outputs: [
    { name: 'passed', description: 'true when every set is OK.' },
    { name: 'failing', description: 'The sets that are not OK, comma separated.' },
    { name: 'result', description: 'Each set: status, problems, newest backup and verification, as JSON.' },
  ],
  parse(read) {
    const c = new InputCollector();
    const options: Options = {
      storage: c.field(() => parseStorage(read)),
      sets: c.field(() => parseSetSelection(read('set'))),
      maxAgeSeconds: c.field(() => parseDuration('max-age', read('max-age'))),
      maxVerifyAgeSeconds: c.field(() => optionalDuration('max-verify-age', read('max-verify-age'))),
      requireVerified: c.field(() => parseBoolean('require-verified', read('require-verified'), false)),
      reportFile: read('report-file')?.trim() || undefined,
      timeoutSeconds: c.field(() => parseTimeout(read, '10m')),
      progressIntervalMs: 10_000,
    };
    c.finish();
    return options;
  },
  async execute(options, { logger }) {
    const now = new Date();
    const gathered = await gatherSets(options.storage, options.sets, now);
    const sets = [
      ...gathered.listings.map((l) => judgeSet(l.set, l.backups, l.damaged.length, options, now)),
      ...gathered.missing.map((set) => missingSet(set, gathered.known)),
    ].sort(failuresFirst);
    const failed = sets.flatMap((s) => s.problems);
    if (options.sets === '*' && gathered.known.length === 0)
      failed.push(`status: ${options.storage.url} holds no sets: nothing is being backed up there`);
    for (const s of sets) for (const note of s.notes) logger.warn(`${s.set}: ${note}`);
    const failing = sets.filter((s) => s.status !== 'OK').map((s) => s.set);
    const result = JSON.stringify({ storage: options.storage.url, at: now.toISOString(), sets });
    if (options.reportFile) {
      await fs.mkdir(path.dirname(path.resolve(options.reportFile)), { recursive: true });
      await writeAtomically(options.reportFile, `${JSON.stringify(JSON.parse(result), null, 2)}\n`);
      logger.info(`report: ${path.resolve(options.reportFile)}`);
    }
    const table = [
      ['Set', 'Status', 'Newest backup', 'Age', 'Newest verification', 'Problem'],
      ...sets.map((s) => [
        s.set,
        s.status,
        s.newest?.id ?? '',
        s.newest ? formatDuration(s.newest.ageSeconds) : '',
        verificationText(s),
        s.problems.map((p) => p.replace(/^[^:]+: [A-Z]+: /, '')).join('; '),
      ]),
    ];
    const rules = [
      `max-age ${formatDuration(options.maxAgeSeconds!)}`,
      ...(options.maxVerifyAgeSeconds !== undefined
        ? [`max-verify-age ${formatDuration(options.maxVerifyAgeSeconds)}`]
        : []),
      ...(options.requireVerified ? ['require-verified'] : []),
    ];
    return {
      outputs: { passed: String(failed.length === 0), failing: failing.join(','), result },
      summary: {
        heading: `Status of ${options.storage.url}: ${failed.length ? `${failing.length || 'no'} set(s) failing` : 'every set OK'}`,
        table,
        notes: [
          `${sets.length} set(s) checked against ${rules.join(', ')}.`,
          ...sets.flatMap((s) => s.notes.map((n) => `${s.set}: ${n}`)),
        ],
      },
      failed: failed.length ? failed : undefined,
    };
  },
});

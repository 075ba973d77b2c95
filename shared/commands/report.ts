import fs from 'node:fs/promises';
import path from 'node:path';
import { InputCollector, parseBoolean, parseDuration, parseInteger } from '../action/inputs.ts';
import { defineCommand } from '../action/spec.ts';
import { gatherReport } from '../report/data.ts';
import { renderReport } from '../report/html.ts';
import type { FreshnessRules } from '../status/freshness.ts';
import { parseSetSelection, type SetSelection } from '../status/gather.ts';
import { writeAtomically } from '../write-atomically.ts';
import { type CommonOptions, parseStorage, parseTimeout, storageInput, timeoutInput } from './common.ts';
import { setsInput } from './status.ts';

interface Options extends CommonOptions {
  sets: SetSelection;
  output: string;
  last: number;
  rules: FreshnessRules;
}

const optionalDuration = (name: string, value: string | undefined) =>
  value?.trim() ? parseDuration(name, value) : undefined;

export const reportCommand = defineCommand<Options>({
  name: 'report',
  description:
    'Write one self-contained HTML page (no scripts, nothing fetched) with every set, the age of its newest backup, its verification status, and size, RTO and RPO over the last backups.',
  inputs: [
    storageInput,
    setsInput,
    { name: 'output', description: 'The HTML file to write (atomically).', default: 'lifeboat-report.html' },
    {
      name: 'last',
      description: 'How many of the newest backups of each set the tables and charts show.',
      default: '30',
    },
    {
      name: 'max-age',
      description:
        'Mark a set whose newest backup is older than this STALE, as status does, e.g. 26h. Default: ages are shown, not judged.',
    },
    {
      name: 'max-verify-age',
      description:
        'Mark a set whose newest verification is older than this (or missing) UNVERIFIED, as status does.',
    },
    {
      name: 'require-verified',
      description: 'true: mark a set none of whose backups was ever verified UNVERIFIED, as status does.',
      default: 'false',
    },
    timeoutInput('10m'),
  ],
  outputs: [
    { name: 'report', description: 'The path of the HTML report.' },
    { name: 'failing', description: 'The sets that are not OK, comma separated.' },
  ],
  parse(read) {
    const c = new InputCollector();
    const options: Options = {
      storage: c.field(() => parseStorage(read)),
      sets: c.field(() => parseSetSelection(read('set'))),
      output: read('output')?.trim() || 'lifeboat-report.html',
      last: c.field(() => parseInteger('last', read('last') || '30', { min: 1, max: 1000 })!),
      rules: {
        maxAgeSeconds: c.field(() => optionalDuration('max-age', read('max-age'))),
        maxVerifyAgeSeconds: c.field(() => optionalDuration('max-verify-age', read('max-verify-age'))),
        requireVerified: c.field(() => parseBoolean('require-verified', read('require-verified'), false)),
      },
      timeoutSeconds: c.field(() => parseTimeout(read, '10m')),
      progressIntervalMs: 10_000,
    };
    c.finish();
    return options;
  },
  async execute(options, { logger }) {
    const data = await gatherReport(options.storage, options.sets, {
      last: options.last,
      rules: options.rules,
      now: new Date(),
    });
    const file = path.resolve(options.output);
    await fs.mkdir(path.dirname(file), { recursive: true });
    await writeAtomically(file, renderReport(data));
    if (data.sets.length === 0)
      logger.warn(`${options.storage.url} holds no sets: nothing is being backed up there`);
    logger.info(`report: ${file}`);
    const failing = data.sets.filter((s) => s.freshness.status !== 'OK');
    return {
      outputs: { report: file, failing: failing.map((s) => s.freshness.set).join(',') },
      summary: {
        heading: `Report of ${options.storage.url}`,
        table: [
          ['Set', 'Status', 'Newest backup'],
          ...data.sets.map((s) => [s.freshness.set, s.freshness.status, s.freshness.newest?.id ?? '']),
        ],
        notes: [`Written to ${file}: ${data.sets.length} set(s), the last ${options.last} backups of each.`],
      },
    };
  },
});

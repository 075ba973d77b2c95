/**
 * verify-restore as the action and the CLI run it (inputs by name), each run in its own work
 * folder, with the report it wrote; and the checks of a report by name.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import { after } from 'node:test';
import { makeReader, runCommand } from '../../shared/action/run.ts';
import type { Command, CommandResult } from '../../shared/action/spec.ts';
import { verifyRestoreCommand } from '../../shared/commands/verify-restore.ts';
import { silentLogger } from '../../shared/pipeline/progress.ts';
import type { CheckRow } from '../../shared/verify/checks.ts';
import type { VerifyReport } from '../../shared/verify/report.ts';
import { tempDir } from './servers.ts';

export interface Verified {
  result: CommandResult;
  report: VerifyReport;
  workDir: string;
}

/** The work folders of this test file's runs, removed once its tests are done. */
const workDirs: string[] = [];
after(() => Promise.all(workDirs.map((dir) => fs.rm(dir, { recursive: true, force: true }))));

/** Runs verify-restore with `base` (storage, keys) and `inputs` over it; progress lines off. */
export async function runVerify(
  base: Record<string, string>,
  inputs: Record<string, string>,
): Promise<Verified> {
  const workDir = await tempDir('verify-work');
  workDirs.push(workDir);
  const all: Record<string, string> = { 'work-dir': workDir, 'progress-interval': '1h', ...base, ...inputs };
  const command = verifyRestoreCommand as unknown as Command<never>;
  const read = makeReader(command, (spec) => all[spec.name] ?? spec.default);
  const result = await runCommand(command, read, silentLogger);
  const report = JSON.parse(await fs.readFile(result.outputs.report!, 'utf8')) as VerifyReport;
  return { result, report, workDir };
}

/** The report's check named `name` (or the first whose name starts with it). */
export function checkRow(report: VerifyReport, name: string): CheckRow {
  const found =
    report.checks.find((c) => c.name === name) ?? report.checks.find((c) => c.name.startsWith(name));
  assert.ok(found, `the report has a check '${name}': ${report.checks.map((c) => c.name).join(', ')}`);
  return found;
}

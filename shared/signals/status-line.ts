/**
 * The one line that opens a job summary (GitHub's step summary and the CLI's): what the run
 * did, for its set, e.g. `prod-mysql: backup OK 1.2 GiB (−0.3%) · verify PASSED · RPO 5h / 26h
 * · RTO 48s / 45m`, or `prod-mysql: dump-mysql FAILED: <error>`. Failures come first. The
 * outputs read here come from a backup's manifest or a verification report: numbers are used
 * only when they are finite, and the line is plain text (each summary escapes it).
 */
import { formatBytes, formatDuration } from '../pipeline/progress.ts';

/** What one command reported: its outputs, and the failure lines when it failed. */
export interface RunOutcome {
  command: string;
  /** The set input as given (a name, several names, '*'), or '' when the command took none. */
  set: string;
  outputs?: Record<string, string>;
  /** The error (first line first) of a failed run; a verify that found a failed check too. */
  failed?: string[];
}

/** The `set` input of a command that takes one, as given; '' for a command that takes none. */
export function setInputOf(
  command: { inputs: { name: string }[] },
  read: (name: string) => string | undefined,
): string {
  return command.inputs.some((i) => i.name === 'set') ? (read('set')?.trim() ?? '') : '';
}

/** The word for what each command did: `backup` for every command that takes a backup. */
const verbs: Record<string, string> = {
  'backup-files': 'backup',
  'dump-mysql': 'backup',
  'backup-k8s': 'backup',
  'snapshot-ebs': 'backup',
  'snapshot-zfs': 'backup',
  'verify-restore': 'verify',
  'prune-retention': 'prune',
};

const verbOf = (command: string) => verbs[command] ?? command;

/** A number from an output, or undefined when it is missing, empty or not finite. */
export function numberOutput(outputs: Record<string, string> | undefined, name: string): number | undefined {
  const raw = outputs?.[name]?.trim();
  if (!raw) return undefined;
  const n = Number(raw);
  return Number.isFinite(n) ? n : undefined;
}

/** A JSON output, or undefined when it is missing or not JSON. */
export function jsonOutput(outputs: Record<string, string> | undefined, name: string): unknown {
  const raw = outputs?.[name];
  if (!raw?.trim()) return undefined;
  try {
    return JSON.parse(raw);
  } catch {
    return undefined;
  }
}

/** The anomaly messages of the `anomalies` output (a JSON array of strings), when present. */
export function anomaliesOf(outputs: Record<string, string> | undefined): string[] | undefined {
  const list = jsonOutput(outputs, 'anomalies');
  if (!Array.isArray(list)) return undefined;
  return list.filter((a): a is string => typeof a === 'string');
}

/** The change of the stored size against the previous backup (a fraction), from `deltas`. */
export function storedChange(outputs: Record<string, string> | undefined): number | undefined {
  const deltas = jsonOutput(outputs, 'deltas');
  if (!Array.isArray(deltas)) return undefined;
  const stored = deltas.find(
    (d) => d && typeof d === 'object' && (d as { name?: unknown }).name === 'stored-bytes',
  ) as { change?: unknown } | undefined;
  return typeof stored?.change === 'number' && Number.isFinite(stored.change) ? stored.change : undefined;
}

/** −0.3%, +12%, ±0%: a fraction as a signed percentage (a real minus sign). */
export function formatChange(fraction: number): string {
  const percent = fraction * 100;
  const size = Math.abs(percent);
  const digits = size >= 10 ? 0 : size >= 1 ? 1 : size >= 0.1 ? 1 : 2;
  const text = size.toFixed(digits);
  if (Number(text) === 0) return '±0%';
  return `${percent < 0 ? '−' : '+'}${text}%`;
}

/** The bytes a backup stored: `bytes`, or snapshot-zfs's `sent-bytes`. */
export function storedBytes(outputs: Record<string, string> | undefined): number | undefined {
  return numberOutput(outputs, 'bytes') ?? numberOutput(outputs, 'sent-bytes');
}

/** The limits (max-age, max-restore-time) a verification report records, when set. */
function limitsOf(outputs: Record<string, string> | undefined): { age?: number; restore?: number } {
  const report = jsonOutput(outputs, 'result') as { limits?: Record<string, unknown> } | undefined;
  const limit = (v: unknown) => (typeof v === 'number' && Number.isFinite(v) && v > 0 ? v : undefined);
  return { age: limit(report?.limits?.maxAgeSeconds), restore: limit(report?.limits?.maxRestoreSeconds) };
}

/** The parts that a run adds to the line: a failed part first. */
function partsOf(run: RunOutcome): { failed: boolean; text: string }[] {
  const { outputs } = run;
  const verb = verbOf(run.command);
  const parts: { failed: boolean; text: string }[] = [];
  if (run.command === 'verify-restore' && outputs?.passed) {
    const passed = outputs.passed === 'true';
    parts.push({
      failed: !passed,
      text: passed ? 'verify PASSED' : `verify FAILED${run.failed?.[0] ? `: ${run.failed[0]}` : ''}`,
    });
    const limits = limitsOf(outputs);
    const rpo = numberOutput(outputs, 'rpo-seconds');
    const rto = numberOutput(outputs, 'rto-seconds');
    if (rpo !== undefined)
      parts.push({
        failed: false,
        text: `RPO ${formatDuration(rpo)}${limits.age ? ` / ${formatDuration(limits.age)}` : ''}`,
      });
    if (rto !== undefined)
      parts.push({
        failed: false,
        text: `RTO ${formatDuration(rto)}${limits.restore ? ` / ${formatDuration(limits.restore)}` : ''}`,
      });
  } else if (run.failed?.length) {
    parts.push({ failed: true, text: `${run.command} FAILED: ${run.failed[0]}` });
  } else {
    parts.push({ failed: false, text: `${verb} OK${okDetail(run.command, outputs)}` });
  }
  const anomalies = anomaliesOf(outputs);
  if (anomalies?.length)
    parts.unshift({
      failed: true,
      text: `${anomalies.length} ${anomalies.length === 1 ? 'anomaly' : 'anomalies'}: ${anomalies.join('; ')}`,
    });
  return parts;
}

/** What a successful run adds after OK: the size stored, copied or freed; the backups listed. */
function okDetail(command: string, outputs: Record<string, string> | undefined): string {
  if (verbOf(command) === 'backup') {
    const bytes = storedBytes(outputs);
    if (bytes === undefined) return '';
    const change = storedChange(outputs);
    return ` ${formatBytes(bytes)}${change === undefined ? '' : ` (${formatChange(change)})`}`;
  }
  const count = numberOutput(outputs, 'count');
  const bytes = numberOutput(outputs, 'bytes');
  switch (command) {
    case 'prune-retention': {
      const deleted = numberOutput(outputs, 'deleted');
      const freed = numberOutput(outputs, 'bytes-freed');
      return deleted === undefined
        ? ''
        : ` deleted ${deleted}${freed ? `, freed ${formatBytes(freed)}` : ''}`;
    }
    case 'copy':
      return count === undefined ? '' : ` ${count} backup(s)${bytes ? `, ${formatBytes(bytes)}` : ''}`;
    case 'list':
      return count === undefined ? '' : ` ${count} backup(s)`;
    case 'restore':
      return bytes === undefined ? '' : ` ${formatBytes(bytes)}`;
    default:
      return '';
  }
}

/** The set as the line names it: '*' (or none, for list) is every set. */
function setLabel(set: string): string {
  const s = set.trim();
  return !s || s === '*' ? 'all sets' : s;
}

/** One line for the runs of a job (one step: one run), failures first. */
export function statusLine(runs: RunOutcome[]): string {
  const bySet = new Map<string, { failed: boolean; text: string }[]>();
  for (const run of runs) {
    const label = setLabel(run.set);
    bySet.set(label, [...(bySet.get(label) ?? []), ...partsOf(run)]);
  }
  const lines = [...bySet].map(([set, parts]) => ({
    failed: parts.some((p) => p.failed),
    text: `${set}: ${[...parts.filter((p) => p.failed), ...parts.filter((p) => !p.failed)].map((p) => p.text).join(' · ')}`,
  }));
  return [...lines.filter((l) => l.failed), ...lines.filter((l) => !l.failed)].map((l) => l.text).join(' | ');
}

/**
 * The Prometheus text exposition format (version 0.0.4) for Lifeboat's metrics: one gauge per
 * name, labelled by set and command. Label values come from inputs and manifests, so each is
 * escaped as the format says (backslash, double quote, line feed).
 */

export interface Sample {
  name: string;
  help: string;
  value: number;
}

/** A label value inside its double quotes. */
export function escapeLabelValue(value: string): string {
  return value.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
}

/** The `{set="…",command="…"}` of every sample. */
export function labelsText(labels: Record<string, string>): string {
  return `{${Object.entries(labels)
    .map(([name, value]) => `${name}="${escapeLabelValue(value)}"`)
    .join(',')}}`;
}

/** A number as the format writes it: NaN, +Inf and -Inf by name. */
function valueText(value: number): string {
  if (Number.isNaN(value)) return 'NaN';
  if (value === Number.POSITIVE_INFINITY) return '+Inf';
  if (value === Number.NEGATIVE_INFINITY) return '-Inf';
  return String(value);
}

/** HELP text: backslash and line feed escaped. */
const escapeHelp = (text: string) => text.replace(/\\/g, '\\\\').replace(/\n/g, '\\n');

/** The samples as a text-format document (ending with a line feed, as the push gateway wants). */
export function metricsText(samples: Sample[], labels: Record<string, string>): string {
  const lines: string[] = [];
  for (const sample of samples) {
    lines.push(`# HELP ${sample.name} ${escapeHelp(sample.help)}`, `# TYPE ${sample.name} gauge`);
    lines.push(`${sample.name}${labelsText(labels)} ${valueText(sample.value)}`);
  }
  return `${lines.join('\n')}\n`;
}

/** The value of one sample with exactly these labels in a text-format document, if there is one. */
export function findSample(text: string, name: string, labels: Record<string, string>): number | undefined {
  const line = `${name}${labelsText(labels)} `;
  for (const row of text.split('\n')) {
    if (!row.startsWith(line)) continue;
    const value = Number(row.slice(line.length).trim().split(' ')[0]);
    return Number.isFinite(value) ? value : undefined;
  }
  return undefined;
}

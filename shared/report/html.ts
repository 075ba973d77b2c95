/**
 * The report as one self-contained HTML page: no script at all, one inline style allowed by
 * its hash in a strict Content-Security-Policy, charts as inline SVG, nothing fetched. Every
 * text that came from the storage (set names, ids, kinds, check names, details) is escaped.
 */
import { createHash } from 'node:crypto';
import { formatBytes, formatDuration } from '../pipeline/progress.ts';
import type { SetFreshness } from '../status/freshness.ts';
import type { ReportBackup, ReportData, ReportSet } from './data.ts';

/** Text for HTML content and double-quoted attributes. */
export function escapeHtml(text: string): string {
  return text
    .replace(/&/g, '&amp;')
    .replace(/</g, '&lt;')
    .replace(/>/g, '&gt;')
    .replace(/"/g, '&quot;')
    .replace(/'/g, '&#39;');
}

const e = escapeHtml;

const css = `
:root { color-scheme: light; --ok: #1a7f37; --bad: #cf222e; --warn: #9a6700; --muted: #57606a; --line: #d0d7de; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0; color: #1f2328; background: #f6f8fa; }
header, main { max-width: 1100px; margin: 0 auto; padding: 16px 24px; }
header { padding-top: 24px; }
h1 { font-size: 22px; margin: 0 0 4px; }
h2 { font-size: 18px; margin: 0 0 8px; display: flex; gap: 10px; align-items: center; }
code { font: 12px ui-monospace, "DejaVu Sans Mono", monospace; }
.meta { color: var(--muted); margin: 0; }
section.set, section.overview { background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: 16px; margin: 0 0 16px; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: 5px 8px; border-bottom: 1px solid var(--line); vertical-align: top; }
th { color: var(--muted); font-weight: 600; font-size: 12px; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
.badge { display: inline-block; border-radius: 10px; padding: 1px 8px; font-size: 12px; font-weight: 700; color: #fff; background: var(--muted); }
.badge.OK { background: var(--ok); }
.badge.STALE, .badge.UNVERIFIED { background: var(--warn); }
.badge.FAILED, .badge.MISSING { background: var(--bad); }
.passed { color: var(--ok); }
.failed { color: var(--bad); font-weight: 600; }
.never { color: var(--muted); }
ul.problems { margin: 0 0 10px; padding-left: 18px; color: var(--bad); }
ul.notes { margin: 0 0 10px; padding-left: 18px; color: var(--muted); }
.charts { display: flex; flex-wrap: wrap; gap: 16px; margin: 8px 0 12px; }
figure { margin: 0; }
figcaption { font-size: 12px; color: var(--muted); }
svg { display: block; }
svg .axis { stroke: var(--line); }
svg .bar { fill: #0969da; }
svg .bar.failed { fill: var(--bad); }
svg .none { fill: var(--line); }
svg text { font: 10px system-ui, sans-serif; fill: var(--muted); }
a { color: #0969da; }
`;

/** The Content-Security-Policy: nothing may load or run; only the style above applies. */
export const contentSecurityPolicy = `default-src 'none'; style-src 'sha256-${createHash('sha256').update(css).digest('base64')}'; base-uri 'none'; form-action 'none'`;

const utc = (iso: string) => `${iso.slice(0, 16).replace('T', ' ')} UTC`;

function verificationCell(v: SetFreshness['verification']): string {
  if (!v) return '<span class="never">never</span>';
  return `<span class="${v.passed ? 'passed' : 'failed'}">${v.passed ? 'passed' : 'FAILED'}</span> ${e(formatDuration(v.ageSeconds))} ago <span class="never">(${e(v.backupId)})</span>`;
}

function overview(data: ReportData): string {
  const rows = data.sets.map(({ freshness: f, recent }) => {
    const newest = recent[0];
    return `<tr data-set="${e(f.set)}" data-status="${e(f.status)}" data-age-seconds="${f.newest ? Math.round(f.newest.ageSeconds) : ''}" data-bytes="${newest ? newest.bytes : ''}" data-verification="${f.verification ? (f.verification.passed ? 'passed' : 'failed') : 'never'}">
<td><a href="#set-${e(f.set)}">${e(f.set)}</a></td>
<td><span class="badge ${e(f.status)}">${e(f.status)}</span></td>
<td><code>${e(f.newest?.id ?? '—')}</code></td>
<td class="num age">${f.newest ? e(formatDuration(f.newest.ageSeconds)) : '—'}</td>
<td class="verification">${verificationCell(f.verification)}</td>
<td class="num size">${newest ? e(formatBytes(newest.bytes)) : '—'}</td>
<td class="num">${f.backups}</td>
</tr>`;
  });
  return `<section class="overview"><table class="sets">
<thead><tr><th>Set</th><th>Status</th><th>Newest backup</th><th class="num">Age</th><th>Newest verification</th><th class="num">Size</th><th class="num">Backups</th></tr></thead>
<tbody>
${rows.join('\n') || '<tr><td colspan="7">The storage holds no sets: nothing is being backed up here.</td></tr>'}
</tbody></table></section>`;
}

interface Bar {
  label: string;
  value: number | null;
  failed?: boolean;
}

/** A bar chart of the backups, oldest left; a backup without a value gets a grey tick. */
function barChart(title: string, bars: Bar[], format: (n: number) => string): string {
  const width = 320;
  const height = 120;
  const top = 14;
  const bottom = height - 16;
  const left = 4;
  const max = Math.max(0, ...bars.map((b) => b.value ?? 0));
  const step = bars.length ? (width - left) / bars.length : 0;
  const barWidth = Math.max(2, Math.min(24, step * 0.7));
  const parts = bars.map((b, i) => {
    const x = (left + i * step + (step - barWidth) / 2).toFixed(1);
    const tip = `<title>${e(b.label)}: ${b.value === null ? 'no value' : e(format(b.value))}</title>`;
    if (b.value === null)
      return `<rect class="none" x="${x}" y="${bottom - 2}" width="${barWidth.toFixed(1)}" height="2">${tip}</rect>`;
    const h = max > 0 ? Math.max(1, ((bottom - top) * b.value) / max) : 1;
    return `<rect class="bar${b.failed ? ' failed' : ''}" x="${x}" y="${(bottom - h).toFixed(1)}" width="${barWidth.toFixed(1)}" height="${h.toFixed(1)}" data-value="${b.value}">${tip}</rect>`;
  });
  const known = bars.filter((b) => b.value !== null).length;
  return `<figure><svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" role="img" aria-label="${e(title)}">
<text x="${left}" y="10">max ${known ? e(format(max)) : '—'}</text>
<line class="axis" x1="0" y1="${bottom}" x2="${width}" y2="${bottom}"/>
${parts.join('\n')}
<text x="${left}" y="${height - 3}">oldest</text><text x="${width - 2}" y="${height - 3}" text-anchor="end">newest</text>
</svg><figcaption>${e(title)}${bars.length ? `, ${known} of ${bars.length}` : ': no backups'}</figcaption></figure>`;
}

function backupRow(b: ReportBackup): string {
  const v = b.verification;
  const verification = v
    ? `<span class="${v.passed ? 'passed' : 'failed'}">${v.passed ? 'passed' : 'FAILED'}</span> ${e(utc(v.at))}${v.failedChecks.length ? `<br><span class="failed">${e(v.failedChecks.slice(0, 5).join(', ').slice(0, 300))}</span>` : ''}`
    : b.verificationDamaged
      ? '<span class="failed">damaged record</span>'
      : '<span class="never">never</span>';
  return `<tr data-id="${e(b.id)}" data-bytes="${b.bytes}" data-rto-seconds="${v?.restoreSeconds ?? ''}" data-rpo-seconds="${v?.rpoSeconds ?? ''}">
<td><code>${e(b.id)}</code></td><td>${e(b.kind)} ${e(b.mode)}</td><td>${e(utc(b.finishedAt))}</td>
<td class="num">${e(formatDuration(b.ageSeconds))}</td><td class="num">${e(formatBytes(b.bytes))}</td>
<td>${verification}</td>
<td class="num">${v?.restoreSeconds != null ? e(formatDuration(v.restoreSeconds)) : '—'}</td>
<td class="num">${v?.rpoSeconds != null ? e(formatDuration(v.rpoSeconds)) : '—'}</td>
</tr>`;
}

function setSection(set: ReportSet, last: number): string {
  const f = set.freshness;
  const oldestFirst = [...set.recent].reverse();
  const problems = f.problems.map((p) => `<li>${e(p)}</li>`).join('');
  const notes = f.notes.map((n) => `<li>${e(n)}</li>`).join('');
  const charts = set.recent.length
    ? `<div class="charts">
${barChart(
  'Size stored',
  oldestFirst.map((b) => ({ label: b.id, value: b.bytes })),
  formatBytes,
)}
${barChart(
  'RTO: restore time at verification',
  oldestFirst.map((b) => ({
    label: b.id,
    value: b.verification?.restoreSeconds ?? null,
    failed: b.verification ? !b.verification.passed : false,
  })),
  formatDuration,
)}
${barChart(
  'RPO: backup age at verification',
  oldestFirst.map((b) => ({
    label: b.id,
    value: b.verification?.rpoSeconds ?? null,
    failed: b.verification ? !b.verification.passed : false,
  })),
  formatDuration,
)}
</div>
<table class="backups"><thead><tr><th>Backup</th><th>Kind</th><th>Finished</th><th class="num">Age</th><th class="num">Size</th><th>Verification</th><th class="num">RTO</th><th class="num">RPO</th></tr></thead>
<tbody>
${set.recent.map(backupRow).join('\n')}
</tbody></table>`
    : '';
  return `<section class="set" id="set-${e(f.set)}" data-set="${e(f.set)}">
<h2>${e(f.set)} <span class="badge ${e(f.status)}">${e(f.status)}</span></h2>
${problems ? `<ul class="problems">${problems}</ul>` : ''}${notes ? `<ul class="notes">${notes}</ul>` : ''}
<p class="meta">${f.backups} committed backup(s)${set.recent.length ? `; the last ${Math.min(last, set.recent.length)} below` : ''}.</p>
${charts}
</section>`;
}

export function renderReport(data: ReportData): string {
  const rules = [
    data.rules.maxAgeSeconds !== undefined ? `max-age ${formatDuration(data.rules.maxAgeSeconds)}` : '',
    data.rules.maxVerifyAgeSeconds !== undefined
      ? `max-verify-age ${formatDuration(data.rules.maxVerifyAgeSeconds)}`
      : '',
    data.rules.requireVerified ? 'require-verified' : '',
  ].filter(Boolean);
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="${e(contentSecurityPolicy)}">
<meta name="referrer" content="no-referrer">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Lifeboat report: ${e(data.storage)}</title>
<style>${css}</style>
</head>
<body>
<header>
<h1>Backups in <code>${e(data.storage)}</code></h1>
<p class="meta">Generated ${e(utc(data.generatedAt))} by Lifeboat ${e(data.version)}; ${data.sets.length} set(s); ${rules.length ? `judged by ${e(rules.join(', '))}` : 'no max-age given: ages are shown, not judged'}.</p>
</header>
<main>
${overview(data)}
${data.sets.map((s) => setSection(s, data.last)).join('\n')}
</main>
</body>
</html>
`;
}

/**
 * The job summary is plain text: a cell, the heading or a note holding text from a hostile
 * backup or database (HTML, Markdown, line breaks) reads as that text and adds no structure.
 * Runs the GitHub front end's writer on a GITHUB_STEP_SUMMARY file, as a runner gives it.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { escapeSummaryText, writeSummary } from '../../shared/action/github.ts';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lifeboat-summary-'));
const summaryFile = path.join(dir, 'summary');
fs.writeFileSync(summaryFile, '');
// @actions/core reads the variable once, on its first write: the same file for every test here.
process.env.GITHUB_STEP_SUMMARY = summaryFile;
after(() => fs.rmSync(dir, { recursive: true, force: true }));

/** What a reader sees of an escaped text: character references decoded, <br> a line break. */
function rendered(html: string): string {
  const named: Record<string, string> = { amp: '&', lt: '<', gt: '>', quot: '"' };
  return html
    .replace(/<br>/g, '\n')
    .replace(/&#(\d+);/g, (_, code: string) => String.fromCharCode(Number(code)))
    .replace(/&([a-z]+);/g, (_, name: string) => named[name]!);
}

function count(text: string, part: string): number {
  return text.split(part).length - 1;
}

async function summaryOf(summary: { heading: string; table: string[][]; notes?: string[] }): Promise<string> {
  fs.writeFileSync(summaryFile, '');
  await writeSummary({ outputs: {}, summary });
  return fs.readFileSync(summaryFile, 'utf8');
}

test('a hostile cell, heading and note add no HTML or Markdown to the job summary', async () => {
  const breakOut = '</td></tr></table><h1>x</h1>';
  const pipes = 'a | b\n\n| c | d |\n|---|---|\r\n- e';
  const heading = 'Check <script>alert(1)</script>';
  const note = '# heading\n<img src=x onerror=alert(1)>';
  const text = await summaryOf({
    heading,
    table: [
      ['Check', 'Result', 'Detail'],
      [breakOut, 'FAILED', pipes],
      ['it\'s "quoted" & [linked](https://example.com) ![img](x) **bold** `code`', 'passed', 'ok'],
    ],
    notes: [note, '> [!WARNING]\n    indented', '1. listed', '- listed', '=== under'],
  });

  assert.equal(count(text, '<table>'), 1, text);
  assert.equal(count(text, '</table>'), 1, text);
  assert.ok(text.indexOf('<table>') < text.indexOf('</table>'), text);
  assert.equal(count(text, '<tr>'), 3, 'the header and two rows, no more');
  assert.equal(count(text, '</tr>'), 3);
  assert.equal(count(text, '<td>'), 6, 'three cells in each row, no more');
  assert.equal(count(text, '</td>'), 6);
  assert.doesNotMatch(text, /<h1/i);
  assert.doesNotMatch(text, /<script/i);
  assert.doesNotMatch(text, /<img/i);
  assert.doesNotMatch(text, /<a[\s>]/i);
  // Nothing of the table spans lines (a blank line would end its HTML block), and no line of
  // a note starts Markdown: a heading, quote, list, setext underline, code block or table.
  const lines = text.split('\n');
  assert.equal(lines.filter((l) => l.includes('<table>')).length, 1);
  assert.ok(lines.find((l) => l.includes('<table>'))!.includes('</table>'), 'the table is one line');
  for (const line of lines) {
    assert.doesNotMatch(line, /^\s*([#>|`*+=-]|\d+[.)])|^ {4}|^\t/, `a line starting Markdown: ${line}`);
  }
  // Outside character references, no character of HTML attributes or inline Markdown is left.
  assert.doesNotMatch(text.replace(/&#\d+;|&[a-z]+;/g, ''), /[&"'\\`*_~[\]!|#$]/);

  // Still readable: each escaped text shows as it was.
  assert.match(text, /&lt;\/td&gt;&lt;\/tr&gt;&lt;\/table&gt;&lt;h1&gt;x&lt;\/h1&gt;/);
  assert.match(text, /<h3>Check &lt;script&gt;alert\(1\)&lt;\/script&gt;<\/h3>/);
  assert.match(text, /&#35; heading<br>&lt;img src=x onerror=alert\(1\)&gt;/);
  assert.match(text, /<td>a &#124; b<br><br>&#124; c/);
  const cells = [...text.matchAll(/<t[hd]>(.*?)<\/t[hd]>/g)].map((m) => rendered(m[1]!));
  assert.deepEqual(cells, [
    'Check',
    'Result',
    'Detail',
    breakOut,
    'FAILED',
    pipes.replace(/\r\n/g, '\n'),
    'it\'s "quoted" & [linked](https://example.com) ![img](x) **bold** `code`',
    'passed',
    'ok',
  ]);
  assert.equal(rendered(/<h3>(.*)<\/h3>/.exec(text)![1]!), heading);
  assert.ok(text.includes(`\n${escapeSummaryText(note)}\n`));
  assert.equal(rendered(escapeSummaryText(note)), note);
});

test('Lifeboat’s own summary text is unchanged by the escaping', async () => {
  const text = await summaryOf({
    heading: 'Restore verification of prod-mysql/2025-01-02-0315-backup-full: PASSED',
    table: [
      ['Check', 'Result', 'Detail'],
      ['sha256: dump.sql.zst', 'passed', 'rows: shop.orders 2200'],
    ],
    notes: ['RTO (restore time): 1m02s. RPO (backup age): 3h00m.'],
  });
  assert.equal(
    text,
    [
      '<h3>Restore verification of prod-mysql/2025-01-02-0315-backup-full: PASSED</h3>',
      '<table><tr><th>Check</th><th>Result</th><th>Detail</th></tr>' +
        '<tr><td>sha256: dump.sql.zst</td><td>passed</td><td>rows: shop.orders 2200</td></tr></table>',
      '',
      'RTO (restore time): 1m02s. RPO (backup age): 3h00m.',
      '',
      '',
    ].join(os.EOL),
  );
});

test('escapeSummaryText: every HTML and Markdown character as a reference, line starts too', () => {
  assert.equal(escapeSummaryText(`&<>"'`), '&amp;&lt;&gt;&quot;&#39;');
  assert.equal(
    escapeSummaryText('a\\b `c` *d* _e_ ~f~ [g] !h |i| #j $k$'),
    'a&#92;b &#96;c&#96; &#42;d&#42; &#95;e&#95; &#126;f&#126; &#91;g&#93; &#33;h &#124;i&#124; &#35;j &#36;k&#36;',
  );
  assert.equal(escapeSummaryText('a\nb\r\nc\rd'), 'a<br>b<br>c<br>d');
  assert.equal(escapeSummaryText('- item'), '&#45; item');
  assert.equal(escapeSummaryText('+ item'), '&#43; item');
  assert.equal(escapeSummaryText('==='), '&#61;==');
  assert.equal(escapeSummaryText('12. item'), '12&#46; item');
  assert.equal(escapeSummaryText('3) item'), '3&#41; item');
  assert.equal(escapeSummaryText('    code'), '&#32;&#32;&#32;&#32;code');
  assert.equal(escapeSummaryText('\tcode'), '&#9;code');
  assert.equal(escapeSummaryText('a - b + c = d. 1. e'), 'a - b + c = d. 1. e', 'only at the start');
  assert.equal(escapeSummaryText('&amp;'), '&amp;amp;', 'a reference in the text is shown, not decoded');
  assert.equal(escapeSummaryText(''), '');
});
